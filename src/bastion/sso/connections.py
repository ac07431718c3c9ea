"""SSO connections: create, read, change, delete, scoped to their organisation.

Changing one is an SSO setting: `org:manage`, and a person steps up (RFC 9470). A role
a mapping hands out must exist and be within the caller's own rights (nobody hands on
what they do not hold); a team must be the organisation's. The client secret is sealed
in the vault (`bastion.secrets.sealed`) and never leaves it but for the token request.
A SAML connection gets its own SP signing key (sealed likewise) and certificate when it
is created, and its IdP metadata is checked (pasted XML) or fetched (URL) whenever it is
set (`bastion.sso.saml_sp`): unusable metadata is a 422 naming the field."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bastion.audit import service as audit
from bastion.authz import service as authz
from bastion.core.errors import InvalidInput, NotFound
from bastion.core.events import EventType
from bastion.core.ids import has_prefix, new_id
from bastion.core.pagination import Page, newest_first
from bastion.core.permissions import Permission
from bastion.core.principal import Principal
from bastion.secrets import sealed
from bastion.secrets.vault import Vault
from bastion.sso import presets, saml_sp
from bastion.sso.models import SsoConnection
from bastion.tenancy import service as tenancy

SECRET_SCOPE = "sso"  # noqa: S105 - a vault scope name, not a secret
STEP_UP_ACTION = "org.sso_settings"
# The fields a caller sets directly (the rest are derived or sealed).
PLAIN_FIELDS = (
    "name",
    "preset",
    "issuer",
    "client_id",
    "scopes",
    "idp_metadata_xml",
    "idp_metadata_url",
    "groups_attribute",
    "default_role",
    "jit",
    "email_attribute",
    "allow_idp_initiated",
)


def _find(db: Session, org_id: str, connection_id: str) -> SsoConnection:
    if not has_prefix(connection_id, "ssoc"):
        raise NotFound("SSO connection not found")
    found = db.execute(
        select(SsoConnection).where(
            SsoConnection.org_id == org_id, SsoConnection.id == connection_id
        )
    ).scalar_one_or_none()
    if found is None:
        raise NotFound("SSO connection not found")
    return found


def find_any(db: Session, connection_id: str) -> SsoConnection | None:
    """A connection by id, of any organisation (the sign-in flow names it)."""
    if not has_prefix(connection_id, "ssoc"):
        return None
    return db.get(SsoConnection, connection_id)


def of_org(db: Session, org_id: str) -> list[SsoConnection]:
    """The organisation's connections, oldest first (the first is its default)."""
    stmt = select(SsoConnection).where(SsoConnection.org_id == org_id)
    return list(db.execute(stmt.order_by(SsoConnection.id)).scalars())


def _check_roles(
    db: Session, principal: Principal, org_id: str, values: dict[str, Any]
) -> tuple[list[dict[str, str]] | None, str | None]:
    """Resolve and bound every role a mapping hands out (stored form)."""
    mapping = values.get("role_mapping")
    resolved_mapping = None
    if mapping is not None:
        resolved_mapping = []
        for i, entry in enumerate(mapping):
            role = authz.resolve_role(db, org_id, entry["role"], field=f"role_mapping.{i}.role")
            authz.ensure_can_confer(
                principal, authz.permissions_of_role(db, org_id, role), until=None
            )
            resolved_mapping.append({"group": entry["group"], "role": role})
    default = values.get("default_role")
    resolved_default = None
    if default is not None:
        resolved_default = authz.resolve_role(db, org_id, default, field="default_role")
        authz.ensure_can_confer(
            principal, authz.permissions_of_role(db, org_id, resolved_default), until=None
        )
    return resolved_mapping, resolved_default


def _check_teams(db: Session, org_id: str, mapping: list[dict[str, str]] | None) -> None:
    if not mapping:
        return
    existing = tenancy.existing_team_ids(db, org_id, [m["team_id"] for m in mapping])
    for i, entry in enumerate(mapping):
        if entry["team_id"] not in existing:
            raise InvalidInput.field(f"team_mapping.{i}.team_id", "no such team in this org")


def _fill_preset(values: dict[str, Any], tenant: str | None, current_issuer: str | None) -> None:
    preset = values.get("preset")
    if preset is None:
        return
    info = presets.PRESETS[preset]
    if values.get("issuer") is None and current_issuer is None:
        issuer = presets.issuer_for(preset, tenant)
        if issuer is None:
            raise InvalidInput.field(
                "tenant", f"the {info.name} preset needs your tenant to fill in the issuer"
            )
        values["issuer"] = issuer
    if values.get("groups_attribute") is None and info.groups_attribute is not None:
        values["groups_attribute"] = info.groups_attribute
    if values.get("scopes") is None:
        values["scopes"] = list(info.scopes)


def _refill_preset(conn: SsoConnection, values: dict[str, Any], tenant: str | None) -> None:
    """A change of preset or tenant: the issuer follows unless given; the groups claim
    and scopes only where the connection has none."""
    preset = values.get("preset") or conn.preset
    if tenant is not None and "issuer" not in values:
        if preset is None:
            raise InvalidInput.field("tenant", "a tenant fills in a preset's issuer: give preset")
        values["issuer"] = presets.issuer_for(preset, tenant)
    elif "preset" in values and "issuer" not in values:
        issuer = presets.issuer_for(values["preset"], None)
        if issuer is None:
            raise InvalidInput.field("tenant", "the preset needs your tenant to fill the issuer")
        values["issuer"] = issuer
    if preset is not None:
        info = presets.PRESETS[preset]
        keep_groups = conn.groups_attribute or "groups_attribute" in values
        if not keep_groups and info.groups_attribute is not None:
            values["groups_attribute"] = info.groups_attribute
        if not conn.scopes and "scopes" not in values:
            values["scopes"] = list(info.scopes)


def _check_complete(conn: SsoConnection) -> None:
    if conn.type == "oidc":
        if not conn.issuer:
            raise InvalidInput.field("issuer", "an OIDC connection needs its issuer (or a preset)")
        if not conn.client_id:
            raise InvalidInput.field("client_id", "an OIDC connection needs its client id")
    elif not (conn.idp_metadata_xml or conn.idp_metadata_url):
        raise InvalidInput.field(
            "idp_metadata_xml", "a SAML connection needs idp_metadata_xml or idp_metadata_url"
        )


def _seal(db: Session, vault: Vault, conn: SsoConnection, secret: str) -> None:
    if conn.client_secret_id is None:
        conn.client_secret_id = sealed.create(
            db,
            vault,
            conn.org_id,
            name=f"sso/{conn.id}",
            scope_type=SECRET_SCOPE,
            scope_id=conn.id,
            description="managed by Bastion SSO",
            value=secret.encode(),
        )
    else:
        sealed.add_version(db, vault, conn.client_secret_id, secret.encode())


def client_secret(db: Session, vault: Vault, conn: SsoConnection) -> str | None:
    """The client secret in clear, for the token request only. Raises `sealed.Unreadable`."""
    if conn.client_secret_id is None:
        return None
    return sealed.read_current(db, vault, conn.client_secret_id).decode()


def create(
    db: Session,
    vault: Vault,
    principal: Principal,
    org_id: str,
    values: dict[str, Any],
    *,
    tenant: str | None,
    client_secret_value: str | None,
    outbound: saml_sp.Outbound,
) -> SsoConnection:
    principal.require_org(org_id)
    principal.require(Permission.ORG_MANAGE)
    principal.require_recent_auth(STEP_UP_ACTION)
    values = dict(values)
    if values["type"] == "oidc":
        _fill_preset(values, tenant, None)
        values.setdefault("scopes", None)
        if values["scopes"] is None:
            values["scopes"] = list(presets.DEFAULT_SCOPES)
    else:
        values["scopes"] = []
    mapping, default = _check_roles(db, principal, org_id, values)
    _check_teams(db, org_id, values.get("team_mapping"))
    conn = SsoConnection(
        id=new_id("ssoc"),
        org_id=org_id,
        type=values["type"],
        **{k: values.get(k) for k in PLAIN_FIELDS if k not in ("default_role", "jit")},
        role_mapping=mapping or [],
        team_mapping=list(values.get("team_mapping") or []),
        default_role=default or "member",
        jit=bool(values.get("jit", True)),
    )
    if conn.scopes is None:
        conn.scopes = []
    _check_complete(conn)
    saml_sp.set_metadata(conn, values, outbound)  # before any write: a 422 leaves nothing
    db.add(conn)
    db.flush()
    if client_secret_value:
        _seal(db, vault, conn, client_secret_value)
    if conn.type == "saml":
        saml_sp.ensure_credentials(db, vault, conn)
    audit.record(
        db,
        type=EventType.SSO_CONNECTION_CREATED,
        actor=principal.actor,
        org_id=org_id,
        resource=("sso_connection", conn.id),
        metadata={
            "type": conn.type,
            "name": conn.name,
            "preset": conn.preset,
            "issuer": conn.issuer,
            "client_secret_set": conn.client_secret_id is not None,
            "idp_metadata_url": conn.idp_metadata_url,
            "allow_idp_initiated": conn.allow_idp_initiated,
        },
    )
    return conn


def get(db: Session, principal: Principal, org_id: str, connection_id: str) -> SsoConnection:
    principal.require_org(org_id)
    principal.require(Permission.ORG_READ)
    return _find(db, org_id, connection_id)


def list_page(
    db: Session, principal: Principal, org_id: str, *, limit: int, cursor: str | None
) -> Page[SsoConnection]:
    principal.require_org(org_id)
    principal.require(Permission.ORG_READ)
    stmt = select(SsoConnection).where(SsoConnection.org_id == org_id)
    return newest_first(db, stmt, SsoConnection.id, limit=limit, cursor=cursor)


def update(
    db: Session,
    vault: Vault,
    principal: Principal,
    org_id: str,
    connection_id: str,
    values: dict[str, Any],
    *,
    tenant: str | None,
    client_secret_value: str | None,
    outbound: saml_sp.Outbound,
) -> SsoConnection:
    principal.require_org(org_id)
    principal.require(Permission.ORG_MANAGE)
    conn = _find(db, org_id, connection_id)
    principal.require_recent_auth(STEP_UP_ACTION)
    values = {k: v for k, v in values.items() if v is not None}
    if conn.type == "oidc":
        _refill_preset(conn, values, tenant)
    mapping, default = _check_roles(db, principal, org_id, values)
    _check_teams(db, org_id, values.get("team_mapping"))
    changed: list[str] = []
    for name in PLAIN_FIELDS:
        if name in values and name != "default_role" and getattr(conn, name) != values[name]:
            setattr(conn, name, values[name])
            changed.append(name)
    if "idp_metadata_xml" in values:
        conn.idp_metadata_url = None
    elif "idp_metadata_url" in values:
        conn.idp_metadata_xml = None
    if mapping is not None:
        conn.role_mapping = mapping
        changed.append("role_mapping")
    if "team_mapping" in values:
        conn.team_mapping = list(values["team_mapping"])
        changed.append("team_mapping")
    if default is not None and default != conn.default_role:
        conn.default_role = default
        changed.append("default_role")
    _check_complete(conn)
    saml_sp.set_metadata(conn, values, outbound)
    if conn.type == "saml" and "idp_metadata_url" in values:
        changed.append("idp_metadata_url")  # fetched again, changed or not: a refresh
    if client_secret_value:
        _seal(db, vault, conn, client_secret_value)
        changed.append("client_secret")
    if conn.type == "saml" and saml_sp.ensure_credentials(db, vault, conn):
        changed.append("sp_certificate")
    db.flush()
    if changed:
        audit.record(
            db,
            type=EventType.SSO_CONNECTION_UPDATED,
            actor=principal.actor,
            org_id=org_id,
            resource=("sso_connection", conn.id),
            metadata={"changed": sorted(set(changed))},
        )
    return conn


def delete(db: Session, principal: Principal, org_id: str, connection_id: str) -> None:
    principal.require_org(org_id)
    principal.require(Permission.ORG_MANAGE)
    conn = _find(db, org_id, connection_id)
    principal.require_recent_auth(STEP_UP_ACTION)
    secret_ids = (conn.client_secret_id, conn.sp_key_secret_id)
    db.delete(conn)
    db.flush()
    sealed.destroy(db, *secret_ids)
    audit.record(
        db,
        type=EventType.SSO_CONNECTION_DELETED,
        actor=principal.actor,
        org_id=org_id,
        resource=("sso_connection", connection_id),
        metadata={"type": conn.type, "name": conn.name},
    )
