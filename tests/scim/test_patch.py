"""SCIM PATCH on a resource's JSON (RFC 7644 §3.5.2), with the forms Okta and Entra send."""

from __future__ import annotations

from typing import Any

import pytest

from bastion.scim import patch
from bastion.scim.errors import ScimError

CORE = "urn:ietf:params:scim:schemas:core:2.0:User"
ENT = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
EXT = frozenset({ENT.lower()})


def _doc() -> dict[str, Any]:
    return {
        "userName": "ann@example.com",
        "name": {"givenName": "Ann", "familyName": "Lee"},
        "emails": [{"value": "ann@example.com", "type": "work", "primary": True}],
        "active": True,
    }


def _apply(ops: list[dict[str, Any]], doc: dict[str, Any] | None = None) -> dict[str, Any]:
    return patch.apply(doc or _doc(), ops, CORE, EXT)


def _refused(ops: Any, scim_type: str) -> None:
    with pytest.raises(ScimError) as caught:
        patch.apply(_doc(), ops, CORE, EXT)
    assert caught.value.scim_type == scim_type


def test_okta_deactivation_without_path() -> None:
    assert _apply([{"op": "replace", "value": {"active": False}}])["active"] is False


def test_entra_string_booleans_and_capitalised_ops() -> None:
    assert _apply([{"op": "Replace", "path": "active", "value": "False"}])["active"] is False
    assert _apply([{"op": "Replace", "path": "ACTIVE", "value": "True"}])["active"] is True


def test_value_keys_that_are_paths() -> None:
    out = _apply([{"op": "replace", "value": {"name.givenName": "Bea", f"{ENT}:department": "X"}}])
    assert out["name"] == {"givenName": "Bea", "familyName": "Lee"}
    assert out[ENT] == {"department": "X"}


def test_extension_object_add_replace_remove() -> None:
    added = _apply([{"op": "add", "value": {ENT: {"department": "R&D", "division": "A"}}}])
    assert added[ENT] == {"department": "R&D", "division": "A"}
    replaced = _apply([{"op": "replace", "path": ENT, "value": {"division": "B"}}], added)
    assert replaced[ENT] == {"division": "B"}
    assert ENT not in _apply([{"op": "remove", "path": ENT}], replaced)


def test_multi_valued_add_appends_once_and_replace_replaces() -> None:
    home = {"value": "ann@home.test", "type": "home"}
    added = _apply([{"op": "add", "path": "emails", "value": [home]}])
    again = _apply([{"op": "add", "path": "emails", "value": [home]}], added)
    assert len(again["emails"]) == 2
    replaced = _apply([{"op": "replace", "path": "emails", "value": [home]}], again)
    assert replaced["emails"] == [home]


def test_filtered_paths() -> None:
    out = _apply([{"op": "replace", "path": 'emails[type eq "work"].value', "value": "a@b.test"}])
    assert out["emails"][0]["value"] == "a@b.test"
    created = _apply([{"op": "add", "path": 'emails[type eq "home"].value', "value": "h@b.test"}])
    assert {"type": "home", "value": "h@b.test"} in created["emails"]
    dropped = _apply([{"op": "remove", "path": 'emails[type eq "work"]'}])
    assert dropped["emails"] == []
    sub = _apply([{"op": "remove", "path": 'emails[type eq "work"].primary'}])
    assert "primary" not in sub["emails"][0]


def test_remove_members_by_value_list() -> None:
    group = {"displayName": "G", "members": [{"value": "usr_1"}, {"value": "usr_2"}]}
    out = patch.apply(
        group,
        [{"op": "remove", "path": "members", "value": [{"value": "usr_1"}]}],
        "urn:ietf:params:scim:schemas:core:2.0:Group",
        frozenset(),
    )
    assert out["members"] == [{"value": "usr_2"}]


def test_a_failed_operation_changes_nothing() -> None:
    doc = _doc()
    with pytest.raises(ScimError):
        patch.apply(
            doc,
            [{"op": "replace", "path": "title", "value": "X"}, {"op": "remove", "path": "id"}],
            CORE,
            EXT,
        )
    assert "title" not in doc


@pytest.mark.parametrize(
    ("ops", "scim_type"),
    [
        ([], "invalidSyntax"),
        ("x", "invalidSyntax"),
        ([{"op": "move"}], "invalidSyntax"),
        ([1], "invalidSyntax"),
        ([{"op": "add", "path": "title"}], "invalidValue"),
        ([{"op": "remove"}], "noTarget"),
        ([{"op": "replace", "path": "meta.created", "value": "x"}], "mutability"),
        ([{"op": "add", "path": "emails[type eq", "value": "x"}], "invalidPath"),
        ([{"op": "add", "path": "urn:x:y:z:attr", "value": "x"}], "invalidPath"),
        ([{"op": "remove", "path": 'emails[type eq "nope"]'}], "noTarget"),
        ([{"op": "replace", "path": 'emails[type ne "work"].value', "value": "x"}], "noTarget"),
        ([{"op": "add", "value": "x"}], "invalidValue"),
        (
            [{"op": "add", "path": "title", "value": "x"}] * (patch.MAX_OPERATIONS + 1),
            "invalidSyntax",
        ),
    ],
)
def test_refusals(ops: Any, scim_type: str) -> None:
    _refused(ops, scim_type)
