"""Database set-up: the deferred database, its pragmas, the numbered migrations.

The only modules that import peewee are in this package.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from urllib.parse import urlparse

import peewee as pw

from server.store import tables

SQLITE_PRAGMAS = {
    "journal_mode": "wal",
    "foreign_keys": 1,
    "synchronous": 1,  # NORMAL: durable across a process crash, fast commits in WAL mode
    "busy_timeout": 10_000,
    "cache_size": -64 * 1024,  # 64 MiB
    "temp_store": "memory",
}


def open_database(url: str) -> pw.Database:
    """Open the database named by ``url`` and bring its schema to SCHEMA_VERSION.

    Supported: ``sqlite:///relative/or/absolute/path.db`` and ``sqlite:///:memory:``.
    """
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
    db.init(path, pragmas=SQLITE_PRAGMAS, check_same_thread=False)
    db.connect(reuse_if_open=True)
    migrate(db)
    return db


def _migration_1(db: pw.Database) -> None:
    db.create_tables(tables.bind(db).bound(tables.ALL_TABLES))


def _migration_2(db: pw.Database) -> None:
    """Metrics: series with their summaries, points, tags, custom info, owners."""
    db.create_tables(tables.bind(db).bound(tables.METRIC_TABLES))


# Numbered schema migrations; index + 1 is the version they bring the schema to.
MIGRATIONS: list[Callable[[pw.Database], None]] = [_migration_1, _migration_2]
SCHEMA_VERSION = len(MIGRATIONS)


def migrate(db: pw.Database) -> int:
    """Bring the schema to SCHEMA_VERSION, recording each step. Returns the version."""
    SchemaVersion = tables.bind(db).SchemaVersion
    with db.atomic():
        db.create_tables([SchemaVersion])
    current = SchemaVersion.select(pw.fn.MAX(SchemaVersion.version)).scalar() or 0
    if current > SCHEMA_VERSION:
        raise RuntimeError(
            f"database schema version {current} is newer than this server ({SCHEMA_VERSION})"
        )
    for version in range(current + 1, SCHEMA_VERSION + 1):
        with db.atomic():
            MIGRATIONS[version - 1](db)
            SchemaVersion.create(version=version)
    return SCHEMA_VERSION
