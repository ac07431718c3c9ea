"""The data-access decision engine: may this subject do this to this source or
document?

Per organisation, an in-memory index (team memberships, users' and service accounts'
roles, active grants, custom roles, source and document ACLs, document metadata and
compiled rules) is built from the database on first use and kept while the
organisation's (auth, authz) revision pair is unchanged. Every write to any of those
tables advances a revision in its own transaction (see `bastion.identity.authcache`),
and the pair is read before each decision, so a change is seen by the very next check
on every worker and replica.

The model:
- relations `reader` < `editor` < `owner` on sources and documents, held by users,
  teams (through membership) and service accounts, each entry optionally expiring
  (checked at decision time);
- a document with `inherit` takes its source's entries plus its own; without, its own;
- actions: `read` needs reader, `edit` editor, `share` and `delete` owner, `manage`
  is only for holders of the `sources:manage` permission, who hold every relation on
  every source and document of their organisation;
- metadata rules `{effect, action, resource_type, condition}` (CEL over
  `resource.metadata`, `subject.attributes`, `subject.teams`): an allow rule grants,
  a deny rule refuses; deny beats allow, for everyone; a rule that fails to evaluate
  refuses (fail closed) and is counted.
Anything unknown (subject, action, resource type, resource, another organisation's
id) is refused.

How it stays fast (none of this changes an answer):
- each resource's effective ACL (a document's own entries, then its source's when it
  inherits) is precomputed once, its entries without expiry folded into a dict
  principal -> (highest level, first position, reason): a decision is a few lookups;
- a rule's result depends only on the parts of the context its condition reads
  (found by a conservative scan of the condition: anything unclear reads everything),
  so the outcome of a rule set is memoized per (what the rules read of the resource,
  what they read of the subject): documents with the same metadata share one entry,
  and CEL runs only for a combination not seen before in this index;
- every cache lives in the index, which is replaced whenever a revision changes; the
  only time dependence (expiring entries and grants) is captured by the number of
  expiry instants already passed (`OrgIndex.epoch`), which keys the time-dependent
  caches (resolved subjects, listed ids).
"""

from __future__ import annotations

import json
import re
import threading
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import chain
from typing import Any, NamedTuple

import cel
from sqlalchemy import String, cast, select
from sqlalchemy.orm import Session

from bastion.agents.models import Agent
from bastion.authz.conditions import compile_condition
from bastion.authz.models import AclEntry, AuthzRule, Document, Role, RoleGrant, Source
from bastion.authz.roles import BUILTIN_PERMISSIONS, BuiltinRole
from bastion.authz.rules import rule_answer
from bastion.authz.service import custom_role_permissions
from bastion.core.clock import as_utc, utcnow
from bastion.core.db import DirectReader
from bastion.core.permissions import Permission
from bastion.identity.models import ApiKey, ServiceAccount, User
from bastion.tenancy.models import Team, TeamMember

LEVELS = {"reader": 1, "editor": 2, "owner": 3}
MANAGE_LEVEL = 4
NEEDS = {"read": 1, "edit": 2, "share": 3, "delete": 3, "manage": MANAGE_LEVEL}
RESOURCE_TYPES = ("source", "document")
MEMO_MAX = 500_000  # memoized rule outcomes per rule set (and per rule) before a reset
LIST_CACHE_MAX_IDS = 2_000_000  # ids held by an index's cache of listed ids
MERGED_MAX = 16  # merged rank lists of document classes kept per index


@dataclass(frozen=True)
class Entry:
    principal: str
    level: int
    expires_at: datetime | None

    def live(self, now: datetime) -> bool:
        return self.expires_at is None or self.expires_at > now


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str
    trace: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False)
class Acl:
    """A resource's effective entries in decision order (a document's own, then its
    source's when it inherits). `best` folds the entries without expiry: principal ->
    (-level, position, the allowed decision naming it) of its first highest entry, so
    the smallest value over a subject's principals is what walking `entries` finds.
    With `timed` (some entry expires) decisions walk `entries` instead."""

    entries: tuple[Entry, ...]
    best: dict[str, tuple[int, int, Decision]]
    timed: bool


def _acl(entries: tuple[Entry, ...]) -> Acl:
    best: dict[str, tuple[int, int, Decision]] = {}
    timed = False
    for position, entry in enumerate(entries):
        if entry.expires_at is not None:
            timed = True
            continue
        held = best.get(entry.principal)
        if held is None or (-entry.level, position) < held[:2]:
            reason = f"acl:{entry.principal}"
            best[entry.principal] = (-entry.level, position, Decision(True, reason))
    return Acl(entries, best, timed)


_NO_ACL = _acl(())
_NO_METADATA: Mapping[str, Any] = {}


class Doc(NamedTuple):
    source_id: str
    inherit: bool
    metadata: Mapping[str, Any]
    acl: tuple[Entry, ...]  # its own entries
    effective: Acl  # what decides: its own entries, then its source's if it inherits
    # Without entries of its own: the source whose entries decide ("" when it does not
    # inherit: nothing does); None when it has entries of its own.
    plain: str | None = None


@dataclass(frozen=True)
class Rule:
    id: str
    effect: str
    action: str
    resource_type: str
    condition: str
    program: Any = field(repr=False, compare=False)


@dataclass(frozen=True)
class Subject:
    id: str
    kind: str  # user | service_account | team | agent
    teams: frozenset[str]
    attributes: Mapping[str, Any]
    manage_all: bool
    perms: frozenset[Permission] = frozenset()
    sources: frozenset[str] = frozenset()  # agents: the data sources connected to them
    # Its own id and its teams, for ACL lookups; and per rule set, what the rules read of
    # it (filled lazily, see `RuleSet.subject_sig`).
    keys: tuple[str, ...] = field(init=False, repr=False, compare=False)
    sigs: dict[Any, int | None] = field(init=False, repr=False, compare=False)
    outcomes: dict[Any, dict[Any, Outcome]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "keys", (self.id, *sorted(self.teams)))
        object.__setattr__(self, "sigs", {})
        object.__setattr__(self, "outcomes", {})

    @property
    def principals(self) -> frozenset[str]:
        return frozenset({self.id}) | self.teams


UNKNOWN_SUBJECT = Decision(False, "unknown_subject")
UNKNOWN_ACTION = Decision(False, "unknown_action")
UNKNOWN_RESOURCE_TYPE = Decision(False, "unknown_resource_type")
UNKNOWN_RESOURCE = Decision(False, "unknown_resource")
NO_GRANT = Decision(False, "no_grant")
MANAGES = Decision(True, "permission:sources:manage")


# --- agents ---------------------------------------------------------------------------

AGENT_ACTIONS = frozenset({"read", "use", "edit", "share", "delete"})


@dataclass(frozen=True)
class AgentFacts:
    """What decides access to an agent: its owner, visibility and teams."""

    owner: str
    visibility: str
    teams: frozenset[str]


def agent_decision(
    agent: AgentFacts,
    subject_id: str,
    subject_teams: frozenset[str],
    perms: frozenset[Permission],
    action: str,
) -> Decision:
    """`agents:manage` holders do everything to every agent of their organisation; the
    owner does everything to their own; others may `read` (with `agents:read`) and `use`
    (with `agents:use`) an agent visible to them: `org` and `public` to every member,
    `team` to members of its teams, `private` to nobody else. Editing, sharing and
    deleting are for the owner and managers only."""
    if action not in AGENT_ACTIONS:
        return Decision(False, "unknown_action")
    if Permission.AGENTS_MANAGE in perms:
        return Decision(True, "permission:agents:manage")
    if subject_id == agent.owner:
        return Decision(True, "owner")
    if agent.visibility in ("org", "public"):
        via = f"visibility:{agent.visibility}"
    elif agent.visibility == "team" and subject_teams & agent.teams:
        via = f"team:{min(subject_teams & agent.teams)}"
    else:
        return Decision(False, "not_visible")
    needed = {"read": Permission.AGENTS_READ, "use": Permission.AGENTS_USE}.get(action)
    if needed is None:
        return Decision(False, "owner_or_manager_only")
    if needed not in perms:
        return Decision(False, f"missing_permission:{needed}")
    return Decision(True, via)


# --- what a condition reads ---------------------------------------------------------------

_ROOTS = frozenset({"resource", "subject"})
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(
    r"0[xX][0-9a-fA-F]+[uU]?|\d+(?:\.\d+)?(?:[eE][+-]?\d+)?[uU]?|\.\d+(?:[eE][+-]?\d+)?"
)
_OPERATORS = ("==", "!=", "<=", ">=", "&&", "||")
_PUNCTUATION = frozenset("-+*/%!<>?:.,()[]{}")
_STRING_PREFIXES = frozenset({"r", "b", "rb", "br"})
Path = tuple[str, ...]
EVERYTHING: tuple[Path, ...] = (("resource",), ("subject",))


def _string_end(text: str, start: int, raw: bool) -> int | None:
    quote = text[start : start + 3] if text[start : start + 3] in ("'''", '"""') else text[start]
    i = start + len(quote)
    while i < len(text):
        if text[i] == "\\":
            if raw:  # raw strings and backslashes: not worth being clever about
                return None
            i += 2
            continue
        if text.startswith(quote, i):
            return i + len(quote)
        if len(quote) == 1 and text[i] in "\r\n":
            return None
        i += 1
    return None


def _tokens(text: str) -> list[str] | None:  # noqa: PLR0912 - a lexer: a branch per token
    """CEL tokens with string and number literals blanked out; None when anything is
    not plainly recognised."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in " \t\r\n\f":
            i += 1
        elif text.startswith("//", i):
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif name := _NAME.match(text, i):
            word, i = name.group(), name.end()
            if word.lower() in _STRING_PREFIXES and i < n and text[i] in "'\"":
                closed = _string_end(text, i, raw="r" in word.lower())
                if closed is None:
                    return None
                out.append("'")
                i = closed
            else:
                out.append(word)
        elif c in "'\"":
            closed = _string_end(text, i, raw=False)
            if closed is None:
                return None
            literal = text[i + 1 : closed - 1]
            plain = closed - i >= 2 and text[i + 1 : i + 3] != c * 2 and "\\" not in literal
            out.append(f"'={literal}" if plain else "'")  # a plain literal keeps its value
            i = closed
        elif number := _NUMBER.match(text, i):
            i = number.end()
            if i < n and (text[i].isalnum() or text[i] == "_"):
                return None  # a number run into a name
            out.append("0")
        elif text[i : i + 2] in _OPERATORS:
            out.append(text[i : i + 2])
            i += 2
        elif c in _PUNCTUATION:
            out.append(c)
            i += 1
        else:
            return None
    return out


def condition_reads(condition: str) -> tuple[Path, ...]:
    """The context paths a condition may read, e.g. ("resource", "metadata", "level"):
    every occurrence of `resource` or `subject` anywhere (even where it might be a field
    or a macro variable) followed by the longest chain of `.name` selections that is
    not a method call. The value at a path covers everything under it, so what is read
    through `[...]`, `.?`, a method or a macro is covered by the shorter path. One
    narrowing: where every use is `'literal' in <path>` standing alone between
    operators that bind less tightly, what is read is whether the literal is in it
    (the path, then `MEMBER` and the literal). A condition that does not scan plainly
    reads everything."""
    tokens = _tokens(condition)
    if tokens is None:
        return EVERYTHING
    uses: dict[Path, set[str | None]] = {}  # path -> its literal memberships (None: other)
    for i, token in enumerate(tokens):
        if token not in _ROOTS:
            continue
        path, j = [token], i + 1
        while (
            j + 1 < len(tokens)
            and tokens[j] == "."
            and _NAME.fullmatch(tokens[j + 1])
            and not (j + 2 < len(tokens) and tokens[j + 2] == "(")
        ):
            path.append(tokens[j + 1])
            j += 2
        literal = None
        if (
            i >= 2
            and tokens[i - 1] == "in"
            and tokens[i - 2].startswith("'=")
            and (i == 2 or tokens[i - 3] in _BEFORE_MEMBERSHIP)
            and (j == len(tokens) or tokens[j] in _AFTER_MEMBERSHIP)
        ):
            literal = tokens[i - 2][2:]
        uses.setdefault(tuple(path), set()).add(literal)
    paths: set[Path] = set()
    for used, literals in uses.items():
        if None in literals:
            paths.add(used)
        else:
            paths.update((*used, MEMBER, lit) for lit in literals if lit is not None)
    return tuple(sorted(paths))


# Tokens around `'literal' in <path>` that leave the membership standing alone: they
# bind less tightly than `in` (or delimit), so neither side is part of a larger operand.
_BEFORE_MEMBERSHIP = frozenset({"(", "&&", "||", "?", ":", ",", "[", "{"})
_AFTER_MEMBERSHIP = frozenset({")", "&&", "||", "?", ":", ",", "]", "}", "==", "!="})
MEMBER = "\x00in"


class _Unhashable(Exception):
    """A context value the memo cannot key on: evaluate directly."""


_SCALARS = (str, bool, int, type(None))


def _freeze(value: Any) -> Any:
    """A hashable value equal only for values CEL cannot tell apart (type included:
    1, 1.0 and true differ; so do 0.0 and -0.0, and map key order)."""
    kind = type(value)
    if kind in _SCALARS:
        return (kind, value)
    if kind is float:
        return (float, value.hex())
    if kind is dict:
        return (dict, tuple((_freeze(k), _freeze(v)) for k, v in value.items()))
    if kind is list or kind is tuple:
        return (list, tuple(_freeze(v) for v in value))
    raise _Unhashable


def _observe(context: Mapping[str, Any], path: Path) -> Any:
    """What CEL can see at `path` (the root's name excluded): the value, or where the
    walk stopped (an absent key, or a value that is not a map, frozen whole). For a
    membership read, whether the literal is in a list of strings (else the value)."""
    literal: str | None = None
    if len(path) >= 2 and path[-2] == MEMBER:
        path, literal = path[:-2], path[-1]
    value: Any = context
    for i, key in enumerate(path):
        if type(value) is not dict:
            return ("stuck", i, _freeze(value))
        if key not in value:
            return ("absent", i)
        value = value[key]
    if literal is not None and type(value) is list and all(type(v) is str for v in value):
        return ("member", literal in value)
    return ("at", _freeze(value))


def resource_context(
    resource_id: str, resource_type: str, metadata: Mapping[str, Any]
) -> dict[str, Any]:
    return {"id": resource_id, "type": resource_type, "metadata": dict(metadata)}


def subject_context(subject: Subject) -> dict[str, Any]:
    return {
        "id": subject.id,
        "attributes": dict(subject.attributes),
        "teams": sorted(subject.teams),
    }


_FAILED = object()  # a rule that failed to evaluate, in the per-rule memo


class Outcome(NamedTuple):
    """What a rule set does to a decision: `refuse` (the first rule, in id order, that
    fails or denies; `failed` when it failed), else `grant` (the first allow that
    matched), else nothing."""

    refuse: Decision | None
    failed: bool
    grant: Decision | None


class RuleSet:
    """The rules of one (action, resource type), in id order (for agent subjects, its
    deny rules only). Their outcome for a (subject, resource) is memoized per subject
    signature (a dict every subject with that signature points to) and resource key
    (the metadata object, or the resource id when a rule reads the id or the whole
    resource); each rule's result is memoized by signature: what it reads
    of the resource and of the subject, interned to small ints, so CEL runs only for a
    combination no rule has seen. Thread-safe: hits are plain dict reads, misses compute
    under a lock. At most `MEMO_MAX` outcomes are held (then they are all dropped), and
    as many results per rule."""

    def __init__(self, rules: Sequence[Rule], resource_type: str) -> None:
        self.rules = tuple(rules)
        self.resource_type = resource_type
        reads = [condition_reads(r.condition) for r in self.rules]
        self._resource_paths = [tuple(p[1:] for p in r if p[0] == "resource") for r in reads]
        self._subject_paths = [tuple(p[1:] for p in r if p[0] == "subject") for r in reads]
        self.per_resource = any(
            path == () or path[0] == "id" for paths in self._resource_paths for path in paths
        )
        self._lock = threading.Lock()
        self._interned: dict[Any, int] = {}
        self._parts: dict[int, tuple[int, ...]] = {}
        self._samples: dict[int, tuple[str, Mapping[str, Any]]] = {}
        # key -> (signature, the metadata): holding the object keeps its id from being
        # reused by another while this rule set lives.
        self._resource_sigs: dict[Any, tuple[int | None, Mapping[str, Any]]] = {}
        self._rule_memo: list[dict[tuple[int, int], Any]] = [{} for _ in self.rules]
        self._by_subject: dict[int, dict[Any, Outcome]] = {}
        self._remembered = 0
        self._failed = [
            Decision(False, f"rule_error:{r.id}", (f"rule {r.id} failed",)) for r in self.rules
        ]
        self._denied = [Decision(False, f"rule:{r.id}") for r in self.rules]
        self._granted = [Decision(True, f"rule:{r.id}") for r in self.rules]

    def memo_size(self) -> int:
        return self._remembered + sum(len(m) for m in self._rule_memo)

    def key(self, resource_id: str, metadata: Mapping[str, Any]) -> Any:
        return resource_id if self.per_resource else id(metadata)

    def _sig(self, kind: str, context: Mapping[str, Any], paths: list[tuple[Path, ...]]) -> int:
        """Under the lock: the interned signature of what each rule reads of `context`."""
        parts = []
        for i, rule_paths in enumerate(paths):
            seen = (kind, i, tuple(_observe(context, p) for p in rule_paths))
            parts.append(self._interned.setdefault(seen, len(self._interned)))
        whole = (kind, tuple(parts))
        sig = self._interned.setdefault(whole, len(self._interned))
        self._parts[sig] = whole[1]
        return sig

    def resource_sig(self, resource_id: str, metadata: Mapping[str, Any]) -> int | None:
        """None when the resource's values cannot be keyed on (evaluate directly)."""
        key = self.key(resource_id, metadata)
        found = self._resource_sigs.get(key)
        if found is not None:
            return found[0]
        context = {"id": resource_id, "type": self.resource_type, "metadata": metadata}
        sig: int | None
        with self._lock:
            try:
                sig = self._sig("r", context, self._resource_paths)
                self._samples.setdefault(sig, (resource_id, metadata))
            except _Unhashable:
                sig = None
            self._resource_sigs[key] = (sig, metadata)
        return sig

    def sample(self, sig: int) -> tuple[str, Mapping[str, Any]]:
        """A resource with this signature (its outcome is every such resource's)."""
        return self._samples[sig]

    def subject_sig(self, subject: Subject) -> int | None:
        sig = subject.sigs.get(self, _UNSEEN)
        if sig is not _UNSEEN:
            return sig  # type: ignore[return-value]
        with self._lock:
            try:
                sig = self._sig("s", subject_context(subject), self._subject_paths)
            except _Unhashable:
                sig = None
        subject.sigs[self] = sig
        return sig

    def outcome(self, subject: Subject, resource_id: str, metadata: Mapping[str, Any]) -> Outcome:
        """The outcome for this subject and resource: memoized, or the rules applied as
        `_apply_rules` does (in order, stopping at the first failure or deny)."""
        key = self.key(resource_id, metadata)
        memo = subject.outcomes.get(self)
        found = memo.get(key) if memo is not None else None
        if found is not None:
            return found
        resource_sig = self.resource_sig(resource_id, metadata)
        subject_sig = self.subject_sig(subject)
        with self._lock:
            if resource_sig is None or subject_sig is None:  # values we cannot key on
                return self._apply(None, None, resource_id, metadata, subject)
            # One memo per subject signature, shared by every subject that has it.
            shared = self._by_subject.get(subject_sig)
            if shared is None:
                shared = self._by_subject[subject_sig] = {}
            subject.outcomes[self] = shared
            found = shared.get(key)
            if found is None:
                found = self._apply(
                    self._parts[resource_sig],
                    self._parts[subject_sig],
                    resource_id,
                    metadata,
                    subject,
                )
                if self._remembered >= MEMO_MAX:
                    for held in self._by_subject.values():
                        held.clear()
                    self._remembered = 0
                shared[key] = found
                self._remembered += 1
        return found

    def _apply(
        self,
        resource_parts: tuple[int, ...] | None,
        subject_parts: tuple[int, ...] | None,
        resource_id: str,
        metadata: Mapping[str, Any],
        subject: Subject,
    ) -> Outcome:
        """Under the lock: each rule's result from its memo (when parts are given) or
        CEL; the context is converted once, when the first rule needs it."""
        env: Any = None
        grant: Decision | None = None
        for i, rule in enumerate(self.rules):
            memo = self._rule_memo[i]
            rule_key = (
                (resource_parts[i], subject_parts[i]) if resource_parts and subject_parts else None
            )
            matched = memo.get(rule_key, _UNSEEN) if rule_key is not None else _UNSEEN
            if matched is _UNSEEN:
                try:
                    if env is None:
                        env = cel.Context(
                            {
                                "resource": resource_context(
                                    resource_id, self.resource_type, metadata
                                ),
                                "subject": subject_context(subject),
                            }
                        )
                    matched = rule_answer(rule.program.execute(env))
                except Exception:  # a failing rule refuses, whatever the error
                    matched = _FAILED
                if rule_key is not None:
                    if len(memo) >= MEMO_MAX:
                        memo.clear()
                    memo[rule_key] = matched
            if matched is _FAILED:
                return Outcome(self._failed[i], True, None)
            if matched and rule.effect == "deny":
                return Outcome(self._denied[i], False, None)
            if matched and rule.effect == "allow" and grant is None:
                grant = self._granted[i]
        return Outcome(None, False, grant)


def _rule_sets(rules: Sequence[Rule]) -> dict[tuple[str, str, bool], RuleSet]:
    """Per (action, resource type, for an agent subject): the rules that apply."""
    grouped: dict[tuple[str, str], list[Rule]] = {}
    for rule in rules:
        grouped.setdefault((rule.action, rule.resource_type), []).append(rule)
    out: dict[tuple[str, str, bool], RuleSet] = {}
    for (action, resource_type), group in grouped.items():
        out[(action, resource_type, False)] = RuleSet(group, resource_type)
        denies = [r for r in group if r.effect == "deny"]  # rules never grant agents
        if denies:
            out[(action, resource_type, True)] = RuleSet(denies, resource_type)
    return out


_UNSEEN = object()


@dataclass
class OrgIndex:
    org_id: str
    revisions: tuple[int, ...]
    user_teams: dict[str, frozenset[str]]
    users: dict[str, tuple[str, str]]  # id -> (role, status)
    accounts: dict[str, tuple[str, str]]
    grants: dict[str, list[tuple[str, datetime]]]  # user -> [(role, expires_at)]
    custom_roles: dict[str, frozenset[Permission]]
    teams: frozenset[str]
    sources: dict[str, tuple[Entry, ...]]
    documents: dict[str, Doc]
    rules: tuple[Rule, ...]
    agents: dict[str, AgentFacts] = field(default_factory=dict)
    agent_sources: dict[str, frozenset[str]] = field(default_factory=dict)
    agent_configurers: dict[str, str] = field(default_factory=dict)  # who set connections
    # Keys without an owner that configured agents: (role, ends) where ends is when
    # the key stops (revoked or expired), if ever.
    configurer_keys: dict[str, tuple[str, datetime | None]] = field(default_factory=dict)
    source_acls: dict[str, Acl] = field(default_factory=dict)
    rule_sets: dict[tuple[str, str, bool], RuleSet] = field(default_factory=dict)
    # Every instant an ACL entry or a grant expires, sorted: how many have passed is
    # all a decision's dependence on the clock (`epoch`).
    expiries: tuple[datetime, ...] = ()
    grant_expiries: tuple[datetime, ...] = ()
    _subjects: dict[str, tuple[int, Subject]] = field(default_factory=dict, repr=False)
    _listing: _Listing | None = field(default=None, repr=False)
    _lists: OrderedDict[tuple[str, str, str, int], list[str]] = field(
        default_factory=OrderedDict, repr=False
    )
    _listed: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def size(self) -> int:
        return (
            len(self.users)
            + len(self.sources)
            + len(self.documents)
            + sum(len(d.acl) for d in self.documents.values())
            + sum(len(a) for a in self.sources.values())
        )

    def memo_size(self) -> int:
        return sum(r.memo_size() for r in self.rule_sets.values())

    def epoch(self, now: datetime) -> int:
        return bisect_right(self.expiries, now) if self.expiries else 0

    def listing(self) -> _Listing:
        if self._listing is None:
            with self._lock:
                if self._listing is None:
                    self._listing = _Listing(self)
        return self._listing

    def cached_list(self, key: tuple[str, str, str, int]) -> list[str] | None:
        with self._lock:
            found = self._lists.get(key)
            if found is not None:
                self._lists.move_to_end(key)
            return found

    def keep_list(self, key: tuple[str, str, str, int], ids: list[str]) -> None:
        with self._lock:
            if key not in self._lists:
                self._lists[key] = ids
                self._listed += len(ids)
            while self._listed > LIST_CACHE_MAX_IDS and len(self._lists) > 1:
                _, dropped = self._lists.popitem(last=False)
                self._listed -= len(dropped)

    def listed_ids(self) -> int:
        return self._listed


class _Listing:
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


def _entries(rows: Iterable[tuple[str, str, str, datetime | None]]) -> dict[str, tuple[Entry, ...]]:
    out: dict[str, list[Entry]] = {}
    for resource_id, principal, relation, expires_at in rows:
        expires = as_utc(expires_at) if expires_at else None
        out.setdefault(resource_id, []).append(Entry(principal, LEVELS[relation], expires))
    return {k: tuple(v) for k, v in out.items()}


def _configurer_keys(
    db: Session, org_id: str, configurers: Iterable[str]
) -> dict[str, tuple[str, datetime | None]]:
    """The keys of nobody's (an operator's) that configured agents: their role, and
    when they stop (revoked or expired), if ever."""
    wanted = sorted({c for c in configurers if c.startswith("key_")})
    found: dict[str, tuple[str, datetime | None]] = {}
    if wanted:
        for key_id, role, revoked, expires in db.execute(
            select(ApiKey.id, ApiKey.role, ApiKey.revoked_at, ApiKey.expires_at).where(
                ApiKey.org_id == org_id, ApiKey.id.in_(wanted)
            )
        ):
            ends = [as_utc(t) for t in (revoked, expires) if t is not None]
            found[key_id] = (role, min(ends) if ends else None)
    return found


def build_index(db: Session, org_id: str, revisions: tuple[int, ...]) -> OrgIndex:
    """The organisation's index, read from one snapshot of the database. `db` should be
    a session whose transaction has not begun: on PostgreSQL the build then runs in one
    REPEATABLE READ transaction, since under READ COMMITTED each of its dozen queries
    could see a different state (a member removed from a team, then the team granted:
    an index holding both the old membership and the new grant allowed what no state
    allowed). SQLite's read transactions are one snapshot already."""
    if db.get_bind().dialect.name == "postgresql" and not db.in_transaction():
        db.connection(execution_options={"isolation_level": "REPEATABLE READ"})
    now = utcnow()
    teams: dict[str, set[str]] = {}
    team_ids: set[str] = set()
    for team_id, user_id in db.execute(
        select(TeamMember.team_id, TeamMember.user_id).where(TeamMember.org_id == org_id)
    ):
        teams.setdefault(user_id, set()).add(team_id)
        team_ids.add(team_id)
    team_ids |= set(db.execute(select(Team.id).where(Team.org_id == org_id)).scalars())
    users = {
        u: (role, status)
        for u, role, status in db.execute(
            select(User.id, User.role, User.status).where(User.org_id == org_id)
        )
    }
    accounts = {
        a: (role, status)
        for a, role, status in db.execute(
            select(ServiceAccount.id, ServiceAccount.role, ServiceAccount.status).where(
                ServiceAccount.org_id == org_id
            )
        )
    }
    grants: dict[str, list[tuple[str, datetime]]] = {}
    for user_id, role, expires in db.execute(
        select(RoleGrant.user_id, RoleGrant.role, RoleGrant.expires_at).where(
            RoleGrant.org_id == org_id,
            RoleGrant.revoked_at.is_(None),
            RoleGrant.expires_at > now,
        )
    ):
        grants.setdefault(user_id, []).append((role, as_utc(expires)))
    custom = {
        r.id: custom_role_permissions(r)
        for r in db.execute(select(Role).where(Role.org_id == org_id)).scalars()
    }
    # Columns, not ORM objects: a hundred thousand documents build in a fraction of the
    # time. The same row order as before (ACL positions decide which entry names a grant).
    source_rows: list[Any] = []
    doc_rows: list[Any] = []
    for row in db.execute(
        select(
            AclEntry.resource_type,
            AclEntry.resource_id,
            AclEntry.principal,
            AclEntry.relation,
            AclEntry.expires_at,
        ).where(AclEntry.org_id == org_id)
    ):
        (source_rows if row[0] == "source" else doc_rows).append(row[1:])
    source_acl = _entries(source_rows)
    doc_acl = _entries(doc_rows)
    sources = {
        s: source_acl.get(s, ())
        for s in db.execute(select(Source.id).where(Source.org_id == org_id)).scalars()
    }
    source_acls = {s: _acl(entries) for s, entries in sources.items()}
    # Metadata as stored text, parsed once per distinct text: documents with equal
    # metadata share one dict (less memory, and one rule signature).
    parsed: dict[str | None, Mapping[str, Any]] = {None: _NO_METADATA}
    documents: dict[str, Doc] = {}
    for doc_id, source_id, inherit, text in db.execute(
        select(
            Document.id, Document.source_id, Document.inherit, cast(Document.doc_metadata, String)
        ).where(Document.org_id == org_id)
    ):
        metadata = parsed.get(text)
        if metadata is None:
            metadata = parsed[text] = dict(json.loads(text) or {})
        own = doc_acl.get(doc_id, ())
        inherited = sources.get(source_id, ()) if inherit else ()
        if not own:
            effective = source_acls.get(source_id, _NO_ACL) if inherit else _NO_ACL
        else:
            effective = _acl(own + inherited)
        plain = None if own else (source_id if inherit else "")
        documents[doc_id] = Doc(source_id, inherit, metadata, own, effective, plain)
    del parsed
    rules = tuple(
        Rule(r.id, r.effect, r.action, r.resource_type, r.condition, compile_condition(r.condition))
        for r in db.execute(
            select(AuthzRule).where(AuthzRule.org_id == org_id).order_by(AuthzRule.id)
        ).scalars()
    )
    agents: dict[str, AgentFacts] = {}
    agent_sources: dict[str, frozenset[str]] = {}
    agent_configurers: dict[str, str] = {}
    for agent_id, owner, visibility, agent_teams, connections, configurer in db.execute(
        select(
            Agent.id,
            Agent.owner_id,
            Agent.visibility,
            Agent.team_ids,
            Agent.connections,
            Agent.configured_by,
        ).where(Agent.org_id == org_id)
    ):
        agents[agent_id] = AgentFacts(owner, visibility, frozenset(agent_teams or ()))
        agent_sources[agent_id] = frozenset(c for c in connections or () if c in sources)
        agent_configurers[agent_id] = configurer
    configurer_keys = _configurer_keys(db, org_id, agent_configurers.values())
    grant_expiries = tuple(sorted(e for held in grants.values() for _, e in held))
    acl_expiries = [
        e.expires_at
        for entries in (*source_acl.values(), *doc_acl.values())
        for e in entries
        if e.expires_at is not None
    ]
    index = OrgIndex(
        org_id=org_id,
        revisions=revisions,
        user_teams={u: frozenset(t) for u, t in teams.items()},
        users=users,
        accounts=accounts,
        grants=grants,
        custom_roles=custom,
        teams=frozenset(team_ids),
        sources=sources,
        documents=documents,
        rules=rules,
        agents=agents,
        agent_sources=agent_sources,
        agent_configurers=agent_configurers,
        configurer_keys=configurer_keys,
        source_acls=source_acls,
        rule_sets=_rule_sets(rules),
        expiries=tuple(
            sorted(
                (
                    *grant_expiries,
                    *acl_expiries,
                    *(e for _, e in configurer_keys.values() if e is not None),
                )
            )
        ),
        grant_expiries=grant_expiries,
    )
    index._listing = _Listing(index)
    return index


# --- decisions ----------------------------------------------------------------------


def _role_permissions(index: OrgIndex, role: str) -> frozenset[Permission]:
    try:
        return BUILTIN_PERMISSIONS[BuiltinRole(role)]
    except ValueError:
        return index.custom_roles.get(role, frozenset())


def subject_of(index: OrgIndex, subject_id: str, now: datetime) -> Subject | None:
    """The subject as the engine sees it; None when unknown, inactive or foreign. Kept
    in the index while no grant of it has expired since."""
    # An agent's sources depend on its configurer's ACL entries too: every expiry counts.
    expiries = index.expiries if subject_id in index.agents else index.grant_expiries
    epoch = bisect_right(expiries, now) if expiries else 0
    cached = index._subjects.get(subject_id)
    if cached is not None and cached[0] == epoch:
        return cached[1]
    subject = _subject_of(index, subject_id, now)
    if subject is not None:
        index._subjects[subject_id] = (epoch, subject)
    return subject


def _subject_of(index: OrgIndex, subject_id: str, now: datetime) -> Subject | None:
    if subject_id in index.users:
        role, status = index.users[subject_id]
        if status != "active":
            return None
        perms = _role_permissions(index, role)
        for granted, expires in index.grants.get(subject_id, ()):
            if expires > now:
                perms = perms | _role_permissions(index, granted)
        teams = index.user_teams.get(subject_id, frozenset())
        return Subject(
            subject_id,
            "user",
            teams,
            {"role": role, "type": "user"},
            Permission.SOURCES_MANAGE in perms,
            perms,
        )
    if subject_id in index.accounts:
        role, status = index.accounts[subject_id]
        if status != "active":
            return None
        perms = _role_permissions(index, role)
        attributes = {"role": role, "type": "service_account"}
        return Subject(
            subject_id,
            "service_account",
            frozenset(),
            attributes,
            Permission.SOURCES_MANAGE in perms,
            perms,
        )
    if subject_id in index.teams:
        return Subject(subject_id, "team", frozenset(), {"type": "team"}, False)
    if subject_id in index.agents:
        return Subject(
            subject_id,
            "agent",
            frozenset(),
            {"type": "agent"},
            False,
            sources=_connected(index, subject_id, now),
        )
    return None


def _connected(index: OrgIndex, agent_id: str, now: datetime) -> frozenset[str]:
    """The sources connected to the agent that whoever configured it may still connect
    (edit the source, or hold `sources:manage`): an agent never reads more than its
    configurer could hand it, now."""
    sources = index.agent_sources.get(agent_id, frozenset())
    if not sources:
        return sources
    configurer = index.agent_configurers.get(agent_id)
    if configurer in index.configurer_keys:  # a key of nobody's: its role alone counts
        role, ends = index.configurer_keys[configurer]
        live = ends is None or ends > now
        manages = Permission.SOURCES_MANAGE in _role_permissions(index, role)
        return sources if live and manages else frozenset()
    who = _subject_of(index, configurer, now) if configurer else None
    if who is None or who.kind not in ("user", "service_account"):
        return frozenset()
    return frozenset(s for s in sources if decide(index, who, "edit", "source", s, now).allowed)


def _acl_for(index: OrgIndex, resource_type: str, resource_id: str) -> tuple[Entry, ...] | None:
    if resource_type == "source":
        return index.sources.get(resource_id)
    doc = index.documents.get(resource_id)
    if doc is None:
        return None
    return doc.effective.entries  # its own entries, then its source's if it inherits


def _metadata(index: OrgIndex, resource_type: str, resource_id: str) -> Mapping[str, Any]:
    if resource_type == "document":
        return index.documents[resource_id].metadata
    return {}


class Stats:
    """Counters an operator can read (GET /v1/orgs/{org}/authz/stats)."""

    def __init__(self) -> None:
        self.rule_errors = 0
        self.decisions = 0
        self.index_builds = 0


def _level(
    index: OrgIndex,
    subject: Subject,
    resource_type: str,
    resource_id: str,
    acl: tuple[Entry, ...],
    now: datetime,
) -> tuple[int, str]:
    """The highest live relation the subject holds, and where it comes from. An
    agent's own grants are the sources connected to it: reader on them and their
    documents (metadata rules may still deny it, never grant it more)."""
    if subject.kind == "agent":
        source = (
            resource_id if resource_type == "source" else index.documents[resource_id].source_id
        )
        if source in subject.sources:
            return LEVELS["reader"], f"connection:{source}"
        return 0, "no_grant"
    level, reason = 0, "no_grant"
    principals = subject.principals
    for entry in acl:
        if entry.principal in principals and entry.live(now) and entry.level > level:
            level, reason = entry.level, f"acl:{entry.principal}"
    return level, reason


def decide(  # noqa: PLR0912 - the hot path, kept in one frame on purpose
    index: OrgIndex,
    subject: Subject | None,
    action: str,
    resource_type: str,
    resource_id: str,
    now: datetime,
    stats: Stats | None = None,
    explain: bool = False,
) -> Decision:
    """The decision, with its trace when `explain`. Without, the same answer and reason
    from the precomputed ACLs and memoized rule outcomes (see the module doc)."""
    if stats is not None:
        stats.decisions += 1
    if subject is None:
        return UNKNOWN_SUBJECT
    if explain:
        return _explained(index, subject, action, resource_type, resource_id, now, stats)
    need = NEEDS.get(action)
    if resource_type == "document":
        if need is None:
            return UNKNOWN_ACTION
        doc = index.documents.get(resource_id)
        if doc is None:
            return UNKNOWN_RESOURCE
        acl, metadata = doc.effective, doc.metadata
    elif resource_type == "source":
        if need is None:
            return UNKNOWN_ACTION
        found = index.source_acls.get(resource_id)
        if found is None:
            return UNKNOWN_RESOURCE
        acl, metadata = found, _NO_METADATA
    elif resource_type == "agent":
        return _decide_agent(index, subject, action, resource_id)
    else:
        return UNKNOWN_ACTION if need is None else UNKNOWN_RESOURCE_TYPE
    granted: Decision | None
    if subject.manage_all:
        granted = MANAGES  # every relation: enough for every action
    elif acl.timed or subject.kind == "agent":
        granted = _granted(index, acl, subject, need, resource_type, resource_id, now)
    else:
        best = None
        held_by = acl.best.get
        for key in subject.keys:
            held = held_by(key)
            if held is not None and (best is None or held < best):
                best = held
        granted = best[2] if best is not None and -best[0] >= need else None
    rules = index.rule_sets.get((action, resource_type, subject.kind == "agent"))
    if rules is None:
        return NO_GRANT if granted is None else granted
    memo = subject.outcomes.get(rules)
    outcome = (
        memo.get(resource_id if rules.per_resource else id(metadata)) if memo is not None else None
    )
    if outcome is None:
        outcome = rules.outcome(subject, resource_id, metadata)
    if outcome.refuse is not None:
        if outcome.failed and stats is not None:
            stats.rule_errors += 1
        return outcome.refuse
    if granted is not None:
        return granted
    return NO_GRANT if outcome.grant is None else outcome.grant


def _granted(
    index: OrgIndex,
    acl: Acl,
    subject: Subject,
    need: int,
    resource_type: str,
    resource_id: str,
    now: datetime,
) -> Decision | None:
    """What `_level` grants, when it reaches `need`: the agent's connection, or the first
    live highest entry of a subject's principals."""
    if subject.manage_all:
        return MANAGES
    if subject.kind == "agent":
        source = (
            resource_id if resource_type == "source" else index.documents[resource_id].source_id
        )
        if need <= LEVELS["reader"] and source in subject.sources:
            return Decision(True, f"connection:{source}")
        return None
    if not acl.timed:
        best = None
        for key in subject.keys:
            held = acl.best.get(key)
            if held is not None and (best is None or held < best):
                best = held
        return best[2] if best is not None and -best[0] >= need else None
    level, principal = 0, ""
    keys = subject.keys
    for entry in acl.entries:
        if entry.principal in keys and entry.live(now) and entry.level > level:
            level, principal = entry.level, entry.principal
    return Decision(True, f"acl:{principal}") if level >= need else None


def _explained(
    index: OrgIndex,
    subject: Subject,
    action: str,
    resource_type: str,
    resource_id: str,
    now: datetime,
    stats: Stats | None,
) -> Decision:
    """The decision with its trace: every rule evaluated in order, nothing memoized."""
    if resource_type == "agent":
        return _decide_agent(index, subject, action, resource_id)
    if action not in NEEDS:
        return UNKNOWN_ACTION
    if resource_type not in RESOURCE_TYPES:
        return UNKNOWN_RESOURCE_TYPE
    acl = _acl_for(index, resource_type, resource_id)
    if acl is None:
        return UNKNOWN_RESOURCE
    trace: list[str] = []
    level, reason = _level(index, subject, resource_type, resource_id, acl, now)
    if subject.manage_all:
        level, reason = MANAGE_LEVEL, "permission:sources:manage"
    allowed = level >= NEEDS[action]
    trace.append(f"relation level {level} via {reason}; {action} needs {NEEDS[action]}")
    rules = [r for r in index.rules if r.action == action and r.resource_type == resource_type]
    if subject.kind == "agent":
        rules = [r for r in rules if r.effect == "deny"]
    if not rules:  # no context to build (what _apply_rules answers without rules)
        return Decision(allowed, reason if allowed else "no_grant", tuple(trace))
    context = {
        "resource": resource_context(
            resource_id, resource_type, _metadata(index, resource_type, resource_id)
        ),
        "subject": subject_context(subject),
    }
    return _apply_rules(rules, context, allowed, reason, trace, stats, True)


def _decide_agent(index: OrgIndex, subject: Subject, action: str, agent_id: str) -> Decision:
    agent = index.agents.get(agent_id)
    if agent is None:
        return Decision(False, "unknown_resource")
    if subject.kind not in ("user", "service_account"):
        return Decision(False, "not_a_person_or_account")
    return agent_decision(agent, subject.id, subject.teams, subject.perms, action)


def on_behalf(agent: Decision, user: Decision) -> Decision:
    """An agent acting for a user: allowed only when both are."""
    trace = (*(f"agent: {t}" for t in agent.trace), *(f"user: {t}" for t in user.trace))
    if not agent.allowed:
        return Decision(False, f"agent:{agent.reason}", trace)
    if not user.allowed:
        return Decision(False, f"on_behalf_of:{user.reason}", trace)
    return Decision(True, f"agent:{agent.reason}+on_behalf_of:{user.reason}", trace)


def _apply_rules(
    rules: Sequence[Rule],
    context: Mapping[str, Any],
    allowed: bool,
    reason: str,
    trace: list[str],
    stats: Stats | None,
    explain: bool,
) -> Decision:
    """Deny beats allow; a rule that fails to evaluate refuses."""
    # The context is converted to CEL values once per decision, not once per rule: the
    # conversion, not the evaluation, is most of a rule's cost.
    env: cel.Context | None = None
    for rule in rules:
        try:
            if env is None:
                env = cel.Context(dict(context))
            matched = rule_answer(rule.program.execute(env))
        except Exception:  # a failing rule refuses, whatever the error
            if stats is not None:
                stats.rule_errors += 1
            return Decision(False, f"rule_error:{rule.id}", (*trace, f"rule {rule.id} failed"))
        if explain:
            trace.append(f"rule {rule.id} ({rule.effect}) {'matched' if matched else 'no match'}")
        if matched and rule.effect == "deny":
            return Decision(False, f"rule:{rule.id}", tuple(trace))
        if matched and rule.effect == "allow" and not allowed:
            allowed, reason = True, f"rule:{rule.id}"
    return Decision(allowed, reason if allowed else "no_grant", tuple(trace))


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
        return _granted(index, doc.effective, subject, need, "document", i, now) is not None

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


def _granting_sources(listing: _Listing, subject: Subject, need: int, now: datetime) -> set[str]:
    """The sources on which the subject's principals hold a live entry reaching `need`."""
    found: set[str] = set()
    for key in subject.keys:
        for source_id, level, expires in listing.on_sources.get(key, ()):
            if level >= need and (expires is None or expires > now):
                found.add(source_id)
    return found


# --- listing documents -------------------------------------------------------------------


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
    listing: _Listing, rules: RuleSet | None, subject: Subject, stats: Stats | None
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


def _held(listing: _Listing, subject: Subject, need: int, now: datetime) -> set[int]:
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
    acl = _acl_for(index, "document", document_id) or ()
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


# --- the cache of indexes ------------------------------------------------------------

# One row, four primary-key lookups (NULL, read as 0, for a counter never bumped): about
# half the cost of a UNION of two scans on SQLite, on the path of every decision.
_REVISIONS_SQL = (
    "SELECT (SELECT revision FROM auth_revisions WHERE org_id = ?),"
    " (SELECT revision FROM auth_revisions WHERE org_id = ?),"
    " (SELECT revision FROM authz_revisions WHERE org_id = ?),"
    " (SELECT revision FROM authz_revisions WHERE org_id = ?)"
)


class Engine:
    """Per-process LRU of organisation indexes, each valid for one revision tuple."""

    def __init__(self, reader: DirectReader, max_orgs: int = 256) -> None:
        self._reader = reader
        self._indexes: OrderedDict[str, OrgIndex] = OrderedDict()
        self._max = max_orgs
        self._lock = threading.Lock()
        self._building: dict[str, threading.Lock] = {}
        self.stats = Stats()

    def __repr__(self) -> str:
        return f"Engine(orgs={len(self._indexes)}, max={self._max})"

    @property
    def local(self) -> bool:
        """Whether the revision read is a local file read (SQLite): cheap enough for the
        event loop."""
        return bool(getattr(self._reader, "local", False))

    def revisions(self, org_id: str) -> tuple[int, ...] | None:
        """The organisation's (auth, instance auth, authz, instance authz) revisions, or
        None when they cannot be read: anything cached per organisation and keyed by
        them is current exactly when they are equal."""
        try:
            (row,) = self._reader.fetchall(_REVISIONS_SQL, (org_id, "*", org_id, "*"))
        except Exception:  # unreadable: rebuild from the database
            return None
        return tuple(int(rev or 0) for rev in row)

    def cached(self, org_id: str) -> OrgIndex | None:
        """The index when it is current (one revision read), else None."""
        revisions = self.revisions(org_id)
        if revisions is None:
            return None
        with self._lock:
            cached = self._indexes.get(org_id)
            if cached is not None and cached.revisions == revisions:
                self._indexes.move_to_end(org_id)
                return cached
        return None

    def index(self, sessions: Callable[[], Session], org_id: str) -> OrgIndex:
        revisions = self.revisions(org_id)
        with self._lock:
            cached = self._indexes.get(org_id)
            if cached is not None and revisions is not None and cached.revisions == revisions:
                self._indexes.move_to_end(org_id)
                return cached
            building = self._building.setdefault(org_id, threading.Lock())
        with building:  # one build per organisation at a time; the others wait for it
            with self._lock:
                cached = self._indexes.get(org_id)
                if cached is not None and revisions is not None and cached.revisions == revisions:
                    return cached
            with sessions() as db:
                built = build_index(db, org_id, revisions or (-1,))
            self.stats.index_builds += 1
            with self._lock:
                if revisions is not None:
                    self._indexes[org_id] = built
                    self._indexes.move_to_end(org_id)
                    while len(self._indexes) > self._max:
                        evicted, _ = self._indexes.popitem(last=False)
                        self._building.pop(evicted, None)
        return built

    def memory(self) -> dict[str, int]:
        with self._lock:
            indexes = list(self._indexes.values())
        return {
            "orgs": len(indexes),
            "max_orgs": self._max,
            "entries": sum(i.size() for i in indexes),
            "memoized": sum(i.memo_size() for i in indexes),
            "listed_ids": sum(i.listed_ids() for i in indexes),
        }
