"""The log sink: where the runtime writes every line a step prints.

It numbers lines per execution (1, 2, 3, ... with no gap), batches them, stores each
batch in one transaction, and only then hands the batch to its subscribers (the live
tailers): a line is durable before any tailer sees it.

A batch is written when it holds ``max_batch`` lines or ``flush_interval`` seconds after
its first line, whichever comes first, so a step that prints as fast as it can costs
one transaction per few thousand lines, and a quiet step's line is visible within
milliseconds.

The transactions run on a writer thread with its own database connection, so that the
event loop (which numbers the lines, and serves every stream) does not spend its time
in SQLite: storing a line costs the loop well under a microsecond instead of about
three. Batches are stored in the order they were numbered; the writer hands each stored
batch back to the loop, which publishes it. ``flush()`` still means what it meant when
the loop stored the lines itself: when it returns, every line written before it is
stored and published (the runtime relies on this before an execution's final status,
so that tailers see every line before the end). An in-memory database cannot be shared
by two connections: there the loop stores the batches itself.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import repeat
from operator import countOf, itemgetter

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

_EXECUTION = itemgetter(0)  # of a row

RETRY_SECONDS = 0.1
ROUND_LINES = 5000


class _Writer:
    """The thread that stores batches, in order, each in one transaction."""

    def __init__(self, store, loop: asyncio.AbstractEventLoop, on_stored: Callable[[], None]):
        self.store = store
        self.loop = loop
        self.on_stored = on_stored
        self.cond = threading.Condition()
        self.queue: deque[list[tuple]] = deque()  # submitted, not attempted yet
        self.stored: deque[list[tuple]] = deque()  # stored, not published yet
        self.queued_lines = 0  # lines submitted and not stored yet
        self.submitted = 0  # batches submitted so far
        self.attempted = 0  # batches the writer has tried to store (stored or failed)
        self.closing = False
        # Set while storing fails (and is retried): nobody waits for the writer then,
        # as nobody waited when the loop stored lines itself.
        self.failing = False
        self._notify_pending = False
        self.thread = threading.Thread(target=self._run, name="trainyard-log-writer", daemon=True)
        self.thread.start()

    def submit(self, batch: list[tuple]) -> None:
        with self.cond:
            self.queue.append(batch)
            self.queued_lines += len(batch)
            self.submitted += 1
            self.cond.notify_all()

    def wait_attempted(self) -> None:
        """Block until the writer has tried to store every batch submitted so far."""
        with self.cond:
            number = self.submitted
            while self.attempted < number and not self.failing and self.thread.is_alive():
                self.cond.wait()

    def wait_below(self, lines: int) -> None:
        """Block until at most ``lines`` lines wait to be stored."""
        with self.cond:
            while self.queued_lines > lines and not self.failing and self.thread.is_alive():
                self.cond.wait()

    def take_stored(self) -> list[list[tuple]]:
        with self.cond:
            self._notify_pending = False
            batches = list(self.stored)
            self.stored.clear()
            return batches

    def close(self) -> None:
        with self.cond:
            self.closing = True
            self.cond.notify_all()
        self.thread.join()

    def _run(self) -> None:
        try:
            while True:
                with self.cond:
                    while not self.queue and not self.closing:
                        self.cond.wait()
                    if not self.queue:
                        return
                    # What is queued goes in one transaction (in order), up to about
                    # ROUND_LINES lines: the loop keeps queueing meanwhile.
                    batches = [self.queue.popleft()]
                    lines = len(batches[0])
                    while self.queue and lines + len(self.queue[0]) <= ROUND_LINES:
                        lines += len(self.queue[0])
                        batches.append(self.queue.popleft())
                    taken = self.submitted - len(self.queue)
                rows = batches[0] if len(batches) == 1 else [r for b in batches for r in b]
                while True:
                    try:
                        self.store.append_logs(rows)
                        break
                    except Exception:
                        # Keep the lines (and their numbers) and try again: a busy
                        # database must not open a gap in the sequence.
                        log.exception("storing log lines failed; retrying", lines=len(rows))
                        with self.cond:
                            # A flush() waiting for these returns, as it did when the
                            # loop stored lines itself; they are stored later.
                            self.attempted = max(self.attempted, taken)
                            self.failing = True
                            self.cond.notify_all()
                            if self.closing:
                                return
                        time.sleep(RETRY_SECONDS)
                with self.cond:
                    # Published as they were submitted: one stored transaction may
                    # hold many batches, but a tailer's buffer takes them one by one.
                    self.stored.extend(batches)
                    self.queued_lines -= len(rows)
                    self.attempted = max(self.attempted, taken)
                    self.failing = False
                    self.cond.notify_all()
                    notify = not self._notify_pending
                    self._notify_pending = True
                if notify:
                    try:
                        self.loop.call_soon_threadsafe(self.on_stored)
                    except RuntimeError:  # the loop is closed: nobody to tell
                        pass
        finally:
            # Store.close closes this thread's connection (peewee keeps one per thread).
            self.store.close()


@dataclass
class LogSink:
    store: object  # server.store.repository.Store (append_logs, last_log_seq, url)
    flush_interval: float = 0.005
    max_batch: int = 5000
    # Lines stored by the writer thread may lag the written ones by this much; past it,
    # writing waits for the writer (the loop slows down with the database, as it did
    # when it stored the lines itself, instead of queueing without bound).
    max_queued_lines: int = 40_000
    subscribers: list[Subscriber] = field(default_factory=list)
    row_subscribers: list[RowSubscriber] = field(default_factory=list)
    _next_seq: dict[str, int] = field(default_factory=dict)
    _pending: list[tuple] = field(default_factory=list)
    _timer: asyncio.TimerHandle | None = None
    _writer: _Writer | None = None
    lines_written: int = 0

    def write(self, execution_id: str, step: str, stream: LogStream, text: str) -> None:
        """Queue one line (called on the event loop). Long lines are split."""
        self.write_lines(execution_id, step, stream, [text])

    def write_lines(
        self, execution_id: str, step: str, stream: LogStream, texts: list[str]
    ) -> None:
        """Queue many lines of one step's stream (what one read of its pipe held), with
        one time for all; lines longer than MAX_LINE_CHARS are split. The numbering is
        done in one go, with no Python code run per line: at a few hundred thousand
        lines a second, numbering line by line cost the event loop about a sixth of its
        time."""
        if not texts:
            return
        if max(map(len, texts)) > MAX_LINE_CHARS:
            texts = [
                text[i : i + MAX_LINE_CHARS]
                for text in texts
                for i in range(0, len(text) or 1, MAX_LINE_CHARS)
            ]
        now_us = time.time_ns() // 1000
        seq = self._next_seq.get(execution_id)
        if seq is None:
            seq = self.store.last_log_seq(execution_id) + 1
        count = len(texts)
        self._pending.extend(
            zip(
                repeat(execution_id, count),
                range(seq, seq + count),
                repeat(now_us, count),
                repeat(step, count),
                repeat(STREAM_CODES[stream], count),
                texts,
                strict=True,
            )
        )
        self._next_seq[execution_id] = seq + count
        if len(self._pending) >= self.max_batch:
            self._submit()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.flush_interval, self._submit)

    def system(self, execution_id: str, text: str, step: str = "") -> None:
        self.write(execution_id, step, LogStream.SYSTEM, text)

    def _threaded(self) -> bool:
        return ":memory:" not in getattr(self.store, "url", ":memory:")

    def _submit(self) -> None:
        """Hand the queued lines to the writer thread (or store them here, without
        one)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._pending:
            return
        writer = self._writer
        if writer is None:
            if not self._threaded():
                self._store_here()
                return
            writer = self._writer = _Writer(
                self.store, asyncio.get_running_loop(), self._publish_stored
            )
        batch, self._pending = self._pending, []
        writer.submit(batch)
        if writer.queued_lines > self.max_queued_lines:
            # The database is slower than the steps: wait for it, as the loop did when
            # it stored lines itself. Publish as it goes, never more than the limit at
            # once (tailers' buffers hold more than that).
            writer.wait_below(self.max_queued_lines // 2)
            self._publish_stored()

    def flush(self) -> None:
        """Store every line written so far, then publish it, before returning (on the
        event loop, which waits for the writer thread meanwhile)."""
        self._submit()
        writer = self._writer
        if writer is not None:
            writer.wait_attempted()
            self._publish_stored()

    def close(self) -> None:
        """Flush, then stop the writer thread (at server shutdown)."""
        self.flush()
        if self._writer is not None:
            self._writer.close()
            self._publish_stored()
            self._writer = None

    def _store_here(self) -> None:
        batch, self._pending = self._pending, []
        try:
            self.store.append_logs(batch)
        except Exception:
            # Keep the lines (and their numbers) and try again shortly: a busy database
            # must not open a gap in the sequence.
            log.exception("storing log lines failed; retrying", lines=len(batch))
            self._pending = batch + self._pending
            self._timer = asyncio.get_running_loop().call_later(RETRY_SECONDS, self._submit)
            return
        self._publish(batch)

    def _publish_stored(self) -> None:
        """Publish what the writer thread has stored (on the event loop, in order)."""
        writer = self._writer
        if writer is None:
            return
        for batch in writer.take_stored():
            self._publish(batch)

    def _publish(self, batch: list[tuple]) -> None:
        self.lines_written += len(batch)
        if self.row_subscribers:
            first = batch[0][0]
            if batch[-1][0] == first and countOf(map(_EXECUTION, batch), first) == len(batch):
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
        writer = self._writer
        if self._pending or (writer is not None and writer.queued_lines):
            # Its next number must come from the store: store what is on its way.
            self.flush()
        self._next_seq.pop(execution_id, None)

    def numbered_elsewhere(self, execution_id: str, seq: int) -> None:
        """Another replica stored the execution's lines up to ``seq`` (its
        notification said so): a number this sink kept for it from an earlier write
        here is stale, and its next line is numbered after ``seq``. (Two replicas never
        write one execution's lines at the same time: its runtime owner writes them.)"""
        next_seq = self._next_seq.get(execution_id)
        if next_seq is not None and next_seq <= seq:
            self._next_seq[execution_id] = seq + 1

    def last_seq(self, execution_id: str) -> int:
        """The sequence number of the last line written (stored or queued)."""
        seq = self._next_seq.get(execution_id)
        if seq is None:
            return self.store.last_log_seq(execution_id)
        return seq - 1


_STREAMS = {v: k for k, v in STREAM_CODES.items()}
