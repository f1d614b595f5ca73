"""The log sink: where the runtime writes every line a step prints.

It numbers lines per execution (1, 2, 3, ...), batches them, stores them in
transactions, and only then hands each batch to its subscribers (the live tailers): a
line is durable before any tailer sees it.

Lines are handed to the store when ``max_batch`` lines wait or ``flush_interval``
seconds after the first of them, whichever comes first, so a step that prints as fast
as it can costs one transaction per few thousand lines, and a quiet step's line is
visible within milliseconds.

The transactions run on a writer thread with its own database connection, so that the
event loop (which numbers the lines, and serves every stream) does not spend its time
in SQLite. The loop never waits for that thread: it hands batches over through a queue
that never blocks, and the writer hands back what became of each batch (stored, or
given up on) with ``call_soon_threadsafe``; the loop then publishes the stored ones, in
the order they were written. An in-memory database cannot be shared by two
connections: there the loop stores the batches itself (tests only).

Bounds. Each execution may have ``max_queued_lines`` lines (``max_queued_chars``
characters) written and not yet stored. Writing never blocks; a producer awaits
:meth:`LogSink.wait_for_room` after each write, and the runtime's pipe readers do so
before they read more: while the store is slower than a step, the step's pipe fills
and its writes block in the kernel. One flooding execution slows only itself.

Failures. The writer stores what is queued (of every execution) in one transaction.
When that fails, each execution's lines are tried alone, so that one execution's bad
lines cannot hold the others back. A transient fault (the database locked or busy, an
I/O error, a full disk: see server/domain/retry.py) is retried with a growing delay,
``max_attempts`` times at most; the execution's later lines wait behind (in order,
and against its bound), other executions' lines go on being stored. A batch that
fails permanently, or for the last time, is dropped: the execution's numbering goes
on after it (a gap where the lost lines were), the loss listeners are told once (the
runtime puts it in the execution's status message) and :meth:`LogSink.flush` of that
execution raises :class:`LogsNotStored` from then on.

``await flush()`` returns once every line written before it is stored and published,
and never while some are still only queued; the runtime relies on it before an
execution's final status, so that tailers see every line before the end.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import repeat

import structlog

from server.domain.models import LogLine, LogStream
from server.domain.retry import backoff, describe, is_transient

log = structlog.get_logger(__name__)

STREAM_CODES = {LogStream.STDOUT: 1, LogStream.STDERR: 2, LogStream.SYSTEM: 3}
MAX_LINE_CHARS = 64 * 1024

# Subscribers get (execution_id, lines) after the lines are stored.
Subscriber = Callable[[str, list[LogLine]], None]
# Row subscribers get (execution_id, rows) after the rows are stored, each row the
# tuple that was stored: (execution_id, seq, at_us, step, stream_code, text). No
# object is built per line for them: this is the live tailers' path.
RowSubscriber = Callable[[str, list[tuple]], None]
# Loss listeners get (execution_id, message) on the event loop the first time lines of
# the execution could not be stored; message: "logs could not be stored: <why>".
LossListener = Callable[[str, str], None]

ROUND_LINES = 5000  # the writer stores about this many queued lines per transaction


class LogsNotStored(Exception):
    """Lines that were written could not be stored. ``failures`` maps each execution
    to what its final status message should say."""

    def __init__(self, failures: dict[str, str]):
        self.failures = failures
        if len(failures) == 1:
            text = next(iter(failures.values()))
        else:
            text = "; ".join(f"execution {e}: {m}" for e, m in failures.items())
        super().__init__(text)


class _Batch:
    """Lines of one execution, in order, handed to the writer together."""

    __slots__ = ("execution_id", "rows", "chars")

    def __init__(self, execution_id: str, rows: list[tuple], chars: int):
        self.execution_id = execution_id
        self.rows = rows
        self.chars = chars


# What became of a batch: (batch, None) when stored, (batch, why) when given up on.
Outcome = tuple[_Batch, str | None]


@dataclass(frozen=True)
class _Retries:
    attempts: int  # tries of a batch, the first included, before it is given up on
    delay: float  # after the first failure; doubled after each further one
    max_delay: float


@dataclass(eq=False)
class _Held:
    """An execution whose lines failed with a transient fault and wait for a retry."""

    failed: list[_Batch]  # tried (together), to be tried again
    behind: list[_Batch]  # written since; tried once the failed ones are settled
    attempts: int
    at: float  # time.monotonic() of the next try
    error: str


class _Storer:
    """Stores rounds of batches, isolates an execution whose lines fail, retries
    transient faults. Not thread-safe: one thread (the writer, or the loop) uses it."""

    def __init__(self, store, retries: _Retries):
        self.store = store
        self.retries = retries
        self.held: dict[str, _Held] = {}

    def store_round(self, batches: list[_Batch]) -> list[Outcome]:
        """Store these batches in one transaction when possible; the batches of an
        execution that is waiting for a retry go behind its failed ones."""
        fresh: list[_Batch] = []
        for batch in batches:
            held = self.held.get(batch.execution_id)
            if held is None:
                fresh.append(batch)
            else:
                held.behind.append(batch)
        if not fresh:
            return []
        try:
            self._append(fresh)
            return [(b, None) for b in fresh]
        except Exception as exc:
            error = exc
        groups: dict[str, list[_Batch]] = {}
        for batch in fresh:
            groups.setdefault(batch.execution_id, []).append(batch)
        if len(groups) == 1:
            return self._failed(fresh[0].execution_id, fresh, [], error, 1)
        log.warning(
            "storing log lines failed; storing each execution's alone",
            executions=len(groups),
            lines=sum(len(b.rows) for b in fresh),
            error=describe(error),
        )
        outcomes: list[Outcome] = []
        for execution_id, own in groups.items():
            outcomes += self._try(execution_id, own, [], 1)
        return outcomes

    def retry_due(self, now: float) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for execution_id, held in list(self.held.items()):
            if held.at <= now:
                del self.held[execution_id]
                outcomes += self._try(execution_id, held.failed, held.behind, held.attempts + 1)
        return outcomes

    def next_retry(self) -> float | None:
        return min((h.at for h in self.held.values()), default=None)

    def give_up(self, error: str) -> list[Outcome]:
        """Drop everything waiting for a retry."""
        outcomes = [(b, error) for h in self.held.values() for b in h.failed + h.behind]
        self.held.clear()
        return outcomes

    def _try(
        self, execution_id: str, batches: list[_Batch], behind: list[_Batch], attempt: int
    ) -> list[Outcome]:
        try:
            self._append(batches)
        except Exception as exc:
            return self._failed(execution_id, batches, behind, exc, attempt)
        if attempt > 1:
            log.info("log lines stored after retrying", execution_id=execution_id, attempts=attempt)
        outcomes: list[Outcome] = [(b, None) for b in batches]
        return outcomes + self.store_round(behind) if behind else outcomes

    def _failed(
        self,
        execution_id: str,
        batches: list[_Batch],
        behind: list[_Batch],
        exc: Exception,
        attempt: int,
    ) -> list[Outcome]:
        error = describe(exc)
        lines = sum(len(b.rows) for b in batches)
        if is_transient(exc) and attempt < self.retries.attempts:
            delay = backoff(attempt, self.retries.delay, self.retries.max_delay)
            log.warning(
                "storing log lines failed; retrying",
                execution_id=execution_id,
                lines=lines,
                attempt=attempt,
                retry_in=delay,
                error=error,
            )
            self.held[execution_id] = _Held(
                batches, behind, attempt, time.monotonic() + delay, error
            )
            return []
        log.error(
            "log lines could not be stored; dropping them",
            execution_id=execution_id,
            lines=lines,
            attempts=attempt,
            error=error,
        )
        outcomes: list[Outcome] = [(b, error) for b in batches]
        return outcomes + self.store_round(behind) if behind else outcomes

    def _append(self, batches: list[_Batch]) -> None:
        if len(batches) == 1:
            rows = batches[0].rows
        else:
            rows = [row for batch in batches for row in batch.rows]
        self.store.append_logs(rows)


_CLOSE = object()


class _ThreadWriter:
    """Runs a _Storer on a thread of its own; outcomes go back to the loop."""

    def __init__(
        self,
        storer: _Storer,
        loop: asyncio.AbstractEventLoop,
        settle: Callable[[list[Outcome]], None],
    ):
        self.storer = storer
        self.loop = loop
        self.settle = settle
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()  # lists of batches; never blocks
        self.dead = ""  # why the thread ended early
        self.thread = threading.Thread(target=self._run, name="trainyard-log-writer", daemon=True)
        self.thread.start()

    def submit(self, batches: list[_Batch]) -> None:
        self.inbox.put(batches)
        if self.dead:
            self._deliver(self._drain(self.dead))

    async def close(self) -> None:
        self.inbox.put(_CLOSE)
        await asyncio.to_thread(self.thread.join)

    def _deliver(self, outcomes: list[Outcome]) -> None:
        if not outcomes:
            return
        try:
            self.loop.call_soon_threadsafe(self.settle, outcomes)
        except RuntimeError:  # the loop is closed: nobody to tell
            pass

    def _drain(self, error: str) -> list[Outcome]:
        outcomes: list[Outcome] = []
        while True:
            try:
                item = self.inbox.get_nowait()
            except queue.Empty:
                return outcomes
            if item is not _CLOSE:
                outcomes += [(b, error) for b in item]

    def _run(self) -> None:
        storer = self.storer
        closing = False
        batches: list[_Batch] = []
        try:
            while True:
                at = storer.next_retry()
                if at is None and closing:
                    return
                wait = None if at is None else max(0.0, at - time.monotonic())
                batches = []
                if closing:
                    time.sleep(wait or 0.0)
                else:
                    try:
                        if wait == 0.0:
                            item = self.inbox.get_nowait()
                        else:
                            item = self.inbox.get(timeout=wait)
                    except queue.Empty:
                        item = None
                    lines = 0
                    while item is not None:
                        if item is _CLOSE:
                            closing = True
                            break
                        batches += item
                        lines += sum(len(b.rows) for b in item)
                        if lines >= ROUND_LINES:
                            break
                        try:
                            item = self.inbox.get_nowait()
                        except queue.Empty:
                            item = None
                outcomes = storer.store_round(batches) if batches else []
                outcomes += storer.retry_due(time.monotonic())
                self._deliver(outcomes)
        except BaseException as exc:
            # A bug, not a storage fault (those are caught where they are met): drop
            # what is held rather than leave the loop waiting for it forever.
            log.exception("the log writer failed")
            self.dead = f"the log writer failed: {describe(exc)}"
            lost = storer.give_up(self.dead)
            held = {id(b) for b, _ in lost}
            lost += [(b, self.dead) for b in batches if id(b) not in held]
            self._deliver(lost + self._drain(self.dead))
        finally:
            # Store.close closes this thread's connection (peewee keeps one per thread).
            storer.store.close()


class _LoopWriter:
    """Runs a _Storer on the event loop itself (an in-memory database)."""

    def __init__(
        self,
        storer: _Storer,
        loop: asyncio.AbstractEventLoop,
        settle: Callable[[list[Outcome]], None],
    ):
        self.storer = storer
        self.loop = loop
        self.settle = settle
        self.timer: asyncio.TimerHandle | None = None

    def submit(self, batches: list[_Batch]) -> None:
        self._deliver(self.storer.store_round(batches))

    async def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _retry(self) -> None:
        self.timer = None
        self._deliver(self.storer.retry_due(time.monotonic()))

    def _deliver(self, outcomes: list[Outcome]) -> None:
        if outcomes:
            self.loop.call_soon(self.settle, outcomes)
        at = self.storer.next_retry()
        if at is not None:
            if self.timer is not None:
                self.timer.cancel()
            self.timer = self.loop.call_later(max(0.0, at - time.monotonic()), self._retry)


@dataclass(eq=False)
class _Log:
    """One execution's lines on their way to the store (kept on the event loop)."""

    next_seq: int
    pending: list[tuple] = field(default_factory=list)  # numbered, not handed over yet
    pending_chars: int = 0
    queued_lines: int = 0  # written and not settled (pending ones included)
    queued_chars: int = 0
    written: int = 0  # lines written so far
    settled: int = 0  # of those, stored or given up on (always the first ones)
    lost: int = 0  # given up on
    error: str = ""  # why the first of those were
    flushes: list[tuple[int, asyncio.Future]] = field(default_factory=list)
    room: asyncio.Future | None = None  # set once there is room again
    forgotten: bool = False  # dropped once settled

    def loss(self) -> str:
        return f"logs could not be stored: {self.error} ({self.lost} lines lost)"


@dataclass
class LogSink:
    store: object  # server.store.repository.Store (append_logs, last_log_seq, url, close)
    # A line waits at most this long for others to share its transaction. Under load a
    # longer wait costs far more than itself: measured with bench/tailers_delay.py
    # (1,000 tailers), at 5 ms a line was published 27 ms (p50) after it was written,
    # since the timer fired only after the tailers' burst of sends; at 1 ms, 1.8 ms.
    # Throughput does not depend on it: while the writer thread stores one
    # transaction, everything written meanwhile waits for the next.
    flush_interval: float = 0.001
    max_batch: int = 5000
    # Per execution: lines (characters) written and not yet stored, past which
    # wait_for_room waits.
    max_queued_lines: int = 20_000
    max_queued_chars: int = 16 * 1024 * 1024
    # Transient storage faults: tries of a batch before it is given up on, and the
    # waits between them (doubling from retry_delay up to max_retry_delay).
    max_attempts: int = 10
    retry_delay: float = 0.05
    max_retry_delay: float = 2.0
    subscribers: list[Subscriber] = field(default_factory=list)
    row_subscribers: list[RowSubscriber] = field(default_factory=list)
    loss_listeners: list[LossListener] = field(default_factory=list)
    lines_written: int = 0  # stored and published
    lines_lost: int = 0  # given up on
    _logs: dict[str, _Log] = field(default_factory=dict)
    _dirty: dict[str, _Log] = field(default_factory=dict)  # executions with pending lines
    _pending_lines: int = 0
    _timer: asyncio.TimerHandle | None = None
    _writer: _ThreadWriter | _LoopWriter | None = None
    # Per execution: the secret values its lines must not show (server/domain/secrets.py).
    _masks: dict[str, Callable[[list[str]], list[str]]] = field(default_factory=dict)

    # ------------------------------------------------------------------ writing

    def write(self, execution_id: str, step: str, stream: LogStream, text: str) -> None:
        """Queue one line (on the event loop; never blocks). Long lines are split."""
        self.write_lines(execution_id, step, stream, [text])

    def write_lines(
        self, execution_id: str, step: str, stream: LogStream, texts: list[str]
    ) -> None:
        """Queue many lines of one step's stream (what one read of its pipe held), with
        one time for all; lines longer than MAX_LINE_CHARS are split. Never blocks:
        a producer of many lines awaits :meth:`wait_for_room` after writing. The
        numbering is done in one go, with no Python code run per line: at a few
        hundred thousand lines a second, numbering line by line cost the event loop
        about a sixth of its time."""
        if not texts:
            return
        mask = self._masks.get(execution_id)
        if mask is not None:
            texts = mask(texts)
        if max(map(len, texts)) > MAX_LINE_CHARS:
            texts = [
                text[i : i + MAX_LINE_CHARS]
                for text in texts
                for i in range(0, len(text) or 1, MAX_LINE_CHARS)
            ]
        state = self._logs.get(execution_id)
        if state is None:
            state = self._logs[execution_id] = _Log(self.store.last_log_seq(execution_id) + 1)
        now_us = time.time_ns() // 1000
        seq = state.next_seq
        count = len(texts)
        chars = sum(map(len, texts))
        state.pending.extend(
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
        state.next_seq = seq + count
        state.pending_chars += chars
        state.written += count
        state.queued_lines += count
        state.queued_chars += chars
        self._dirty[execution_id] = state
        self._pending_lines += count
        if self._pending_lines >= self.max_batch:
            self._submit()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.flush_interval, self._submit)

    def mask(self, execution_id: str, mask: Callable[[list[str]], list[str]]) -> None:
        """From now until :meth:`forget`, the execution's lines pass through ``mask``
        (a :class:`server.domain.secrets.Mask`: its secret values become ``***``)
        before they are numbered and stored; an empty mask is not kept."""
        if mask:
            self._masks[execution_id] = mask

    def system(self, execution_id: str, text: str, step: str = "") -> None:
        self.write(execution_id, step, LogStream.SYSTEM, text)

    async def open(self, execution_id: str) -> None:
        """Read where the execution's numbering goes on (its last stored line) off the
        event loop, before its first write; a write to an execution not opened reads
        it on the loop."""
        if execution_id in self._logs:
            return
        if self._threaded():
            last = await asyncio.to_thread(self.store.last_log_seq, execution_id)
        else:  # an in-memory database is one connection's, on this thread
            last = self.store.last_log_seq(execution_id)
        if execution_id not in self._logs:
            self._logs[execution_id] = _Log(last + 1)

    async def wait_for_room(self, execution_id: str) -> None:
        """Return once the execution has fewer than ``max_queued_lines`` lines (and
        ``max_queued_chars`` characters) written and not yet stored or given up on:
        at once, unless the store lags behind it."""
        state = self._logs.get(execution_id)
        while state is not None and self._full(state):
            if state.pending:
                self._submit()
            if state.room is None:
                state.room = asyncio.get_running_loop().create_future()
            # Shared by every producer of the execution: one's cancel is not theirs.
            await asyncio.shield(state.room)
            state = self._logs.get(execution_id)

    def queued(self, execution_id: str) -> int:
        """Lines of the execution written and not yet stored or given up on."""
        state = self._logs.get(execution_id)
        return 0 if state is None else state.queued_lines

    # ----------------------------------------------------------------- flushing

    async def flush(self, execution_id: str | None = None) -> None:
        """Return once every line written before the call (of this execution, or of
        every one) is stored and published. Raises LogsNotStored when some lines of
        the execution(s) could not be stored, these or earlier ones (until forget).
        While storing fails transiently it waits: the retries are bounded, so it
        returns or raises within their time."""
        self._submit()
        if execution_id is None:
            states = list(self._logs.items())
        else:
            state = self._logs.get(execution_id)
            states = [] if state is None else [(execution_id, state)]
        loop = asyncio.get_running_loop()
        waits = []
        for _, state in states:
            if state.settled < state.written:
                future = loop.create_future()
                state.flushes.append((state.written, future))
                waits.append(future)
        for future in waits:
            await future
        failures = {eid: state.loss() for eid, state in states if state.lost}
        if failures:
            raise LogsNotStored(failures)

    async def close(self) -> None:
        """Flush, then stop the writer thread (at server shutdown)."""
        try:
            await self.flush()
        except LogsNotStored as exc:
            log.error("log lines were lost", error=str(exc))
        writer, self._writer = self._writer, None
        if writer is not None:
            await writer.close()

    def forget(self, execution_id: str) -> None:
        """The execution is final: drop what the sink keeps of it (its counter, its
        losses) once its lines are settled. Its next line, if any, is numbered on from
        the store."""
        self._masks.pop(execution_id, None)
        state = self._logs.get(execution_id)
        if state is None:
            return
        if state.settled == state.written:
            del self._logs[execution_id]
        else:
            state.forgotten = True

    def numbered_elsewhere(self, execution_id: str, seq: int) -> None:
        """Another replica stored the execution's lines up to ``seq`` (its
        notification said so): a number this sink kept for it from an earlier write
        here is stale, and its next line is numbered after ``seq``. (Two replicas never
        write one execution's lines at the same time: its runtime owner writes them.)"""
        state = self._logs.get(execution_id)
        if state is not None and state.next_seq <= seq:
            state.next_seq = seq + 1

    def last_seq(self, execution_id: str) -> int:
        """The sequence number of the last line written (stored or queued)."""
        state = self._logs.get(execution_id)
        if state is None:
            return self.store.last_log_seq(execution_id)
        return state.next_seq - 1

    # ---------------------------------------------------------------- internals

    def _full(self, state: _Log) -> bool:
        return (
            state.queued_lines >= self.max_queued_lines
            or state.queued_chars >= self.max_queued_chars
        )

    def _threaded(self) -> bool:
        return ":memory:" not in getattr(self.store, "url", ":memory:")

    def _submit(self) -> None:
        """Hand the pending lines to the writer, a batch per execution."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._dirty:
            return
        batches = []
        for execution_id, state in self._dirty.items():
            batches.append(_Batch(execution_id, state.pending, state.pending_chars))
            state.pending = []
            state.pending_chars = 0
        self._dirty = {}
        self._pending_lines = 0
        writer = self._writer
        if writer is None:
            loop = asyncio.get_running_loop()
            retries = _Retries(max(1, self.max_attempts), self.retry_delay, self.max_retry_delay)
            kind = _ThreadWriter if self._threaded() else _LoopWriter
            writer = self._writer = kind(_Storer(self.store, retries), loop, self._settle)
        writer.submit(batches)

    def _settle(self, outcomes: list[Outcome]) -> None:
        """What became of batches (on the loop, in the order they were written, per
        execution): publish the stored ones, count the lost ones, wake who waits."""
        for batch, error in outcomes:
            execution_id = batch.execution_id
            count = len(batch.rows)
            if error is None:
                self._publish(execution_id, batch.rows)
            else:
                self.lines_lost += count
            state = self._logs.get(execution_id)
            if state is None:
                continue
            state.queued_lines -= count
            state.queued_chars -= batch.chars
            state.settled += count
            if error is not None:
                first = not state.lost
                state.lost += count
                if first:
                    state.error = error
                    self._report_loss(execution_id, f"logs could not be stored: {error}")
            if state.flushes:
                waiting = []
                for target, future in state.flushes:
                    if target <= state.settled:
                        if not future.done():
                            future.set_result(None)
                    else:
                        waiting.append((target, future))
                state.flushes = waiting
            if state.room is not None and not self._full(state):
                if not state.room.done():
                    state.room.set_result(None)
                state.room = None
            if state.forgotten and state.settled == state.written:
                del self._logs[execution_id]

    def _report_loss(self, execution_id: str, message: str) -> None:
        for listener in list(self.loss_listeners):
            try:
                listener(execution_id, message)
            except Exception:
                log.exception("log loss listener failed", execution_id=execution_id)

    def _publish(self, execution_id: str, rows: list[tuple]) -> None:
        self.lines_written += len(rows)
        for row_subscriber in list(self.row_subscribers):
            try:
                row_subscriber(execution_id, rows)
            except Exception:
                log.exception("log subscriber failed", execution_id=execution_id)
        if not self.subscribers:
            return
        lines = [
            LogLine(
                execution_id,
                seq,
                datetime.fromtimestamp(at_us / 1_000_000, tz=UTC),
                step,
                _STREAMS[code],
                text,
            )
            for _, seq, at_us, step, code, text in rows
        ]
        for subscriber in list(self.subscribers):
            try:
                subscriber(execution_id, lines)
            except Exception:
                log.exception("log subscriber failed", execution_id=execution_id)


_STREAMS = {v: k for k, v in STREAM_CODES.items()}
