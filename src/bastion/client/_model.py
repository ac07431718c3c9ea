"""The base of every model the SDK returns: a pydantic model that also reads like the
JSON object it came from, so code written against dict results keeps working."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel, ConfigDict


class Model(BaseModel):
    """A typed API object. Attributes are typed (`user.email`); the object also answers
    `user["email"]`, `"email" in user` and `user.get("email")` by the API's field names,
    and keeps fields a newer server added (`model_extra`)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, protected_namespaces=())

    def _attr(self, key: str) -> str | None:
        fields = type(self).model_fields
        if key in fields and fields[key].alias in (None, key):
            return key
        for name, info in fields.items():
            if info.alias == key:
                return name
        return None

    def __getitem__(self, key: str) -> Any:
        attr = self._attr(key)
        if attr is not None:
            return getattr(self, attr)
        extra = self.model_extra or {}
        if key in extra:
            return extra[key]
        raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        attr = self._attr(key)
        if attr is not None:
            return attr in self.model_fields_set
        return key in (self.model_extra or {})

    def get(self, key: str, default: Any = None) -> Any:
        """The field by its API name, or `default` when the answer did not carry it."""
        return self[key] if key in self else default  # noqa: SIM401 - this is `get`

    def keys(self) -> Iterator[str]:
        """The API names of the fields the answer carried."""
        return iter(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        """The JSON object (API field names, JSON values) as the server sent it."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)
