"""The engine's memoized rule outcomes against direct CEL evaluation: what a condition
reads (`condition_reads`), and, for random metadata and subjects, the same outcome
from the memo (cold and warm, shared across documents and subjects) as from evaluating
every rule on the full context (`_apply_rules`)."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.authz import engine
from bastion.authz.conditions import compile_condition
from bastion.authz.engine.model import NO_ACL, Doc, Rule, Stats, Subject
from bastion.authz.engine.reads import (
    EVERYTHING,
    MEMBER,
    condition_reads,
    resource_context,
    subject_context,
)
from bastion.authz.engine.ruleset import RuleSet, apply_rules, rule_sets
from bastion.core.clock import utcnow


def test_reads_paths_and_stops_at_methods_and_indexing() -> None:
    assert condition_reads("resource.metadata.level >= 3 && subject.attributes.role == 'x'") == (
        ("resource", "metadata", "level"),
        ("subject", "attributes", "role"),
    )
    assert condition_reads("resource.metadata.tag.startsWith('a')") == (
        ("resource", "metadata", "tag"),
    )
    assert condition_reads("resource.metadata['level'] > 1") == (("resource", "metadata"),)
    assert condition_reads("size(subject.teams) > 1") == (("subject", "teams"),)
    assert condition_reads("resource.metadata.?tag == 'a'") == (("resource", "metadata"),)


def test_strings_and_comments_are_not_reads() -> None:
    assert condition_reads("'resource.id' == resource.metadata.x // subject.id") == (
        ("resource", "metadata", "x"),
    )
    assert condition_reads('"subject" == "x"') == ()


def test_unclear_conditions_read_everything() -> None:
    assert condition_reads("resource.metadata.`odd-key` == 1") == EVERYTHING
    assert condition_reads("r'\\x' == resource.id") == EVERYTHING
    assert condition_reads("1resource == 1") == EVERYTHING


def test_literal_membership_narrows_only_when_it_stands_alone() -> None:
    member = ("subject", "teams", MEMBER, "team_a")
    assert condition_reads("'team_a' in subject.teams") == (member,)
    assert condition_reads("!('team_a' in subject.teams) && true") == (member,)
    whole = (("subject", "teams"),)
    assert condition_reads("'team_a' in subject.teams + ['x']") == whole
    assert condition_reads("x + 'team_a' in subject.teams") == whole
    assert condition_reads("'team_a' in subject.teams && size(subject.teams) > 1") == whole
    assert condition_reads("'a\\'b' in subject.teams") == whole


CONDITIONS = [
    "resource.metadata.level >= 2",
    "resource.metadata.level == 1",
    "resource.metadata.tag == 'public'",
    "resource.metadata.tag.startsWith('pub')",
    "has(resource.metadata.extra) && resource.metadata.extra.x == 1",
    "resource.metadata.missing == 1",
    "'team_a' in subject.teams",
    "!('team_b' in subject.teams) && resource.metadata.level > 0",
    "subject.attributes.role == 'member' && resource.metadata.tag != 'public'",
    "size(subject.teams) > 1 || resource.id.endsWith('7')",
    "resource.metadata.level == 2.0",
    "resource.metadata.flag == true",
    "type(resource.metadata.level) == int",
    "1.0 / resource.metadata.ratio < 0.0",
    "resource.metadata.items.exists(i, i == subject.id)",
]

scalars = st.one_of(
    st.integers(-2, 3),
    st.sampled_from([0.0, -0.0, 1.0, 2.0, 0.5]),
    st.booleans(),
    st.none(),
    st.sampled_from(["public", "pub-x", "internal", ""]),
)
metadata = st.dictionaries(
    st.sampled_from(["level", "tag", "extra", "flag", "ratio", "items"]),
    st.one_of(
        scalars,
        st.dictionaries(st.sampled_from(["x", "y"]), scalars, max_size=2),
        st.lists(st.sampled_from(["usr_1", "usr_2", "x"]), max_size=2),
    ),
    max_size=5,
)
subjects = st.builds(
    lambda i, role, teams: Subject(
        f"usr_{i}", "user", frozenset(teams), {"role": role, "type": "user"}, False
    ),
    st.integers(1, 3),
    st.sampled_from(["member", "viewer"]),
    st.sets(st.sampled_from(["team_a", "team_b", "team_c"]), max_size=3),
)


def _expected(rules: list[Rule], resource_id: str, md: dict[str, Any], subject: Subject) -> Any:
    context = {
        "resource": resource_context(resource_id, "document", md),
        "subject": subject_context(subject),
    }
    return apply_rules(rules, context, False, "no_grant", [], None, False)


@given(
    picked=st.lists(st.sampled_from(range(len(CONDITIONS))), min_size=1, max_size=4),
    effects=st.lists(st.sampled_from(["allow", "deny"]), min_size=4, max_size=4),
    docs=st.lists(metadata, min_size=1, max_size=6),
    people=st.lists(subjects, min_size=1, max_size=4),
)
@settings(max_examples=150, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))  # fmt: skip
def test_memoized_outcomes_match_direct_evaluation(
    picked: list[int], effects: list[str], docs: list[dict[str, Any]], people: list[Subject]
) -> None:
    rules = [
        Rule(f"arl_{n}", effects[n], "read", "document", CONDITIONS[c],
             compile_condition(CONDITIONS[c]))
        for n, c in enumerate(picked)
    ]  # fmt: skip
    rule_set = RuleSet(rules, "document")
    # Each document twice (the second pass hits the memo); equal metadata in distinct
    # objects and the same object under two ids.
    shared = docs[0]
    resources = [(f"doc_{n}", md) for n, md in enumerate(docs)] + [("doc_97", shared)]
    for _ in range(2):
        for subject in people:
            for resource_id, md in resources:
                want = _expected(rules, resource_id, md, subject)
                got = rule_set.outcome(subject, resource_id, md)
                if got.refuse is not None:
                    assert (got.refuse.allowed, got.refuse.reason) == (False, want.reason)
                    assert got.failed == want.reason.startswith("rule_error:")
                elif got.grant is not None:
                    assert (want.allowed, want.reason) == (True, got.grant.reason)
                else:
                    assert (want.allowed, want.reason) == (False, "no_grant")


def test_every_refusal_by_a_failing_rule_is_counted_memoized_or_not() -> None:
    rule = Rule("arl_1", "deny", "read", "document", "resource.metadata.nope == 1",
                compile_condition("resource.metadata.nope == 1"))  # fmt: skip
    index = engine.OrgIndex(
        org_id="org_1", revisions=(1,), user_teams={}, users={"usr_1": ("owner", "active")},
        accounts={}, grants={}, custom_roles={}, teams=frozenset(), sources={"src_1": ()},
        documents={"doc_1": Doc("src_1", True, {"a": 1}, (), NO_ACL)},
        rules=(rule,), source_acls={"src_1": NO_ACL},
        rule_sets=rule_sets((rule,)),
    )  # fmt: skip
    now = utcnow()
    subject = engine.subject_of(index, "usr_1", now)
    stats = Stats()
    for _ in range(3):
        decision = engine.decide(index, subject, "read", "document", "doc_1", now, stats)
        assert decision.reason == "rule_error:arl_1"
        assert decision.trace == ("rule arl_1 failed",)
    assert engine.filter_ids(index, subject, "read", "document", ["doc_1"] * 2, now, stats) == []
    assert stats.rule_errors == 5
    assert stats.decisions == 5


def test_values_cel_tells_apart_are_never_conflated() -> None:
    """1, 1.0 and true (and 0.0 and -0.0) are equal in Python but not to CEL."""
    conditions = ["type(resource.metadata.v) == int", "1.0 / resource.metadata.v < 0.0"]
    values = [1, 1.0, True, 0.0, -0.0, 0, False]
    subject = Subject("usr_1", "user", frozenset(), {"role": "member", "type": "user"}, False)
    for condition in conditions:
        rule = Rule("arl_1", "allow", "read", "document", condition,
                    compile_condition(condition))  # fmt: skip
        rule_set = RuleSet([rule], "document")
        for _ in range(2):
            for n, value in enumerate(values):
                md = {"v": value}
                want = _expected([rule], f"doc_{n}", md, subject)
                got = rule_set.outcome(subject, f"doc_{n}", md)
                assert (got.grant is not None) == want.allowed, (condition, value)
                assert got.failed == want.reason.startswith("rule_error:"), (condition, value)
