"""What SCIM Users and Groups share: the schema URNs, one request's context (`Call`),
ETags and `meta`, the stored attributes the client sent (`scim_resources`), filters and
pages, and the PATCH body's operations."""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bastion.core.clock import as_utc, utcnow
from bastion.core.context import Actor
from bastion.core.crypto import sha256_hex
from bastion.core.principal import Principal
from bastion.scim import errors
from bastion.scim.filter import InvalidFilter, Node, matches, parse_filter
from bastion.scim.models import ScimResource

USER_URN = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_URN = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE_URN = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
LIST_URN = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
PATCH_URN = "urn:ietf:params:scim:api:messages:2.0:PatchOp"

USER_EXTENSIONS = frozenset({ENTERPRISE_URN.lower()})
MAX_COUNT = 200  # ServiceProviderConfig filter.maxResults
MAX_JSON_DEPTH = 8


@dataclass(frozen=True)
class Call:
    """One SCIM request: its database session, the token's principal, the absolute base
    URL of `/scim/v2` (for `meta.location`)."""

    db: Session
    principal: Principal
    base_url: str

    @property
    def org_id(self) -> str:
        return self.principal.org_id

    @property
    def actor(self) -> Actor:
        return self.principal.actor


def scim_time(value: datetime) -> str:
    return as_utc(value).strftime("%Y-%m-%dT%H:%M:%SZ")


def etag_of(doc: dict[str, Any]) -> str:
    """A weak ETag over the resource's representation (without its `meta`)."""
    body = {k: v for k, v in doc.items() if k != "meta"}
    digest = sha256_hex(json.dumps(body, sort_keys=True, separators=(",", ":"), default=str))
    return f'W/"{digest[:32]}"'


def finish(doc: dict[str, Any]) -> dict[str, Any]:
    doc["meta"]["version"] = etag_of(doc)
    return doc


def check_if_match(doc: dict[str, Any], if_match: str | None) -> None:
    if if_match is None:
        return
    wanted = {t.strip() for t in if_match.split(",")}
    current = doc["meta"]["version"]
    strip = current.removeprefix("W/")
    if "*" in wanted or current in wanted or strip in wanted:
        return
    raise errors.precondition_failed()


def depth(value: Any, level: int = 0) -> int:
    if level > MAX_JSON_DEPTH:
        return level
    if isinstance(value, dict):
        return max((depth(v, level + 1) for v in value.values()), default=level)
    if isinstance(value, list):
        return max((depth(v, level + 1) for v in value), default=level)
    return level


def clean_text(value: str, limit: int = 200) -> str:
    kept = "".join(c for c in value if unicodedata.category(c) not in ("Cc", "Cf"))
    return kept.strip()[:limit]


def stored_links(db: Session, org_id: str, kind: str) -> dict[str, ScimResource]:
    rows = db.execute(
        select(ScimResource).where(
            ScimResource.org_id == org_id, ScimResource.resource_type == kind
        )
    ).scalars()
    return {r.resource_id: r for r in rows}


def stored_link(db: Session, org_id: str, resource_id: str) -> ScimResource | None:
    row = db.get(ScimResource, resource_id)
    return row if row is not None and row.org_id == org_id else None


def store_link(
    db: Session, org_id: str, kind: str, resource_id: str, attributes: dict[str, Any]
) -> bool:
    """Keep the client's attributes; True when they changed."""
    external = attributes.get("externalId")
    user_name = attributes.get("userName")
    user_name = user_name.strip().lower() if isinstance(user_name, str) else None
    row = stored_link(db, org_id, resource_id)
    now = utcnow()
    if row is None:
        db.add(
            ScimResource(
                resource_id=resource_id,
                org_id=org_id,
                resource_type=kind,
                external_id=external,
                user_name=user_name,
                attributes=attributes,
                created_at=now,
                updated_at=now,
            )
        )
        db.flush()
        return True
    if row.attributes == attributes:
        return False
    row.attributes, row.external_id, row.updated_at = attributes, external, now
    row.user_name = user_name
    db.flush()
    return True


def parsed_filter(filter_text: str | None, core_urn: str) -> Node | None:
    if filter_text is None:
        return None
    try:
        return parse_filter(filter_text, core_urn)
    except InvalidFilter as exc:
        raise errors.invalid_filter(f"filter {exc}") from None


def page(
    docs: list[dict[str, Any]], node: Node | None, start_index: int | None, count: int | None
) -> dict[str, Any]:
    if node is not None:
        docs = [d for d in docs if matches(node, d)]
    start = max(1, start_index or 1)
    size = MAX_COUNT if count is None else max(0, min(count, MAX_COUNT))
    window = docs[start - 1 : start - 1 + size]
    return {
        "schemas": [LIST_URN],
        "totalResults": len(docs),
        "startIndex": start,
        "itemsPerPage": len(window),
        "Resources": window,
    }


def patch_operations(body: Any) -> Any:
    if not isinstance(body, dict):
        raise errors.invalid_syntax("the body must be a JSON object")
    schemas = body.get("schemas")
    if not isinstance(schemas, list) or PATCH_URN not in schemas:
        raise errors.invalid_syntax(f"schemas must include {PATCH_URN}")
    for key, value in body.items():
        if key.lower() == "operations":
            return value
    raise errors.invalid_syntax("Operations is required")
