"""Database set-up: the deferred database, its pragmas, the numbered migrations.

The only modules that import peewee are in this package. The models are bound to
each database by its store (``tables.bind``), never here, and never process-wide.
"""

from __future__ import annotations

import os
from urllib.parse import urlparse

import peewee as pw

from server.store.migrations import SCHEMA_VERSION, SchemaTooNew, migrate

__all__ = ["SCHEMA_VERSION", "SQLITE_PRAGMAS", "SchemaTooNew", "migrate", "open_database"]

SQLITE_PRAGMAS = {
    "journal_mode": "wal",
    "foreign_keys": 1,
    "synchronous": 1,  # NORMAL: durable across a process crash, fast commits in WAL mode
    "busy_timeout": 10_000,  # ms; open_database's busy_timeout replaces it
    "cache_size": -64 * 1024,  # 64 MiB
    "temp_store": "memory",
}


def open_database(url: str, busy_timeout: float = 10.0) -> pw.Database:
    """Open the database named by ``url`` and bring its schema to SCHEMA_VERSION.

    Supported: ``sqlite:///relative/or/absolute/path.db`` and ``sqlite:///:memory:``.
    ``busy_timeout``: seconds a statement waits for a lock another connection holds
    before it fails with "database is locked" (a storage fault: UNAVAILABLE).
    """
    if busy_timeout < 0:
        raise ValueError(f"busy_timeout must not be negative, got {busy_timeout}")
    parsed = urlparse(url)
    if parsed.scheme != "sqlite":
        raise ValueError(f"unsupported database URL scheme {parsed.scheme!r} (supported: sqlite)")
    path = url[len("sqlite:///") :] if url.startswith("sqlite:///") else parsed.path
    if not path:
        raise ValueError(f"database URL {url!r} names no file")
    if path != ":memory:":
        parent = os.path.dirname(os.path.abspath(path))
        os.makedirs(parent, exist_ok=True)
    db = pw.SqliteDatabase(None)
    pragmas = {**SQLITE_PRAGMAS, "busy_timeout": round(busy_timeout * 1000)}
    # timeout: the same wait from the connection's start (its pragmas are statements too).
    db.init(path, pragmas=pragmas, timeout=busy_timeout, check_same_thread=False)
    db.connect(reuse_if_open=True)
    migrate(db, "sqlite")
    return db
