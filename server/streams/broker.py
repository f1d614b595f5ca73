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

Memory is bounded: the live lines of an execution are one shared list of batches
(``_LogTopic``), from the oldest one a live subscription has not taken to the newest,
and a log subscription never lags more than ``max_lines`` lines and ``max_bytes``
bytes of text behind. Past that it is cut off and marks itself *behind* (``live``
False); its tailer then reads from the store where it left off. A thousand tailers of
one execution share the same batch objects, never copies, and publishing a batch costs
the same for one subscriber or a thousand, plus a wake-up per waiting tailer.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import secrets
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from operator import itemgetter
from typing import TYPE_CHECKING

from server.domain.lifecycle import is_final

if TYPE_CHECKING:
    from server.domain.service import ExecutionEvent

# One log line as stored and published: (execution_id, seq, at_us, step, stream_code,
# text). Stream codes: 1 stdout, 2 stderr, 3 system (server/domain/logsink.py).
LogRow = tuple[str, int, int, str, int, str]
_TEXT = itemgetter(5)


@dataclass(slots=True, eq=False)
class LogBatch:
    """Consecutive stored lines of one execution, in sequence order.

    ``memo`` lets a transport cache its encoding of the batch, so a batch shared by
    many subscribers is encoded once."""

    execution_id: str
    rows: list[LogRow]
    nbytes: int = -1
    memo: dict = field(default_factory=dict)
    first_seq: int = field(init=False)
    last_seq: int = field(init=False)
    # When the broker published it, in time.monotonic() seconds (the event loop's
    # clock); 0.0 before.
    published_at: float = field(init=False, default=0.0)

    def __post_init__(self) -> None:
        if self.nbytes < 0:
            self.nbytes = sum(map(len, map(_TEXT, self.rows)))
        self.first_seq = self.rows[0][1]
        self.last_seq = self.rows[-1][1]


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
    """One tailer's bounded view of one execution's live lines.

    While ``live`` it sees every batch published after its position in the topic's
    shared buffer (``take`` returns them and moves the position to the head). When
    keeping its backlog would take the buffer past ``max_lines`` or ``max_bytes``, it
    is cut off: ``live`` turns off and ``overflows`` counts it; the tailer must then
    read from the store, and call ``go_live`` once it has read to the end."""

    __slots__ = (
        "execution_id",
        "max_lines",
        "max_bytes",
        "live",
        "overflows",
        "closed",
        "_broker",
        "_topic",
        "_position",
        "_taken_lines",
        "_taken_bytes",
    )

    def __init__(
        self, broker: LocalBroker, topic: _LogTopic, execution_id: str, max_lines: int,
        max_bytes: int,
    ):
        super().__init__()
        self._broker = broker
        self._topic = topic
        self.execution_id = execution_id
        self.max_lines = max_lines
        self.max_bytes = max_bytes
        self.live = False
        self.overflows = 0
        self.closed = False
        # Index (in the topic) of the next batch to take (-1: not live), and how many
        # lines and bytes the topic had published before it.
        self._position = -1
        self._taken_lines = 0
        self._taken_bytes = 0

    @property
    def lines(self) -> int:
        """Lines published and not taken yet (0 unless live)."""
        return self._topic.published_lines - self._taken_lines if self.live else 0

    @property
    def nbytes(self) -> int:
        """Bytes of text published and not taken yet (0 unless live)."""
        return self._topic.published_bytes - self._taken_bytes if self.live else 0

    def pending(self) -> bool:
        """Whether ``take`` would return something."""
        return self.live and self._position < self._topic.head

    def go_live(self) -> None:
        """The tailer has read the store to its end (in the same synchronous step as
        this call): see what is published from now on."""
        if not self.closed:
            self._topic.place(self)
            self.live = True

    def take(self) -> list[LogBatch]:
        """The batches published since the last ``take`` (or ``go_live``)."""
        if not self.live:
            return []
        return self._topic.take(self)

    async def wait(self, timeout: float | None = None) -> None:
        """Until something is published to the execution, or any subscription of it is
        woken (cut off, or ``also_wake`` of an event subscription); or ``timeout``
        seconds. The tailers of an execution wait on one shared future: publishing
        wakes them all with one call, and a rare wake-up meant for one of them wakes
        the others for nothing (they look and wait again)."""
        topic = self._topic
        waiter = topic.published
        if waiter is None:
            waiter = topic.published = asyncio.get_running_loop().create_future()
        # Shielded: cancelling one tailer cancels its own view of the shared future,
        # never the future the other tailers wait on.
        if timeout is None:
            await asyncio.shield(waiter)
            return
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout)
        except TimeoutError:
            pass

    def oldest_published_at(self) -> float:
        """The time.monotonic() the oldest batch ``take`` would return was published (0.0
        when there is none)."""
        if not self.pending():
            return 0.0
        topic = self._topic
        return topic.batches[self._position - topic.first].published_at

    async def next_delivery(
        self, linger: float, send_lines: int, since: float | None = None
    ) -> None:
        """Until lines published to the execution are due for sending: ``linger``
        seconds after the first of them was published (after ``since``, a publish
        time, when lines are already pending), or as soon as ``send_lines`` were
        published meanwhile; or any wake-up, as for ``wait``. Times are
        time.monotonic(), the event loop's clock.

        The tailers of an execution wait together: one timer per execution, armed by
        the first publish (or ``since``), resolves every waiting tailer's own future
        at once. Each tailer thus wakes once per message it sends, and cancelling one
        tailer cancels its own future only. The first tailer to wait sets ``linger``
        and ``send_lines`` for the group (every tailer of a server has the same)."""
        topic = self._topic
        loop = asyncio.get_running_loop()
        if not topic.waiters:
            topic.linger = linger
            topic.send_lines = send_lines
            topic.delivery_lines = 0
        if since is not None:
            topic.arm(loop, since + linger)
        waiter = loop.create_future()
        topic.waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            # Gone (its call was cancelled): not kept until the next delivery.
            with contextlib.suppress(ValueError):
                topic.waiters.remove(waiter)
            raise

    async def linger(self, seconds: float) -> None:
        """Until the execution's next delivery tick, at most ``seconds`` from now (or
        an earlier wake-up, as for ``wait``). The tailers of an execution share the
        tick: a thousand tailers lingering cost one timer and one future."""
        topic = self._topic
        waiter = topic.ticked
        if waiter is None:
            loop = asyncio.get_running_loop()
            waiter = topic.ticked = loop.create_future()
            topic.tick = loop.call_later(seconds, topic.on_tick)
        await asyncio.shield(waiter)  # as in ``wait``

    def _wake(self) -> None:
        self._topic.wake()

    def _overflow(self) -> None:
        self.live = False
        self.overflows += 1
        self._broker.counters["overflows"] += 1

    def close(self) -> None:
        # Only its own tailer waits on a subscription, and that tailer is the one
        # closing it: nobody to wake.
        if not self.closed:
            self.closed = True
            self.live = False
            self._broker._remove_log(self)


class _LogTopic:
    """The live lines of one execution, shared by all its subscriptions.

    ``batches`` holds what the slowest live subscription has not taken yet, and never
    more than the smallest bound of its subscriptions: a batch that would exceed it
    pushes the oldest batches out, and the subscriptions that still needed them are cut
    off. A thousand tailers that keep up thus share one short list of batches; memory
    is bounded per execution, not per tailer. Subscriptions are indexed by their
    position, so publishing, taking and trimming cost no pass over all subscriptions.
    """

    __slots__ = (
        "subscriptions",
        "published",
        "ticked",
        "waiters",
        "delivery",
        "delivery_lines",
        "linger",
        "send_lines",
        "batches",
        "first",
        "lines",
        "nbytes",
        "published_lines",
        "published_bytes",
        "at",
        "bounds",
        "tick",
    )

    def __init__(self) -> None:
        self.subscriptions: dict[LogSubscription, None] = {}
        # What the tailers waiting for the next batch await (see LogSubscription.wait).
        self.published: asyncio.Future | None = None
        # What lingering tailers await, and the timer that sets it (see linger).
        self.ticked: asyncio.Future | None = None
        self.tick: asyncio.TimerHandle | None = None
        # Tailers waiting for their next delivery (see LogSubscription.next_delivery):
        # each one's own future, the timer that resolves them, the lines published
        # since they began waiting, and the group's linger and send_lines.
        self.waiters: list[asyncio.Future] = []
        self.delivery: asyncio.TimerHandle | None = None
        self.delivery_lines = 0
        self.linger = 0.0
        self.send_lines = 0
        self.batches: list[LogBatch] = []
        self.first = 0  # topic index of batches[0]
        self.lines = 0  # lines and bytes in batches
        self.nbytes = 0
        self.published_lines = 0  # lines and bytes ever published to the topic
        self.published_bytes = 0
        # Live subscriptions by position (the index of the next batch they take).
        self.at: dict[int, dict[LogSubscription, None]] = {}
        # (max_lines, max_bytes) of the subscriptions -> how many have it.
        self.bounds: dict[tuple[int, int], int] = {}

    @property
    def head(self) -> int:
        """The index the next published batch gets."""
        return self.first + len(self.batches)

    def add(self, subscription: LogSubscription) -> None:
        self.subscriptions[subscription] = None
        key = (subscription.max_lines, subscription.max_bytes)
        self.bounds[key] = self.bounds.get(key, 0) + 1

    def on_tick(self) -> None:
        self.tick = None
        ticked, self.ticked = self.ticked, None
        if ticked is not None and not ticked.done():
            ticked.set_result(None)

    def arm(self, loop: asyncio.AbstractEventLoop, at: float) -> None:
        """Deliver to the waiting tailers at ``at`` (time.monotonic(), which is
        ``loop.time()``) (unless armed already)."""
        if self.delivery is None:
            self.delivery = loop.call_at(at, self.deliver)

    def deliver(self) -> None:
        """Resolve every waiting tailer's future."""
        if self.delivery is not None:
            self.delivery.cancel()
            self.delivery = None
        waiters, self.waiters = self.waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def wake(self) -> None:
        """Wake every waiting and lingering tailer of the execution."""
        published, self.published = self.published, None
        if published is not None and not published.done():
            published.set_result(None)
        if self.tick is not None:
            self.tick.cancel()
        self.on_tick()
        self.deliver()

    def remove(self, subscription: LogSubscription) -> None:
        self.subscriptions.pop(subscription, None)
        if not self.subscriptions:
            self.wake()
        self._unplace(subscription)
        key = (subscription.max_lines, subscription.max_bytes)
        left = self.bounds.get(key, 0) - 1
        if left > 0:
            self.bounds[key] = left
        else:
            self.bounds.pop(key, None)
        self._trim_consumed()

    def place(self, subscription: LogSubscription) -> None:
        """Put a subscription at the head: it sees what is published from now on."""
        self._unplace(subscription)
        head = self.head
        subscription._position = head
        subscription._taken_lines = self.published_lines
        subscription._taken_bytes = self.published_bytes
        self.at.setdefault(head, {})[subscription] = None
        self._trim_consumed()

    def _unplace(self, subscription: LogSubscription) -> None:
        position = subscription._position
        if position < 0:
            return
        subscription._position = -1
        group = self.at.get(position)
        if group is not None:
            group.pop(subscription, None)
            if not group:
                del self.at[position]

    def take(self, subscription: LogSubscription) -> list[LogBatch]:
        start = subscription._position - self.first
        if start >= len(self.batches):
            return []
        batches = self.batches[start:] if start else list(self.batches)
        self.place(subscription)
        return batches

    def publish(self, batch: LogBatch, broker: LocalBroker) -> None:
        batch.published_at = time.monotonic()
        self.batches.append(batch)
        lines = len(batch.rows)
        self.lines += lines
        self.nbytes += batch.nbytes
        self.published_lines += lines
        self.published_bytes += batch.nbytes
        if self.bounds:
            max_lines = min(bound[0] for bound in self.bounds)
            max_bytes = min(bound[1] for bound in self.bounds)
            while self.batches and (self.lines > max_lines or self.nbytes > max_bytes):
                self._drop_first(cut_off=True)
        self._trim_consumed()
        if self.lines > broker.peak_buffered_lines:
            broker.peak_buffered_lines = self.lines
        published, self.published = self.published, None
        if published is not None and not published.done():
            published.set_result(None)
        if self.waiters:
            self.delivery_lines += lines
            if self.delivery_lines >= self.send_lines or self.linger <= 0:
                self.deliver()
            else:
                self.arm(self.waiters[0].get_loop(), batch.published_at + self.linger)

    def _drop_first(self, cut_off: bool) -> None:
        batch = self.batches.pop(0)
        self.lines -= len(batch.rows)
        self.nbytes -= batch.nbytes
        group = self.at.pop(self.first, None)
        self.first += 1
        if group:
            for subscription in group:
                subscription._position = -1
                if cut_off:
                    subscription._overflow()
            if cut_off:
                self.wake()  # so that the cut-off tailers go and read the store

    def _trim_consumed(self) -> None:
        """Drop the batches every live subscription has taken."""
        while self.batches and self.first not in self.at:
            self._drop_first(cut_off=False)


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
        "resync",
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
        # Set when events may have been lost on their way to this broker (a
        # cross-replica notifier lost its connection): a watcher of a set cannot tell
        # what it missed and must start over (see server/streams/watch.py).
        self.resync = False

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
        self._logs: dict[str, _LogTopic] = {}
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
        topic = self._logs.get(execution_id)
        if topic is not None:
            topic.publish(LogBatch(execution_id, rows), self)

    def subscribe_logs(
        self, execution_id: str, *, max_lines: int, max_bytes: int
    ) -> LogSubscription:
        topic = self._logs.get(execution_id)
        if topic is None:
            topic = self._logs[execution_id] = _LogTopic()
        subscription = LogSubscription(self, topic, execution_id, max_lines, max_bytes)
        topic.add(subscription)
        return subscription

    def _remove_log(self, subscription: LogSubscription) -> None:
        topic = subscription._topic
        topic.remove(subscription)
        if not topic.subscriptions and self._logs.get(subscription.execution_id) is topic:
            del self._logs[subscription.execution_id]

    def log_subscriptions(self, execution_id: str) -> list[LogSubscription]:
        """The log subscriptions of one execution (for operators and tests)."""
        topic = self._logs.get(execution_id)
        return list(topic.subscriptions) if topic is not None else []

    def head_seq(self, execution_id: str) -> int:
        return self._heads.get(execution_id, 0)

    # ------------------------------------------- for a cross-replica notifier

    def has_log_subscribers(self, execution_id: str) -> bool:
        """Whether any tailer of the execution is subscribed (live or not)."""
        return execution_id in self._logs

    def has_live_log_subscribers(self, execution_id: str) -> bool:
        """Whether any subscription of the execution is live: only a live one takes
        what is published (one that is not live reads the store, and checks
        ``head_seq`` before it turns live)."""
        topic = self._logs.get(execution_id)
        return topic is not None and bool(topic.at)

    def advance_head(self, execution_id: str, seq: int) -> None:
        """Lines up to ``seq`` are stored (written elsewhere) and no live subscription
        needs them: move ``head_seq`` without publishing. A tailer that is reading
        the store then reads again before it turns live, as for published lines."""
        if seq > self._heads.get(execution_id, 0):
            self._heads[execution_id] = seq

    def forget_head(self, execution_id: str) -> None:
        """The execution is final and nothing more is published for it."""
        self._heads.pop(execution_id, None)

    def log_executions(self) -> list[str]:
        """Executions with log subscriptions."""
        return list(self._logs)

    def event_executions(self) -> list[str]:
        """Executions with event subscriptions of their own."""
        return list(self._by_execution)

    def resync_sets(self) -> None:
        """Events may have been lost: start a new epoch and wake every watcher of a
        resource group, which reads what it missed from the store
        (server/streams/watch.py)."""
        self.epoch = secrets.token_hex(4)
        self._recent.clear()
        for subscriptions in self._by_group.values():
            for subscription in subscriptions:
                subscription.resync = True
                subscription._wake()

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
        subscriptions = [s for topic in self._logs.values() for s in topic.subscriptions]
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
