"""Per-call context: request id, rpc and resource group, carried in contextvars."""

from __future__ import annotations

import contextvars

from server.domain.audit import Caller
from server.domain.principal import ANONYMOUS, Principal

RESOURCE_GROUP_KEY = "ai-resource-group"
REQUEST_ID_KEY = "x-request-id"
AUTHORIZATION_KEY = "authorization"

resource_group_var: contextvars.ContextVar[str] = contextvars.ContextVar(
    "resource_group", default="default"
)
request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
rpc_var: contextvars.ContextVar[str] = contextvars.ContextVar("rpc", default="")
principal_var: contextvars.ContextVar[Principal] = contextvars.ContextVar(
    "principal", default=ANONYMOUS
)


def add_call_context(logger, method_name: str, event_dict: dict) -> dict:
    """structlog processor: the request id, rpc and resource group of the current call
    on every line logged while serving it (read from the variables above, which the
    interceptor sets: cheaper than binding structlog's own context variables)."""
    request_id = request_id_var.get()
    if request_id:
        event_dict.setdefault("request_id", request_id)
        event_dict.setdefault("rpc", rpc_var.get())
        event_dict.setdefault("resource_group", resource_group_var.get())
    return event_dict


def resource_group() -> str:
    """The resource group of the current call (validated by the interceptor)."""
    return resource_group_var.get()


def principal() -> Principal:
    """The authenticated caller of the current call (ANONYMOUS when auth is off)."""
    return principal_var.get()


def caller() -> Caller:
    """The current call's principal and request id, for the use cases."""
    return Caller(principal_var.get(), request_id_var.get())
