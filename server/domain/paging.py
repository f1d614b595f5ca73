"""Opaque page tokens: a keyset position bound to the filter it was issued for."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from server.domain.errors import InvalidArgument, Reason

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


@dataclass(frozen=True, slots=True)
class PageRequest:
    """What the store needs: how many items, the key of the last item already seen, and
    the digest of the filter the page belongs to (so the next token is bound to it)."""

    size: int
    after: Any = None
    filter_digest: str = ""

    def next_token(self, after: Any) -> str:
        """The token of the page that follows the item whose key is ``after``."""
        return _token(after, self.filter_digest)


def _filter_digest(filters: dict[str, Any]) -> str:
    canonical = json.dumps(filters, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _token(after: Any, digest: str) -> str:
    raw = json.dumps({"a": after, "f": digest}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def encode_token(after: Any, filters: dict[str, Any]) -> str:
    return _token(after, _filter_digest(filters))


def page_request(
    page_size: int,
    page_token: str,
    filters: dict[str, Any],
    *,
    default: int = DEFAULT_PAGE_SIZE,
    maximum: int = MAX_PAGE_SIZE,
    size_field: str = "page_size",
    token_field: str = "page_token",
) -> PageRequest:
    """Validate a (page_size, page_token) pair against ``filters``."""
    if page_size < 0 or page_size > maximum:
        raise InvalidArgument.of(size_field, f"must be between 0 and {maximum}")
    size = page_size or default
    expected = _filter_digest(filters)
    if not page_token:
        return PageRequest(size=size, filter_digest=expected)
    try:
        if len(page_token) > 1024:
            raise ValueError("too long")
        padded = page_token + "=" * (-len(page_token) % 4)
        decoded = json.loads(base64.urlsafe_b64decode(padded.encode()))
        after = decoded["a"]
        digest = decoded["f"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise InvalidArgument.of(
            token_field, "malformed page token", reason=Reason.INVALID_PAGE_TOKEN
        ) from exc
    if digest != expected:
        raise InvalidArgument.of(
            token_field,
            "page token was issued for a different filter",
            reason=Reason.INVALID_PAGE_TOKEN,
        )
    if after is None:
        raise InvalidArgument.of(
            token_field, "malformed page token", reason=Reason.INVALID_PAGE_TOKEN
        )
    return PageRequest(size=size, after=after, filter_digest=expected)
