"""The log lines' repository: multi-row inserts, reads by sequence number, and the
purge of deleted executions' lines in chunks."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from itertools import chain
from typing import Any

from server.domain.models import (
    LogLine,
    LogStream,
)
from server.store.rows import (
    STREAM_CODES,
    STREAM_NAMES,
    to_dt,
)

# The condition, on a read of one execution's log lines, that the execution is not
# deleted (queued for purging): its lines vanish from every read with the delete's
# commit, though the purger removes them later. Its parameter is the execution id.
_NOT_PURGED = "AND NOT EXISTS (SELECT 1 FROM log_purge AS p WHERE p.execution_id = ?)"
# Log lines deleted per purge transaction (Store.purge_logs).
PURGE_CHUNK = 20_000

# Rows per INSERT statement of log lines (6 parameters each; SQLite allows 32,766).
LOG_INSERT_ROWS = 4096


LOG_COLUMNS = ("execution_id", "seq", "at_us", "step", "stream", "text")


@functools.cache
def _log_insert_sql(rows: int) -> str:
    return (
        f"INSERT INTO log_line ({', '.join(LOG_COLUMNS)}) VALUES "
        + ",".join(["(?,?,?,?,?,?)"] * rows)
    )


class LogRepository:
    """Part of :class:`server.store.repository.Store`."""

    # ---------------------------------------------------------------------- logs

    def append_logs(self, lines: Sequence[tuple]) -> None:
        """Store log lines: tuples (execution_id, seq, at_us, step, stream_code, text).

        One transaction. On PostgreSQL the lines go in by COPY (the dialect's
        copy_rows). Elsewhere (SQLite) with multi-row INSERT statements of
        LOG_INSERT_ROWS rows (the rest in halving sizes, so at most a dozen distinct
        statements are ever prepared and cached). Per row, executemany returns to
        Python and takes the GIL back: about 30 % slower inline, and on the log writer
        thread each of those hand-overs can wait for the event loop's thread."""
        if not lines:
            return
        with self.db.atomic():
            if self.dialect.copy_rows(self.db, "log_line", LOG_COLUMNS, lines):
                return
            cursor = self.db.cursor()
            start, total = 0, len(lines)
            while start < total:
                size = LOG_INSERT_ROWS
                while size > total - start:
                    size //= 2
                cursor.execute(
                    self.dialect.sql(_log_insert_sql(size)),
                    list(chain.from_iterable(lines[start : start + size])),
                )
                start += size

    def last_log_seq(self, execution_id: str) -> int:
        value = self.execute(
            f"SELECT MAX(seq) FROM log_line WHERE execution_id = ? {_NOT_PURGED}",
            (execution_id, execution_id),
        ).fetchone()[0]
        return int(value or 0)

    def purge_logs(self, chunk: int = PURGE_CHUNK) -> int:
        """Delete up to ``chunk`` log lines of one deleted execution (the first queued
        in ``log_purge`` that no other replica is purging), in a short transaction of
        its own; with them the queue row, once no line of the execution is left.
        Returns the lines deleted: 0 when nothing is queued.

        The lines go by key range (the ``chunk`` lowest sequence numbers), so two
        replicas that purge one execution at once only delete fewer each; PostgreSQL's
        SKIP LOCKED sends them to different executions anyway."""
        if chunk < 1:
            raise ValueError(f"chunk must be positive, got {chunk}")
        # Nothing queued (the usual case): no write transaction, no write lock.
        if self.execute("SELECT 1 FROM log_purge LIMIT 1").fetchone() is None:
            return 0
        with self.write_lock():
            while True:
                found = self.execute(
                    "SELECT execution_id FROM log_purge ORDER BY queued_us, execution_id"
                    " LIMIT 1" + self.dialect.skip_locked()
                ).fetchone()
                if found is None:
                    return 0
                execution_id = found[0]
                count, last = self.execute(
                    "SELECT COUNT(*), MAX(seq) FROM (SELECT seq FROM log_line"
                    " WHERE execution_id = ? ORDER BY seq LIMIT ?) AS head",
                    (execution_id, chunk),
                ).fetchone()
                deleted = 0
                if count:
                    deleted = self.execute(
                        "DELETE FROM log_line WHERE execution_id = ? AND seq <= ?",
                        (execution_id, last),
                    ).rowcount
                if count < chunk:
                    # That was the rest of its lines: the execution is purged.
                    self.execute("DELETE FROM log_purge WHERE execution_id = ?", (execution_id,))
                if count:
                    return deleted
                # An execution with no lines left: on to the next one.

    def read_logs(
        self,
        execution_id: str,
        *,
        after_seq: int = 0,
        before_seq: int | None = None,
        limit: int = 1000,
        descending: bool = False,
        steps: Sequence[str] = (),
        streams: Sequence[LogStream] = (),
        start_us: int | None = None,
        end_us: int | None = None,
    ) -> list[LogLine]:
        rows = self.read_log_rows(
            execution_id,
            after_seq=after_seq,
            before_seq=before_seq,
            limit=limit,
            descending=descending,
            steps=steps,
            stream_codes=[STREAM_CODES[s] for s in streams],
            start_us=start_us,
            end_us=end_us,
        )
        return [
            LogLine(execution_id, seq, to_dt(at), step, STREAM_NAMES[stream], text)
            for _, seq, at, step, stream, text in rows
        ]

    def read_log_rows(
        self,
        execution_id: str,
        *,
        after_seq: int = 0,
        upto_seq: int | None = None,
        before_seq: int | None = None,
        limit: int = 1000,
        descending: bool = False,
        steps: Sequence[str] = (),
        stream_codes: Sequence[int] = (),
        start_us: int | None = None,
        end_us: int | None = None,
    ) -> list[tuple]:
        """Log lines as the stored tuples (execution_id, seq, at_us, step, stream_code,
        text), with no object per line: the live tailers' read path."""
        sql = [
            "SELECT execution_id, seq, at_us, step, stream, text FROM log_line"
            f" WHERE execution_id = ? AND seq > ? {_NOT_PURGED}"
        ]
        args: list[Any] = [execution_id, after_seq, execution_id]
        for condition, value in (
            ("seq <= ?", upto_seq),
            ("seq < ?", before_seq),
            ("at_us >= ?", start_us),
            ("at_us < ?", end_us),
        ):
            if value is not None:
                sql.append(f"AND {condition}")
                args.append(value)
        if steps:
            sql.append(f"AND step IN ({','.join('?' * len(steps))})")
            args.extend(steps)
        if stream_codes:
            sql.append(f"AND stream IN ({','.join('?' * len(stream_codes))})")
            args.extend(stream_codes)
        sql.append(f"ORDER BY seq {'DESC' if descending else 'ASC'} LIMIT ?")
        args.append(limit)
        return self.execute(" ".join(sql), args).fetchall()

    def read_log_rows_to_end(
        self,
        execution_id: str,
        *,
        after_seq: int,
        limit: int,
        steps: Sequence[str] = (),
        stream_codes: Sequence[int] = (),
    ) -> tuple[int, list[tuple]]:
        """(the highest stored sequence number, read first; then the rows after
        ``after_seq``). A read shorter than ``limit`` has every stored line up to that
        number: a tailer that then sees no later line published may go live."""
        head = self.last_log_seq(execution_id)
        rows = self.read_log_rows(
            execution_id, after_seq=after_seq, limit=limit, steps=steps, stream_codes=stream_codes
        )
        return head, rows

    def last_transition_seqs(self, execution_ids: Sequence[str]) -> dict[str, int]:
        """The sequence number of the latest history entry of each execution."""
        rows = self._select_in(
            "SELECT execution_id, MAX(seq) FROM transition WHERE execution_id IN",
            execution_ids,
            suffix=" GROUP BY execution_id",
        )
        result = {eid: int(seq) for eid, seq in rows}
        return result

    def first_log_seq_at(self, execution_id: str, start_us: int) -> int:
        """Sequence number just before the first line at or after ``start_us``."""
        value = self.execute(
            f"SELECT MIN(seq) FROM log_line WHERE execution_id = ? AND at_us >= ? {_NOT_PURGED}",
            (execution_id, start_us, execution_id),
        ).fetchone()[0]
        if value is None:
            return self.last_log_seq(execution_id)
        return int(value) - 1

