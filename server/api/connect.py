"""The trainyard.v1 services over the Connect protocol (for browsers), served by the
same servicers as gRPC, through the same server interceptors.

A Connect call is handed to the gRPC method handler the interceptors return for it
(the interceptors see the call's method and metadata as they would over gRPC), with a
context that plays the part of grpc.aio's: the call's headers as invocation metadata,
``abort`` ending the call with the same status, message and google.rpc details, which
become the Connect error's code, message and details. So validation, resource groups,
error mapping, per-client stream limits and the per-call log line are those of gRPC,
and no use case is written twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import grpc
from connectrpc.code import Code
from connectrpc.errors import ConnectError
from connectrpc.request import RequestContext
from google.rpc import status_pb2

from server.api.errors import DETAILS_KEY

# gRPC status code -> Connect code (the same codes; Connect spells CANCELLED CANCELED).
_CODES: dict[grpc.StatusCode, Code] = {
    code: getattr(Code, code.name.replace("CANCELLED", "CANCELED"))
    for code in grpc.StatusCode
    if code != grpc.StatusCode.OK
}


_END = object()  # the end of a handler's stream


class _Aborted(grpc.aio.AbortError):
    """Ends a bridged call: the interceptors let an abort through, as grpc.aio's."""

    def __init__(self, code: grpc.StatusCode, message: str, details: bytes):
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details

    def connect_error(self) -> ConnectError:
        details: list[Any] = []
        if self.details:
            details = list(status_pb2.Status.FromString(self.details).details)
        return ConnectError(_CODES.get(self.code, Code.INTERNAL), self.message, details)


class _CallContext:
    """The part of grpc.aio.ServicerContext the servicers and interceptors use."""

    def __init__(self, ctx: RequestContext):
        self.ctx = ctx
        headers = ctx.request_headers()
        self.metadata = tuple(
            (key.lower(), value)
            for key, value in headers.allitems()
            if not key.lower().startswith(("connect-", "content-", "accept"))
        )
        self._code: grpc.StatusCode | None = None

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self.metadata

    def peer(self) -> str:
        return f"connect:{self.ctx.client_address() or 'unknown'}"

    def auth_context(self) -> dict:
        return {}  # no client certificate over the console's HTTP

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def time_remaining(self) -> float | None:
        remaining = self.ctx.timeout_ms()
        return None if remaining is None else remaining / 1000

    async def abort(
        self, code: grpc.StatusCode, details: str = "", trailing_metadata: Iterable = ()
    ):
        status = b""
        for key, value in trailing_metadata or ():
            if key == DETAILS_KEY:
                status = value
        self._code = code
        raise _Aborted(code, details, status)


@dataclass(frozen=True)
class _CallDetails(grpc.HandlerCallDetails):
    method: str
    invocation_metadata: tuple[tuple[str, str], ...]


def _snake(name: str) -> str:
    """`ListExecutionHistory` -> `list_execution_history`, as the generator names it."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()


class Bridge:
    """Answers Connect calls with the gRPC method handlers, through the interceptors."""

    def __init__(
        self,
        handlers: dict[str, grpc.RpcMethodHandler],
        interceptors: Iterable[grpc.aio.ServerInterceptor] = (),
    ):
        self.handlers = handlers
        self.interceptors = list(interceptors)
        self.closing = asyncio.Event()

    async def handler(self, method: str, context: _CallContext) -> grpc.RpcMethodHandler:
        """The handler for ``method`` after every interceptor, as grpc.aio builds it."""

        async def base(details: grpc.HandlerCallDetails):
            return self.handlers.get(details.method)

        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]] = base
        for interceptor in reversed(self.interceptors):
            continuation = _link(interceptor, continuation)
        handler = await continuation(_CallDetails(method, context.invocation_metadata()))
        if handler is None:
            raise ConnectError(Code.UNIMPLEMENTED, f"method {method} not implemented")
        return handler

    def service(self, service_name: str, methods: Iterable[str], outputs: dict[str, type]):
        """An object with the generator's snake_case method names, for the generated
        Connect application of ``service_name``."""
        implementation = type(f"Connect{service_name.rsplit('.', 1)[-1]}", (), {})()
        for name in methods:
            path = f"/{service_name}/{name}"
            handler = self.handlers[path]
            if handler.unary_stream is not None:
                call = self._server_stream(path, outputs[name])
            else:
                call = self._unary(path)
            setattr(implementation, _snake(name), call)
        return implementation

    def _unary(self, path: str):
        async def call(request, ctx: RequestContext):
            context = _CallContext(ctx)
            try:
                handler = await self.handler(path, context)
                return await handler.unary_unary(request, context)
            except _Aborted as aborted:
                raise aborted.connect_error() from None

        return call

    def _server_stream(self, path: str, output: type):
        async def call(request, ctx: RequestContext) -> AsyncIterator[Any]:
            context = _CallContext(ctx)
            try:
                handler = await self.handler(path, context)
                async with contextlib.aclosing(handler.unary_stream(request, context)) as items:
                    while True:
                        item = await self._next(items)
                        if item is _END:
                            break
                        # Log tails hand over pre-encoded messages.
                        yield output.FromString(item) if isinstance(item, bytes) else item
            except _Aborted as aborted:
                raise aborted.connect_error() from None

        return call

    async def _next(self, items: AsyncIterator[Any]) -> Any:
        """The stream's next item, or UNAVAILABLE once the bridge closes: open streams
        end with a status the client retries instead of being cut off."""
        step = asyncio.ensure_future(anext(items, _END))
        closing = asyncio.ensure_future(self.closing.wait())
        try:
            await asyncio.wait((step, closing), return_when=asyncio.FIRST_COMPLETED)
        finally:
            closing.cancel()
        if not step.done():
            step.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await step
            raise ConnectError(Code.UNAVAILABLE, "the server is shutting down; retry")
        return step.result()

    def close(self) -> None:
        """End every open stream (the server is stopping)."""
        self.closing.set()


def _link(interceptor: grpc.aio.ServerInterceptor, continuation):
    async def next_(details: grpc.HandlerCallDetails):
        return await interceptor.intercept_service(continuation, details)

    return next_
