"""What differs between the two backends, and nothing else.

The repositories (server/store/repository.py, metrics.py) write portable SQL with
``?`` placeholders; a dialect turns it into its driver's form, opens its database and
says how a write transaction starts. SQLite-only and PostgreSQL-only SQL lives here.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from urllib.parse import unquote, urlparse

import peewee as pw

from server.store.migrations import migrate

SQLITE_PRAGMAS = {
    "journal_mode": "wal",
    "foreign_keys": 1,
    "synchronous": 1,  # NORMAL: durable across a process crash, fast commits in WAL mode
    "busy_timeout": 10_000,
    "cache_size": -64 * 1024,  # 64 MiB
    "temp_store": "memory",
}


class Dialect:
    """A backend: its name, its SQL and its transactions."""

    name = ""

    def sql(self, text: str) -> str:
        """Portable SQL (``?`` placeholders) in the driver's form."""
        return text

    def insert_rows(
        self, db: pw.Database, table: str, columns: Sequence[str], rows: Sequence[tuple]
    ) -> None:
        """Inside a transaction: insert ``rows`` (values in ``columns`` order) into
        ``table`` in the backend's cheapest way (a group of creates' executions, their
        history entries, events and audit events): here the driver's executemany."""
        if rows:
            db.cursor().executemany(
                self.sql(
                    f"INSERT INTO {table} ({', '.join(columns)})"
                    f" VALUES ({', '.join('?' * len(columns))})"
                ),
                rows,
            )

    def write_transaction(self, db: pw.Database):
        """A transaction for a read-check-write (its checks are compare-and-set
        anyway; the dialect may take its lock early to avoid retries)."""
        return db.atomic()

    def label_equals(self, column: pw.Field, key: str, value: str) -> pw.Expression:
        """``column`` (a JSON object as text) has ``key`` set to ``value``."""
        raise NotImplementedError

    def integrity_check(self, db: pw.Database) -> str:
        return "ok"

    def skip_locked(self) -> str:
        """The clause that makes a SELECT lock its rows and pass over locked ones."""
        return ""

    def serialize(self, db: pw.Database, key: int) -> None:
        """Inside a write transaction: wait until no other transaction holding ``key``
        runs, on any connection or replica, and hold it until this one ends."""

    def copy_rows(
        self, db: pw.Database, table: str, columns: Sequence[str], rows: Sequence[tuple]
    ) -> bool:
        """Inside a transaction: store ``rows`` (values in ``columns`` order) in
        ``table`` by the driver's bulk load, and return True; False when the backend
        has none, and the caller inserts them."""
        return False

    def snapshot(self, db: pw.Database) -> None:
        """First in a transaction: make every read of it see one snapshot."""

    def streaming_cursor(self, db: pw.Database):
        """Inside a transaction: a cursor whose rows are fetched as they are read, not
        all at once when the query runs."""
        return db.cursor()

    def continue_keys_after(self, db: pw.Database, table: str, column: str) -> None:
        """After rows with their own values of the generated key ``column`` went into
        ``table``: the keys generated next come after the highest of them."""


class SqliteDialect(Dialect):
    name = "sqlite"

    def write_transaction(self, db: pw.Database):
        # SQLite: take the write lock at BEGIN, so a read-check-write never fails to
        # upgrade its read lock (SQLITE_BUSY_SNAPSHOT) when another connection wrote.
        return db.atomic("IMMEDIATE")

    def label_equals(self, column, key, value):
        return pw.fn.json_extract(column, f'$."{key}"') == value

    def integrity_check(self, db):
        return db.execute_sql("PRAGMA integrity_check").fetchone()[0]

    def serialize(self, db, key):
        pass  # the transaction began IMMEDIATE: it holds the database's one write lock

    # snapshot: a read transaction sees one snapshot from its first read (WAL).
    # continue_keys_after: an INTEGER PRIMARY KEY goes on from the highest row's.


class PostgresDialect(Dialect):
    name = "postgresql"

    def sql(self, text: str) -> str:
        return _percent_placeholders(text)

    def label_equals(self, column, key, value):
        return pw.SQL(f"(CAST({column.column_name} AS jsonb) ->> %s)", [key]) == value

    def serialize(self, db, key):
        db.execute_sql("SELECT pg_advisory_xact_lock(%s)", (key,))

    def skip_locked(self):
        return " FOR UPDATE SKIP LOCKED"

    def snapshot(self, db):
        db.execute_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")

    def streaming_cursor(self, db):
        return db.connection().cursor(name="trainyard_copy")

    def continue_keys_after(self, db, table, column):
        # An identity column's sequence does not move for rows that brought their own.
        db.execute_sql(
            f"SELECT setval(pg_get_serial_sequence(%s, %s),"
            f' (SELECT COALESCE(MAX("{column}"), 0) FROM "{table}") + 1, false)',
            (f'"{table}"', column),
        )

    def insert_rows(self, db, table, columns, rows):
        # COPY FROM STDIN: psycopg formats the rows in C, in one statement, where its
        # executemany (pipelined) spends tens of microseconds of Python a row on the
        # writer thread, which shares the interpreter with the event loop. Measured, a
        # transaction of 30 execution rows with its commit: 0.75 ms against 1.63 ms;
        # never slower, one row included. Grouped creates: 1.4 x the calls/s.
        if rows:
            with db.cursor().copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                write = copy.write_row
                for row in rows:
                    write(row)

    def copy_rows(self, db, table, columns, rows):
        # NUL, which PostgreSQL's text cannot hold, becomes U+FFFD in the last column
        # (a log line's text). COPY FROM STDIN in text format: psycopg formats and
        # escapes the rows in C and streams them in one statement; 5 to 9 times the
        # rows/s of multi-row INSERTs (bench/pg_baseline.py). Its errors are the
        # driver's own, as an INSERT's are.
        cursor = db.cursor()
        with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
            write = copy.write_row
            for row in rows:
                if "\x00" in row[-1]:
                    row = (*row[:-1], row[-1].replace("\x00", "\ufffd"))
                write(row)
        return True


@functools.lru_cache(maxsize=4096)
def _percent_placeholders(text: str) -> str:
    # The portable SQL has no literal '?' or '%' of its own.
    return text.replace("%", "%%").replace("?", "%s")


def open_database(url: str, *, busy_timeout: float = 10.0) -> tuple[pw.Database, Dialect]:
    """Open the database named by ``url``, bring its schema to the current version,
    and return it with its dialect.

    ``sqlite:///relative/or/absolute/path.db``, ``sqlite:///:memory:`` or
    ``postgresql://USER[:PASSWORD]@HOST:PORT/DB`` (psycopg 3).
    ``busy_timeout``: seconds SQLite waits for another writer's lock.
    """
    parsed = urlparse(url)
    if parsed.scheme == "sqlite":
        return _open_sqlite(url, parsed, busy_timeout), SqliteDialect()
    if parsed.scheme in ("postgresql", "postgres"):
        return _open_postgres(parsed), PostgresDialect()
    raise ValueError(
        f"unsupported database URL scheme {parsed.scheme!r} (supported: sqlite, postgresql)"
    )


def _open_sqlite(url: str, parsed, busy_timeout: float) -> pw.Database:
    path = url[len("sqlite:///") :] if url.startswith("sqlite:///") else parsed.path
    if not path:
        raise ValueError(f"database URL {url!r} names no file")
    if path != ":memory:":
        parent = os.path.dirname(os.path.abspath(path))
        os.makedirs(parent, exist_ok=True)
    db = pw.SqliteDatabase(None)
    if busy_timeout < 0:
        raise ValueError(f"busy_timeout must not be negative, got {busy_timeout}")
    pragmas = dict(SQLITE_PRAGMAS, busy_timeout=round(busy_timeout * 1000))
    # timeout: how long opening a connection (its pragmas) waits for a lock, too.
    db.init(path, pragmas=pragmas, check_same_thread=False, timeout=busy_timeout)
    db.connect(reuse_if_open=True)
    migrate(db, "sqlite")
    return db


def _open_postgres(parsed) -> pw.Database:
    name = unquote(parsed.path.lstrip("/"))
    if not name:
        raise ValueError("a postgresql:// database URL must name its database")
    params: dict = {"host": parsed.hostname or "127.0.0.1", "port": parsed.port or 5432}
    if parsed.username:
        params["user"] = unquote(parsed.username)
    if parsed.password:
        params["password"] = unquote(parsed.password)
    params["connect_timeout"] = 5
    params["application_name"] = "trainyard"
    db = pw.PostgresqlDatabase(name, prefer_psycopg3=True, **params)
    db.connect(reuse_if_open=True)
    migrate(db, "postgresql")
    return db
