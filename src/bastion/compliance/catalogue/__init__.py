"""The control catalogue: one JSON file per framework, package data reviewed like code
(`version` moves on with every change). `bastion.compliance.catalogue.load` reads them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

FRAMEWORKS = ("soc2", "iso27001", "gdpr", "ccpa", "hipaa")


@dataclass(frozen=True)
class CheckRef:
    name: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Control:
    id: str
    framework: str
    title: str
    checks: tuple[CheckRef, ...]
    manual: bool
    generated: str | None = None


@dataclass(frozen=True)
class Framework:
    id: str
    title: str
    version: str
    controls: tuple[Control, ...]


def _check(value: str | dict[str, Any]) -> CheckRef:
    if isinstance(value, str):
        return CheckRef(value)
    return CheckRef(str(value["name"]), dict(value.get("params") or {}))


@cache
def load(framework: str) -> Framework:
    """The framework's controls as its file states them (KeyError when unknown)."""
    if framework not in FRAMEWORKS:
        raise KeyError(framework)
    text = resources.files(__package__).joinpath(f"{framework}.json").read_text("utf-8")
    data = json.loads(text)
    controls = tuple(
        Control(
            id=str(c["id"]),
            framework=framework,
            title=str(c["title"]),
            checks=tuple(_check(x) for x in c.get("checks", ())),
            manual=bool(c.get("manual", False)),
            generated=c.get("generated"),
        )
        for c in data["controls"]
    )
    return Framework(framework, str(data["title"]), str(data["version"]), controls)


def all_frameworks() -> list[Framework]:
    return [load(f) for f in FRAMEWORKS]
