"""The method handlers of every service, registered on the gRPC server as one table.

The ``add_*_to_server`` functions that grpcio-tools generates register each service
twice: as a generic handler, and as "registered methods". A grpc.aio server keeps one
pending request task per registered method and, for every call it accepts, waits on
all of them at once (``asyncio.wait``), which costs in proportion to the number of
methods. With the 35 methods of our services, health and reflection, that wait took
9 % of the event loop's samples under a stream of CreateExecution calls (py-spy).
Served from one generic handler that finds the method's handler by its path in a
dict, the server waits on one request at a time (2 %); the interceptors and handlers
are the same.
"""

from __future__ import annotations

import grpc


class HandlerCollector:
    """Stands in for a grpc server while ``add_*_to_server`` functions register
    their handlers, keeping each method's handler by its path."""

    def __init__(self) -> None:
        self.handlers: dict[str, grpc.RpcMethodHandler] = {}

    def add_generic_rpc_handlers(self, handlers) -> None:
        pass

    def add_registered_method_handlers(self, service: str, handlers: dict) -> None:
        for method, handler in handlers.items():
            self.handlers[f"/{service}/{method}"] = handler


class MethodTable(grpc.GenericRpcHandler):
    """A generic handler answering every collected method by its path."""

    def __init__(self, handlers: dict[str, grpc.RpcMethodHandler]) -> None:
        self.handlers = handlers

    def service(self, handler_call_details) -> grpc.RpcMethodHandler | None:
        return self.handlers.get(handler_call_details.method)
