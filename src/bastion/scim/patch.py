"""SCIM PATCH (RFC 7644 §3.5.2) over a resource's JSON: `add`, `replace` and `remove`,
with or without a path, including filtered paths (`emails[type eq "work"].value`,
`members[value eq "usr_…"]`), as Okta and Microsoft Entra send them.

What identity providers send beyond the RFC, accepted here:
- operation names in any case (`Replace`, `Add`: Entra);
- `"value": "True"` / `"False"` strings for booleans (Entra, for `active`);
- a value object whose keys are paths (`{"name.givenName": "Ann"}`,
  `{"urn:…:enterprise:2.0:User:department": "R&D"}`: Entra);
- `add` or `replace` on a filtered path that matches nothing creates the element the
  filter describes (`emails[type eq "work"].value`: Entra's first write of an address);
- `remove` of `members` with a value listing the members to remove (Entra).

The result is validated again as a whole by the caller (the same checks as PUT), so a
PATCH cannot store what a PUT could not.
"""

from __future__ import annotations

import copy
from typing import Any

from bastion.scim import errors
from bastion.scim.filter import (
    Compare,
    InvalidFilter,
    Logical,
    Node,
    PatchPath,
    matches,
    parse_path,
)

MAX_OPERATIONS = 100
READ_ONLY = frozenset({"id", "meta", "groups", "schemas"})


def _key(obj: dict[str, Any], name: str) -> str:
    """The existing member of `obj` named `name` in any case, else `name`."""
    lowered = name.lower()
    for key in obj:
        if key.lower() == lowered:
            return key
    return name


def _bool_like(value: Any) -> Any:
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return value


def _coerce(name: str, value: Any) -> Any:
    return _bool_like(value) if name.lower() in ("active", "primary") else value


def _container(doc: dict[str, Any], pp: PatchPath, create: bool) -> dict[str, Any] | None:
    """The object holding the path's last attribute name (the extension's object, a
    complex attribute's), created on the way when `create`."""
    obj = doc
    if pp.path.urn:
        key = _key(doc, pp.path.urn)
        if not isinstance(doc.get(key), dict):
            if not create:
                return None
            doc[key] = {}
        obj = doc[key]
    for name in pp.path.names[:-1]:
        key = _key(obj, name)
        if not isinstance(obj.get(key), dict):
            if not create:
                return None
            obj[key] = {}
        obj = obj[key]
    return obj


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.get("value") is not None and a.get("value") == b.get("value")
    return bool(a == b)


def _merge(target: dict[str, Any], value: dict[str, Any], *, add: bool) -> None:
    for name, given in value.items():
        key = _key(target, name)
        sub = _coerce(name, given)
        if add and isinstance(target.get(key), list) and isinstance(sub, list):
            existing = target[key]
            existing.extend(v for v in sub if not any(_same(v, e) for e in existing))
        elif isinstance(target.get(key), dict) and isinstance(sub, dict):
            _merge(target[key], sub, add=add)
        else:
            target[key] = sub


def _element_from(node: Node) -> dict[str, Any] | None:
    """The element an `eq` filter (or an `and` of them) describes, to create."""
    if isinstance(node, Compare) and node.op == "eq" and len(node.path.names) == 1:
        return {node.path.names[0]: node.value}
    if isinstance(node, Logical) and node.op == "and":
        left, right = _element_from(node.left), _element_from(node.right)
        if left is not None and right is not None:
            return {**left, **right}
    return None


def _apply_filtered(  # noqa: PLR0912 - one branch per case of RFC 7644 §3.5.2
    doc: dict[str, Any], op: str, pp: PatchPath, value: Any
) -> None:
    if pp.filter is None:  # callers pass filtered paths only
        raise errors.invalid_path("the path has no filter")
    holder = _container(doc, pp, create=op != "remove")
    name = pp.path.names[-1]
    key = _key(holder, name) if holder is not None else name
    elements = holder.get(key) if holder is not None else None
    if elements is None:
        elements = []
    if not isinstance(elements, list):
        raise errors.invalid_path(f"{name} is not multi-valued")
    hits = [el for el in elements if isinstance(el, dict) and matches(pp.filter, el)]
    if op == "remove":
        if not hits:
            raise errors.no_target("the path's filter matches no value")
        if pp.sub is None:
            elements[:] = [el for el in elements if not any(el is h for h in hits)]
        else:
            for el in hits:
                el.pop(_key(el, pp.sub), None)
        if holder is not None:
            holder[key] = elements
        return
    if not hits:
        created = _element_from(pp.filter)
        if created is None:
            raise errors.no_target("the path's filter matches no value")
        elements.append(created)
        hits = [created]
    for el in hits:
        if pp.sub is not None:
            el[_key(el, pp.sub)] = _coerce(pp.sub, value)
        elif isinstance(value, dict):
            _merge(el, value, add=False)
        else:
            raise errors.invalid_value("a filtered path without a sub-attribute takes an object")
    if holder is not None:
        holder[key] = elements


def _apply_path(doc: dict[str, Any], op: str, pp: PatchPath, value: Any) -> None:
    top = pp.path.names[0].lower()
    if not pp.path.urn and top in READ_ONLY:
        raise errors.mutability(f"{pp.path.names[0]} cannot be changed")
    if pp.filter is not None:
        _apply_filtered(doc, op, pp, value)
        return
    name = pp.path.names[-1]
    holder = _container(doc, pp, create=op != "remove")
    if op == "remove":
        if holder is None:
            return
        key = _key(holder, name)
        current = holder.get(key)
        if isinstance(current, list) and isinstance(value, list) and value:
            # Entra: remove these members (by value) from the list
            holder[key] = [e for e in current if not any(_same(e, v) for v in value)]
        else:
            holder.pop(key, None)
        return
    if holder is None:  # created above for add and replace
        raise errors.no_target("the path's parent cannot hold a value")
    key = _key(holder, name)
    value = _coerce(name, value)
    current = holder.get(key)
    if op == "add" and isinstance(current, list):
        incoming = value if isinstance(value, list) else [value]
        current.extend(v for v in incoming if not any(_same(v, e) for e in current))
    elif isinstance(current, dict) and isinstance(value, dict):
        _merge(current, value, add=op == "add")
    else:
        holder[key] = value


def _apply_root(
    doc: dict[str, Any], op: str, value: Any, core_urn: str, extensions: frozenset[str]
) -> None:
    if op == "remove":
        raise errors.no_target("remove needs a path")
    if not isinstance(value, dict):
        raise errors.invalid_value("an operation without a path takes an object")
    for name, sub in value.items():
        lowered = name.lower()
        if lowered in READ_ONLY:
            # Okta sends the group's own id in a path-less replace: read-only values in
            # a value object are ignored, as PUT ignores them (RFC 7644 §3.5.1).
            continue
        if lowered in extensions and isinstance(sub, dict):
            # an extension's whole object, e.g. "urn:…:enterprise:2.0:User": {...}
            key = _key(doc, name)
            if not isinstance(doc.get(key), dict):
                doc[key] = {}
            _merge(doc[key], sub, add=op == "add")
            continue
        if lowered == core_urn.lower() and isinstance(sub, dict):
            _apply_root(doc, op, sub, core_urn, extensions)
            continue
        pp = _parse(name, core_urn)
        if pp.path.urn and pp.path.urn.lower() not in extensions:
            raise errors.invalid_path("a value names an unknown schema")
        _apply_path(doc, op, pp, sub)


def _parse(text: str, core_urn: str) -> PatchPath:
    try:
        return parse_path(text, core_urn)
    except InvalidFilter as exc:
        raise errors.invalid_path(f"path {exc}") from None


def apply(  # noqa: PLR0912 - one branch per rule of RFC 7644 §3.5.2
    doc: dict[str, Any], operations: Any, core_urn: str, extensions: frozenset[str]
) -> dict[str, Any]:
    """`doc` after the operations, on a copy (a failed operation changes nothing)."""
    if not isinstance(operations, list) or not operations:
        raise errors.invalid_syntax("Operations must be a non-empty list")
    if len(operations) > MAX_OPERATIONS:
        raise errors.invalid_syntax(f"at most {MAX_OPERATIONS} operations per request")
    result = copy.deepcopy(doc)
    for i, operation in enumerate(operations):
        if not isinstance(operation, dict):
            raise errors.invalid_syntax(f"Operations[{i}] must be an object")
        op = str(_get_ci(operation, "op") or "").lower()
        if op not in ("add", "replace", "remove"):
            raise errors.invalid_syntax(f"Operations[{i}].op must be add, replace or remove")
        path = _get_ci(operation, "path")
        value = _get_ci(operation, "value")
        if path is not None and not isinstance(path, str):
            raise errors.invalid_path(f"Operations[{i}].path must be a string")
        if op != "remove" and value is None:
            raise errors.invalid_value(f"Operations[{i}].value is required for {op}")
        if path is None or not path.strip():
            _apply_root(result, op, value, core_urn, extensions)
        elif path.strip().lower() in extensions:  # an extension's whole object
            key = _key(result, path.strip())
            if op == "remove":
                result.pop(key, None)
            elif not isinstance(value, dict):
                raise errors.invalid_value(f"Operations[{i}].value must be an object")
            else:
                if op == "replace" or not isinstance(result.get(key), dict):
                    result[key] = {}
                _merge(result[key], value, add=True)
        else:
            pp = _parse(path.strip(), core_urn)
            if pp.path.urn and pp.path.urn.lower() not in extensions:
                raise errors.invalid_path(f"Operations[{i}].path names an unknown schema")
            _apply_path(result, op, pp, value)
    return result


def _get_ci(obj: dict[str, Any], name: str) -> Any:
    for key, value in obj.items():
        if key.lower() == name:
            return value
    return None
