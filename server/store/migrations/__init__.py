"""Numbered, frozen schema migrations, for SQLite and PostgreSQL.

Every schema version is a module ``vNNN_<name>.py`` holding the literal DDL that
takes a database from the version before to its own, written out once per backend and
never edited after release: a database written by any earlier release is brought
forward by applying the versions after its own, in order. The peewee models
(``server.store.tables``) are only the query layer; a test checks that they agree with
the schema these statements build, and another upgrades a database written by the
previous release.

``schema_version`` (version, applied_us) holds one row per applied version. It
predates the numbered versions (a database at version 0 has it, empty), so it is
created, if missing, outside them. Each version is applied in its own transaction
together with its row, under a lock that makes concurrent starters (several processes
on one SQLite file, several replicas on one PostgreSQL) apply it once: SQLite's write
lock (BEGIN IMMEDIATE), a transaction-scoped advisory lock on PostgreSQL.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import peewee as pw

from server.store.migrations import (
    v001_core,
    v002_metrics,
    v003_leases,
    v004_log_purge,
    v005_secrets,
    v006_security,
    v007_reruns,
    v008_page_token_key,
    v009_idempotency_purge,
    v010_watch_events,
)

BACKENDS = ("sqlite", "postgresql")


@dataclass(frozen=True)
class Migration:
    """The DDL that brings a schema to ``version``, per backend."""

    version: int
    name: str
    sqlite: tuple[str, ...]
    postgresql: tuple[str, ...]

    def statements(self, backend: str) -> tuple[str, ...]:
        return {"sqlite": self.sqlite, "postgresql": self.postgresql}[backend]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "core", v001_core.SQLITE, v001_core.POSTGRESQL),
    Migration(2, "metrics", v002_metrics.SQLITE, v002_metrics.POSTGRESQL),
    Migration(3, "leases", v003_leases.SQLITE, v003_leases.POSTGRESQL),
    Migration(4, "log_purge", v004_log_purge.SQLITE, v004_log_purge.POSTGRESQL),
    Migration(5, "secrets", v005_secrets.SQLITE, v005_secrets.POSTGRESQL),
    Migration(6, "security", v006_security.SQLITE, v006_security.POSTGRESQL),
    Migration(7, "reruns", v007_reruns.SQLITE, v007_reruns.POSTGRESQL),
    Migration(8, "page_token_key", v008_page_token_key.SQLITE, v008_page_token_key.POSTGRESQL),
    Migration(
        9, "idempotency_purge", v009_idempotency_purge.SQLITE, v009_idempotency_purge.POSTGRESQL
    ),
    Migration(10, "watch_events", v010_watch_events.SQLITE, v010_watch_events.POSTGRESQL),
)
SCHEMA_VERSION = MIGRATIONS[-1].version
# Versions are numbered per feature and may land out of order: a number may be
# missing (not yet written) while later ones exist. Every known version is applied,
# in order, whichever of them a database lacks.
KNOWN_VERSIONS = tuple(m.version for m in MIGRATIONS)

# Frozen too: the table every release has recorded its versions in.
_SCHEMA_VERSION_TABLE = {
    "sqlite": 'CREATE TABLE IF NOT EXISTS "schema_version"'
    ' ("version" INTEGER NOT NULL PRIMARY KEY, "applied_us" INTEGER NOT NULL)',
    "postgresql": 'CREATE TABLE IF NOT EXISTS "schema_version"'
    ' ("version" INTEGER NOT NULL PRIMARY KEY, "applied_us" BIGINT NOT NULL)',
}

# The key of the PostgreSQL advisory lock held while migrating (any fixed 64-bit
# number that nothing else in the database locks).
_PG_LOCK_KEY = 0x7472_6169_6E79_6172  # "trainyar"


class SchemaTooNew(RuntimeError):
    """The database was migrated by a newer release than this one: refuse to use it,
    rather than read and write a schema this code does not know."""

    def __init__(self, found: int, known: int):
        super().__init__(
            f"database schema version {found} is newer than this server's ({known}): "
            f"run a release that knows schema version {found}, or point the server "
            "at another database"
        )
        self.found = found
        self.known = known


def backend_of(db: pw.Database) -> str:
    """``"postgresql"`` or ``"sqlite"``, from the peewee database's class."""
    if isinstance(db, pw.PostgresqlDatabase):
        return "postgresql"
    if isinstance(db, pw.SqliteDatabase):
        return "sqlite"
    raise ValueError(f"no migrations for database {type(db).__name__}")


def current_version(db: pw.Database) -> int:
    """The highest version recorded in ``schema_version``; 0 when none is."""
    row = db.execute_sql('SELECT MAX("version") FROM "schema_version"').fetchone()
    return int(row[0] or 0)


def applied_versions(db: pw.Database) -> set[int]:
    """Every version recorded in ``schema_version``."""
    return {int(r[0]) for r in db.execute_sql('SELECT "version" FROM "schema_version"')}


def migrate(db: pw.Database, backend: str | None = None, *, target: int = SCHEMA_VERSION) -> int:
    """Bring the schema of ``db`` to ``target`` (default: this release's version),
    one version per transaction, and return the version it is at. ``backend`` chooses
    the DDL (default: from the class of ``db``).

    A database already at (or past) ``target`` is left as it is. SchemaTooNew when the
    database is at a version newer than this release knows."""
    backend = backend or backend_of(db)
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r} (known: {', '.join(BACKENDS)})")
    if not 0 <= target <= SCHEMA_VERSION:
        raise ValueError(f"no schema version {target} (known: 0 to {SCHEMA_VERSION})")
    # A database that has every version up to the target needs no lock.
    if db.table_exists("schema_version"):
        version = _next(applied_versions(db), target)
        if version is None:
            return current_version(db)
    while True:
        with _migrating(db, backend):
            version = _next(applied_versions(db), target)
            if version is None:
                return current_version(db)
            migration = next(m for m in MIGRATIONS if m.version == version)
            for statement in migration.statements(backend):
                db.execute_sql(statement)
            db.execute_sql(
                f'INSERT INTO "schema_version" ("version", "applied_us") '
                f"VALUES ({db.param}, {db.param})",
                (migration.version, time.time_ns() // 1000),
            )


def _next(applied: set[int], target: int) -> int | None:
    """The first known version up to ``target`` that is not applied; None when all
    are. SchemaTooNew when a version this release does not know was applied."""
    known = sorted(m.version for m in MIGRATIONS)
    unknown = applied - set(known)
    if unknown:
        raise SchemaTooNew(max(unknown), SCHEMA_VERSION)
    for version in known:
        if version <= target and version not in applied:
            return version
    return None


@contextmanager
def _migrating(db: pw.Database, backend: str) -> Iterator[None]:
    """One migration transaction: the lock that keeps other starters out, and the
    version table made sure of, before the version is read."""
    with db.atomic("IMMEDIATE") if backend == "sqlite" else db.atomic():
        if backend == "postgresql":
            db.execute_sql("SELECT pg_advisory_xact_lock(%s)", (_PG_LOCK_KEY,))
        db.execute_sql(_SCHEMA_VERSION_TABLE[backend])
        yield
