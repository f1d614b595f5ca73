"""Per-call context: request id and resource group, carried in contextvars."""

from __future__ import annotations

import contextvars

RESOURCE_GROUP_KEY = "ai-resource-group"
REQUEST_ID_KEY = "x-request-id"

resource_group_var: contextvars.ContextVar[str] = contextvars.ContextVar(
    "resource_group", default="default"
)
request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")


def resource_group() -> str:
    """The resource group of the current call (validated by the interceptor)."""
    return resource_group_var.get()
