"""Data residency: every organisation's rows in its region's database (docs/residency.md).

With `BASTION_REGIONS` set, `BASTION_DATABASE_URL` is the global *directory*: routing
data only (organisation -> region, keyed hashes of sign-in emails, credential ids ->
organisation). Each region's database holds the whole tenant schema, but only its own
organisations; the residency guards (`install_guards`) make every table with `org_id`
reference the organisation row, so a write routed to the wrong region fails in the
database itself.

Routing happens below the call sites: the edge names the request's region once
(`CURRENT`, from the organisation in the path, the credential or the sign-in email) and
the sessions (`RoutedSession`), hot-path readers (`RoutedDirectReader`) and the group
commit (`RoutedGroupCommit`) follow it. Background workers run once per region with the
region set. Without `BASTION_REGIONS` none of this exists: one engine, today's shape.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from typing import Any, TypeVar

import structlog
from sqlalchemy import BigInteger, Column, Engine, MetaData, String, Table, inspect, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from bastion.core.db.base import NAMING, Base
from bastion.core.db.direct import AsyncDirectReader, DirectReader
from bastion.core.db.writers import WRITE_OPTION
from bastion.core.errors import BastionError
from bastion.core.groupcommit import GroupCommit, Work

T = TypeVar("T")
log = structlog.get_logger(__name__)

# The region of the work in hand: set by the request edge, a background worker's loop
# or a command; None: the first region (the home of anything not yet routed).
CURRENT: ContextVar[str | None] = ContextVar("bastion_region", default=None)

DIRECTORY = MetaData(naming_convention=NAMING)
directory_orgs = Table(
    "directory_orgs",
    DIRECTORY,
    Column("org_id", String(40), primary_key=True),
    Column("region", String(32), nullable=False),
)
# Keyed hashes (HMAC under the pepper) of normalised sign-in emails, never the email:
# the sign-in is routed to the person's region, and an email stays unique per instance.
directory_emails = Table(
    "directory_emails",
    DIRECTORY,
    Column("email_hash", String(64), primary_key=True),
    Column("org_id", String(40), nullable=False),
)
# The row id a credential carries (`key_…` of `bsk_key_…_secret`, `ses_…`, `run_…`):
# which organisation, hence region, answers for it. Never the secret or its hash.
directory_credentials = Table(
    "directory_credentials",
    DIRECTORY,
    Column("credential_id", String(40), primary_key=True),
    Column("org_id", String(40), nullable=False),
)
# The routing revision: one counter (`scope` "routing"), bumped in the directory's own
# transaction whenever an organisation's region changes (`bastion org import`). Every
# process re-reads it at least every `ROUTING_RECHECK_SECONDS` and drops its routing
# caches when it moved, as the CMK generation does for data keys.
directory_revisions = Table(
    "directory_revisions",
    DIRECTORY,
    Column("scope", String(16), primary_key=True),
    Column("revision", BigInteger, nullable=False),
)
ROUTING_SCOPE = "routing"
ROUTING_RECHECK_SECONDS = 1.0
# Everything the directory may hold, column by column (tests check the live schema).
ALLOWED_DIRECTORY_COLUMNS: Mapping[str, frozenset[str]] = {
    "directory_orgs": frozenset({"org_id", "region"}),
    "directory_emails": frozenset({"email_hash", "org_id"}),
    "directory_credentials": frozenset({"credential_id", "org_id"}),
    "directory_revisions": frozenset({"scope", "revision"}),
}

# Credential row-id prefixes and the table holding each (all carry `org_id`).
CREDENTIAL_TABLES: Mapping[str, str] = {
    "key": "api_keys",
    "ses": "sessions",
    "run": "agent_runs",
    "mfc": "mfa_challenges",
    "sct": "scim_tokens",
    "oac": "oauth_clients",
    "inv": "setup_tokens",
    "pwr": "password_resets",
}

# Tables without `org_id` whose rows belong to an organisation another way: through the
# column named (an organisation id), or through a parent row that has one.
ORG_COLUMNS: Mapping[str, str] = {"audit_heads": "chain", "audit_checkpoints": "chain"}


# The purpose of the directory's keyed email hashes (`TokenHasher.keyed`).
EMAIL_PURPOSE = "directory-email"


class RegionUnknown(LookupError):
    """A region name not in `BASTION_REGIONS`."""


class RegionUnavailable(Exception):
    """Routing could not be decided: the directory, or a region that might hold the
    answer, did not answer. The request is refused (503), never sent elsewhere."""


class RegionUnreachable(BastionError):
    """A check across regions (an email's uniqueness) could not be made: a region's
    database or the directory did not answer. Nothing was done; retry shortly."""

    status = 503
    code = "region_unavailable"
    title = "Service unavailable"

    def __init__(self) -> None:
        super().__init__("a region's database did not answer; retry shortly")
        self.retry_after = 1


def tenant_tables(metadata: MetaData | None = None) -> list[tuple[Table, str]]:
    """Every table whose rows name their organisation, with the column naming it."""
    found = []
    for table in (metadata or Base.metadata).sorted_tables:
        if table.name == "organizations":
            continue
        if "org_id" in table.c:
            found.append((table, "org_id"))
        elif table.name in ORG_COLUMNS:
            found.append((table, ORG_COLUMNS[table.name]))
    return found


def install_guards(engine: Engine) -> int:
    """Make every tenant table of a regional database reference `organizations`, so a row
    of an organisation this region does not hold is refused by the database: a foreign
    key on PostgreSQL, triggers on SQLite (which cannot add one to a table). Idempotent;
    returns the number of tables guarded. Single-region installs never run this."""
    guarded = 0
    with engine.begin() as conn:
        dialect = conn.dialect.name
        present = set(inspect(conn).get_table_names())
        for table, column in tenant_tables():
            if table.name not in present:
                continue
            name = f"residency_{table.name}"
            if dialect == "postgresql":
                exists = conn.execute(
                    text("SELECT 1 FROM pg_constraint WHERE conname = :n"), {"n": name}
                ).first()
                if not exists:
                    conn.execute(
                        text(
                            f'ALTER TABLE "{table.name}" ADD CONSTRAINT "{name}" FOREIGN KEY'
                            f' ("{column}") REFERENCES organizations (id)'
                        )
                    )
            else:
                check = (
                    f'WHEN NEW."{column}" IS NOT NULL AND NOT EXISTS (SELECT 1 FROM'  # noqa: S608
                    f' organizations WHERE id = NEW."{column}") BEGIN SELECT RAISE(ABORT,'
                    " 'FOREIGN KEY constraint failed: organisation not in this region'); END"
                )
                for when in ("INSERT", f'UPDATE OF "{column}"'):
                    suffix = "ins" if when == "INSERT" else "upd"
                    conn.execute(
                        text(
                            f'CREATE TRIGGER IF NOT EXISTS "{name}_{suffix}" BEFORE {when}'
                            f' ON "{table.name}" FOR EACH ROW {check}'
                        )
                    )
            guarded += 1
    return guarded


class Regions:
    """The directory and each region's engines, and the cached routing lookups.

    An organisation's (and a credential's) region is cached once found. It changes only
    when an operator moves the organisation (`bastion org import --region`), which bumps
    the directory's routing revision: `recheck` (due every `recheck_seconds`, called by
    the request edge) re-reads it and drops every cached lookup when it moved, so every
    process and worker routes to the new region within about a second; `forget` drops
    an entry in the process that made the change at once."""

    def __init__(
        self,
        directory: Engine,
        engines: Mapping[str, Engine],
        *,
        hasher: Callable[[str], str] | None = None,
        recheck_seconds: float = ROUTING_RECHECK_SECONDS,
    ) -> None:
        if not engines:
            raise ValueError("at least one region")
        self.directory = directory
        self.engines = dict(engines)
        self.names = tuple(engines)
        self.home = self.names[0]
        self._write = {n: e.execution_options(**{WRITE_OPTION: True}) for n, e in engines.items()}
        self._orgs: dict[str, str] = {}
        self._credentials: dict[str, str] = {}
        self._lock = threading.Lock()
        self._email_hash = hasher
        self.recheck_seconds = recheck_seconds
        self._revision: int | None = None  # the routing revision the caches are of
        self._next_check = 0.0  # monotonic time of the next routing-revision read
        self._epoch = 0  # +1 whenever the caches are dropped: a lookup read before is not kept

    def __repr__(self) -> str:
        return f"Regions({', '.join(self.names)})"

    # -- binds ----------------------------------------------------------------------
    def current(self) -> str:
        return CURRENT.get() or self.home

    def bind(self, region: str, *, write: bool = False) -> Engine:
        try:
            return self._write[region] if write else self.engines[region]
        except KeyError:
            raise RegionUnknown(region) from None

    def sessions(self, region: str, *, write: bool = False) -> sessionmaker[Session]:
        """Sessions bound to one region, whatever the context (the region's own group
        commit, its background work, export and import)."""
        return sessionmaker(bind=self.bind(region, write=write), expire_on_commit=False)

    def routed(self, *, write: bool = False) -> sessionmaker[Session]:
        """Sessions bound, at their first statement, to the context's region."""
        return sessionmaker(class_=RoutedSession, regions=self, write=write, expire_on_commit=False)

    # -- routing lookups ------------------------------------------------------------
    def region_of(self, org_id: str) -> str | None:
        """The organisation's region (cached), or None when the directory has no such
        organisation."""
        found = self._orgs.get(org_id)
        if found is not None:
            return found
        epoch = self._epoch
        with self.directory.connect() as conn:
            found = conn.execute(
                select(directory_orgs.c.region).where(directory_orgs.c.org_id == org_id)
            ).scalar()
        if found is not None and found in self.engines:
            with self._lock:
                if epoch == self._epoch:  # not read across a move's invalidation
                    self._orgs[org_id] = str(found)
            return str(found)
        return None

    def cached_region_of(self, org_id: str) -> str | None:
        return self._orgs.get(org_id)

    def cached_region_of_credential(self, credential_id: str) -> str | None:
        return self._credentials.get(credential_id)

    def region_of_credential(self, credential_id: str) -> str | None:
        """The region of the organisation a credential (its row id) belongs to: cached,
        else the directory, else asked of each region in turn (then recorded in the
        directory, so the next process reads one row). None: no region knows it."""
        found = self._credentials.get(credential_id)
        if found is not None:
            return found
        epoch = self._epoch
        with self.directory.connect() as conn:
            org_id = conn.execute(
                select(directory_credentials.c.org_id).where(
                    directory_credentials.c.credential_id == credential_id
                )
            ).scalar()
        if org_id is None:
            org_id = self._find_credential(credential_id)
            if org_id is None:
                return None
            self._record(directory_credentials, credential_id=credential_id, org_id=org_id)
        region = self.region_of(org_id)
        if region is not None:
            with self._lock:
                if epoch == self._epoch:
                    self._credentials[credential_id] = region
        return region

    def _find_credential(self, credential_id: str) -> str | None:
        table = CREDENTIAL_TABLES.get(credential_id.partition("_")[0])
        if table is None:
            return None
        sql = f'SELECT org_id FROM "{table}" WHERE id = :v'  # noqa: S608 - a fixed name
        return self._ask_regions(sql, credential_id)

    def _ask_regions(self, sql: str, value: str) -> str | None:
        """The first region's answer to a one-value lookup; RegionUnavailable when none
        answered it and a region did not answer at all (it may hold it)."""
        down = False
        for name in self.names:
            try:
                with self.engines[name].connect() as conn:
                    found = conn.execute(text(sql), {"v": value}).scalar()
            except Exception:
                down = True
                continue
            if found is not None:
                return str(found)
        if down:
            raise RegionUnavailable("a region's database did not answer")
        return None

    def region_of_email(self, email: str) -> str | None:
        """The region of the person signing in with `email` (its keyed hash in the
        directory), else asked of each region (then recorded)."""
        normalized = email.strip().lower()
        if not normalized or self._email_hash is None:
            return None
        digest = self._email_hash(normalized)
        with self.directory.connect() as conn:
            org_id = conn.execute(
                select(directory_emails.c.org_id).where(directory_emails.c.email_hash == digest)
            ).scalar()
        if org_id is None:
            sql = "SELECT org_id FROM users WHERE email_normalized = :v"
            org_id = self._ask_regions(sql, normalized)
            if org_id is not None:
                self._record(directory_emails, email_hash=digest, org_id=org_id)
        return self.region_of(str(org_id)) if org_id is not None else None

    # -- one email per instance, across regions -----------------------------------------
    def claim_email(self, email: str, org_id: str) -> bool:
        """Claim a sign-in email for a user of `org_id` being created (or given that
        email): True when it is the organisation's now, False when a user of another
        organisation, in any region, holds it. The directory's keyed hash is the claim
        (its primary key refuses a second); a claim whose user is gone or renamed (its
        organisation's region holds no such user) passes to the new owner. Raises
        RegionUnavailable (nothing claimed) when a region that may hold it is down."""
        normalized = email.strip().lower()
        if not normalized or self._email_hash is None:
            return True
        digest = self._email_hash(normalized)
        owner = self._email_owner(digest)
        if owner == org_id:
            return True
        if owner is not None and self._holds_email(owner, normalized):
            return False
        # A user created before the directory knew its email (residency turned on later).
        sql = "SELECT org_id FROM users WHERE email_normalized = :v"
        held = self._ask_regions(sql, normalized)
        if held is not None and held != org_id:
            return False
        with self.directory.begin() as conn:
            if owner is None:
                insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
                conn.execute(
                    insert(directory_emails)
                    .values(email_hash=digest, org_id=org_id)
                    .on_conflict_do_nothing()
                )
            else:  # a stale claim, taken over only as it was read (not a concurrent one)
                conn.execute(
                    directory_emails.update()
                    .where(directory_emails.c.email_hash == digest)
                    .where(directory_emails.c.org_id == owner)
                    .values(org_id=org_id)
                )
        return self._email_owner(digest) == org_id

    def _email_owner(self, digest: str) -> str | None:
        with self.directory.connect() as conn:
            found = conn.execute(
                select(directory_emails.c.org_id).where(directory_emails.c.email_hash == digest)
            ).scalar()
        return str(found) if found is not None else None

    def _holds_email(self, org_id: str, normalized: str) -> bool:
        """Whether the organisation (in its region) has a user with this email."""
        region = self.region_of(org_id)
        if region is None:
            return False  # the organisation is gone: its claims with it
        try:
            with self.engines[region].connect() as conn:
                found = conn.execute(
                    text("SELECT 1 FROM users WHERE email_normalized = :v AND org_id = :o"),
                    {"v": normalized, "o": org_id},
                ).first()
        except Exception as exc:
            raise RegionUnavailable(f"region {region} did not answer") from exc
        return found is not None

    def _record(self, table: Table, **values: str) -> None:
        with self.directory.begin() as conn:
            insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
            conn.execute(insert(table).values(**values).on_conflict_do_nothing())

    # -- the routing revision (cache invalidation across processes) -------------------
    def recheck_due(self) -> bool:
        """Whether the routing revision is due for a read (one clock read)."""
        return time.monotonic() >= self._next_check

    def recheck(self) -> bool:
        """Read the directory's routing revision (one primary-key read) and drop every
        cached routing lookup when it moved since the caches were filled; True when they
        were dropped. A directory that does not answer leaves the caches as they are
        (routing them needed the directory too) and is asked again at the next check."""
        self._next_check = time.monotonic() + self.recheck_seconds
        try:
            with self.directory.connect() as conn:
                found = conn.execute(
                    select(directory_revisions.c.revision).where(
                        directory_revisions.c.scope == ROUTING_SCOPE
                    )
                ).scalar()
        except Exception as exc:  # the directory down: routing lookups answer 503 anyway
            log.warning("routing_revision_unreadable", error=type(exc).__name__)
            return False
        current = int(found or 0)
        with self._lock:
            if self._revision == current:
                return False
            first = self._revision is None
            self._revision = current
            if first:
                return False  # filled before the first read: nothing moved since start
            self._drop_all()
        return True

    def _drop_all(self) -> None:  # under self._lock
        self._orgs.clear()
        self._credentials.clear()
        self._epoch += 1

    @staticmethod
    def _bump(conn: Any) -> None:
        """Advance the routing revision in the caller's directory transaction."""
        insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
        conn.execute(
            insert(directory_revisions)
            .values(scope=ROUTING_SCOPE, revision=1)
            .on_conflict_do_update(
                index_elements=[directory_revisions.c.scope],
                set_={"revision": directory_revisions.c.revision + 1},
            )
        )

    # -- the directory's writes ------------------------------------------------------
    def register_org(self, org_id: str, region: str) -> None:
        """Record an organisation's region (at creation, before its rows are written)."""
        if region not in self.engines:
            raise RegionUnknown(region)
        with self.directory.begin() as conn:
            conn.execute(directory_orgs.insert().values(org_id=org_id, region=region))
        with self._lock:
            self._orgs[org_id] = region

    def move_org(self, org_id: str, region: str) -> None:
        """Point the directory at the organisation's new region (import after export)."""
        if region not in self.engines:
            raise RegionUnknown(region)
        with self.directory.begin() as conn:
            changed = conn.execute(
                directory_orgs.update()
                .where(directory_orgs.c.org_id == org_id)
                .values(region=region)
            ).rowcount
            if not changed:
                conn.execute(directory_orgs.insert().values(org_id=org_id, region=region))
            self._bump(conn)  # every process drops its cached routes (`recheck`)
        self.forget(org_id)

    def unregister_if_absent(self, org_id: str) -> None:
        """Undo `register_org` when the organisation's row was never written (its
        creation failed): a directory entry never outlives the organisation's rows."""
        region = self.region_of(org_id)
        if region is not None:
            with self.engines[region].connect() as conn:
                if conn.execute(
                    text("SELECT 1 FROM organizations WHERE id = :id"), {"id": org_id}
                ).first():
                    return
        with self.directory.begin() as conn:
            conn.execute(directory_orgs.delete().where(directory_orgs.c.org_id == org_id))
            conn.execute(directory_emails.delete().where(directory_emails.c.org_id == org_id))
            conn.execute(
                directory_credentials.delete().where(directory_credentials.c.org_id == org_id)
            )
        self.forget(org_id)

    def forget(self, org_id: str) -> None:
        """Drop the cached routes of an organisation (this process; others `recheck`)."""
        with self._lock:
            self._orgs.pop(org_id, None)
            self._credentials.clear()  # rebuilt on demand: which were its is not kept
            self._epoch += 1

    def dispose(self) -> None:
        for engine in self.engines.values():
            engine.dispose()
        self.directory.dispose()


# Where a session that is not a `RoutedSession` (a command's) finds the directory.
REGIONS_INFO = "bastion.regions"


def directory_of(db: Session) -> Regions | None:
    """The routing directory behind a session: None with a single region."""
    if isinstance(db, RoutedSession):
        return db.regions
    found = db.info.get(REGIONS_INFO)
    return found if isinstance(found, Regions) else None


def claim_email(db: Session, email: str, org_id: str) -> bool:
    """`Regions.claim_email` for the session's install: True with a single region (the
    database's unique email decides alone); a region or the directory not answering is
    `RegionUnreachable` (503), never a user created unchecked."""
    regions = directory_of(db)
    if regions is None:
        return True
    try:
        return regions.claim_email(email, org_id)
    except (RegionUnavailable, OperationalError) as exc:
        raise RegionUnreachable() from exc


@contextlib.contextmanager
def in_region(region: str) -> Iterator[None]:
    """Run the block's database work in `region` (commands, workers, tests)."""
    token = CURRENT.set(region)
    try:
        yield
    finally:
        CURRENT.reset(token)


class RoutedSession(Session):
    """A session bound, at its first statement, to the context's region, and pinned to
    it for its life: a session never spans two regions."""

    def __init__(self, *, regions: Regions, write: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.regions = regions
        self._regions = regions
        self._write = write
        self._region: str | None = None

    @property
    def region(self) -> str:
        if self._region is None:
            self._region = self._regions.current()
        return self._region

    def get_bind(self, mapper: Any = None, clause: Any = None, **kw: Any) -> Any:
        if kw.get("bind") is not None:
            return kw["bind"]
        return self._regions.bind(self.region, write=self._write)


class RoutedDirectReader(DirectReader):
    """`DirectReader` of the context's region."""

    def __init__(self, readers: Mapping[str, DirectReader], regions: Regions) -> None:
        self._readers = dict(readers)
        self._regions = regions
        self._sqlite = all(reader.local for reader in self._readers.values())  # `local`
        self.size = next(iter(self._readers.values())).size

    def __repr__(self) -> str:
        return f"RoutedDirectReader({', '.join(self._readers)})"

    def fetchall(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        return self._readers[self._regions.current()].fetchall(sql, params)

    def close(self) -> None:
        for reader in self._readers.values():
            reader.close()


class RoutedAsyncDirectReader(AsyncDirectReader):
    """`AsyncDirectReader` of the context's region."""

    def __init__(self, readers: Mapping[str, AsyncDirectReader], regions: Regions) -> None:
        self._readers = dict(readers)
        self._regions = regions

    def __repr__(self) -> str:
        return f"RoutedAsyncDirectReader({', '.join(self._readers)})"

    async def aclose(self) -> None:
        for reader in self._readers.values():
            await reader.aclose()

    async def fetchall(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        return await self._readers[self._regions.current()].fetchall(sql, params)


class RoutedGroupCommit(GroupCommit):
    """One group commit (one writer thread, one batch transaction) per region; a unit
    goes to its context's region. A batch never spans two regions."""

    def __init__(self, writers: Mapping[str, GroupCommit], regions: Regions) -> None:
        self._writers = dict(writers)
        self._regions = regions

    def __repr__(self) -> str:
        return f"RoutedGroupCommit({', '.join(self._writers)})"

    @property  # the sums over the regions' writers
    def batches(self) -> int:  # type: ignore[override]
        return sum(w.batches for w in self._writers.values())

    @property
    def units(self) -> int:  # type: ignore[override]
        return sum(w.units for w in self._writers.values())

    async def run(self, work: Work[T], *, order: str = "") -> T:
        return await self._writers[self._regions.current()].run(work, order=order)

    def run_blocking(self, work: Work[T], *, order: str = "") -> T:
        return self._writers[self._regions.current()].run_blocking(work, order=order)

    def close(self, timeout: float = 10.0) -> None:
        for writer in self._writers.values():
            writer.close(timeout)
