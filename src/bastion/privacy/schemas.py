"""Request and response bodies of the privacy API."""

from __future__ import annotations

from typing import Annotated

from pydantic import ConfigDict, Field, Strict, field_validator

from bastion.core.schemas import In, Out
from bastion.privacy.redaction import Mode
from bastion.privacy.service import MAX_TEXT_CHARS, MAX_TEXTS, MAX_TOTAL_CHARS
from bastion.privacy.types import EntityType

Type = Annotated[EntityType, Strict(False)]  # JSON text, not a Python enum member
Texts = Annotated[
    list[Annotated[str, Field(max_length=MAX_TEXT_CHARS)]],
    Field(min_length=1, max_length=MAX_TEXTS, description=f"1 to {MAX_TEXTS} texts"),
]


class _TextsIn(In):
    model_config = ConfigDict(extra="forbid", strict=True, str_max_length=MAX_TEXT_CHARS)

    texts: Texts

    @field_validator("texts")
    @classmethod
    def _total(cls, texts: list[str]) -> list[str]:
        if sum(map(len, texts)) > MAX_TOTAL_CHARS:
            raise ValueError(f"at most {MAX_TOTAL_CHARS} characters in all")
        return texts


class ScanIn(_TextsIn):
    types: Annotated[list[Type], Field(min_length=1, max_length=len(EntityType))] | None = None


class RedactIn(ScanIn):
    mode: Annotated[Mode, Strict(False)]


class DetokenizeIn(_TextsIn):
    pass


class FindingOut(Out):
    type: EntityType
    start: int = Field(description="Offset of the first code point (Unicode code points)")
    end: int = Field(description="Offset after the last code point")
    score: float


class ScanResult(Out):
    findings: list[FindingOut]


class ScanOut(Out):
    results: list[ScanResult]


class RedactResult(Out):
    text: str
    findings: list[FindingOut]


class RedactOut(Out):
    results: list[RedactResult]


class DetokenizeResult(Out):
    text: str


class DetokenizeOut(Out):
    results: list[DetokenizeResult]
    restored: int = Field(description="Tokens turned back, in all texts")


class TypeOut(Out):
    name: EntityType
    description: str
    structured: bool = Field(description="Found by a pattern and a validator (not a name model)")


class TypesOut(Out):
    data: list[TypeOut]
    engine: str = Field(description="The pattern engine in use: hyperscan, or re")
