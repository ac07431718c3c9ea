"""The authorization benchmark's peers, pycasbin and cedarpy, loaded with the same
workload as Bastion (see `bench.authz.World`) and asked the same `read` questions.

Both model exactly what the workload exercises: users in teams; an owner user and a
reader team per source, every entry granting read; documents inheriting their source's
entries (or not) plus their own entries; holders of `sources:manage` reading everything;
and the three metadata rules (a deny on restricted documents outside the leads team, an
allow on public documents, a deny on level-3 documents for members). Nothing expires in
the workload, so neither peer models expiry. Each peer is optional: when its package is
missing, `load()` returns None and the suite says so instead of failing."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.authz import World

CASBIN_MODEL = """
[request_definition]
r = sub, obj, act

[policy_definition]
p = act

[role_definition]
g = _, _

[policy_effect]
e = some(where (p.eft == allow))

[matchers]
m = r.act == p.act \
  && !(r.obj.classification == "restricted" && !g(r.sub, r.obj.leads)) \
  && !(r.obj.level >= 3 && g(r.sub, "role:member")) \
  && (r.obj.classification == "public" || g(r.sub, "manage") \
      || g(r.sub, r.obj.own) || (r.obj.inherit && g(r.sub, r.obj.source)))
"""


class CasbinObj:
    """A document as a casbin ABAC request object (casbin keeps no entity attributes,
    so the adapter looks these up per check, as Bastion looks up its index)."""

    __slots__ = ("classification", "inherit", "leads", "level", "own", "source")

    def __init__(
        self, doc: str, source: str, inherit: bool, meta: dict[str, Any], leads: str
    ) -> None:
        self.own = f"reader:{doc}"
        self.source = f"reader:{source}"
        self.inherit = inherit
        self.classification = meta["classification"]
        self.level = meta["level"]
        self.leads = leads


class CasbinPeer:
    name = "casbin"

    def __init__(self, world: World) -> None:
        import casbin

        self.version = _version("casbin")
        model = casbin.Enforcer.new_model(text=CASBIN_MODEL)
        self.enforcer = casbin.Enforcer(model)
        links: list[list[str]] = []
        for user, teams in world.members.items():
            links += [[user, team] for team in teams]
        for user, role in world.roles.items():
            links.append([user, f"role:{role}"])
            if role in ("admin", "manager"):
                links.append([user, "manage"])
        for src in world.sources:
            links.append([world.source_owner[src], f"reader:{src}"])
            links.append([world.source_reader[src], f"reader:{src}"])
        for doc, entries in world.doc_acl.items():
            links += [[principal, f"reader:{doc}"] for principal, _ in entries]
        self.enforcer.add_named_grouping_policies("g", links)
        self.enforcer.add_policy("read")
        leads = world.teams[0]
        self.objs = {
            doc: CasbinObj(doc, world.doc_source[doc], world.doc_inherit[doc], meta, leads)
            for doc, meta in world.doc_meta.items()
        }

    def check(self, user: str, doc: str) -> bool:
        return bool(self.enforcer.enforce(user, self.objs[doc], "read"))

    def filter(self, user: str, docs: Sequence[str]) -> list[str]:
        objs = self.objs
        answers = self.enforcer.batch_enforce([[user, objs[d], "read"] for d in docs])
        return [d for d, ok in zip(docs, answers, strict=True) if ok]


def _ref(kind: str, id_: str) -> dict[str, Any]:
    return {"__entity": {"type": kind, "id": id_}}


def cedar_policies(leads: str) -> str:
    return f"""
permit(principal, action == Action::"read", resource is Document)
  when {{ principal.manage || principal in resource.readers
         || (resource.inherit && principal in resource.source.readers) }};
permit(principal, action == Action::"read", resource is Document)
  when {{ resource.classification == "public" }};
forbid(principal, action == Action::"read", resource is Document)
  when {{ resource.classification == "restricted" && !(principal in Team::"{leads}") }};
forbid(principal, action == Action::"read", resource is Document)
  when {{ resource.level >= 3 && principal.role == "member" }};
"""


def cedar_entities(world: World) -> list[dict[str, Any]]:
    entities: list[dict[str, Any]] = [
        {"uid": {"type": "Team", "id": t}, "attrs": {}, "parents": []} for t in world.teams
    ]
    for user, role in world.roles.items():
        entities.append(
            {
                "uid": {"type": "User", "id": user},
                "attrs": {"role": role, "manage": role in ("admin", "manager")},
                "parents": [{"type": "Team", "id": t} for t in world.members.get(user, ())],
            }
        )
    for src in world.sources:
        readers = [_ref("User", world.source_owner[src]), _ref("Team", world.source_reader[src])]
        entities.append(
            {"uid": {"type": "Source", "id": src}, "attrs": {"readers": readers}, "parents": []}
        )
    for doc, meta in world.doc_meta.items():
        readers = [
            _ref("Team" if p.startswith("team_") else "User", p)
            for p, _ in world.doc_acl.get(doc, ())
        ]
        entities.append(
            {
                "uid": {"type": "Document", "id": doc},
                "attrs": {
                    "source": _ref("Source", world.doc_source[doc]),
                    "inherit": world.doc_inherit[doc],
                    "readers": readers,
                    "classification": meta["classification"],
                    "level": meta["level"],
                },
                "parents": [],
            }
        )
    return entities


class CedarPeer:
    name = "cedar"

    def __init__(self, world: World) -> None:
        import cedarpy

        self.version = _version("cedarpy")
        self._cedarpy = cedarpy
        self.policies = cedarpy.PolicySet.from_str(cedar_policies(world.teams[0]))
        self.entities = cedarpy.Entities.from_json_str(json.dumps(cedar_entities(world)))

    @staticmethod
    def _request(user: str, doc: str) -> dict[str, Any]:
        return {
            "principal": {"type": "User", "id": user},
            "action": {"type": "Action", "id": "read"},
            "resource": {"type": "Document", "id": doc},
            "context": {},
        }

    def check(self, user: str, doc: str) -> bool:
        result = self._cedarpy.is_authorized(self._request(user, doc), self.policies, self.entities)
        return bool(result.allowed)

    def filter(self, user: str, docs: Sequence[str]) -> list[str]:
        """`is_authorized_batch`: one call for all candidates."""
        requests = [self._request(user, d) for d in docs]
        answers = self._cedarpy.is_authorized_batch(requests, self.policies, self.entities)
        return [d for d, r in zip(docs, answers, strict=True) if r.allowed]

    def filter_partial(self, user: str, docs: Sequence[str]) -> list[str]:
        """Partial evaluation: the resource is left unknown, Cedar folds in everything
        known about the principal and returns residual policies; the residuals are then
        evaluated for each candidate (in one batch call) — the usual way to turn a
        partial answer into a filter when the candidates are ids, not a query."""
        cedarpy = self._cedarpy
        partial = cedarpy.is_authorized_partial(
            {"principal": f'User::"{user}"', "action": 'Action::"read"', "context": {}},
            self.policies,
            self.entities,
        )
        if partial.decision == cedarpy.Decision.Allow:
            return list(docs)
        if partial.decision == cedarpy.Decision.Deny:
            return []
        # cedarpy has no "re-authorize a residual with the resource bound": the residual
        # ASTs name `unknown("resource")`; as the variable `resource` they are ordinary
        # policies again, with everything about the principal already folded in.
        static = {"staticPolicies": _bind(partial.residuals), "templates": {}, "templateLinks": []}
        residuals = cedarpy.PolicySet.from_str(cedarpy.policies_from_json_str(json.dumps(static)))
        requests = [self._request(user, d) for d in docs]
        answers = cedarpy.is_authorized_batch(requests, residuals, self.entities)
        return [d for d, r in zip(docs, answers, strict=True) if r.allowed]


def _bind(node: Any) -> Any:
    if isinstance(node, dict):
        if node.get("unknown") == [{"Value": "resource"}]:
            return {"Var": "resource"}
        return {k: _bind(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_bind(v) for v in node]
    return node


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def load(kind: str, world: World) -> CasbinPeer | CedarPeer | None:
    """The peer loaded with `world`, or None (with a printed reason) when its package
    does not import."""
    try:
        if kind == "casbin":
            return CasbinPeer(world)
        return CedarPeer(world)
    except ImportError as exc:
        print(f"  {kind}: skipped, not installed ({exc}); `pip install -e '.[bench]'`")
        return None
