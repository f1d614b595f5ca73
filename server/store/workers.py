"""Store work off the event loop: worker threads, each with its own connection.

The event loop never runs a query. A call is handed to a thread and the loop awaits
its result, so a slow query or a locked database delays only the calls that need the
store; health, meta, cached reads and live streams keep answering.

Two kinds of thread:
- one *writer*: every write transaction of the API and the runtime runs there, in the
  order it was asked for. SQLite has one writer at a time anyway; with one thread the
  server's own writes never contend with each other for the lock, and writes that
  arrive while one runs are taken together by the callers that group them (creates).
- a few *readers*, sharing one queue: reads run in parallel with the write (SQLite in
  WAL mode lets readers go on while a writer holds the lock; PostgreSQL's MVCC too).

peewee keeps one connection per thread, so each worker has its own. An in-memory
SQLite database is one connection's: there a single thread does both.

Storage faults (busy or locked beyond the busy timeout, an I/O error, a full disk, a
lost connection) become :class:`StoreUnavailable`, which the API answers with
UNAVAILABLE and a retry delay; the transaction that hit them was rolled back by
``atomic()``, so nothing of the call stays written.
"""

from __future__ import annotations

import asyncio
import contextvars
import queue
import sqlite3
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import peewee as pw
import structlog

from server.domain.errors import StoreUnavailable

log = structlog.get_logger(__name__)

T = TypeVar("T")

# Seconds a client is told to wait before retrying a call the store could not serve.
RETRY_AFTER = 1.0
# Words in a driver's error that mark a fault of the store, not of the call.
_TRANSIENT = (
    "locked",
    "busy",
    "disk i/o",
    "disk is full",
    "unable to open",
    "readonly",
    "read-only",
    "connection",
    "server closed",
    "terminating",
    "timeout",
    "timed out",
    "could not",
    "shutting down",
)


def storage_fault(exc: BaseException) -> StoreUnavailable | None:
    """The StoreUnavailable that a driver's exception stands for, or None when the
    exception is not a storage fault (a bug, or a domain error)."""
    if isinstance(exc, StoreUnavailable):
        return exc
    if not isinstance(exc, (pw.OperationalError, pw.InterfaceError, sqlite3.OperationalError)):
        name = type(exc).__module__
        # psycopg's OperationalError (connection lost, server shutting down) and its
        # pool's timeout, matched by module so that this file needs no psycopg.
        if not (name.startswith("psycopg") and type(exc).__name__ in ("OperationalError",
                                                                       "PoolTimeout")):
            return None
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    lowered = text.lower()
    if not any(word in lowered for word in _TRANSIENT):
        return None
    return StoreUnavailable(
        message=f"the store is unavailable: {text[:200]}; retry in {RETRY_AFTER:g} s",
        metadata={"cause": text[:200]},
        retry_after=RETRY_AFTER,
    )


class _Thread:
    """A worker: takes calls from its queue until it gets None."""

    def __init__(self, name: str, calls: queue.SimpleQueue, on_exit: Callable[[], None]):
        self.calls = calls
        self.on_exit = on_exit
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            while True:
                item = self.calls.get()
                if item is None:
                    return
                item()
        finally:
            try:
                self.on_exit()
            except Exception:  # noqa: BLE001 - closing a connection at exit
                log.warning("store worker could not close its connection", exc_info=True)


class StoreWorkers:
    """Runs synchronous store functions on the writer or on a reader thread."""

    def __init__(
        self,
        readers: int = 4,
        *,
        shared: bool = True,
        close_connection: Callable[[], None] = lambda: None,
        on_fault: Callable[[], None] = lambda: None,
    ):
        """``shared``: whether threads may have connections of their own (False for an
        in-memory database: then one thread does everything). ``close_connection``
        runs on each worker as it exits (peewee's ``db.close`` closes the calling
        thread's connection); ``on_fault`` on a worker after a storage fault (to drop
        a connection that was lost)."""
        self.on_fault = on_fault
        self._write_calls: queue.SimpleQueue = queue.SimpleQueue()
        self._read_calls: queue.SimpleQueue = (
            queue.SimpleQueue() if shared else self._write_calls
        )
        self._threads = [_Thread("trainyard-store-writer", self._write_calls, close_connection)]
        if shared:
            self._threads += [
                _Thread(f"trainyard-store-reader-{i}", self._read_calls, close_connection)
                for i in range(readers)
            ]
        self.closed = False

    async def read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await self._submit(self._read_calls, fn, args, kwargs)

    async def write(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await self._submit(self._write_calls, fn, args, kwargs)

    def _submit(self, calls: queue.SimpleQueue, fn, args, kwargs) -> asyncio.Future:
        if self.closed:
            raise StoreUnavailable(
                message="the store is closed (server shutting down)",
                metadata={"cause": "closed"},
                retry_after=RETRY_AFTER,
            )
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        context = contextvars.copy_context()  # the caller's log context, on the worker

        def resolve(ok: bool, value: Any) -> None:
            if future.done():  # the caller went away (cancelled)
                return
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

        def run() -> None:
            if future.cancelled():
                return
            try:
                value = context.run(fn, *args, **kwargs)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                fault = storage_fault(exc)
                if fault is not None:
                    log.warning("store fault", cause=fault.metadata.get("cause", ""))
                    self._after_fault()
                    exc = fault
                loop.call_soon_threadsafe(resolve, False, exc)
            else:
                loop.call_soon_threadsafe(resolve, True, value)

        calls.put(run)
        return future

    def _after_fault(self) -> None:
        try:
            self.on_fault()
        except Exception:  # noqa: BLE001 - the fault itself is reported to the caller
            log.warning("store connection reset failed", exc_info=True)

    def close(self) -> None:
        """Finish the calls already queued, then stop every thread (each closes its
        connection)."""
        if self.closed:
            return
        self.closed = True
        for worker in self._threads:
            worker.calls.put(None)
        for worker in self._threads:
            worker.thread.join(30)
