"""How long request ids are remembered: the idempotency retention, enforced by a purge
that runs in the background and deletes the ids recorded longer ago than that.

Within the retention a repeat of a create (or of a WriteMetrics call) with the same
request id returns the first result; after it the id is forgotten and a repeat is a
new request.

The same purge deletes the recorded changes of executions older than the retention
(``execution_event``, the numbers set-watch cursors count): a set watch resumes from
a cursor within the retention, and starts over with a snapshot from an older one."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Protocol

import structlog

log = structlog.get_logger("trainyard.retention")

DEFAULT_RETENTION_SECONDS = 24 * 3600


class IdempotencyStore(Protocol):
    async def purge_idempotency_keys(self, before_us: int) -> int: ...

    async def purge_events(self, before_us: int) -> int: ...


def parse_duration(text: str) -> float:
    """Seconds of ``90``, ``90s``, ``30m``, ``24h`` or ``7d``; ValueError otherwise."""
    text = text.strip().lower()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    scale = units.get(text[-1:], None)
    number = text[:-1] if scale is not None else text
    seconds = float(number) * (scale or 1)
    if not seconds > 0 or seconds == float("inf"):
        raise ValueError(f"not a positive duration: {text!r}")
    return seconds


@dataclass
class IdempotencyPurger:
    """Deletes request ids older than ``retention`` seconds, every ``interval``
    (default: a quarter of the retention, at most 10 minutes)."""

    store: IdempotencyStore
    retention: float = DEFAULT_RETENTION_SECONDS
    interval: float = 0.0
    purged: int = 0  # ids deleted, for operators and tests
    _task: asyncio.Task | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.interval:
            self.interval = min(max(self.retention / 4, 0.05), 600.0)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="trainyard-idempotency-purger"
            )

    async def purge_once(self) -> int:
        before_us = int((time.time() - self.retention) * 1_000_000)
        count = await self.store.purge_idempotency_keys(before_us)
        self.purged += count
        if count:
            log.info("request ids past their retention deleted", count=count)
        events = await self.store.purge_events(before_us)
        if events:
            log.info("recorded execution changes past their retention deleted", count=events)
        return count

    async def _run(self) -> None:
        while True:
            try:
                await self.purge_once()
            except Exception as exc:  # noqa: BLE001 - the next round tries again
                log.warning("request id purge failed", error=str(exc))
            await asyncio.sleep(self.interval)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
