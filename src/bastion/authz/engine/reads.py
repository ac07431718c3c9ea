"""What a rule's condition reads, and the CEL context it reads it from.

A rule's result depends only on the parts of the context its condition reads, so
`ruleset.RuleSet` memoizes it per value of those parts. `condition_reads` finds them by
a conservative scan of the condition's tokens (anything unclear reads everything);
`observe` gives what CEL can see at such a path, frozen so it can key a memo without
conflating values CEL tells apart (`freeze`); `resource_context` and `subject_context`
build the context every rule is evaluated against.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from bastion.authz.engine.model import Subject

_ROOTS = frozenset({"resource", "subject"})
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(
    r"0[xX][0-9a-fA-F]+[uU]?|\d+(?:\.\d+)?(?:[eE][+-]?\d+)?[uU]?|\.\d+(?:[eE][+-]?\d+)?"
)
_OPERATORS = ("==", "!=", "<=", ">=", "&&", "||")
_PUNCTUATION = frozenset("-+*/%!<>?:.,()[]{}")
_STRING_PREFIXES = frozenset({"r", "b", "rb", "br"})
Path = tuple[str, ...]
EVERYTHING: tuple[Path, ...] = (("resource",), ("subject",))


def _string_end(text: str, start: int, raw: bool) -> int | None:
    quote = text[start : start + 3] if text[start : start + 3] in ("'''", '"""') else text[start]
    i = start + len(quote)
    while i < len(text):
        if text[i] == "\\":
            if raw:  # raw strings and backslashes: not worth being clever about
                return None
            i += 2
            continue
        if text.startswith(quote, i):
            return i + len(quote)
        if len(quote) == 1 and text[i] in "\r\n":
            return None
        i += 1
    return None


def _tokens(text: str) -> list[str] | None:  # noqa: PLR0912 - a lexer: a branch per token
    """CEL tokens with string and number literals blanked out; None when anything is
    not plainly recognised."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in " \t\r\n\f":
            i += 1
        elif text.startswith("//", i):
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif name := _NAME.match(text, i):
            word, i = name.group(), name.end()
            if word.lower() in _STRING_PREFIXES and i < n and text[i] in "'\"":
                closed = _string_end(text, i, raw="r" in word.lower())
                if closed is None:
                    return None
                out.append("'")
                i = closed
            else:
                out.append(word)
        elif c in "'\"":
            closed = _string_end(text, i, raw=False)
            if closed is None:
                return None
            literal = text[i + 1 : closed - 1]
            plain = closed - i >= 2 and text[i + 1 : i + 3] != c * 2 and "\\" not in literal
            out.append(f"'={literal}" if plain else "'")  # a plain literal keeps its value
            i = closed
        elif number := _NUMBER.match(text, i):
            i = number.end()
            if i < n and (text[i].isalnum() or text[i] == "_"):
                return None  # a number run into a name
            out.append("0")
        elif text[i : i + 2] in _OPERATORS:
            out.append(text[i : i + 2])
            i += 2
        elif c in _PUNCTUATION:
            out.append(c)
            i += 1
        else:
            return None
    return out


def condition_reads(condition: str) -> tuple[Path, ...]:
    """The context paths a condition may read, e.g. ("resource", "metadata", "level"):
    every occurrence of `resource` or `subject` anywhere (even where it might be a field
    or a macro variable) followed by the longest chain of `.name` selections that is
    not a method call. The value at a path covers everything under it, so what is read
    through `[...]`, `.?`, a method or a macro is covered by the shorter path. One
    narrowing: where every use is `'literal' in <path>` standing alone between
    operators that bind less tightly, what is read is whether the literal is in it
    (the path, then `MEMBER` and the literal). A condition that does not scan plainly
    reads everything."""
    tokens = _tokens(condition)
    if tokens is None:
        return EVERYTHING
    uses: dict[Path, set[str | None]] = {}  # path -> its literal memberships (None: other)
    for i, token in enumerate(tokens):
        if token not in _ROOTS:
            continue
        path, j = [token], i + 1
        while (
            j + 1 < len(tokens)
            and tokens[j] == "."
            and _NAME.fullmatch(tokens[j + 1])
            and not (j + 2 < len(tokens) and tokens[j + 2] == "(")
        ):
            path.append(tokens[j + 1])
            j += 2
        literal = None
        if (
            i >= 2
            and tokens[i - 1] == "in"
            and tokens[i - 2].startswith("'=")
            and (i == 2 or tokens[i - 3] in _BEFORE_MEMBERSHIP)
            and (j == len(tokens) or tokens[j] in _AFTER_MEMBERSHIP)
        ):
            literal = tokens[i - 2][2:]
        uses.setdefault(tuple(path), set()).add(literal)
    paths: set[Path] = set()
    for used, literals in uses.items():
        if None in literals:
            paths.add(used)
        else:
            paths.update((*used, MEMBER, lit) for lit in literals if lit is not None)
    return tuple(sorted(paths))


# Tokens around `'literal' in <path>` that leave the membership standing alone: they
# bind less tightly than `in` (or delimit), so neither side is part of a larger operand.
_BEFORE_MEMBERSHIP = frozenset({"(", "&&", "||", "?", ":", ",", "[", "{"})
_AFTER_MEMBERSHIP = frozenset({")", "&&", "||", "?", ":", ",", "]", "}", "==", "!="})
MEMBER = "\x00in"


class Unhashable(Exception):
    """A context value the memo cannot key on: evaluate directly."""


_SCALARS = (str, bool, int, type(None))


def freeze(value: Any) -> Any:
    """A hashable value equal only for values CEL cannot tell apart (type included:
    1, 1.0 and true differ; so do 0.0 and -0.0, and map key order)."""
    kind = type(value)
    if kind in _SCALARS:
        return (kind, value)
    if kind is float:
        return (float, value.hex())
    if kind is dict:
        return (dict, tuple((freeze(k), freeze(v)) for k, v in value.items()))
    if kind is list or kind is tuple:
        return (list, tuple(freeze(v) for v in value))
    raise Unhashable


def observe(context: Mapping[str, Any], path: Path) -> Any:
    """What CEL can see at `path` (the root's name excluded): the value, or where the
    walk stopped (an absent key, or a value that is not a map, frozen whole). For a
    membership read, whether the literal is in a list of strings (else the value)."""
    literal: str | None = None
    if len(path) >= 2 and path[-2] == MEMBER:
        path, literal = path[:-2], path[-1]
    value: Any = context
    for i, key in enumerate(path):
        if type(value) is not dict:
            return ("stuck", i, freeze(value))
        if key not in value:
            return ("absent", i)
        value = value[key]
    if literal is not None and type(value) is list and all(type(v) is str for v in value):
        return ("member", literal in value)
    return ("at", freeze(value))


def resource_context(
    resource_id: str, resource_type: str, metadata: Mapping[str, Any]
) -> dict[str, Any]:
    return {"id": resource_id, "type": resource_type, "metadata": dict(metadata)}


def subject_context(subject: Subject) -> dict[str, Any]:
    return {
        "id": subject.id,
        "attributes": dict(subject.attributes),
        "teams": sorted(subject.teams),
    }
