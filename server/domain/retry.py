"""Storage faults: telling a transient one (retry) from a permanent one (give up), and
retrying a store call until it lands.

A transient fault is one that a later attempt may not meet: the database is locked or
busy, an I/O error, a full disk, a lost connection (``Unavailable``, or the drivers'
``OperationalError``: sqlite3's, peewee's and psycopg's share the name). Anything else
(an ``IntegrityError``, a domain error such as ``FailedPrecondition``) fails the same
way every time.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

import structlog

from server.domain.errors import DomainError, Unavailable

log = structlog.get_logger(__name__)

# Class names of the database drivers' transient errors (the domain imports no driver).
TRANSIENT_ERROR_NAMES = frozenset({"OperationalError"})
FIRST_DELAY = 0.05  # seconds before the second attempt; doubled after each failure
MAX_DELAY = 5.0


def is_transient(exc: BaseException) -> bool:
    """Whether a store call that raised ``exc`` may succeed when tried again."""
    if isinstance(exc, Unavailable):
        return True
    if isinstance(exc, DomainError):
        return False
    if isinstance(exc, OSError):
        return True
    return any(cls.__name__ in TRANSIENT_ERROR_NAMES for cls in type(exc).__mro__)


def describe(exc: BaseException) -> str:
    """A short text for ``exc``, for status messages and log entries."""
    return str(exc) or type(exc).__name__


def backoff(attempt: int, first: float = FIRST_DELAY, cap: float = MAX_DELAY) -> float:
    """The wait after the ``attempt``-th failed attempt (1, 2, ...): doubling, capped."""
    return min(cap, first * 2 ** (attempt - 1))


async def until_stored(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """Call ``fn(*args, **kwargs)`` (awaiting its result when it is awaitable) until it
    does not fail with a transient fault, waiting longer after each failure (capped),
    and logging each. Returns what ``fn`` returns; any other error is raised at once.
    There is no limit on the attempts: use it for writes that must land (an
    execution's final status); cancel the task to give up."""
    attempt = 0
    while True:
        attempt += 1
        try:
            result = fn(*args, **kwargs)
            if inspect.isawaitable(result):
                result = await result
            return result
        except Exception as exc:
            if not is_transient(exc):
                raise
            delay = backoff(attempt)
            log.warning(
                "store call failed; retrying",
                call=getattr(fn, "__qualname__", repr(fn)),
                attempt=attempt,
                retry_in=delay,
                error=describe(exc),
            )
        await asyncio.sleep(delay)
