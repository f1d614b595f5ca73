"""The caller check of every call: who is calling (a bearer token, a step token or a
client certificate), whether the role table lets them, and the per-principal abuse
limits. The interceptor (server/api/errors.py) runs it before any handler."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from server.api.roles import OPEN, rule_of, step_execution_ids
from server.domain.errors import (
    NotFound,
    PermissionDenied,
    Reason,
    ResourceExhausted,
    Unauthenticated,
)
from server.domain.principal import ANONYMOUS, RANK, Principal
from server.security.tokens import (
    STEP_TOKEN_PREFIX,
    StepTokens,
    TokenFile,
    TokenFileError,
    TokenIndex,
)

log = structlog.get_logger("trainyard.auth")

BEARER = "bearer "


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float


@dataclass(slots=True, eq=False)
class OpenStream:
    """A live server stream of an authenticated principal, ended by the watchdog when
    the principal's credential expires or is revoked."""

    principal: Principal
    task: asyncio.Task
    ended_by_auth: bool = False


@dataclass
class Limits:
    """Abuse limits per principal: requests per second (a token bucket of
    ``burst`` calls) and concurrent server streams; 0 turns one off."""

    requests_per_second: float = 0.0
    burst: float = 0.0
    max_streams: int = 0
    buckets: dict[str, _Bucket] = field(default_factory=dict)
    streams: dict[str, int] = field(default_factory=dict)

    def take(self, name: str, now: float) -> None:
        rate = self.requests_per_second
        if rate <= 0:
            return
        burst = self.burst or rate
        bucket = self.buckets.get(name)
        if bucket is None:
            bucket = self.buckets[name] = _Bucket(burst, now)
        else:
            bucket.tokens = min(burst, bucket.tokens + (now - bucket.stamp) * rate)
            bucket.stamp = now
        if bucket.tokens < 1.0:
            wait = (1.0 - bucket.tokens) / rate
            raise ResourceExhausted(
                message=f"more than {rate:g} requests per second from {name!r}; retry later",
                reason=Reason.RATE_LIMITED,
                retry_after=max(wait, 0.001),
                metadata={"limit": f"{rate:g}", "principal": name},
            )
        bucket.tokens -= 1.0

    def open_stream(self, name: str) -> None:
        if self.max_streams <= 0:
            return
        count = self.streams.get(name, 0)
        if count >= self.max_streams:
            raise ResourceExhausted(
                message=f"at most {self.max_streams} open streams per principal; close some",
                reason=Reason.TOO_MANY_STREAMS,
                retry_after=1.0,
                metadata={"limit": str(self.max_streams), "principal": name},
            )
        self.streams[name] = count + 1

    def close_stream(self, name: str) -> None:
        if self.max_streams <= 0:
            return
        left = self.streams.get(name, 1) - 1
        if left > 0:
            self.streams[name] = left
        else:
            self.streams.pop(name, None)


class Authenticator:
    """Checks callers against the token file (reloaded when it changes), the step
    tokens and, with mutual TLS, client certificate subjects."""

    def __init__(
        self,
        token_file: Path | str | None = None,
        client_certificates: bool = False,
        step_tokens: StepTokens | None = None,
        limits: Limits | None = None,
        reload_seconds: float = 1.0,
    ):
        self.file = TokenFile(token_file) if token_file else None
        self.client_certificates = client_certificates
        self.enabled = self.file is not None or client_certificates
        self.steps = step_tokens or StepTokens()
        self.limits = limits or Limits()
        self.reload_seconds = reload_seconds
        self.index = TokenIndex()
        self._stamp: tuple | None = None
        self.streams: set[OpenStream] = set()
        self._task: asyncio.Task | None = None
        # Called on the loop with the credentials a change of the file added and
        # removed (the audit trail records them).
        self.on_change = None
        if self.file is not None:
            self._reload_now()

    # -- the token file --------------------------------------------------------

    def _file_stamp(self) -> tuple | None:
        assert self.file is not None
        try:
            st = os.stat(self.file.path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _reload_now(self) -> tuple[list[Principal], list[Principal]]:
        """Rereads the file when it changed (blocking: a worker thread's job once the
        server runs); the credentials added and those removed. A malformed file keeps
        the previous index."""
        stamp = self._file_stamp()
        if stamp == self._stamp and self._stamp is not None:
            return [], []
        try:
            index = self.file.index()
        except (OSError, TokenFileError) as exc:
            log.error("token file not reloaded", error=str(exc))
            return [], []
        before = self.index.principals()
        self.index, self._stamp = index, stamp
        after = index.principals()
        log.info("token file loaded", entries=len(index.ids))
        added = [p for ident, p in after.items() if ident not in before]
        removed = [p for ident, p in before.items() if ident not in after]
        return added, removed

    async def start(self) -> None:
        if self.enabled and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._watch())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _watch(self) -> None:
        """Notices token file changes and ends the streams whose credential expired or
        was revoked (within ``reload_seconds``)."""
        while True:
            await asyncio.sleep(self.reload_seconds)
            if self.file is not None:
                try:
                    added, removed = await asyncio.to_thread(self._reload_now)
                    if (added or removed) and self.on_change is not None:
                        await self.on_change(added, removed)
                except Exception as exc:  # noqa: BLE001 - keep watching
                    log.error("token file check failed", error=str(exc))
            self.end_invalid_streams()

    def end_invalid_streams(self) -> None:
        now = time.time()
        for stream in list(self.streams):
            if not stream.ended_by_auth and not self.still_valid(stream.principal, now):
                stream.ended_by_auth = True
                stream.task.cancel()

    def still_valid(self, principal: Principal, now: float) -> bool:
        if principal is ANONYMOUS:
            return True
        if principal.is_step:
            return self.steps.valid(principal, now)
        return self.index.valid(principal, now)

    # -- the check of one call -------------------------------------------------

    def authenticate(self, authorization: str, context) -> Principal:
        """The caller, or Unauthenticated."""
        if not self.enabled:
            return ANONYMOUS
        now = time.time()
        if authorization:
            if authorization[: len(BEARER)].lower() != BEARER:
                raise Unauthenticated(
                    message="authorization metadata must be 'Bearer TOKEN'",
                    reason=Reason.UNAUTHENTICATED,
                )
            token = authorization[len(BEARER) :].strip()
            if token.startswith(STEP_TOKEN_PREFIX):
                found = self.steps.lookup(token, now)
            else:
                found = self.index.lookup(token, now)
        elif self.client_certificates:
            subject = _peer_subject(context)
            if not subject:
                raise Unauthenticated(
                    message="no token and no client certificate", reason=Reason.UNAUTHENTICATED
                )
            found = self.index.subject(subject, now)
            if found.principal is None and not found.expired:
                raise Unauthenticated(
                    message="the client certificate's subject is not known",
                    reason=Reason.UNAUTHENTICATED,
                )
        else:
            raise Unauthenticated(
                message="this server requires a token: authorization metadata 'Bearer TOKEN'",
                reason=Reason.UNAUTHENTICATED,
            )
        if found.expired:
            raise Unauthenticated(message="the token has expired", reason=Reason.TOKEN_EXPIRED)
        if found.principal is None:
            raise Unauthenticated(
                message="the token is not valid (unknown or revoked)", reason=Reason.UNAUTHENTICATED
            )
        return found.principal

    def authorize(
        self, principal: Principal, method: str, resource_group: str, request, rule=None
    ) -> None:
        """Raises unless the table lets ``principal`` call ``method`` in the group."""
        if rule is None:
            rule = rule_of(method)
        if rule is None:
            raise PermissionDenied(
                message=f"{method} is not allowed", reason=Reason.PERMISSION_DENIED
            )
        if rule.role == OPEN or principal is ANONYMOUS:
            return
        if principal.is_step:
            self._authorize_step(principal, method, rule, resource_group, request)
            return
        held = principal.role_in(resource_group)
        if held is None and rule.id_field:
            ident = getattr(request, rule.id_field, "")
            if ident:
                # The same answer as for an id that exists nowhere.
                raise NotFound.of(rule.kind, ident)
        if held is None or RANK[held] < RANK[rule.role]:
            raise PermissionDenied(
                message=(
                    f"{principal.name!r} needs the {rule.role} role in resource group"
                    f" {resource_group!r} for {method.rsplit('/', 1)[-1]}"
                ),
                reason=Reason.PERMISSION_DENIED,
                metadata={"role": rule.role, "resource_group": resource_group},
            )

    def _authorize_step(self, principal, method, rule, resource_group, request) -> None:
        if not rule.step:
            raise PermissionDenied(
                message=f"a step's token may not call {method.rsplit('/', 1)[-1]}",
                reason=Reason.PERMISSION_DENIED,
            )
        if rule.step == "configuration":
            ident = request.configuration_id
            if resource_group != principal.step_group or ident != principal.configuration_id:
                raise NotFound.of("configuration", ident)
            return
        for ident in step_execution_ids(method, request):
            if resource_group != principal.step_group or ident != principal.execution_id:
                raise NotFound.of("execution", ident)

    def check(
        self, method: str, resource_group: str, request, authorization: str, context
    ) -> Principal:
        rule = rule_of(method)
        if rule is not None and rule.role == OPEN:
            return ANONYMOUS
        principal = self.authenticate(authorization, context)
        self.authorize(principal, method, resource_group, request, rule)
        if principal is not ANONYMOUS and self.limits.requests_per_second > 0:
            self.limits.take(principal.name, time.monotonic())
        return principal


def _peer_subject(context) -> str:
    auth = context.auth_context() or {}
    for key in ("x509_subject", "x509_common_name"):
        values = auth.get(key)
        if values:
            value = values[0].decode() if isinstance(values[0], bytes) else str(values[0])
            return value if key == "x509_subject" else f"CN={value}"
    return ""
