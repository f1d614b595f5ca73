"""Opaque page tokens: a keyset position bound to the filter it was issued for, signed
(HMAC-SHA256 under the server's page token key) so that a token the server did not
issue is refused as INVALID_PAGE_TOKEN before anything reads it."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass, field
from typing import Any

from server.domain.errors import InvalidArgument, Reason

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
KEY_BYTES = 32
_SIGNATURE_BYTES = 16


@dataclass(frozen=True, slots=True)
class PageTokens:
    """Signs and checks page tokens with one key. Replicas of one database that share
    the key accept each other's tokens; a token signed under another key is refused."""

    key: bytes = field(default_factory=lambda: secrets.token_bytes(KEY_BYTES), repr=False)

    def sign(self, payload: bytes) -> str:
        mac = hmac.new(self.key, payload, hashlib.sha256).digest()[:_SIGNATURE_BYTES]
        return f"{_b64(payload)}.{_b64(mac)}"

    def open(self, token: str) -> bytes | None:
        """The payload of a token this key signed; None for any other string."""
        body, dot, mac = token.partition(".")
        if not dot:
            return None
        try:
            payload, signature = _unb64(body), _unb64(mac)
        except ValueError:
            return None
        expected = hmac.new(self.key, payload, hashlib.sha256).digest()[:_SIGNATURE_BYTES]
        return payload if hmac.compare_digest(signature, expected) else None


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode((text + "=" * (-len(text) % 4)).encode())


# The signer of processes that configure none (tests of the domain alone): a random key.
_DEFAULT_TOKENS = PageTokens()


@dataclass(frozen=True, slots=True)
class PageRequest:
    """What the store needs: how many items, the key of the last item already seen, and
    the digest of the filter the page belongs to (so the next token is bound to it)."""

    size: int
    after: Any = None
    filter_digest: str = ""
    tokens: PageTokens = _DEFAULT_TOKENS

    def next_token(self, after: Any) -> str:
        """The token of the page that follows the item whose key is ``after``."""
        return _token(after, self.filter_digest, self.tokens)


def _filter_digest(filters: dict[str, Any]) -> str:
    canonical = json.dumps(filters, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _token(after: Any, digest: str, tokens: PageTokens) -> str:
    raw = json.dumps({"a": after, "f": digest}, separators=(",", ":"))
    return tokens.sign(raw.encode())


def encode_token(after: Any, filters: dict[str, Any], tokens: PageTokens) -> str:
    return _token(after, _filter_digest(filters), tokens)


def _check_filters(filters: dict[str, Any]) -> None:
    """A filter holding a NUL character matches nothing any list stores, and PostgreSQL
    refuses such text outright: refuse it as the caller's error, naming the field."""
    for name, value in filters.items():
        values = value if isinstance(value, (list, tuple)) else (value,)
        if any(isinstance(v, str) and "\x00" in v for v in values):
            raise InvalidArgument.of(name, "must not contain a NUL character")


def page_request(
    page_size: int,
    page_token: str,
    filters: dict[str, Any],
    *,
    default: int = DEFAULT_PAGE_SIZE,
    maximum: int = MAX_PAGE_SIZE,
    size_field: str = "page_size",
    token_field: str = "page_token",
    tokens: PageTokens,
) -> PageRequest:
    """Validate a (page_size, page_token) pair against ``filters``; ``tokens`` is the
    server's signer (required: a list that forgot it would issue tokens that no other
    replica, and no restart, accepts)."""
    if page_size < 0 or page_size > maximum:
        raise InvalidArgument.of(size_field, f"must be between 0 and {maximum}")
    _check_filters(filters)
    size = page_size or default
    expected = _filter_digest(filters)
    if not page_token:
        return PageRequest(size=size, filter_digest=expected, tokens=tokens)
    payload = tokens.open(page_token) if len(page_token) <= 2048 else None
    if payload is None:
        raise InvalidArgument.of(
            token_field,
            "not a page token this server issued (malformed, altered, or signed under"
            " another page token key)",
            reason=Reason.INVALID_PAGE_TOKEN,
        )
    try:
        decoded = json.loads(payload)
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
    return PageRequest(size=size, after=after, filter_digest=expected, tokens=tokens)
