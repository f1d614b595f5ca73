"""Publish/subscribe of log lines and execution events.

The log sink publishes every stored batch of lines, the control plane every committed
execution change; tailers and watchers subscribe. ``Broker`` is the interface;
``LocalBroker`` is the in-process implementation every single-process server uses. A
multi-replica server would put a broker on its shared database here (for example
PostgreSQL LISTEN/NOTIFY) without touching the tailers or watchers, which rely only on:

* a batch or an event is published after it is committed, so a subscriber that missed
  something can always read it from the store;
* per topic, batches arrive in sequence order; subscribers drop what they already
  read (by sequence number), so a batch seen both in the store and live is not doubled.

Memory is bounded per subscriber: a log subscription holds at most ``max_lines`` lines
and ``max_bytes`` bytes of text. Past that it stops buffering and marks itself
*behind* (``live`` False); its tailer then reads from the store where it left off.
Batches are shared: a thousand tailers of one execution hold references to the same
batch objects, never copies.
"""

from __future__ import annotations

import abc
import asyncio
import secrets
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from server.domain.lifecycle import is_final

if TYPE_CHECKING:
    from server.domain.service import ExecutionEvent

# One log line as stored and published: (execution_id, seq, at_us, step, stream_code,
# text). Stream codes: 1 stdout, 2 stderr, 3 system (server/domain/logsink.py).
LogRow = tuple[str, int, int, str, int, str]


@dataclass(slots=True, eq=False)
class LogBatch:
    """Consecutive stored lines of one execution, in sequence order.

    ``memo`` lets a transport cache its encoding of the batch, so a batch shared by
    many subscribers is encoded once."""

    execution_id: str
    rows: list[LogRow]
    nbytes: int = -1
    memo: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.nbytes < 0:
            self.nbytes = sum(len(r[5]) for r in self.rows)

    @property
    def first_seq(self) -> int:
        return self.rows[0][1]

    @property
    def last_seq(self) -> int:
        return self.rows[-1][1]


class _Waitable:
    """A subscription a single task can wait on; publishers wake it."""

    __slots__ = ("_waiter",)

    def __init__(self) -> None:
        self._waiter: asyncio.Future | None = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self, timeout: float | None = None) -> None:
        """Until the next wake-up (or ``timeout`` seconds)."""
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            if timeout is None:
                await self._waiter
            else:
                await asyncio.wait_for(self._waiter, timeout)
        except TimeoutError:
            pass
        finally:
            self._waiter = None


class LogSubscription(_Waitable):
    """One tailer's bounded buffer on one execution's log.

    While ``live`` the broker appends every published batch. A push that would exceed
    ``max_lines`` or ``max_bytes`` empties the buffer and turns ``live`` off: the tailer
    must then read from the store, and call ``go_live`` once it has read to the end."""

    __slots__ = (
        "execution_id",
        "max_lines",
        "max_bytes",
        "batches",
        "lines",
        "nbytes",
        "live",
        "overflows",
        "closed",
        "_broker",
    )

    def __init__(self, broker: LocalBroker, execution_id: str, max_lines: int, max_bytes: int):
        super().__init__()
        self._broker = broker
        self.execution_id = execution_id
        self.max_lines = max_lines
        self.max_bytes = max_bytes
        self.batches: deque[LogBatch] = deque()
        self.lines = 0
        self.nbytes = 0
        self.live = False
        self.overflows = 0
        self.closed = False

    def push(self, batch: LogBatch) -> None:
        if not self.live:
            return
        lines = self.lines + len(batch.rows)
        nbytes = self.nbytes + batch.nbytes
        if lines > self.max_lines or nbytes > self.max_bytes:
            self.live = False
            self.overflows += 1
            self._broker.counters["overflows"] += 1
            self._drop()
        else:
            self.batches.append(batch)
            self.lines = lines
            self.nbytes = nbytes
            if lines > self._broker.peak_buffered_lines:
                self._broker.peak_buffered_lines = lines
        self._wake()

    def go_live(self) -> None:
        """The tailer has read the store to its end (in the same synchronous step as
        this call): buffer what is published from now on."""
        self._drop()
        self.live = True

    def take(self) -> list[LogBatch]:
        batches = list(self.batches)
        self._drop()
        return batches

    def _drop(self) -> None:
        self.batches.clear()
        self.lines = 0
        self.nbytes = 0

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.live = False
            self._drop()
            self._broker._remove_log(self)
            self._wake()


@dataclass(slots=True)
class NumberedEvent:
    """An execution event with the broker's position for it (see ``Broker.epoch``)."""

    number: int
    event: ExecutionEvent


class EventSubscription(_Waitable):
    """A watcher's bounded queue of execution events: of one execution, or of every
    execution of a resource group. Past ``max_events`` queued it stops queueing and
    sets ``overflowed``."""

    __slots__ = (
        "execution_id",
        "resource_group",
        "max_events",
        "queue",
        "overflowed",
        "closed",
        "also_wake",
        "_broker",
    )

    def __init__(
        self, broker: LocalBroker, execution_id: str | None, resource_group: str | None,
        max_events: int,
    ):
        super().__init__()
        # Another subscription whose waiter an event should wake too (a tailer waits on
        # its log subscription and must notice the execution's final status).
        self.also_wake: _Waitable | None = None
        self._broker = broker
        self.execution_id = execution_id
        self.resource_group = resource_group
        self.max_events = max_events
        self.queue: deque[NumberedEvent] = deque()
        self.overflowed = False
        self.closed = False

    def push(self, item: NumberedEvent) -> None:
        if self.overflowed:
            return
        if len(self.queue) >= self.max_events:
            self.overflowed = True
            self.queue.clear()
            self._broker.counters["event_overflows"] += 1
        else:
            self.queue.append(item)
        self._wake()
        if self.also_wake is not None:
            self.also_wake._wake()

    def take(self) -> list[NumberedEvent]:
        items = list(self.queue)
        self.queue.clear()
        return items

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.queue.clear()
            self._broker._remove_events(self)
            self._wake()


@dataclass(slots=True)
class BrokerStats:
    """Gauges and counters of a broker, for tests and operators."""

    log_subscriptions: int
    event_subscriptions: int
    buffered_lines: int
    buffered_bytes: int
    max_buffered_lines: int
    peak_buffered_lines: int
    overflows: int
    event_overflows: int
    batches_published: int
    lines_published: int
    events_published: int


class Broker(abc.ABC):
    """What tailers and watchers need from a publish/subscribe transport."""

    #: Identifies this broker's event numbering; event cursors of another epoch (another
    #: server process) cannot be resumed from the broker's memory.
    epoch: str

    @abc.abstractmethod
    def publish_logs(self, execution_id: str, rows: list[LogRow]) -> None:
        """Stored lines of one execution, in sequence order."""

    @abc.abstractmethod
    def publish_event(self, event: ExecutionEvent) -> None:
        """A committed execution change."""

    @abc.abstractmethod
    def subscribe_logs(
        self, execution_id: str, *, max_lines: int, max_bytes: int
    ) -> LogSubscription:
        """A bounded buffer on one execution's lines; not live until ``go_live``."""

    @abc.abstractmethod
    def subscribe_events(
        self,
        *,
        execution_id: str | None = None,
        resource_group: str | None = None,
        max_events: int = 10_000,
        after_number: int | None = None,
    ) -> tuple[EventSubscription, bool]:
        """Events of one execution, or of one resource group. With ``after_number``,
        events after it still held by the broker are queued first; the flag says
        whether every such event could be replayed."""

    @abc.abstractmethod
    def head_seq(self, execution_id: str) -> int:
        """The highest line sequence number published for the execution (0 if none
        since the broker started)."""

    @abc.abstractmethod
    def stats(self) -> BrokerStats: ...


class LocalBroker(Broker):
    """In-process broker: topics are dictionaries of subscriptions; publishing is a
    synchronous loop over one execution's subscribers, on the event loop thread."""

    def __init__(self, retained_events: int = 10_000):
        self.epoch = secrets.token_hex(4)
        self._logs: dict[str, list[LogSubscription]] = {}
        self._heads: dict[str, int] = {}
        self._by_execution: dict[str, list[EventSubscription]] = {}
        self._by_group: dict[str, list[EventSubscription]] = {}
        self._recent: deque[NumberedEvent] = deque(maxlen=retained_events)
        self._event_number = 0
        # Highest number of lines any one subscription has held (since start).
        self.peak_buffered_lines = 0
        self.counters = {
            "overflows": 0,
            "event_overflows": 0,
            "batches": 0,
            "lines": 0,
            "events": 0,
        }

    # ------------------------------------------------------------------ logs

    def publish_logs(self, execution_id: str, rows: list[LogRow]) -> None:
        if not rows:
            return
        self._heads[execution_id] = rows[-1][1]
        self.counters["batches"] += 1
        self.counters["lines"] += len(rows)
        subscribers = self._logs.get(execution_id)
        if not subscribers:
            return
        batch = LogBatch(execution_id, rows)
        for subscription in subscribers:
            subscription.push(batch)

    def subscribe_logs(
        self, execution_id: str, *, max_lines: int, max_bytes: int
    ) -> LogSubscription:
        subscription = LogSubscription(self, execution_id, max_lines, max_bytes)
        # Copy on write: publishing iterates the list without copying it.
        self._logs[execution_id] = [*self._logs.get(execution_id, ()), subscription]
        return subscription

    def _remove_log(self, subscription: LogSubscription) -> None:
        current = self._logs.get(subscription.execution_id, [])
        remaining = [s for s in current if s is not subscription]
        if remaining:
            self._logs[subscription.execution_id] = remaining
        else:
            self._logs.pop(subscription.execution_id, None)

    def head_seq(self, execution_id: str) -> int:
        return self._heads.get(execution_id, 0)

    # ---------------------------------------------------------------- events

    def publish_event(self, event: ExecutionEvent) -> None:
        self._event_number += 1
        item = NumberedEvent(self._event_number, event)
        self._recent.append(item)
        self.counters["events"] += 1
        execution = event.execution
        for subscription in self._by_execution.get(execution.id, ()):
            subscription.push(item)
        for subscription in self._by_group.get(execution.resource_group, ()):
            subscription.push(item)
        if event.kind == "deleted" or is_final(execution.status):
            # Nothing more is published for it: drop its head counter.
            self._heads.pop(execution.id, None)

    def subscribe_events(
        self,
        *,
        execution_id: str | None = None,
        resource_group: str | None = None,
        max_events: int = 10_000,
        after_number: int | None = None,
    ) -> tuple[EventSubscription, bool]:
        if (execution_id is None) == (resource_group is None):
            raise ValueError("subscribe to one execution or one resource group")
        subscription = EventSubscription(self, execution_id, resource_group, max_events)
        if execution_id is not None:
            table, key = self._by_execution, execution_id
        else:
            table, key = self._by_group, resource_group
        table[key] = [*table.get(key, ()), subscription]
        complete = True
        if after_number is not None:
            oldest = self._recent[0].number if self._recent else self._event_number + 1
            complete = after_number + 1 >= oldest and after_number <= self._event_number
            if complete:
                replay = self._matching(self._recent, after_number, execution_id, resource_group)
                for item in replay:
                    subscription.push(item)
        return subscription, complete

    @staticmethod
    def _matching(
        items: Iterable[NumberedEvent], after: int, execution_id: str | None, group: str | None
    ) -> Iterable[NumberedEvent]:
        for item in items:
            if item.number <= after:
                continue
            execution = item.event.execution
            if execution_id is not None and execution.id != execution_id:
                continue
            if group is not None and execution.resource_group != group:
                continue
            yield item

    def _remove_events(self, subscription: EventSubscription) -> None:
        if subscription.execution_id is not None:
            table, key = self._by_execution, subscription.execution_id
        else:
            table, key = self._by_group, subscription.resource_group
        remaining = [s for s in table.get(key, ()) if s is not subscription]
        if remaining:
            table[key] = remaining
        else:
            table.pop(key, None)

    @property
    def last_event_number(self) -> int:
        return self._event_number

    # ----------------------------------------------------------------- stats

    def stats(self) -> BrokerStats:
        subscriptions = [s for subs in self._logs.values() for s in subs]
        events = sum(len(s) for s in self._by_execution.values()) + sum(
            len(s) for s in self._by_group.values()
        )
        return BrokerStats(
            log_subscriptions=len(subscriptions),
            event_subscriptions=events,
            buffered_lines=sum(s.lines for s in subscriptions),
            buffered_bytes=sum(s.nbytes for s in subscriptions),
            max_buffered_lines=max((s.lines for s in subscriptions), default=0),
            peak_buffered_lines=self.peak_buffered_lines,
            overflows=self.counters["overflows"],
            event_overflows=self.counters["event_overflows"],
            batches_published=self.counters["batches"],
            lines_published=self.counters["lines"],
            events_published=self.counters["events"],
        )
