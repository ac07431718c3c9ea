"""`chainwalk.load_json`, which verification and export use to read a metadata column,
reads any text exactly as `json.loads` does: the same value, or the same error."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.audit import chainwalk

_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


def _same(text: str) -> None:
    try:
        expected: Any = json.loads(text)
    except ValueError as exc:
        with pytest.raises(type(exc)):
            chainwalk.load_json(text)
    else:
        assert repr(chainwalk.load_json(text)) == repr(expected)  # repr: NaN equals itself


@given(
    value=values,
    separators=st.sampled_from([(",", ":"), (", ", ": ")]),
    ascii_only=st.booleans(),
    before=st.sampled_from(["", " ", "\n"]),
    after=st.sampled_from(["", " ", "\t\n", "x", "{}"]),
)
def test_load_json_reads_text_as_json_loads_does(
    value: Any, separators: tuple[str, str], ascii_only: bool, before: str, after: str
) -> None:
    text = json.dumps(value, separators=separators, ensure_ascii=ascii_only)
    _same(before + text + after)


@given(text=st.text(max_size=30))
def test_load_json_fails_where_json_loads_fails(text: str) -> None:
    _same(text)


@pytest.mark.parametrize("text", ["", " ", "{", '{"a":1', "NaN", "[1,]", '{"a":1}}', "nul"])
def test_load_json_on_broken_text(text: str) -> None:
    _same(text)


def test_load_json_takes_bytes_as_json_loads_does() -> None:
    assert chainwalk.load_json(b'{"a": [1, 2]}') == {"a": [1, 2]}  # type: ignore[arg-type]
