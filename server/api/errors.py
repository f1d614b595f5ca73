"""Domain errors -> gRPC status with google.rpc details, and the interceptor that
applies it to every unary and streaming call, binds the request context and writes
one canonical log line per call."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import structlog
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from server.api import context as ctx
from server.domain import validation
from server.domain.errors import (
    DomainError,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    Reason,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from server.domain.ids import random_hex
from server.domain.principal import ANONYMOUS
from server.security.authn import Authenticator, OpenStream

log = structlog.get_logger("trainyard.rpc")

ERROR_DOMAIN = "trainyard.dev"
DETAILS_KEY = "grpc-status-details-bin"

# What an error echoes is capped, so that its trailers stay well under gRPC's default
# metadata limit (8 KiB, where a client's call fails with RESOURCE_EXHAUSTED instead
# of the error): the message travels twice (grpc-message, percent-encoded, and in the
# status), the serialized status once (base64: 4/3 of its size).
MAX_MESSAGE_CHARS = 400  # bytes of grpc-message (at most 3 on the wire per byte)
MAX_TEXT_CHARS = 200  # bytes of each field path, description, metadata value
MAX_STATUS_BYTES = 4096  # serialized google.rpc.Status (about 5.5 KiB in base64)


def _pack(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def clip(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes, marked with an ellipsis when cut."""
    raw = text.encode()
    if len(raw) <= limit:
        return text
    return raw[: limit - 3].decode(errors="ignore") + "\u2026"


def _bad_request(violations: list[FieldViolation]) -> error_details_pb2.BadRequest:
    """The violations, clipped, as many as fit in half the status budget; when some
    are left out, a last one says how many."""
    bad = error_details_pb2.BadRequest()
    size = 0
    for i, v in enumerate(violations):
        item = error_details_pb2.BadRequest.FieldViolation(
            field=clip(v.field), description=clip(v.description)
        )
        size += item.ByteSize() + 4
        if size > MAX_STATUS_BYTES // 2 and i:
            bad.field_violations.add(description=f"and {len(violations) - i} more, not listed")
            break
        bad.field_violations.append(item)
    return bad


def to_status(error: DomainError, request_id: str) -> tuple[grpc.StatusCode, str, bytes]:
    """The gRPC code, message and serialized google.rpc.Status of a domain error, with
    what it echoes capped (see MAX_STATUS_BYTES)."""
    code = getattr(grpc.StatusCode, error.code, grpc.StatusCode.INTERNAL)
    message = clip(error.message, MAX_MESSAGE_CHARS)
    metadata = {clip(k, 64): clip(v) for k, v in error.metadata.items()}
    if request_id:
        metadata.setdefault("request_id", clip(request_id))
    details = [
        _pack(
            error_details_pb2.ErrorInfo(
                reason=str(error.reason), domain=ERROR_DOMAIN, metadata=metadata
            )
        )
    ]
    if isinstance(error, InvalidArgument) and error.violations:
        bad = _bad_request(error.violations)
        details.append(_pack(bad))
    if isinstance(error, NotFound) and error.resource_type:
        details.append(
            _pack(
                error_details_pb2.ResourceInfo(
                    resource_type=error.resource_type,
                    resource_name=clip(error.resource_name),
                    description=message,
                )
            )
        )
    if isinstance(error, FailedPrecondition):
        details.append(
            _pack(
                error_details_pb2.PreconditionFailure(
                    violations=[
                        error_details_pb2.PreconditionFailure.Violation(
                            type=str(error.reason),
                            subject=metadata.get("execution_id") or metadata.get("field", ""),
                            description=message,
                        )
                    ]
                )
            )
        )
    if isinstance(error, ResourceExhausted):
        details.append(
            _pack(
                error_details_pb2.QuotaFailure(
                    violations=[
                        error_details_pb2.QuotaFailure.Violation(
                            subject=str(error.reason), description=message
                        )
                    ]
                )
            )
        )
    if isinstance(error, Unavailable) or (
        isinstance(error, ResourceExhausted) and error.retry_after > 0
    ):
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(error.retry_after * 1e9))
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    status = status_pb2.Status(
        code=getattr(code_pb2, error.code, code_pb2.INTERNAL),
        message=message,
        details=details,
    )
    return code, message, status.SerializeToString()


def _internal(request_id: str) -> DomainError:
    return DomainError(
        message=f"internal error (request id {request_id})",
        reason=Reason.INTERNAL_ERROR,
        metadata={"request_id": request_id},
    )


class _Oversized:
    """What the request deserializer hands on for a message over the size limit."""

    __slots__ = ("size",)

    def __init__(self, size: int):
        self.size = size


# gRPC's own receive limit is this many times the server's message limit: a request
# between the two is refused by the interceptor with LIMIT_EXCEEDED details; one over
# gRPC's limit is refused by gRPC itself before any server code sees it (status
# RESOURCE_EXHAUSTED, no details).
RECEIVE_HEADROOM = 4


def receive_limit(max_message_bytes: int) -> int:
    """The ``grpc.max_receive_message_length`` for a server limit of ``max_message_bytes``."""
    return min(RECEIVE_HEADROOM * max_message_bytes, 2**31 - 1)


def _checked(deserialize: Callable[[bytes], Any] | None, limit: int) -> Callable[[bytes], Any]:
    def checked(data: bytes) -> Any:
        if len(data) > limit:
            return _Oversized(len(data))
        return deserialize(data) if deserialize is not None else data

    return checked


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """Binds request id / rpc / resource group, maps errors, logs each call once."""

    def __init__(
        self,
        default_resource_group: str = "default",
        max_streams_per_client: int = 100,
        max_message_bytes: int = 4 * 1024 * 1024,
        auth: Authenticator | None = None,
    ):
        self.default_resource_group = default_resource_group
        self.max_streams_per_client = max_streams_per_client
        self.max_message_bytes = max_message_bytes
        # Who may call what (server/security/authn.py); None: everyone, everything.
        self.auth = auth if auth is not None and auth.enabled else None
        # Open server streams per client connection (peer address).
        self.open_streams: dict[str, int] = {}
        # Calls being served, per method (full name): for operators and tests.
        self.in_flight: dict[str, int] = {}
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        wrapped = self._wrapped.get(method)
        if wrapped is not None:
            return wrapped
        handler = await continuation(handler_call_details)
        if handler is None or method.startswith(("/grpc.health", "/grpc.reflection")):
            return handler
        wrapped = self._wrap(method, handler)
        self._wrapped[method] = wrapped
        return wrapped

    def _oversized(self, request: _Oversized) -> ResourceExhausted:
        return ResourceExhausted(
            message=(
                f"request of {request.size} bytes is over the server's limit of"
                f" {self.max_message_bytes} bytes"
            ),
            reason=Reason.LIMIT_EXCEEDED,
            metadata={"limit": str(self.max_message_bytes), "size": str(request.size)},
        )

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """The handler with context binding, error mapping, the request size check and
        the per-call log line (built once per method)."""
        deserialize = _checked(handler.request_deserializer, self.max_message_bytes)
        if handler.unary_unary is not None:
            inner = handler.unary_unary

            async def unary_unary(request, context):
                start, authorization = self._begin(method, context)
                try:
                    group = ctx.resource_group()
                    validation.check_resource_group(group)
                    if type(request) is _Oversized:
                        raise self._oversized(request)
                    if self.auth is not None:
                        ctx.principal_var.set(
                            self.auth.check(method, group, request, authorization, context)
                        )
                    return await inner(request, context)
                except Exception as exc:  # noqa: BLE001 - mapped below, never leaked
                    await self._fail(context, exc)
                finally:
                    self._end(method, context, start)

            return grpc.unary_unary_rpc_method_handler(
                unary_unary,
                request_deserializer=deserialize,
                response_serializer=handler.response_serializer,
            )

        if handler.unary_stream is not None:
            inner_stream = handler.unary_stream

            async def unary_stream(request, context) -> AsyncIterator[Any]:
                start, authorization = self._begin(method, context)
                peer = context.peer()
                counted = False
                stream: OpenStream | None = None
                try:
                    group = ctx.resource_group()
                    validation.check_resource_group(group)
                    if type(request) is _Oversized:
                        raise self._oversized(request)
                    if self.auth is not None:
                        principal = self.auth.check(method, group, request, authorization, context)
                        ctx.principal_var.set(principal)
                        if principal is not ANONYMOUS:
                            self.auth.limits.open_stream(principal.name)
                            stream = OpenStream(principal, asyncio.current_task())
                            self.auth.streams.add(stream)
                    if self.open_streams.get(peer, 0) >= self.max_streams_per_client:
                        raise ResourceExhausted(
                            message=(
                                f"at most {self.max_streams_per_client} open streams per client"
                                " connection; close some or open another connection"
                            ),
                            reason=Reason.LIMIT_EXCEEDED,
                            metadata={"limit": str(self.max_streams_per_client)},
                        )
                    self.open_streams[peer] = self.open_streams.get(peer, 0) + 1
                    counted = True
                    # aclosing: a cancelled call closes the handler's generator (and
                    # releases what it holds) at once, not when it is collected.
                    async with contextlib.aclosing(inner_stream(request, context)) as items:
                        async for item in items:
                            yield item
                except asyncio.CancelledError:
                    if stream is None or not stream.ended_by_auth:
                        raise
                    # Its credential expired or was revoked while it was open.
                    await self._fail(
                        context,
                        Unauthenticated(
                            message="the stream's token expired or was revoked",
                            reason=Reason.UNAUTHENTICATED,
                        ),
                    )
                except Exception as exc:  # noqa: BLE001
                    await self._fail(context, exc)
                finally:
                    if stream is not None:
                        self.auth.streams.discard(stream)
                        self.auth.limits.close_stream(stream.principal.name)
                    if counted:
                        left = self.open_streams[peer] - 1
                        if left:
                            self.open_streams[peer] = left
                        else:
                            del self.open_streams[peer]
                    self._end(method, context, start)

            return grpc.unary_stream_rpc_method_handler(
                unary_stream,
                request_deserializer=deserialize,
                response_serializer=handler.response_serializer,
            )
        return handler

    def _begin(self, method: str, context: grpc.aio.ServicerContext) -> tuple[float, str]:
        self.in_flight[method] = self.in_flight.get(method, 0) + 1
        request_id = ""
        group = ""
        authorization = ""
        for key, value in context.invocation_metadata() or ():
            if key == ctx.RESOURCE_GROUP_KEY:
                group = value
            elif key == ctx.REQUEST_ID_KEY:
                request_id = value
            elif key == ctx.AUTHORIZATION_KEY:
                authorization = value
        request_id = request_id or random_hex(16)
        group = group or self.default_resource_group
        # Each call runs in its own task, with its own copy of these variables; the
        # log lines of the call get them from ctx.add_call_context.
        ctx.request_id_var.set(request_id)
        ctx.resource_group_var.set(group)
        ctx.rpc_var.set(method)
        return time.perf_counter(), authorization

    async def _fail(self, context: grpc.aio.ServicerContext, exc: BaseException) -> None:
        request_id = ctx.request_id_var.get()
        if isinstance(exc, grpc.aio.AbortError):
            raise exc
        if isinstance(exc, DomainError):
            error = exc
        elif isinstance(exc, NotImplementedError):
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "method not implemented")
        else:
            log.error("unexpected error", exc_info=exc)
            error = _internal(request_id)
        code, message, status = to_status(error, request_id)
        await context.abort(code, message, trailing_metadata=((DETAILS_KEY, status),))

    def _end(self, method: str, context: grpc.aio.ServicerContext, start: float) -> None:
        self.in_flight[method] -= 1
        code = context.code()
        if code is None:
            name = "OK"
        elif isinstance(code, grpc.StatusCode):
            name = code.name
        else:
            name = str(code)
        duration_ms = round((time.perf_counter() - start) * 1000, 3)
        level = log.warning if name == "INTERNAL" else log.info
        level("rpc", code=name, duration_ms=duration_ms)
