"""Access reviews: the campaigns (what is in scope, who reviews, when they are due,
progress), a new campaign, and one campaign's items with "Keep" / "Revoke" for its
reviewers — never on their own access (the service refuses it; the page says so) —
through `bastion.compliance.reviews`, as `/v1/orgs/{org}/access-reviews` does."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from bastion.compliance import reviews
from bastion.compliance.schemas import AccessReviewIn, DecisionIn
from bastion.console.pages.common import form_time, role_choices, user_emails
from bastion.console.web import SignedIn, SignedInPost, notice, render, see_other
from bastion.core.permissions import Permission

router = APIRouter()
PAGE = "/console/access-reviews"

CREATED = notice("review-created", "Access review started: its reviewers can decide now.")
DECIDED = notice("item-decided", "Decision recorded (a revoke took effect at once).")
RECURRENCES = ("monthly", "quarterly", "semiannual", "yearly")


@router.get("/access-reviews")
def reviews_page(viewer: SignedIn) -> Response:
    db, principal, org = viewer.db, viewer.signed_in, viewer.org_id
    found = reviews.list_reviews(db, principal, org)
    may_manage = viewer.can(Permission.ACCESS_REVIEWS_MANAGE)
    return render(
        viewer, "access_reviews.html", title="Access reviews", reviews=found,
        counts=reviews.counts(db, [r.id for r in found]), may_manage=may_manage,
        emails=user_emails(viewer) if may_manage else {},
        roles=role_choices(viewer) if may_manage else [],
        scopes=reviews.SCOPES, recurrences=RECURRENCES,
    )  # fmt: skip


@router.post("/access-reviews")
def create_review(posted: SignedInPost) -> Response:
    body = AccessReviewIn.model_validate(
        {
            "name": posted.form.get("name", ""),
            "scope": posted.all("scope"),
            "reviewers": {
                "users": posted.all("reviewer_users"),
                "roles": posted.all("reviewer_roles"),
            },
            "due_at": form_time(posted.get("due_at")) or "",
            "on_due": posted.form.get("on_due", ""),
            "recurrence": posted.get("recurrence"),
        }
    )
    review = reviews.create_review(
        posted.db, posted.principal, posted.org_id, name=body.name, scope=list(body.scope),
        reviewers=body.reviewers.model_dump(), due_at=body.due_at, on_due=body.on_due,
        recurrence=body.recurrence,
    )  # fmt: skip
    return see_other(f"{PAGE}/{review.id}", CREATED)


@router.get("/access-reviews/{review}")
def review_page(review: str, viewer: SignedIn) -> Response:
    db, principal, org = viewer.db, viewer.signed_in, viewer.org_id
    found = reviews.get_review(db, principal, org, review)
    items = reviews.list_items(db, principal, org, found.id)
    reviewer = reviews.is_reviewer(found, principal)
    return render(
        viewer, "access_review.html", title=f"Access review {found.name}", review=found,
        items=items, counts=reviews.counts(db, [found.id])[found.id],
        may_decide=reviewer and found.status == "open",
        own={i.id for i in items if reviews.own_access(i, principal)},
        emails=user_emails(viewer),
    )  # fmt: skip


@router.post("/access-reviews/{review}/items/{item}/decision")
def decide(review: str, item: str, posted: SignedInPost) -> Response:
    body = DecisionIn.model_validate(
        {"decision": posted.form.get("decision", ""), "comment": posted.get("comment")}
    )
    reviews.decide(
        posted.db, posted.principal, posted.org_id, review, item,
        decision=body.decision, comment=body.comment,
    )  # fmt: skip
    return see_other(f"{PAGE}/{review}", DECIDED)
