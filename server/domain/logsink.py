"""The log sink: where the runtime writes every line a step prints.

It numbers lines per execution (1, 2, 3, ... with no gap), batches them, stores each
batch in one transaction, and only then hands the batch to its subscribers (the live
tailers): a line is durable before any tailer sees it.

A batch is written when it holds ``max_batch`` lines or ``flush_interval`` seconds after
its first line, whichever comes first, so a step that prints as fast as it can costs
one transaction per few thousand lines, and a quiet step's line is visible within
milliseconds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import structlog

from server.domain.models import LogLine, LogStream

log = structlog.get_logger(__name__)

STREAM_CODES = {LogStream.STDOUT: 1, LogStream.STDERR: 2, LogStream.SYSTEM: 3}
MAX_LINE_CHARS = 64 * 1024

# Subscribers get (execution_id, lines) after the lines are stored.
Subscriber = Callable[[str, list[LogLine]], None]
# Row subscribers get (execution_id, rows) after the rows are stored, each row the
# tuple that was stored: (execution_id, seq, at_us, step, stream_code, text). No
# object is built per line for them: this is the live tailers' path.
RowSubscriber = Callable[[str, list[tuple]], None]


@dataclass
class LogSink:
    store: object  # server.store.repository.Store (append_logs, last_log_seq)
    flush_interval: float = 0.005
    max_batch: int = 5000
    subscribers: list[Subscriber] = field(default_factory=list)
    row_subscribers: list[RowSubscriber] = field(default_factory=list)
    _next_seq: dict[str, int] = field(default_factory=dict)
    _pending: list[tuple] = field(default_factory=list)
    _timer: asyncio.TimerHandle | None = None
    lines_written: int = 0

    def _seq(self, execution_id: str) -> int:
        seq = self._next_seq.get(execution_id)
        if seq is None:
            seq = self.store.last_log_seq(execution_id) + 1
        self._next_seq[execution_id] = seq + 1
        return seq

    def write(self, execution_id: str, step: str, stream: LogStream, text: str) -> None:
        """Queue one line (called on the event loop). Long lines are split."""
        now_us = time.time_ns() // 1000
        code = STREAM_CODES[stream]
        seq = self._next_seq.get(execution_id)
        if seq is None:
            seq = self.store.last_log_seq(execution_id) + 1
        if len(text) <= MAX_LINE_CHARS:
            self._pending.append((execution_id, seq, now_us, step, code, text))
            seq += 1
        else:
            for i in range(0, len(text), MAX_LINE_CHARS):
                chunk = text[i : i + MAX_LINE_CHARS]
                self._pending.append((execution_id, seq, now_us, step, code, chunk))
                seq += 1
        self._next_seq[execution_id] = seq
        if len(self._pending) >= self.max_batch:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.flush_interval, self.flush)

    def system(self, execution_id: str, text: str, step: str = "") -> None:
        self.write(execution_id, step, LogStream.SYSTEM, text)

    def flush(self) -> None:
        """Store every queued line in one transaction, then notify subscribers."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        try:
            self.store.append_logs(batch)
        except Exception:
            # Keep the lines (and their numbers) and try again shortly: a busy database
            # must not open a gap in the sequence.
            log.exception("storing log lines failed; retrying", lines=len(batch))
            self._pending = batch + self._pending
            self._timer = asyncio.get_running_loop().call_later(0.1, self.flush)
            return
        self.lines_written += len(batch)
        if self.row_subscribers:
            first = batch[0][0]
            if batch[-1][0] == first and all(row[0] == first for row in batch):
                groups = {first: batch}
            else:
                groups = {}
                for row in batch:
                    groups.setdefault(row[0], []).append(row)
            for execution_id, rows in groups.items():
                for row_subscriber in list(self.row_subscribers):
                    try:
                        row_subscriber(execution_id, rows)
                    except Exception:
                        log.exception("log subscriber failed", execution_id=execution_id)
        if not self.subscribers:
            return
        by_execution: dict[str, list[LogLine]] = {}
        for execution_id, seq, at_us, step, code, text in batch:
            by_execution.setdefault(execution_id, []).append(
                LogLine(
                    execution_id,
                    seq,
                    datetime.fromtimestamp(at_us / 1_000_000, tz=UTC),
                    step,
                    _STREAMS[code],
                    text,
                )
            )
        for execution_id, lines in by_execution.items():
            for subscriber in list(self.subscribers):
                try:
                    subscriber(execution_id, lines)
                except Exception:
                    log.exception("log subscriber failed", execution_id=execution_id)

    def forget(self, execution_id: str) -> None:
        """The execution is final and flushed: drop its counter."""
        self._next_seq.pop(execution_id, None)

    def last_seq(self, execution_id: str) -> int:
        """The sequence number of the last line written (stored or queued)."""
        seq = self._next_seq.get(execution_id)
        if seq is None:
            return self.store.last_log_seq(execution_id)
        return seq - 1


_STREAMS = {v: k for k, v in STREAM_CODES.items()}
