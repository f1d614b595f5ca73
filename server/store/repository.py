"""The store: every read and write of Trainyard's metadata, on one database.

Methods are synchronous and short; each write is one transaction (``atomic``), run on
one of the store's worker threads (server/store/async_store.py), never on the event
loop. Rows become domain objects here; peewee's IntegrityError and DoesNotExist become
AlreadyExists and NotFound. The methods live with their aggregate: catalog.py,
executions.py, leases.py, logs.py, page_key.py, secrets.py; this class adds the
connection and its helpers.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from server.store import tables
from server.store.audit import AuditRepository
from server.store.catalog import CatalogRepository
from server.store.dialects import open_database
from server.store.executions import ExecutionRepository
from server.store.leases import LeaseRepository
from server.store.logs import LogRepository
from server.store.page_key import PageKeyRepository
from server.store.secrets import SecretRepository


class _Cursor:
    """A driver cursor whose statements are written in portable SQL."""

    __slots__ = ("cursor", "sql")

    def __init__(self, cursor, sql: Callable[[str], str]):
        self.cursor = cursor
        self.sql = sql

    def execute(self, sql: str, args: Sequence[Any] = ()):
        self.cursor.execute(self.sql(sql), args)
        return self.cursor

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]):
        self.cursor.executemany(self.sql(sql), rows)
        return self.cursor


class _Cache:
    """A small LRU map for immutable rows, shared by the store's worker threads."""

    def __init__(self, size: int):
        self.size = size
        self.items: OrderedDict = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key):
        with self.lock:
            return self._lookup(key)

    def peek(self, key):
        """The cached value, or None; None too, rather than waiting, while another
        thread holds the map (for the event loop, which never waits on a lock)."""
        if not self.lock.acquire(blocking=False):
            return None
        try:
            return self._lookup(key)
        finally:
            self.lock.release()

    def _lookup(self, key):  # the caller holds the lock
        value = self.items.get(key)
        if value is not None:
            self.items.move_to_end(key)
        return value

    def drop(self, key) -> None:
        with self.lock:
            self.items.pop(key, None)

    def put(self, key, value):
        with self.lock:
            self.items[key] = value
            self.items.move_to_end(key)
            while len(self.items) > self.size:
                self.items.popitem(last=False)
        return value


class Store(
    AuditRepository,
    CatalogRepository,
    ExecutionRepository,
    LeaseRepository,
    LogRepository,
    PageKeyRepository,
    SecretRepository,
):
    """Trainyard's metadata store on a peewee database (SQLite by default)."""

    def __init__(self, url: str, *, busy_timeout: float = 10.0):
        self.url = url
        self.in_memory = ":memory:" in url
        self.db, self.dialect = open_database(url, busy_timeout=busy_timeout)
        self.kind = self.dialect.name
        # The models, bound to this database only (never process-wide).
        self.t = tables.bind(self.db)
        # Called with the execution id inside delete transactions, so that other parts
        # (metrics) can remove their rows atomically with the execution.
        self.delete_hooks: list = []
        # Called with the execution id whenever a write changes or deletes the
        # execution's row or history (inside the writing transaction, on the writing
        # thread), so that caches of what was read from them can drop it.
        self.execution_write_hooks: list[Callable[[str], None]] = []
        # Immutable resources, cached by key (bounded).
        self._configurations: _Cache = _Cache(10_000)
        self._executables: _Cache = _Cache(1_000)

    def close(self) -> None:
        if not self.db.is_closed():
            self.db.close()

    def atomic(self):
        return self.db.atomic()

    def write_lock(self):
        """A write transaction for a read-check-write (see Dialect.write_transaction)."""
        return self.dialect.write_transaction(self.db)

    def integrity_check(self) -> str:
        return self.dialect.integrity_check(self.db)

    def execute(self, sql: str, args: Sequence[Any] = ()):
        """Run portable SQL (``?`` placeholders) through peewee; returns the cursor."""
        return self.db.execute_sql(self.dialect.sql(sql), args)

    def _select_in(
        self, sql: str, ids: Sequence[str], args: Sequence[Any] = (), suffix: str = ""
    ) -> list[tuple]:
        """Rows of ``sql`` ending in ``... IN`` for every id, 500 ids a statement."""
        rows: list[tuple] = []
        ids = list(ids)
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            rows += self.execute(
                f"{sql} ({', '.join('?' * len(chunk))}){suffix}", [*args, *chunk]
            ).fetchall()
        return rows

    def cursor(self) -> _Cursor:
        """A cursor of this thread's connection that takes portable SQL."""
        return _Cursor(self.db.cursor(), self.dialect.sql)

    def reset_connection(self) -> None:
        """After a storage fault: drop this thread's connection if it is no longer
        usable (a lost PostgreSQL connection), so that the next call opens a new one."""
        try:
            usable = self.db.is_connection_usable()
        except Exception:  # noqa: BLE001 - a broken connection may fail to answer
            usable = False
        if not usable and not self.in_memory:
            try:
                self.db.close()
            except Exception:  # noqa: BLE001 - closing what is already broken
                pass

