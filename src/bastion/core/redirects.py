"""Where a browser may be sent back to after a round trip through another site (an
identity provider, an OAuth provider): only here, so no flow becomes an open redirect."""

from __future__ import annotations

from collections.abc import Collection
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit


def is_allowed_return(value: str, origins: Collection[str]) -> bool:
    """Whether `value` is a relative path on this origin (`/…`, never `//…`), or an
    absolute http(s) URL, without user information, on one of `origins`
    (`scheme://host[:port]`, compared without case)."""
    if not value or len(value) > 2000 or any(ord(c) < 0x21 or c == "\\" for c in value):
        return False
    parsed = urlsplit(value)
    if not parsed.scheme and not parsed.netloc:
        return value.startswith("/") and not value.startswith("//")
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        return False
    if parsed.username is not None or parsed.password is not None:
        return False
    origin = f"{parsed.scheme}://{parsed.netloc}".lower()
    return origin in {o.lower() for o in origins}


def with_params(url: str, **params: str) -> str:
    """`url` with `params` in its query, replacing any of the same names."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in params]
    query.extend(params.items())
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))
