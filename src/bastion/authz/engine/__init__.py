"""The data-access decision engine: may this subject do this to this source, document
or agent?

Per organisation, an in-memory index (team memberships, users' and service accounts'
roles, active grants, custom roles, source and document ACLs, document metadata,
compiled rules and agents) is built from the database on first use and kept while the
organisation's (auth, authz) revisions are unchanged, so a change is seen by the very
next check on every worker and replica.

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
  refuses (fail closed) and is counted;
- an agent reads the sources connected to it that whoever configured it may still
  connect; rules may deny it, never grant it; who may see, use or change an agent is
  the agents domain's rule (`bastion.agents.visibility`).
Anything unknown (subject, action, resource type, resource, another organisation's
id) is refused; so is whatever needs facts from a domain that registered no provider
(`bastion.authz.facts`).

How it stays fast (none of this changes an answer):
- each resource's effective ACL is precomputed once, its entries without expiry folded
  into a dict principal -> (highest level, first position, reason): a decision is a
  few lookups;
- a rule's result depends only on the parts of the context its condition reads, so
  the outcome of a rule set is memoized per (what the rules read of the resource, what
  they read of the subject): documents with the same metadata share one entry, and
  CEL runs only for a combination not seen before in this index;
- every cache lives in the index, which is replaced whenever a revision changes; the
  only time dependence (expiring entries and grants) is captured by the number of
  expiry instants already passed (`OrgIndex.epoch`), which keys the time-dependent
  caches (resolved subjects, listed ids).

The modules, one concern each: `model` (the values), `reads` (what a condition reads,
and its context), `ruleset` (rules applied and memoized), `index` (building an
organisation's index), `decide` (one decision), `listing` (filtering and listing many
documents, search tokens), `cache` (the indexes kept per revision). What the rest of
the code uses is re-exported here; the modules are the engine's own.
"""

from bastion.authz.engine.cache import Engine
from bastion.authz.engine.decide import decide, on_behalf, subject_of
from bastion.authz.engine.index import OrgIndex, build_index
from bastion.authz.engine.listing import acl_tokens, filter_ids, list_documents, subject_tokens
from bastion.authz.engine.model import LEVELS, MANAGES, Decision, Stats, Subject

__all__ = [
    "LEVELS",
    "MANAGES",
    "Decision",
    "Engine",
    "OrgIndex",
    "Stats",
    "Subject",
    "acl_tokens",
    "build_index",
    "decide",
    "filter_ids",
    "list_documents",
    "on_behalf",
    "subject_of",
    "subject_tokens",
]
