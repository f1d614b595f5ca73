"""Bearer tokens: the token file (hashes only) and the step tokens of executions.

The token file is JSON, written by ``trainyard-server tokens`` and read by the server,
which notices changes without a restart::

    {"version": 1,
     "key": "<hex: the HMAC key of this file>",
     "tokens": [{"id": "tok_…", "principal": "alice", "hash": "<hex>",
                 "roles": {"team-a": "operator", "*": "viewer"},
                 "created_at": 1767225600.0, "expires_at": 1769817600.0}],
     "subjects": [{"id": "sub_…", "principal": "ci", "subject": "CN=ci,O=acme",
                   "roles": {"team-a": "operator"}, "created_at": …}]}

A token is ``ty_`` and 43 URL-safe characters (256 random bits). The file keeps only
HMAC-SHA256(key, token): a leaked file gives no usable token, and a lookup is one
keyed hash and one dictionary access. ``subjects`` map client certificate subjects
(mutual TLS) to principals the same way.
"""

from __future__ import annotations

import hmac
import json
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from server.domain.principal import ROLES, Principal

TOKEN_PREFIX = "ty_"
STEP_TOKEN_PREFIX = "tys_"
_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
CHECKED_TOKENS = 10_000  # tokens remembered as checked, per version of the file
_GROUP = re.compile(r"^(\*|[A-Za-z0-9][A-Za-z0-9._-]{0,252})$")


class TokenFileError(ValueError):
    """The token file or a value for it is malformed."""


def parse_duration(text: str) -> float | None:
    """Seconds of ``30d``, ``12h``, ``45m``, ``90s``, ``2w``; None for ``never``."""
    if text in ("never", "none", ""):
        return None
    match = _DURATION.match(text.strip())
    if match is None:
        raise TokenFileError(f"duration {text!r}: a number and s, m, h, d or w (30d), or never")
    return float(int(match.group(1)) * _UNITS[match.group(2)])


def check_role(role: str) -> str:
    if role not in ROLES:
        raise TokenFileError(f"role {role!r}: one of {', '.join(ROLES)}")
    return role


def check_group(group: str) -> str:
    if not _GROUP.match(group):
        raise TokenFileError(f"group {group!r}: a resource group name, or '*' for all")
    return group


def token_hash(key: bytes, token: str) -> str:
    return hmac.digest(key, token.encode(), "sha256").hex()


@dataclass(slots=True)
class Lookup:
    """What a presented credential is: a principal, or why not."""

    principal: Principal | None
    expired: bool = False


class TokenIndex:
    """The token file's entries, indexed by hash and by certificate subject."""

    def __init__(self, data: dict | None = None):
        data = data or {}
        self.key = bytes.fromhex(data.get("key", "")) if data.get("key") else b""
        self.by_hash: dict[str, Principal] = {}
        self.by_subject: dict[str, Principal] = {}
        self.ids: set[str] = set()
        # Tokens already checked against this version of the file, in memory only
        # (a new version of the file starts afresh): a call then costs one dictionary
        # lookup instead of a keyed hash.
        self._checked: dict[str, Principal] = {}
        for entry in data.get("tokens", ()):
            principal = _principal(entry)
            self.by_hash[entry["hash"]] = principal
            self.ids.add(principal.credential_id)
        for entry in data.get("subjects", ()):
            principal = _principal(entry)
            self.by_subject[_normal_subject(entry["subject"])] = principal
            self.ids.add(principal.credential_id)

    def lookup(self, token: str, now: float | None = None) -> Lookup:
        principal = self._checked.get(token)
        if principal is None:
            if not self.key:
                return Lookup(None)
            principal = self.by_hash.get(token_hash(self.key, token))
            if principal is None:
                return Lookup(None)
            if len(self._checked) >= CHECKED_TOKENS:
                self._checked.clear()
            self._checked[token] = principal
        if principal.expires_at is not None and (now or time.time()) >= principal.expires_at:
            return Lookup(None, expired=True)
        return Lookup(principal)

    def subject(self, subject: str, now: float | None = None) -> Lookup:
        principal = self.by_subject.get(_normal_subject(subject))
        if principal is None:
            return Lookup(None)
        if principal.expires_at is not None and (now or time.time()) >= principal.expires_at:
            return Lookup(None, expired=True)
        return Lookup(principal)

    def principals(self) -> dict[str, Principal]:
        """Every entry's principal, by credential id."""
        return {
            p.credential_id: p for p in [*self.by_hash.values(), *self.by_subject.values()]
        }

    def valid(self, principal: Principal, now: float) -> bool:
        """Whether a principal read from an earlier version of the file still holds."""
        if principal.credential_id not in self.ids:
            return False
        return principal.expires_at is None or now < principal.expires_at


def _normal_subject(subject: str) -> str:
    """A subject's attributes in one order (gRPC reports them in RFC 4514's, which
    reverses the certificate's; people write them either way)."""
    return ",".join(sorted(part.strip() for part in subject.split(",") if part.strip()))


def _principal(entry: dict) -> Principal:
    roles = {check_group(g): check_role(r) for g, r in dict(entry.get("roles", {})).items()}
    return Principal(
        name=str(entry["principal"]),
        roles=roles,
        credential_id=str(entry["id"]),
        expires_at=entry.get("expires_at"),
    )


class TokenFile:
    """Reads and rewrites a token file (atomically, mode 0600)."""

    def __init__(self, path: Path | str):
        self.path = Path(path)

    def read(self) -> dict:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return {"version": 1, "key": "", "tokens": [], "subjects": []}
        try:
            data = json.loads(text) if text.strip() else {}
        except json.JSONDecodeError as exc:
            raise TokenFileError(f"{self.path}: not JSON ({exc})") from None
        if not isinstance(data, dict):
            raise TokenFileError(f"{self.path}: not a JSON object")
        data.setdefault("version", 1)
        data.setdefault("key", "")
        data.setdefault("tokens", [])
        data.setdefault("subjects", [])
        return data

    def index(self) -> TokenIndex:
        data = self.read()
        try:
            return TokenIndex(data)
        except (KeyError, TypeError, ValueError) as exc:
            raise TokenFileError(f"{self.path}: malformed entry ({exc})") from None

    def write(self, data: dict) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(data, out, indent=2, sort_keys=True)
            out.write("\n")
        os.replace(tmp, self.path)

    def add(
        self,
        principal: str,
        roles: dict[str, str],
        expires_in: float | None,
        subject: str | None = None,
        now: float | None = None,
    ) -> tuple[str, str]:
        """Adds a token (or, with ``subject``, a certificate mapping); returns its id
        and the token ("" for a subject). The token is not stored: show it once."""
        if not principal or len(principal) > 200:
            raise TokenFileError("principal: 1-200 characters")
        for group, role in roles.items():
            check_group(group)
            check_role(role)
        if not roles:
            raise TokenFileError("at least one --group with a --role")
        now = time.time() if now is None else now
        data = self.read()
        if not data["key"]:
            data["key"] = secrets.token_hex(32)
        entry = {
            "principal": principal,
            "roles": roles,
            "created_at": now,
            "expires_at": None if expires_in is None else now + expires_in,
        }
        if subject is not None:
            entry["id"] = "sub_" + secrets.token_hex(6)
            entry["subject"] = _normal_subject(subject)
            data["subjects"].append(entry)
            token = ""
        else:
            entry["id"] = "tok_" + secrets.token_hex(6)
            token = TOKEN_PREFIX + secrets.token_urlsafe(32)
            entry["hash"] = token_hash(bytes.fromhex(data["key"]), token)
            data["tokens"].append(entry)
        self.write(data)
        return entry["id"], token

    def entries(self) -> list[dict]:
        data = self.read()
        return [
            {k: v for k, v in e.items() if k != "hash"} for e in data["tokens"] + data["subjects"]
        ]

    def revoke(self, ident: str) -> list[str]:
        """Removes the entries with this id, or every entry of this principal; the
        ids removed."""
        data = self.read()
        removed: list[str] = []
        for kind in ("tokens", "subjects"):
            kept = []
            for entry in data[kind]:
                if ident in (entry.get("id"), entry.get("principal")):
                    removed.append(entry["id"])
                else:
                    kept.append(entry)
            data[kind] = kept
        if removed:
            self.write(data)
        return removed


class StepTokens:
    """Tokens the runtime gives the steps of an execution: scoped to it, valid until it
    ends (revoked then) or ``ttl`` seconds, whichever comes first. Kept in memory by
    the replica that runs the execution, which is the one its steps dial."""

    def __init__(self) -> None:
        self.by_token: dict[str, Principal] = {}
        self.by_execution: dict[str, str] = {}

    def issue(
        self,
        execution_id: str,
        resource_group: str,
        configuration_id: str,
        ttl: float = 7 * 86400,
    ) -> str:
        self.revoke(execution_id)
        token = STEP_TOKEN_PREFIX + secrets.token_urlsafe(32)
        self.by_token[token] = Principal(
            name=f"execution:{execution_id}",
            step_group=resource_group,
            credential_id="step:" + execution_id,
            expires_at=time.time() + ttl,
            execution_id=execution_id,
            configuration_id=configuration_id,
        )
        self.by_execution[execution_id] = token
        return token

    def revoke(self, execution_id: str) -> None:
        token = self.by_execution.pop(execution_id, None)
        if token is not None:
            self.by_token.pop(token, None)

    def lookup(self, token: str, now: float | None = None) -> Lookup:
        principal = self.by_token.get(token)
        if principal is None:
            return Lookup(None)
        if principal.expires_at is not None and (now or time.time()) >= principal.expires_at:
            return Lookup(None, expired=True)
        return Lookup(principal)

    def valid(self, principal: Principal, now: float) -> bool:
        token = self.by_execution.get(principal.execution_id)
        current = self.by_token.get(token) if token else None
        return current is principal and (principal.expires_at is None or now < principal.expires_at)
