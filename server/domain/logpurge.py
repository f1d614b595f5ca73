"""The log purger: removes the stored lines of deleted executions in the background.

Deleting an execution removes its row, history and metrics in one short transaction
and queues its log lines for purging (the store hides them from every read from that
commit on): a delete returns at once however many lines the execution printed. The
purger then deletes them, up to ``chunk`` lines per transaction
(``LogStore.purge_logs``), until the queue is empty.

The chunks run on the store's writer thread, in turn with every other write: a write
asked for during a purge waits for one chunk at most. Chunks that take longer than
``target`` seconds are made smaller (halved, down to ``min_chunk`` lines), quick ones
larger again (up to ``chunk``). Between two chunks the purger waits about as long as
the last one took (``pause``, capped by ``max_pause``), which leaves the database's
write lock free for the writers of other connections (the log sink's, other
processes on one SQLite file) at least half of the time: a purge of millions of lines
slows the rest of the server a little rather than stalling it.

It is woken by every delete (``on_event``) and looks at the queue every ``interval``
seconds anyway: the queue is a table, so a purge that a stop or a crash interrupted
goes on after the next start, and on PostgreSQL any replica's purger may take it on.
Several replicas purging at once is safe: each chunk deletes a key range of one
execution's lines, and replicas mostly take different executions.

Storage faults are logged and the purge is tried again later (with a growing delay,
capped at ``interval``); a delete is never held up by them.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

import structlog

from server.domain.ports import LogStore
from server.domain.retry import backoff, describe, is_transient
from server.domain.service import ExecutionEvent

log = structlog.get_logger(__name__)


@dataclass(eq=False)
class LogPurger:
    store: LogStore
    chunk: int = 20_000  # most lines deleted per transaction
    min_chunk: int = 1000  # fewest, when chunks are slow
    target: float = 0.05  # seconds a chunk should take, about
    interval: float = 5.0  # seconds between looks at the queue when nothing wakes it
    pause: float = 1.0  # after a chunk, wait this many times as long as it took...
    max_pause: float = 0.1  # ...but at most this many seconds
    retry_delay: float = 0.5  # after the first failure; doubled up to ``interval``
    # Counters for operators and tests.
    purged: int = 0  # lines deleted
    failures: int = 0  # purge calls that failed
    _size: int = field(default=0, init=False, repr=False)  # lines of the next chunk
    _wake: asyncio.Event = field(default_factory=asyncio.Event, init=False, repr=False)
    _task: asyncio.Task | None = field(default=None, init=False, repr=False)

    def start(self) -> None:
        """Start purging (on the event loop): first whatever is queued already."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="trainyard-log-purger"
            )

    def wake(self) -> None:
        """Look at the queue now (something was queued)."""
        self._wake.set()

    def on_event(self, event: ExecutionEvent) -> None:
        """A control plane listener: every delete wakes the purger."""
        if event.kind == "deleted":
            self.wake()

    async def close(self) -> None:
        """Stop purging (at server shutdown); what is left stays queued. A chunk that
        is running is finished by the store's writer, or rolled back with it."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def purge(self) -> int:
        """Purge until nothing is queued; returns the lines deleted."""
        loop = asyncio.get_running_loop()
        total = 0
        while True:
            size = self._size = min(self.chunk, max(self.min_chunk, self._size or self.chunk))
            started = loop.time()
            deleted = await self.store.purge_logs(size)
            took = loop.time() - started
            if not deleted:
                return total
            total += deleted
            self.purged += deleted
            if took > 2 * self.target:
                self._size = size // 2
            elif took < self.target / 2 and deleted == size:
                self._size = size * 2
            # Room for the other writers before the next chunk.
            await asyncio.sleep(min(self.max_pause, took * self.pause))

    async def _run(self) -> None:
        failed = 0
        while True:
            self._wake.clear()
            try:
                deleted = await self.purge()
            except Exception as exc:  # noqa: BLE001 - the purge is retried later
                failed += 1
                self.failures += 1
                delay = backoff(failed, self.retry_delay, self.interval)
                if is_transient(exc):
                    log.warning(
                        "log purge failed; retrying", error=describe(exc), retry_in=delay
                    )
                else:
                    log.exception("log purge failed; retrying", retry_in=delay)
            else:
                if deleted:
                    log.info("log lines of deleted executions purged", lines=deleted)
                failed = 0
                delay = self.interval
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)
