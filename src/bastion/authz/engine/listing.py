"""Many documents at once: filtering a list of ids, listing every document a subject
may act on, and the tokens a search index filters by.

Each gives exactly the ids `decide.decide` allows, found without one decision per
document: `Listing` (built with the index) inverts the ACLs (who holds what on which
source and on which document) and groups documents into classes of equal metadata, so
a rule set's outcome is computed once per class, and a document without entries of its
own is a set lookup.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from datetime import datetime
from itertools import chain
from typing import TYPE_CHECKING, Any

from bastion.authz.engine.decide import acl_for, acl_grant, decide
from bastion.authz.engine.model import LEVELS, NEEDS, Doc, Stats, Subject
from bastion.authz.engine.ruleset import Outcome, RuleSet

if TYPE_CHECKING:
    from bastion.authz.engine.index import OrgIndex

MERGED_MAX = 16  # merged rank lists of document classes kept per index


class Listing:
    """What listing documents needs, built with the index: document ids in order, each
    one's class (documents with the same metadata object), and inverted ACLs (who holds
    what on which source, and on which document)."""

    def __init__(self, index: OrgIndex) -> None:
        self.order = sorted(index.documents)
        self.inheriting: dict[str, list[int]] = {}
        self.of_source: dict[str, list[int]] = {}
        self.on_documents: dict[str, list[tuple[int, int, datetime | None]]] = {}
        self.class_of: list[int] = []
        self.classes: list[tuple[str, Mapping[str, Any]]] = []  # (a document, its metadata)
        self.class_ranks: list[list[int]] = []
        class_by_metadata: dict[int, int] = {}
        documents = index.documents
        for r, doc_id in enumerate(self.order):
            doc = documents[doc_id]
            self.of_source.setdefault(doc.source_id, []).append(r)
            if doc.inherit:
                self.inheriting.setdefault(doc.source_id, []).append(r)
            for e in doc.acl:
                self.on_documents.setdefault(e.principal, []).append((r, e.level, e.expires_at))
            c = class_by_metadata.get(id(doc.metadata))
            if c is None:
                c = class_by_metadata[id(doc.metadata)] = len(self.classes)
                self.classes.append((doc_id, doc.metadata))
                self.class_ranks.append([])
            self.class_of.append(c)
            self.class_ranks[c].append(r)
        self._merged: OrderedDict[tuple[int, ...], list[int]] = OrderedDict()
        self._lock = threading.Lock()
        self.on_sources: dict[str, list[tuple[str, int, datetime | None]]] = {}
        for source_id, entries in index.sources.items():
            for e in entries:
                self.on_sources.setdefault(e.principal, []).append(
                    (source_id, e.level, e.expires_at)
                )

    def ranks_of(self, classes: tuple[int, ...]) -> list[int]:
        """The ranks of the documents of these classes, in order; the last few such
        merges are kept (subjects with the same rule outcomes share one)."""
        key = tuple(sorted(classes))
        with self._lock:
            found = self._merged.get(key)
            if found is not None:
                self._merged.move_to_end(key)
                return found
        found = sorted(chain.from_iterable(map(self.class_ranks.__getitem__, key)))
        with self._lock:
            self._merged[key] = found
            while len(self._merged) > MERGED_MAX:
                self._merged.popitem(last=False)
        return found


_REFUSED, _FAILED_RULE, _TO_ACL, _RULE_ALLOWS = 0, 1, 2, 3


def filter_ids(  # noqa: PLR0912 - a tight loop, kept in one frame on purpose
    index: OrgIndex,
    subject: Subject | None,
    action: str,
    resource_type: str,
    ids: Sequence[str],
    now: datetime,
    stats: Stats | None = None,
) -> list[str]:
    """The ids `decide` allows, in input order. For documents (and a person, account or
    team) one tight loop: the sources whose entries grant the subject are found once,
    the rule outcome once per distinct metadata, and a document without entries of its
    own is a set lookup."""
    need = NEEDS.get(action)
    rules = index.rule_sets.get((action, "document", False))
    if (
        subject is None
        or need is None
        or resource_type != "document"
        or subject.kind == "agent"
        or (rules is not None and rules.per_resource)
    ):
        return [
            i for i in ids if decide(index, subject, action, resource_type, i, now, stats).allowed
        ]
    if stats is not None:
        stats.decisions += len(ids)
    get = index.documents.get
    manage_all = subject.manage_all
    granting = _granting_sources(index.listing(), subject, need, now)
    allowed: list[str] = []

    def _acl_grants(doc: Doc, i: str) -> bool:
        return acl_grant(index, doc.effective, subject, need, "document", i, now) is not None

    if rules is None:
        for i in ids:
            doc = get(i)
            if doc is not None and (
                manage_all
                or (doc.plain in granting if doc.plain is not None else _acl_grants(doc, i))
            ):
                allowed.append(i)
        return allowed
    verdicts: dict[int, int] = {}  # id(metadata) -> what the rules do
    failures = 0
    for i in ids:
        doc = get(i)
        if doc is None:
            continue
        verdict = verdicts.get(id(doc.metadata))
        if verdict is None:
            verdict = _verdict(rules.outcome(subject, i, doc.metadata))
            verdicts[id(doc.metadata)] = verdict
        if verdict == _TO_ACL:
            plain = doc.plain
            if manage_all or (plain in granting if plain is not None else _acl_grants(doc, i)):
                allowed.append(i)
        elif verdict == _RULE_ALLOWS:
            allowed.append(i)
        elif verdict == _FAILED_RULE:
            failures += 1
    if failures and stats is not None:
        stats.rule_errors += failures
    return allowed


def _verdict(outcome: Outcome) -> int:
    if outcome.refuse is not None:
        return _FAILED_RULE if outcome.failed else _REFUSED
    return _TO_ACL if outcome.grant is None else _RULE_ALLOWS


def _granting_sources(listing: Listing, subject: Subject, need: int, now: datetime) -> set[str]:
    """The sources on which the subject's principals hold a live entry reaching `need`."""
    found: set[str] = set()
    for key in subject.keys:
        for source_id, level, expires in listing.on_sources.get(key, ()):
            if level >= need and (expires is None or expires > now):
                found.add(source_id)
    return found


def list_documents(
    index: OrgIndex, subject: Subject, action: str, now: datetime, stats: Stats | None = None
) -> list[str]:
    """Every document id the subject may act on, in order: exactly the ids for which
    `decide` allows, found from the inverted ACLs and the rule outcome of each distinct
    metadata instead of one decision per document. Kept in the index per (subject,
    action, epoch): the list returned is the cached one, not to be changed. Counted as
    one decision per document of the organisation, and one rule error per document a
    failing rule refuses, when computed."""
    key = (subject.id, subject.kind, action, index.epoch(now))
    found = index.cached_list(key)
    if found is None:
        found = _list_documents(index, subject, action, now, stats)
        index.keep_list(key, found)
    return found


def _list_documents(
    index: OrgIndex, subject: Subject, action: str, now: datetime, stats: Stats | None
) -> list[str]:
    listing = index.listing()
    need = NEEDS.get(action)
    rules = index.rule_sets.get((action, "document", subject.kind == "agent"))
    if need is None or (rules is not None and rules.per_resource):
        return [
            d
            for d in listing.order
            if decide(index, subject, action, "document", d, now, stats).allowed
        ]
    if stats is not None:
        stats.decisions += len(listing.order)
    granting, neutral = _verdicts(listing, rules, subject, stats)
    if subject.manage_all:
        if all(neutral):
            return list(listing.order)
        ranks = listing.ranks_of((*(c for c, ok in enumerate(neutral) if ok), *granting))
    else:
        held = _held(listing, subject, need, now)
        class_of = listing.class_of
        extra = sorted(r for r in held if neutral[class_of[r]])
        ranks = listing.ranks_of(tuple(granting))
        if extra:
            ranks = [*ranks, *extra]
            ranks.sort()  # two sorted runs: one linear merge
    return list(map(listing.order.__getitem__, ranks))


def _verdicts(
    listing: Listing, rules: RuleSet | None, subject: Subject, stats: Stats | None
) -> tuple[list[int], list[bool]]:
    """Per class of documents (equal metadata): the classes a rule allows whatever the
    ACL, and whether each class is left to the ACL (neither refused nor allowed by a
    rule)."""
    granting: list[int] = []
    neutral = [rules is None] * len(listing.classes)
    if rules is None:
        return granting, neutral
    for c, (sample, metadata) in enumerate(listing.classes):
        outcome = rules.outcome(subject, sample, metadata)
        if outcome.refuse is not None:
            if outcome.failed and stats is not None:
                stats.rule_errors += len(listing.class_ranks[c])
        elif outcome.grant is not None and subject.kind != "agent":
            granting.append(c)
        else:
            neutral[c] = True
    return granting, neutral


def _held(listing: Listing, subject: Subject, need: int, now: datetime) -> set[int]:
    """The ranks of the documents the subject's ACL entries (or an agent's connections)
    reach `need` on."""
    held: set[int] = set()
    if subject.kind == "agent":
        if need <= LEVELS["reader"]:
            for source_id in subject.sources:
                held.update(listing.of_source.get(source_id, ()))
        return held
    for source_id in _granting_sources(listing, subject, need, now):
        held.update(listing.inheriting.get(source_id, ()))
    for key in subject.keys:
        for rank, level, expires in listing.on_documents.get(key, ()):
            if level >= need and (expires is None or expires > now):
                held.add(rank)
    return held


def acl_tokens(
    index: OrgIndex, document_id: str, now: datetime
) -> tuple[list[str], datetime | None]:
    """Tokens to index with a document (principals that may read it now, plus the
    org's managers) and when they next change (the earliest expiry), or None."""
    acl = acl_for(index, "document", document_id) or ()
    live = [e for e in acl if e.live(now) and e.level >= NEEDS["read"]]
    doc = index.documents.get(document_id)
    extra = {f"manage:{index.org_id}"} | ({f"s:{doc.source_id}"} if doc else set())
    tokens = sorted({_token(e.principal) for e in live} | extra)
    expiries = [e.expires_at for e in live if e.expires_at is not None]
    return tokens, min(expiries) if expiries else None


def subject_tokens(index: OrgIndex, subject: Subject) -> list[str]:
    if subject.kind == "agent":  # an agent reads the documents of its connected sources
        return sorted(f"s:{source}" for source in subject.sources)
    tokens = {_token(p) for p in subject.principals}
    if subject.manage_all:
        tokens.add(f"manage:{index.org_id}")
    return sorted(tokens)


def _token(principal: str) -> str:
    return f"p:{principal}"
