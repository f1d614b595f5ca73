"""Log tailing: an execution's stored lines from a chosen start, then its live lines,
with no gap and no duplicate.

How a tail runs (``LogTails.tail``):

1. With ``follow``, it subscribes to the execution's lines and events *before* reading
   anything, so nothing published from then on can be missed.
2. It reads the store after its cursor in chunks, on a store thread; each read also
   returns the highest stored sequence number it saw. A short read means it reached
   the end of the store. If the broker has meanwhile published lines past that number
   (they were stored after the read looked), it reads again; otherwise it turns its
   subscription live, and every line published later lands in its buffer. Whatever
   the buffer holds at or below the cursor is dropped: sequence numbers, not the
   absence of an ``await``, make the hand-over from store to buffer exact.
3. Live, it sends what its buffer holds once the oldest of those lines was published
   ``linger`` seconds ago, or at once when ``send_lines`` wait. The tailers of an
   execution wait together, on one timer of the broker's that wakes each of them once
   per message (a thousand tailers cost no thousand timers); a tailer that finds lines
   waiting when it is done sending, because it is behind, sends them at once, in one
   fuller message.
4. A buffer that would exceed its bound is emptied by the broker and the tailer goes back
   to reading the store where it left off (catch-up). A tailer that, while catching up,
   is more than ``max_lag_lines`` behind the newest line gets RESOURCE_EXHAUSTED
   (TAILER_TOO_SLOW) with its cursor, and can reconnect from there.
5. When the execution reaches a final status (the runtime flushes its lines before the
   final transition), the tailer drains the store to the end and the stream ends.

Every subscription is released in ``finally``: on the last line, an error, a client
cancel, a disconnect or a deadline alike.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from server.domain.errors import InvalidArgument, NotFound, Reason, ResourceExhausted
from server.domain.lifecycle import is_final
from server.domain.logs import check_filters
from server.domain.logsink import STREAM_CODES
from server.domain.models import LogStream
from server.domain.service import ControlPlane
from server.streams.broker import Broker, EventSubscription, LogBatch, LogSubscription

MAX_TAIL_LINES = 100_000


@dataclass(frozen=True, slots=True)
class TailOptions:
    """What a tailer asked for. At most one of after_sequence, since and tail_lines."""

    follow: bool = False
    after_sequence: int = 0
    since: datetime | None = None
    tail_lines: int = 0
    steps: Sequence[str] = ()
    streams: Sequence[LogStream] = ()

    def validate(self) -> None:
        check_filters(self.after_sequence, self.steps)
        if self.tail_lines < 0 or self.tail_lines > MAX_TAIL_LINES:
            raise InvalidArgument.of("tail_lines", f"must be between 0 and {MAX_TAIL_LINES}")
        chosen = [
            name
            for name, used in (
                ("after_sequence", self.after_sequence > 0),
                ("since_time", self.since is not None),
                ("tail_lines", self.tail_lines > 0),
            )
            if used
        ]
        if len(chosen) > 1:
            raise InvalidArgument.of(
                chosen[1], f"cannot be combined with {chosen[0]}: choose one start option"
            )


@dataclass(slots=True)
class TailLimits:
    """Bounds of one tailer; the defaults suit a 2-core server."""

    # Lines read from the store at a time (history and catch-up).
    chunk_lines: int = 2000
    # Live buffer of one tailer: past either bound it falls back to the store.
    buffer_lines: int = 50_000
    buffer_bytes: int = 8 * 1024 * 1024
    # A tailer catching up that is further than this behind the newest line is cut
    # off with RESOURCE_EXHAUSTED (TAILER_TOO_SLOW) and its cursor.
    max_lag_lines: int = 1_000_000
    # Live lines wait at most this long for more before they are sent, unless
    # ``send_lines`` are already waiting.
    linger: float = 0.002
    send_lines: int = 1000


@dataclass
class LogTails:
    """Starts tailers of executions' logs."""

    plane: ControlPlane
    broker: Broker
    limits: TailLimits = field(default_factory=TailLimits)
    # Counters for operators and tests.
    started: int = 0
    active: int = 0
    too_slow: int = 0
    catchups: int = 0

    async def tail(
        self, resource_group: str, execution_id: str, options: TailOptions
    ) -> AsyncIterator[list[LogBatch]]:
        """Yield lists of consecutive batches (in sequence order, filters applied) until
        the log is read (without ``follow``) or the execution is final and drained."""
        options.validate()
        execution = await self.plane.require_execution(resource_group, execution_id)
        limits = self.limits
        store = self.plane.store
        steps = frozenset(options.steps)
        codes = frozenset(STREAM_CODES[s] for s in options.streams)
        step_list, code_list = sorted(steps), sorted(codes)
        filtered = bool(steps or codes)

        subscription: LogSubscription | None = None
        events: EventSubscription | None = None
        upto: int | None = None
        self.started += 1
        self.active += 1
        try:
            if options.follow and not is_final(execution.status):
                events, _ = self.broker.subscribe_events(execution_id=execution_id, max_events=64)
                subscription = self.broker.subscribe_logs(
                    execution_id, max_lines=limits.buffer_lines, max_bytes=limits.buffer_bytes
                )
                events.also_wake = subscription
                # The final transition may have been published between the read above
                # and these subscriptions, unheard by them: read the status again now
                # that they hear every later event.
                execution = await self.plane.require_execution(resource_group, execution_id)
            else:
                # A snapshot: what is stored now, and nothing after.
                upto = await store.last_log_seq(execution_id)

            cursor, first = await self._start(execution_id, options, step_list, code_list)
            if first:
                cursor = first[-1][1]
                yield [LogBatch(execution_id, first)]

            final = subscription is None or is_final(execution.status)
            behind = False
            overflows = 0
            while True:
                if events is not None and not final:
                    final = await self._final_seen(execution_id, events)
                if subscription is not None and subscription.overflows != overflows:
                    # The buffer overflowed while we waited or sent: back to the store.
                    overflows = subscription.overflows
                    behind = True
                    self.catchups += 1
                if subscription is None or not subscription.live:
                    # Read the store after the cursor (history, catch-up or drain).
                    if upto is None:
                        stored, rows = await store.read_log_rows_to_end(
                            execution_id,
                            after_seq=cursor,
                            limit=limits.chunk_lines,
                            steps=step_list,
                            stream_codes=code_list,
                        )
                    else:
                        stored, rows = upto, await store.read_log_rows(
                            execution_id,
                            after_seq=cursor,
                            upto_seq=upto,
                            limit=limits.chunk_lines,
                            steps=step_list,
                            stream_codes=code_list,
                        )
                    at_end = len(rows) < limits.chunk_lines
                    if at_end and subscription is not None and not final:
                        if self.broker.head_seq(execution_id) > stored:
                            # Published while the read ran, after what it saw: read
                            # again before turning live, or those lines would be lost.
                            at_end = False
                        else:
                            subscription.go_live()
                            overflows = subscription.overflows
                            behind = False
                    if rows:
                        cursor = rows[-1][1]
                        yield [LogBatch(execution_id, rows)]
                    if at_end and final:
                        return
                    if not at_end and behind:
                        self._check_lag(execution_id, cursor)
                    continue

                if not subscription.pending():
                    if final:
                        # Drain: one more read of the store, then the end.
                        subscription.live = False
                        continue
                    # Woken once lines are due (or by an event or a cut-off): send
                    # them at once, or look again.
                    await subscription.next_delivery(limits.linger, limits.send_lines)
                    if not subscription.pending():
                        continue
                elif limits.linger > 0 and not final and subscription.lines < limits.send_lines:
                    # Pending already (published while this tailer sent): wait only
                    # what is left of the oldest line's linger. A tailer that is
                    # behind sends at once.
                    since = subscription.oldest_published_at()
                    if time.monotonic() - since < limits.linger:
                        await subscription.next_delivery(
                            limits.linger, limits.send_lines, since=since
                        )
                if not subscription.live:
                    continue
                out: list[LogBatch] = []
                for batch in subscription.take():
                    if batch.last_seq <= cursor:
                        continue
                    if filtered or batch.first_seq <= cursor:
                        rows = [
                            r
                            for r in batch.rows
                            if r[1] > cursor
                            and (not steps or r[3] in steps)
                            and (not codes or r[4] in codes)
                        ]
                        if rows:
                            out.append(LogBatch(execution_id, rows))
                    else:
                        out.append(batch)
                if out:
                    cursor = out[-1].last_seq
                    yield out
        finally:
            self.active -= 1
            if subscription is not None:
                subscription.close()
            if events is not None:
                events.close()

    async def _start(
        self, execution_id: str, options: TailOptions, steps: list[str], codes: list[int]
    ) -> tuple[int, list[tuple]]:
        """The cursor to read after, and for ``tail_lines`` the lines already read."""
        store = self.plane.store
        if options.after_sequence:
            return options.after_sequence, []
        if options.since is not None:
            since_us = int(options.since.timestamp() * 1_000_000)
            return await store.first_log_seq_at(execution_id, since_us), []
        if options.tail_lines:
            rows = await store.read_log_rows(
                execution_id,
                limit=options.tail_lines,
                descending=True,
                steps=steps,
                stream_codes=codes,
            )
            rows.reverse()
            return 0, rows
        return 0, []

    def _check_lag(self, execution_id: str, cursor: int) -> None:
        head = self.broker.head_seq(execution_id)
        lag = head - cursor
        if lag > self.limits.max_lag_lines:
            self.too_slow += 1
            raise ResourceExhausted(
                message=(
                    f"log tailer fell {lag} lines behind execution {execution_id}; "
                    f"reconnect with after_sequence={cursor}"
                ),
                reason=Reason.TAILER_TOO_SLOW,
                metadata={"cursor": str(cursor), "execution_id": execution_id},
            )

    async def _final_seen(self, execution_id: str, events: EventSubscription) -> bool:
        """True once the execution reached a final status or was deleted."""
        if not events.queue and not events.overflowed:
            return False
        if events.overflowed:
            try:
                execution = await self.plane.store.get_execution(
                    None, execution_id, with_history=False
                )
            except NotFound:
                return True
            return is_final(execution.status)
        for item in events.take():
            event = item.event
            if event.kind == "deleted" or is_final(event.execution.status):
                return True
        return False
