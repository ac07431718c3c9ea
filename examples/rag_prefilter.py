"""Pre-filter retrieval with Bastion's ACL tokens: a document store in SQLite (standing in
for pgvector or any vector store with metadata filters), no other service.

1. A small organisation: Ann and Bob, team `finance` (Bob), a `Finance drive` source
   its team reads, a `Wiki` source everyone in `all-staff` reads, documents (one with
   its own ACL), and a rule that denies `restricted` documents to anyone outside
   `finance-leads`.
2. Indexing: each document goes into the local store with the tokens from
   `GET /v1/orgs/{org}/documents/{doc}/acl-tokens`.
3. Querying: `POST /v1/orgs/{org}/authz/search-filter` gives the subject's tokens and the
   rules; the SQL keeps rows whose tokens intersect (the `WHERE EXISTS … IN (…)` below is
   what you would add to a pgvector `ORDER BY embedding <-> :query` query); allow and
   deny rules (CEL) are applied to the candidates' metadata.
4. The same for an agent acting for Bob (`on_behalf_of`): the document must also carry
   one of `required_tokens` (the agent's connected sources).

Every answer is checked against `POST …/authz/filter`; the exit code is 0 when they all
agree. Run it against a server (README, "First steps"):

    BASTION_API_KEY=bsk_key_… .venv/bin/python examples/rag_prefilter.py
    # or: --url http://127.0.0.1:8400 --api-key bsk_…
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import uuid
from typing import Any

import cel
import httpx

PASSWORD = "rag-demo-password"  # noqa: S105 - demo people only, never real ones
DOCS = [  # (source, title, classification, own ACL: None = inherit the source's)
    ("finance", "Q3 forecast", "restricted", None),
    ("finance", "Expense policy", "internal", None),
    ("wiki", "Onboarding guide", "public", None),
    ("wiki", "Payroll run book", "internal", ["finance"]),  # its own ACL replaces the wiki's
]


class Api:
    def __init__(self, url: str, key: str) -> None:
        self.http = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30
        )
        self.org = self.http.get("/v1/me").raise_for_status().json()["org_id"]

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self.http.post(f"/v1/orgs/{self.org}/{path}", json=body).raise_for_status().json()

    def put(self, path: str, body: dict[str, Any] | None = None) -> None:
        self.http.put(f"/v1/orgs/{self.org}/{path}", json=body).raise_for_status()

    def get(self, path: str) -> Any:
        return self.http.get(f"/v1/orgs/{self.org}/{path}").raise_for_status().json()


def build(api: Api) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:6]
    people = {}
    for name in ("ann", "bob"):
        email = f"{name}-{tag}@example.com"
        body = {"email": email, "name": name.title(), "role": "member", "password": PASSWORD}
        people[name] = api.post("users", body)["id"]
    teams = {t: api.post("teams", {"name": f"{t}-{tag}"})["id"] for t in ("finance", "all-staff")}
    leads = api.post("teams", {"name": f"finance-leads-{tag}"})["id"]
    api.put(f"teams/{teams['finance']}/members/{people['bob']}")
    for person in people.values():
        api.put(f"teams/{teams['all-staff']}/members/{person}")
    sources = {
        "finance": api.post("sources", {"name": f"Finance drive {tag}"})["id"],
        "wiki": api.post("sources", {"name": f"Wiki {tag}"})["id"],
    }
    api.put(f"sources/{sources['finance']}/acl/{teams['finance']}", {"relation": "reader"})
    api.put(f"sources/{sources['wiki']}/acl/{teams['all-staff']}", {"relation": "reader"})
    api.post(
        "authz/rules",
        {
            "effect": "deny",
            "action": "read",
            "resource_type": "document",
            "condition": f"resource.metadata.classification == 'restricted' && "
            f"!('{leads}' in subject.teams)",
        },
    )
    docs = []
    for source, title, classification, own in DOCS:
        body: dict[str, Any] = {
            "external_id": f"{title}-{tag}",
            "metadata": {"title": title, "classification": classification},
        }
        if own is not None:
            entries = [{"principal": teams[t], "relation": "reader"} for t in own]
            body["acl"] = {"inherit": False, "entries": entries}
        docs.append(api.post(f"sources/{sources[source]}/documents", body))
    agent = api.post(
        "agents", {"name": f"wiki-bot-{tag}", "visibility": "org", "connections": [sources["wiki"]]}
    )["id"]
    return {"people": people, "docs": docs, "agent": agent}


def index(api: Api, docs: list[dict[str, Any]]) -> sqlite3.Connection:
    """The local document store: one row per document, its tokens beside it."""
    store = sqlite3.connect(":memory:")
    store.execute("CREATE TABLE chunks (doc_id TEXT PRIMARY KEY, title TEXT, classification TEXT)")
    store.execute("CREATE TABLE chunk_tokens (doc_id TEXT, token TEXT)")
    store.execute("CREATE INDEX ix_tokens ON chunk_tokens (token, doc_id)")
    for doc in docs:
        md = doc["metadata"]
        store.execute(
            "INSERT INTO chunks VALUES (?, ?, ?)", (doc["id"], md["title"], md["classification"])
        )
        for token in api.get(f"documents/{doc['id']}/acl-tokens")["tokens"]:
            store.execute("INSERT INTO chunk_tokens VALUES (?, ?)", (doc["id"], token))
    return store


def _holds(
    condition: str, doc_id: str, metadata: dict[str, Any], subject: dict[str, Any]
) -> bool | None:
    """True or False; None when the rule fails or gives something else (as Bastion does,
    such a rule refuses). `resource` is what Bastion's own checks evaluate."""
    resource = {"id": doc_id, "type": "document", "metadata": metadata}
    try:
        result = cel.compile(condition).execute({"resource": resource, "subject": subject})
    except Exception:
        return None
    return result if isinstance(result, bool) else None


def _any_token(values: list[str]) -> tuple[str, list[str]]:
    """SQL: the row carries one of `values` (an empty list matches nothing). Only `?`
    placeholders are formatted in; the values travel as parameters."""
    marks = ",".join("?" * len(values)) or "NULL"
    sql = (
        f"EXISTS (SELECT 1 FROM chunk_tokens t WHERE t.doc_id = c.doc_id AND t.token IN ({marks}))"  # noqa: S608
    )
    return sql, values


def search(store: sqlite3.Connection, sf: dict[str, Any]) -> list[str]:
    """Documents the filter lets through. The token tests run in SQL (with pgvector you
    would add them to the similarity query's WHERE); CEL rules run on the candidates."""
    acl_sql, acl_args = _any_token(sf["acl_tokens"])
    # With allow rules, documents without matching tokens may pass too (`OR ?`).
    sql = f"SELECT doc_id, title, classification, {acl_sql} AS by_tokens FROM chunks c WHERE ({acl_sql} OR ?)"  # noqa: S608, E501
    args: list[Any] = [*acl_args, *acl_args, 1 if sf["allow_rules"] else 0]
    if sf.get("required_tokens") is not None:  # an agent acting for a user
        required_sql, required_args = _any_token(sf["required_tokens"])
        sql += f" AND {required_sql}"
        args += required_args
    contexts = [sf["subject"]] + ([sf["agent"]] if sf.get("agent") else [])
    kept = []
    for doc_id, title, classification, by_tokens in store.execute(sql, args):
        md = {"title": title, "classification": classification}
        allowed = bool(by_tokens) or any(
            _holds(r["condition"], doc_id, md, sf["subject"]) is True for r in sf["allow_rules"]
        )
        denied = any(
            _holds(r["condition"], doc_id, md, ctx) is not False  # an error counts as a deny
            for r in sf["deny_rules"]
            for ctx in contexts
        )
        if allowed and not denied:
            kept.append(doc_id)
    return kept


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--url", default=os.environ.get("BASTION_URL", "http://127.0.0.1:8400"))
    parser.add_argument("--api-key", default=os.environ.get("BASTION_API_KEY"))
    args = parser.parse_args()
    if not args.api_key:
        print("set BASTION_API_KEY (an admin API key) or pass --api-key", file=sys.stderr)
        return 2
    api = Api(args.url, args.api_key)
    world = build(api)
    store = index(api, world["docs"])
    titles = {d["id"]: d["metadata"]["title"] for d in world["docs"]}
    ids = sorted(titles)
    agreed = True
    asks = [(name, {"subject": person}) for name, person in world["people"].items()]
    asks.append(
        ("wiki-bot for bob", {"subject": world["agent"], "on_behalf_of": world["people"]["bob"]})
    )
    for label, who in asks:
        sf = api.post("authz/search-filter", who)
        found = sorted(search(store, sf))
        truth = api.post(
            "authz/filter",
            {**who, "action": "read", "resource_type": "document", "resource_ids": ids},
        )["allowed_ids"]
        same = found == truth
        agreed &= same
        print(
            f"{label:18} │ {', '.join(titles[d] for d in found) or '(nothing)'}"
            f" │ {'matches' if same else 'DIFFERS from'} /authz/filter"
        )
    print("all answers agree" if agreed else "answers differ")
    return 0 if agreed else 1


if __name__ == "__main__":
    sys.exit(main())
