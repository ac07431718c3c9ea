"""Moving an organisation between regions (`bastion org export` / `import --region`):
every row of it read from one region's database, written into another's in one
transaction, then deleted from the first (docs/residency.md, "Moving an organisation")."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, MetaData, Table, func, select

from bastion.core.db.base import Base
from bastion.core.db.regions import tenant_tables

EXPORT_FORMAT = "bastion-org-export/1"


def _org_tables(metadata: MetaData) -> list[tuple[Table, Any]]:
    """Every table holding rows of one organisation, in insertion order, with a function
    of (org_id) -> the WHERE clause selecting them: its organisation column, or its
    parent's (tables without one, e.g. webhook attempts under their delivery)."""
    direct = {table.name: column for table, column in tenant_tables(metadata)}
    orgs = metadata.tables["organizations"]
    # The organisation first: the residency guards refuse any row of it before.
    found: list[tuple[Table, Any]] = [(orgs, lambda org_id: orgs.c.id == org_id)]
    for table in metadata.sorted_tables:
        if table.name == "organizations":
            continue
        if table.name in direct:
            found.append((table, lambda org_id, t=table, c=direct[table.name]: t.c[c] == org_id))
        else:
            for fk in table.foreign_keys:
                parent = fk.column.table
                if parent.name in direct:
                    column = parent.c[direct[parent.name]]
                    found.append(
                        (
                            table,
                            lambda org_id, p=parent, k=fk, c=column: k.parent.in_(
                                select(k.column).where(c == org_id)
                            ),
                        )
                    )
                    break
    return found


def _encode(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$b64": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, datetime):
        return {"$dt": value.isoformat()}
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict) and len(value) == 1:
        if "$b64" in value:
            return base64.b64decode(value["$b64"])
        if "$dt" in value:
            return datetime.fromisoformat(value["$dt"])
    return value


def export_org(engine: Engine, org_id: str) -> dict[str, Any]:
    """Every row of the organisation in `engine`'s database, as one JSON-able document
    (one read transaction: a consistent snapshot)."""
    tables: dict[str, list[dict[str, Any]]] = {}
    with engine.connect() as conn:
        for table, where in _org_tables(Base.metadata):
            rows = conn.execute(select(table).where(where(org_id))).mappings().all()
            if rows:
                tables[table.name] = [{k: _encode(v) for k, v in row.items()} for row in rows]
    if "organizations" not in tables:
        raise LookupError(f"no organisation {org_id} in this database")
    return {"format": EXPORT_FORMAT, "org_id": org_id, "tables": tables}


def import_org(engine: Engine, document: Mapping[str, Any], region: str) -> int:
    """Write an `export_org` document into `engine`'s database, the organisation's region
    now `region`, in one transaction (all or nothing); returns the number of rows
    written."""
    if document.get("format") != EXPORT_FORMAT:
        raise ValueError(f"not a {EXPORT_FORMAT} document")
    tables = document["tables"]
    written = 0
    with engine.begin() as conn:
        for table, _ in _org_tables(Base.metadata):
            rows = tables.get(table.name)
            if rows:
                decoded = [{k: _decode(v) for k, v in row.items()} for row in rows]
                if table.name == "organizations":
                    decoded = [{**row, "region": region} for row in decoded]
                conn.execute(table.insert(), decoded)
                written += len(decoded)
    return written


def delete_org_rows(engine: Engine, org_id: str) -> int:
    """Delete every row of the organisation from `engine`'s database in one transaction,
    children first; returns the number deleted."""
    deleted = 0
    with engine.begin() as conn:
        for table, where in reversed(_org_tables(Base.metadata)):
            deleted += conn.execute(table.delete().where(where(org_id))).rowcount or 0
    return deleted


def count_org_rows(engine: Engine, org_id: str) -> int:
    """How many rows of the organisation `engine`'s database holds (0 after a move)."""
    total = 0
    with engine.connect() as conn:
        for table, where in _org_tables(Base.metadata):
            total += conn.execute(
                select(func.count()).select_from(table).where(where(org_id))
            ).scalar_one()
    return total
