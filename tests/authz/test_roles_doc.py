"""docs/roles.md documents the built-in role matrix; this keeps the two equal."""

from __future__ import annotations

import itertools
from pathlib import Path

from bastion.authz.roles import BUILTIN_PERMISSIONS, BuiltinRole
from bastion.core.permissions import ALL_PERMISSIONS, Permission

DOC = Path(__file__).resolve().parents[2] / "docs" / "roles.md"
ORDER = [BuiltinRole.VIEWER, BuiltinRole.MEMBER, BuiltinRole.MANAGER, BuiltinRole.ADMIN]


def documented_matrix() -> dict[str, set[str]]:
    roles: dict[str, set[str]] = {r.value: set() for r in ORDER}
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        # | `permission` | viewer | member | manager | admin | meaning |
        if len(cells) != len(ORDER) + 2 or not cells[0].startswith("`"):
            continue
        permission = cells[0].strip("`")
        for role, cell in zip(ORDER, cells[1 : len(ORDER) + 1], strict=True):
            if cell == "✓":
                roles[role.value].add(permission)
    return roles


def test_doc_matches_builtin_roles() -> None:
    documented = documented_matrix()
    for role in ORDER:
        assert documented[role.value] == {str(p) for p in BUILTIN_PERMISSIONS[role]}, role


def test_roles_are_nested_and_admin_has_everything() -> None:
    for lower, higher in itertools.pairwise(ORDER):
        assert BUILTIN_PERMISSIONS[lower] < BUILTIN_PERMISSIONS[higher]
    assert BUILTIN_PERMISSIONS[BuiltinRole.ADMIN] == ALL_PERMISSIONS


def test_viewer_is_read_only_and_member_uses_agents() -> None:
    assert all(p.value.endswith(":read") for p in BUILTIN_PERMISSIONS[BuiltinRole.VIEWER])
    member = BUILTIN_PERMISSIONS[BuiltinRole.MEMBER]
    assert {Permission.AGENTS_USE, Permission.AGENTS_CREATE} <= member
    assert Permission.USERS_MANAGE not in member
    manager = BUILTIN_PERMISSIONS[BuiltinRole.MANAGER]
    assert {Permission.USERS_MANAGE, Permission.TEAMS_MANAGE} <= manager
    assert Permission.ORG_MANAGE not in manager
    assert Permission.ROLES_MANAGE not in manager
