"""Copy every row of one Trainyard database into another, empty one: how a team moves
its metadata from the embedded SQLite file to PostgreSQL (or back, or to a backup)
without losing a run, a log line or a metric.

Both databases are opened as the server opens them (their schema brought to this
release's version first), so that they have the same tables and columns. The source is
read in one read transaction (one snapshot, even if a server still writes it), the
target written in one transaction: a copy that fails half-way leaves the target as
empty as it was. Values go across as stored (JSON as its text, times as integers);
only booleans are turned into the target driver's own. The integer keys keep their
values, and the target's key generators are moved past the highest copied.

Secret values are copied as stored, encrypted: the servers on the target need the same
key file (``--secrets-key-file``) to open them. The page token key is copied too, so
that page tokens the source's servers issued stay valid.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import peewee as pw

from server.store.dialects import Dialect, open_database
from server.store.tables import Base, SchemaVersion, bind

# Rows read from the source and written to the target at a time.
BATCH_ROWS = 5_000


class TargetNotEmpty(RuntimeError):
    """The target database already holds rows: copying into it would mix two."""


class CopyFailed(RuntimeError):
    """A database could not be opened, or a table's rows could not be read or written
    (``where``, then the driver's error, its first line); the target's transaction was
    rolled back."""

    def __init__(self, where: str, cause: BaseException):
        text = str(cause).strip()
        super().__init__(f"{where}: {text.splitlines()[0] if text else type(cause).__name__}")


@dataclass
class CopyReport:
    """Rows copied, per table, in the order the tables were copied."""

    rows: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.rows.values())


def copy_database(
    source_url: str,
    target_url: str,
    *,
    progress: Callable[[str, int], None] = lambda table, rows: None,
) -> CopyReport:
    """Copy every row of the database at ``source_url`` into the one at
    ``target_url`` (created or migrated as needed; it must hold no rows). ``progress``
    is called with a table's name and the rows copied so far, after each batch.
    TargetNotEmpty when the target has rows; ValueError for a URL neither backend
    takes, or one database given twice."""
    if _same(source_url, target_url):
        raise ValueError("the source and the target are the same database")
    source, reading = _open(source_url, "the source")
    try:
        target, writing = _open(target_url, "the target")
        try:
            return _copy(source, reading, target, writing, progress)
        finally:
            target.close()
    finally:
        source.close()


def _open(url: str, which: str) -> tuple[pw.Database, Dialect]:
    try:
        return open_database(url)
    except ValueError:  # a URL neither backend takes
        raise
    except Exception as exc:  # noqa: BLE001 - the driver's, said without the URL
        raise CopyFailed(f"cannot open {which} database", exc) from exc


def _same(a: str, b: str) -> bool:
    return a.rstrip("/") == b.rstrip("/")


def _copy(
    source: pw.Database,
    reading: Dialect,
    target: pw.Database,
    dialect: Dialect,
    progress: Callable[[str, int], None],
) -> CopyReport:
    models = [m for m in bind(source).models if m.__name__ != SchemaVersion.__name__]
    targets = {m.__name__: m for m in bind(target).models}
    report = CopyReport()
    with source.atomic(), target.atomic():
        reading.snapshot(source)
        full = [m._meta.table_name for m in models if targets[m.__name__].select().exists()]
        if full:
            raise TargetNotEmpty(
                f"the target database already holds rows (tables: {', '.join(full)}); "
                "copy into a new, empty database"
            )
        for model in models:
            table = model._meta.table_name
            try:
                report.rows[table] = _copy_table(
                    model, source, reading, target, dialect, progress
                )
            except Exception as exc:  # noqa: BLE001 - named by its table, rolled back
                raise CopyFailed(f"table {table}", exc) from exc
    return report


def _copy_table(
    model: type[Base],
    source: pw.Database,
    reading: Dialect,
    target: pw.Database,
    dialect: Dialect,
    progress: Callable[[str, int], None],
) -> int:
    table = model._meta.table_name
    columns, convert = _columns(model)
    insert = dialect.sql(
        f'INSERT INTO "{table}" ({", ".join(_quoted(columns))})'
        f" VALUES ({', '.join('?' * len(columns))})"
    )
    count = 0
    for batch in _batches(reading.streaming_cursor(source), table, columns):
        rows = [convert(row) for row in batch]
        if not (
            table == "log_line"
            and dialect.copy_rows(target, f'"{table}"', _quoted(columns), rows)
        ):
            target.cursor().executemany(insert, rows)
        count += len(rows)
        progress(table, count)
    key = model._meta.primary_key
    if isinstance(key, pw.AutoField) and count:
        dialect.continue_keys_after(target, table, key.column_name)
    return count


def _columns(model: type[Base]) -> tuple[list[str], Callable[[tuple], tuple]]:
    """The table's columns (a log line's text last: the bulk load expects it there),
    and what turns a source row into the target's values."""
    fields = sorted(
        model._meta.sorted_fields, key=lambda f: model._meta.table_name == "log_line"
        and f.column_name == "text"
    )
    flags = [i for i, f in enumerate(fields) if isinstance(f, pw.BooleanField)]

    def convert(row: tuple) -> tuple:
        if not flags:
            return row
        values = list(row)
        for i in flags:
            if values[i] is not None:
                values[i] = bool(values[i])
        return tuple(values)

    return [f.column_name for f in fields], convert


def _quoted(columns: Sequence[str]) -> list[str]:
    return [f'"{c}"' for c in columns]


def _batches(cursor, table: str, columns: Sequence[str]) -> Iterator[list[tuple]]:
    try:
        cursor.execute(f'SELECT {", ".join(_quoted(columns))} FROM "{table}"')
        while True:
            rows = cursor.fetchmany(BATCH_ROWS)
            if not rows:
                return
            yield [tuple(r) for r in rows]
    finally:
        cursor.close()
