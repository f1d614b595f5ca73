"""Streams across the replicas of one PostgreSQL database: LISTEN / NOTIFY.

Every replica has its own in-process broker (server/streams/broker.py); its tailers and
watchers subscribe there and read the store. ``PostgresNotifier`` carries what one
replica committed to the brokers of the others. A notification carries only ids and
sequence numbers; a receiver reads the rows from the store, so a notification is
small, never holds a line or an execution, and can be repeated or coalesced safely.

Protocol (payloads are ``|``-separated; ids, resource groups and replica ids hold no
``|``, and the last field is taken whole):

* channel ``trainyard_logs``: ``<replica>|<execution_id>|<last_seq>`` — the lines of
  the execution up to ``last_seq`` are stored. Sent after the log sink's transaction
  has committed (the sink's row subscribers run then), coalesced per execution: of
  the batches stored between two sends, only the highest sequence number is sent.
* channel ``trainyard_events``: ``<replica>|<kind>|<resource_group>|<execution_id>|<detail>``
  with kind and detail:

  - ``created`` / ``transition``: the history entry's sequence number;
  - ``step``: the step's name;
  - ``deleted``: ``<status>,<scenario_id>,<configuration_id>,<executable_id>`` of the
    execution as it was (the row is gone, and filtered watches match on those);
  - ``written``: empty (and no group): the execution's row was written with no event
    (outputs, status message, submit time): caches of it must drop it.

  Sent after the change has committed (the control plane announces committed changes
  only), in the order this replica announced them, after the log notifications taken
  in the same send (so that lines stored before a final status are announced before
  it). Events that came from another replica (``ExecutionEvent.origin`` set) are not
  sent again.

All notifications queued during one tick of the event loop, and while a send is in
flight, go out in one statement (``SELECT pg_notify(...) FROM unnest(...)``, one
autocommit transaction): one round trip for many executions, and none per line.

Receiving (another replica's notifications; a replica ignores its own):

* Logs: when the local broker has a *live* subscription of the execution, the lines
  after ``broker.head_seq`` up to the announced number are read from the store in
  chunks and published, per execution by one task at a time (so two notifications
  never publish overlapping lines; a chunk is cut to the lines above the head before
  it is published). Without a live subscription nothing is read: the broker's head is
  moved to the announced number (``advance_head``), as if the lines were published.
* Events: the execution is read from the store with its history, and the event is
  rebuilt (a transition: the history entry with the announced number, the execution
  as it was right after it; a step: the step's current details; a deletion: an
  execution made of the payload's fields, target status DELETED) with ``origin`` set
  to the sending replica, and handed to ``ControlPlane.receive_remote``, which
  announces it as a local change is announced: to the broker and to every other
  listener (the runtime hears a remote STOPPING). One task per execution reads and
  announces, in the order the notifications arrived. The notifier remembers the last
  history entry announced per execution (a bounded map): entries already announced
  are not announced again, and an entry whose notification arrives after a later
  one's is announced before it (a transition's notification may come from another
  replica than the one before it).
* Caches: the GetExecution responses (server/api/executions.py) are dropped through
  ``AsyncStore.written_elsewhere`` when any event or ``written`` notification of the
  execution arrives, before anything is read: the write is committed by then, so a
  read that starts afterwards sees it, and a read in flight is marked stale. The
  store's caches of executables and configurations (repository.py ``_Cache``) hold
  immutable rows (a version or a configuration never changes once written) and the
  control plane's step names (``_steps``) are per executable version: neither needs
  invalidating. The log sink's next number per execution (``LogSink._next_seq``) is
  moved past every number another replica announces for it
  (``LogSink.numbered_elsewhere``), so a replica that wrote an execution's lines
  before another did numbers its next line after theirs.

Why a tailer on a replica that does not write the lines misses nothing (B tails, A
writes). A tailer subscribes before it reads the store, reads the highest stored
number S and the lines after its cursor, and turns live only if ``head_seq`` is not
above S, in the same synchronous step as ``go_live``; otherwise it reads again. On B
``head_seq`` moves only here, and only in synchronous steps: ``publish_logs`` of lines
read from the store, or ``advance_head`` when no subscription is live. Take any line
L > S. Its notification is sent after it committed, so every notification from A
names a number at or above every line committed before it. If L was published on B
before the tailer turned live, ``head_seq`` was already at least L > S then, and the
tailer would have read again instead; if the head had been advanced past L (no live
subscription), likewise. So L is published after the tailer turned live, and lands in
its buffer; what the buffer holds at or below the cursor is dropped. L is published at
all because a notification naming L or more reaches B (the log sink notifies after
every stored batch), and the task for the execution publishes everything from the
head up to the highest number named, while any subscription is live. A line at or
below S is in the tailer's read. The tailer's end is exact as on one replica: the
runtime stores the lines before the final transition, A sends their notification
before the event's, and a tailer that sees the final status drains the store.

Lost notifications. NOTIFY is not durable: a replica whose LISTEN connection drops
loses what was sent meanwhile. The listener reconnects with back-off; once LISTEN is
in place again (so everything committed from then on is notified), it treats every
execution with a subscription as changed: for each one with log subscriptions it
reads the highest stored number and handles it as a notification; for each one
with event subscriptions it reads the execution and announces its history entries
not announced yet (or its deletion). Watchers of a resource group are woken (the
broker's ``resync_sets``) and read the group's changes after their cursor from the
store, so they miss nothing either. While the connection is down, the GetExecution
cache caches nothing.

Cursors. Log sequence numbers, one-execution watch cursors (history sequence
numbers) and set-watch cursors (the numbers of the changes recorded in each resource
group, in commit order: server/streams/watch.py) are the store's: valid on every
replica. A set watcher reads the changes from the store; the events this notifier
rebuilds only wake it, and after a lost LISTEN connection the broker's resync wakes it
to read what it missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import psycopg
import structlog

from server.domain.errors import NotFound
from server.domain.lifecycle import is_final
from server.domain.models import Execution, deleted_execution
from server.domain.service import ExecutionEvent

if TYPE_CHECKING:
    from server.domain.logsink import LogSink
    from server.domain.service import ControlPlane
    from server.store.async_store import AsyncStore
    from server.streams.broker import LocalBroker

log = structlog.get_logger(__name__)

LOG_CHANNEL = "trainyard_logs"
EVENT_CHANNEL = "trainyard_events"
# The origin of events found in the store after a reconnect (their sender is unknown).
RESYNC_ORIGIN = "*"
# Notifications per NOTIFY statement; PostgreSQL's limit is on the payload (8000 bytes).
MAX_PER_STATEMENT = 1000
MAX_PAYLOAD_BYTES = 7999
_NOTIFY_SQL = "SELECT pg_notify(c, p) FROM unnest(%s::text[], %s::text[]) AS n(c, p)"


@dataclasses.dataclass(slots=True)
class _Remote:
    """An event notification waiting to be read and announced."""

    kind: str  # created | transition | step | deleted | resync
    group: str
    detail: str
    origin: str


class PostgresNotifier:
    """One replica's end of the cross-replica notifications (see the module doc).

    Constructing it subscribes it to the log sink, the control plane's listeners and
    the store's local writes; ``start`` connects (LISTEN is in place when it returns)
    and ``close`` stops it. Everything runs on the event loop; the database calls are
    psycopg's asynchronous ones."""

    def __init__(
        self,
        url: str,
        *,
        replica_id: str,
        store: AsyncStore,
        plane: ControlPlane,
        broker: LocalBroker,
        log_sink: LogSink | None = None,
        application_name: str = "",
        chunk_lines: int = 5000,
        min_backoff: float = 0.05,
        max_backoff: float = 2.0,
        remembered: int = 10_000,
    ):
        if "|" in replica_id or not replica_id:
            raise ValueError(f"bad replica id {replica_id!r}")
        self.url = url
        self.replica_id = replica_id
        self.application_name = application_name or f"trainyard-{replica_id}"
        self.store = store
        self.plane = plane
        self.broker = broker
        self.log_sink = log_sink
        self.chunk_lines = chunk_lines
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.remembered = remembered
        # Outbound, waiting for the next send.
        self._out_logs: dict[str, int] = {}
        self._out_events: list[tuple[str, str]] = []  # (execution id, payload)
        self._out_written: dict[str, None] = {}
        self._out_ready = asyncio.Event()
        self._notify_conn: psycopg.AsyncConnection | None = None
        # Inbound logs: per execution, the highest number announced and its task.
        self._log_targets: dict[str, int] = {}
        self._log_pumps: dict[str, asyncio.Task] = {}
        self._ended: set[str] = set()  # final while their task ran
        # Inbound events: per execution, the notifications waiting and their task.
        self._event_queues: dict[str, list[_Remote]] = {}
        self._event_pumps: dict[str, asyncio.Task] = {}
        # The last history entry announced per execution (local or remote), bounded.
        self._positions: OrderedDict[str, int] = OrderedDict()
        self._tasks: list[asyncio.Task] = []
        self._side_tasks: set[asyncio.Task] = set()
        self._listening = asyncio.Event()
        self._listen_conn: psycopg.AsyncConnection | None = None
        self._closing = False
        self._sending = False
        self.connects = 0  # LISTEN connections made (1 + reconnects)
        self.counters = {
            "sent": 0,
            "received": 0,
            "lines_published": 0,
            "events_announced": 0,
            "send_failures": 0,
            "listen_failures": 0,
        }
        if log_sink is not None:
            log_sink.row_subscribers.append(self._on_rows)
        plane.listeners.append(self._on_event)
        store.on_execution_written_here(self._on_written)

    # ----------------------------------------------------------------- life

    async def start(self, timeout: float = 30.0) -> None:
        """Connect and LISTEN (in place when this returns), start sending."""
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._listen_loop(), name="trainyard-notify-listen"),
            loop.create_task(self._send_loop(), name="trainyard-notify-send"),
        ]
        listening = loop.create_task(self._listening.wait())
        done, _ = await asyncio.wait(
            [listening, self._tasks[0]], timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if listening not in done:
            listening.cancel()
            await self.close()
            raise RuntimeError(f"cannot LISTEN on the database within {timeout:.0f}s")

    async def close(self, timeout: float = 2.0) -> None:
        """Send what is queued (within ``timeout`` seconds), then stop."""
        if self._closing:
            return
        if self._tasks and not self._tasks[1].done() and (self._pending_out() or self._sending):
            self._out_ready.set()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    while self._pending_out() or self._sending:
                        await asyncio.sleep(0.005)
        self._closing = True
        tasks = [
            *self._tasks,
            *self._log_pumps.values(),
            *self._event_pumps.values(),
            *self._side_tasks,
        ]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for conn in (self._listen_conn, self._notify_conn):
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()
        self._listen_conn = self._notify_conn = None

    @property
    def listening(self) -> bool:
        """Whether LISTEN is in place (notifications are heard)."""
        return self._listening.is_set()

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    async def _connect(self, role: str) -> psycopg.AsyncConnection:
        return await psycopg.AsyncConnection.connect(
            self.url,
            autocommit=True,
            application_name=f"{self.application_name}-{role}",
            connect_timeout=10,
            keepalives=1,
            keepalives_idle=10,
            keepalives_interval=5,
            keepalives_count=3,
        )

    # -------------------------------------------------------------- outbound

    def _on_rows(self, execution_id: str, rows: list[tuple]) -> None:
        """The log sink stored (committed) these rows."""
        seq = rows[-1][1]
        if seq > self._out_logs.get(execution_id, 0):
            self._out_logs[execution_id] = seq
        self._out_ready.set()

    def _on_written(self, execution_id: str) -> None:
        """This process committed a write of the execution's row or history."""
        self._out_written[execution_id] = None
        self._out_ready.set()

    def _on_event(self, event: ExecutionEvent) -> None:
        """A committed change announced here (made here, or heard from elsewhere)."""
        execution = event.execution
        execution_id = execution.id
        if event.kind in ("created", "transition") and event.transition is not None:
            self._remember(execution_id, event.transition.seq)
        elif event.kind == "deleted":
            self._positions.pop(execution_id, None)
        if (event.kind == "deleted" or is_final(execution.status)) and (
            execution_id in self._log_pumps
        ):
            self._ended.add(execution_id)
        if event.origin:
            return
        if event.kind in ("created", "transition"):
            detail = str(event.transition.seq) if event.transition is not None else ""
        elif event.kind == "step":
            detail = event.step.name if event.step is not None else ""
        elif event.kind == "deleted":
            detail = ",".join(
                (
                    str(execution.status),
                    execution.scenario_id,
                    execution.configuration_id,
                    execution.executable_id,
                )
            )
        else:
            return
        payload = (
            f"{self.replica_id}|{event.kind}|{execution.resource_group}|{execution_id}|{detail}"
        )
        if len(payload.encode()) > MAX_PAYLOAD_BYTES:
            # Only a step name can be that long: the others still drop their caches.
            payload = f"{self.replica_id}|written||{execution_id}|"
        self._out_events.append((execution_id, payload))
        self._out_ready.set()

    def _remember(self, execution_id: str, seq: int) -> None:
        positions = self._positions
        if seq > positions.get(execution_id, 0):
            positions[execution_id] = seq
        if execution_id in positions:
            positions.move_to_end(execution_id)
        while len(positions) > self.remembered:
            positions.popitem(last=False)

    def _pending_out(self) -> bool:
        return bool(self._out_logs or self._out_events or self._out_written)

    def _take_outbound(self) -> list[tuple[str, str]]:
        me = self.replica_id
        batch = [(LOG_CHANNEL, f"{me}|{eid}|{seq}") for eid, seq in self._out_logs.items()]
        announced = set()
        for execution_id, payload in self._out_events:
            announced.add(execution_id)
            batch.append((EVENT_CHANNEL, payload))
        batch.extend(
            (EVENT_CHANNEL, f"{me}|written||{eid}|")
            for eid in self._out_written
            if eid not in announced
        )
        self._out_logs = {}
        self._out_events = []
        self._out_written = {}
        return batch

    async def _send_loop(self) -> None:
        backoff = self.min_backoff
        batch: list[tuple[str, str]] = []
        while True:
            if not batch:
                self._sending = False
                await self._out_ready.wait()
                self._out_ready.clear()
                batch = self._take_outbound()
                if not batch:
                    continue
            self._sending = True
            try:
                if self._notify_conn is None or self._notify_conn.closed:
                    self._notify_conn = await self._connect("notify")
                for start in range(0, len(batch), MAX_PER_STATEMENT):
                    part = batch[start : start + MAX_PER_STATEMENT]
                    await self._notify_conn.execute(
                        _NOTIFY_SQL, ([c for c, _ in part], [p for _, p in part])
                    )
                self.counters["sent"] += len(batch)
                batch = []
                backoff = self.min_backoff
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - kept and sent again
                # The batch is kept (a notification sent twice is harmless) and sent
                # again once the connection is back; what queues meanwhile follows it.
                self.counters["send_failures"] += 1
                log.warning("sending notifications failed; retrying", error=str(exc))
                conn, self._notify_conn = self._notify_conn, None
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff)

    # --------------------------------------------------------------- inbound

    async def _listen_loop(self) -> None:
        backoff = self.min_backoff
        while True:
            conn = None
            try:
                conn = await self._connect("listen")
                await conn.execute(f"LISTEN {LOG_CHANNEL}")
                await conn.execute(f"LISTEN {EVENT_CHANNEL}")
                self._listen_conn = conn
                self.connects += 1
                if self.connects > 1:
                    # Heard from now on; what was sent while deaf is read from the store.
                    self._resync()
                    self.store.writes_unheard(False)
                self._listening.set()
                backoff = self.min_backoff
                async for notify in conn.notifies():
                    self._on_notify(notify.channel, notify.payload)
                raise psycopg.OperationalError("the notification stream ended")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - reconnect
                self.counters["listen_failures"] += 1
                if self._listening.is_set():
                    self._listening.clear()
                    self.store.writes_unheard(True)
                log.warning("LISTEN connection lost; reconnecting", error=str(exc))
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()
                self._listen_conn = None
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff)

    def _on_notify(self, channel: str, payload: str) -> None:
        try:
            if channel == LOG_CHANNEL:
                origin, execution_id, seq = payload.split("|")
                if origin != self.replica_id:
                    self.counters["received"] += 1
                    number = int(seq)
                    if self.log_sink is not None:
                        self.log_sink.numbered_elsewhere(execution_id, number)
                    self._log_notified(execution_id, number)
            elif channel == EVENT_CHANNEL:
                origin, kind, group, execution_id, detail = payload.split("|", 4)
                if origin != self.replica_id:
                    self.counters["received"] += 1
                    # Committed before it was notified: reads from now on see it.
                    self.store.written_elsewhere(execution_id)
                    if kind != "written":
                        self._queue_event(execution_id, _Remote(kind, group, detail, origin))
        except ValueError:
            log.warning("malformed notification ignored", channel=channel, payload=payload[:200])

    # ------------------------------------------------------------------ logs

    def _log_notified(self, execution_id: str, seq: int) -> None:
        """Lines of the execution up to ``seq`` are stored (by another replica)."""
        if execution_id in self._log_pumps:
            if seq > self._log_targets.get(execution_id, 0):
                self._log_targets[execution_id] = seq
            return
        broker = self.broker
        if broker.head_seq(execution_id) >= seq:
            return
        if not broker.has_live_log_subscribers(execution_id):
            broker.advance_head(execution_id, seq)
            return
        self._log_targets[execution_id] = seq
        self._log_pumps[execution_id] = asyncio.get_running_loop().create_task(
            self._pump_logs(execution_id)
        )

    async def _pump_logs(self, execution_id: str) -> None:
        """Publish the stored lines after the broker's head up to the highest number
        announced, while a subscription is live; one task per execution."""
        broker = self.broker
        done = 0  # the highest number published (or skipped) by this task
        backoff = self.min_backoff
        try:
            while True:
                target = self._log_targets.get(execution_id, 0)
                # The broker forgets the head of an execution once it is final: what
                # this task published stays the floor.
                head = max(broker.head_seq(execution_id), done)
                if head >= target:
                    return
                if not broker.has_live_log_subscribers(execution_id):
                    broker.advance_head(execution_id, target)
                    return
                try:
                    rows = await self.store.read_log_rows(
                        execution_id, after_seq=head, upto_seq=target, limit=self.chunk_lines
                    )
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - the lines must come: retry
                    log.warning(
                        "reading notified log lines failed; retrying",
                        execution_id=execution_id,
                        error=str(exc),
                    )
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, self.max_backoff)
                    continue
                backoff = self.min_backoff
                if not rows:
                    return  # deleted meanwhile
                head = max(broker.head_seq(execution_id), done)
                done = max(done, rows[-1][1])
                if rows[-1][1] <= head:
                    continue
                if rows[0][1] <= head:
                    rows = [row for row in rows if row[1] > head]
                broker.publish_logs(execution_id, rows)
                self.counters["lines_published"] += len(rows)
        finally:
            self._log_pumps.pop(execution_id, None)
            self._log_targets.pop(execution_id, None)
            if execution_id in self._ended:
                self._ended.discard(execution_id)
                broker.forget_head(execution_id)

    async def _resync_logs(self, execution_id: str) -> None:
        while not self._closing:
            try:
                seq = await self.store.last_log_seq(execution_id)
                break
            except Exception as exc:  # noqa: BLE001 - retried
                log.warning("reading the last log line failed; retrying", error=str(exc))
                await asyncio.sleep(self.max_backoff)
        else:
            return
        if seq:
            self._log_notified(execution_id, seq)

    # ---------------------------------------------------------------- events

    def _queue_event(self, execution_id: str, item: _Remote) -> None:
        self._event_queues.setdefault(execution_id, []).append(item)
        if execution_id not in self._event_pumps:
            self._event_pumps[execution_id] = asyncio.get_running_loop().create_task(
                self._pump_events(execution_id)
            )

    async def _pump_events(self, execution_id: str) -> None:
        """Read the execution and announce its notified changes, in arrival order; one
        task per execution, one read for what arrived during the previous one."""
        backoff = self.min_backoff
        try:
            while True:
                items = self._event_queues.get(execution_id)
                if not items:
                    return
                self._event_queues[execution_id] = []
                execution: Execution | None = None
                if any(item.kind != "deleted" for item in items):
                    try:
                        execution = await self.store.get_execution(None, execution_id)
                    except NotFound:
                        execution = None
                    except asyncio.CancelledError:
                        raise
                    except Exception as exc:  # noqa: BLE001 - retried: events must come
                        log.warning(
                            "reading a notified execution failed; retrying",
                            execution_id=execution_id,
                            error=str(exc),
                        )
                        self._event_queues[execution_id] = items + self._event_queues[execution_id]
                        await asyncio.sleep(backoff)
                        backoff = min(backoff * 2, self.max_backoff)
                        continue
                    backoff = self.min_backoff
                for item in items:
                    for event in self._rebuild(execution_id, item, execution):
                        self.counters["events_announced"] += 1
                        self.plane.receive_remote(event)
        finally:
            self._event_pumps.pop(execution_id, None)
            if not self._event_queues.get(execution_id):
                self._event_queues.pop(execution_id, None)

    def _rebuild(
        self, execution_id: str, item: _Remote, execution: Execution | None
    ) -> list[ExecutionEvent]:
        kind = item.kind
        if kind == "deleted":
            return [self._deleted(execution_id, item)]
        if execution is None:
            if kind == "resync":
                return [self._deleted(execution_id, item)]
            return []  # deleted since: its own notification follows
        if kind == "step":
            step = next((s for s in execution.step_details if s.name == item.detail), None)
            if step is None:
                return []
            return [ExecutionEvent("step", execution, step=step, origin=item.origin)]
        history = execution.history
        if not history:
            return []
        if kind == "resync":
            seq = history[-1].seq
        elif kind in ("created", "transition"):
            try:
                seq = int(item.detail)
            except ValueError:
                return []
        else:
            return []
        known = self._positions.get(execution_id)
        if known is not None and seq <= known:
            return []
        after = known if known is not None else seq - 1
        events = []
        last = len(history) - 1
        for index, transition in enumerate(history):
            if not after < transition.seq <= seq:
                continue
            state = execution
            if index != last:
                # As it was right after this entry (its other fields as they are now).
                state = dataclasses.replace(
                    execution, status=transition.to_status, history=history[: index + 1]
                )
            event_kind = "created" if transition.from_status is None else "transition"
            events.append(
                ExecutionEvent(event_kind, state, transition=transition, origin=item.origin)
            )
        return events

    @staticmethod
    def _deleted(execution_id: str, item: _Remote) -> ExecutionEvent:
        execution = deleted_execution(execution_id, item.group, item.detail)
        return ExecutionEvent("deleted", execution, origin=item.origin)

    # ---------------------------------------------------------------- resync

    def _resync(self) -> None:
        """After a reconnect: everything subscribed here may have changed unheard."""
        self.broker.resync_sets()
        for execution_id in self.broker.event_executions():
            self.store.written_elsewhere(execution_id)
            self._queue_event(execution_id, _Remote("resync", "", "", RESYNC_ORIGIN))
        for execution_id in self.broker.log_executions():
            self._spawn(self._resync_logs(execution_id))

    # ------------------------------------------------------------------ stats

    def stats(self) -> dict[str, Any]:
        return {
            **self.counters,
            "listening": self.listening,
            "connects": self.connects,
            "log_tasks": len(self._log_pumps),
            "event_tasks": len(self._event_pumps),
            "remembered": len(self._positions),
        }

