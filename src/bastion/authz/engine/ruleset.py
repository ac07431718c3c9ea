"""Metadata rules as the engine applies them: grouped per (action, resource type, for
an agent), evaluated in id order, deny beating allow, a failing rule refusing.

`RuleSet.outcome` is the fast path: a rule set's outcome for a (subject, resource) is
memoized per what its rules read of each (see `reads`), so documents with equal
metadata share one entry and CEL runs only for a combination not seen before in this
index. `apply_rules` is the direct evaluation (every rule, nothing memoized) behind
explained decisions; the property test in tests/authz/test_engine_memo.py holds the
two to the same answers.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import cel

from bastion.authz.engine.model import Decision, Rule, Stats, Subject
from bastion.authz.engine.reads import (
    Path,
    Unhashable,
    condition_reads,
    observe,
    resource_context,
    subject_context,
)
from bastion.authz.rules import rule_answer

MEMO_MAX = 500_000  # memoized rule outcomes per rule set (and per rule) before a reset
UNSEEN = object()  # not memoized yet
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
            seen = (kind, i, tuple(observe(context, p) for p in rule_paths))
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
            except Unhashable:
                sig = None
            self._resource_sigs[key] = (sig, metadata)
        return sig

    def sample(self, sig: int) -> tuple[str, Mapping[str, Any]]:
        """A resource with this signature (its outcome is every such resource's)."""
        return self._samples[sig]

    def subject_sig(self, subject: Subject) -> int | None:
        sig = subject.sigs.get(self, UNSEEN)
        if sig is not UNSEEN:
            return sig  # type: ignore[return-value]
        with self._lock:
            try:
                sig = self._sig("s", subject_context(subject), self._subject_paths)
            except Unhashable:
                sig = None
        subject.sigs[self] = sig
        return sig

    def outcome(self, subject: Subject, resource_id: str, metadata: Mapping[str, Any]) -> Outcome:
        """The outcome for this subject and resource: memoized, or the rules applied as
        `apply_rules` does (in order, stopping at the first failure or deny)."""
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
            matched = memo.get(rule_key, UNSEEN) if rule_key is not None else UNSEEN
            if matched is UNSEEN:
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


def rule_sets(rules: Sequence[Rule]) -> dict[tuple[str, str, bool], RuleSet]:
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


def apply_rules(
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
