"""The cross-replica notifier's protocol without a database: what it sends for local
changes, and what it publishes and announces for notifications it receives, with a
store of its own (fake) behind it (server/streams/notify.py)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from server.domain.errors import NotFound
from server.domain.models import Execution, Status, StepDetail, StepPhase, Transition
from server.domain.service import ControlPlane, ExecutionEvent
from server.streams.broker import LocalBroker
from server.streams.notify import EVENT_CHANNEL, LOG_CHANNEL, PostgresNotifier

NOW = datetime(2026, 1, 1, tzinfo=UTC)


class FakeStore:
    """Log rows and executions as another replica stored them."""

    def __init__(self) -> None:
        self.rows: dict[str, list[tuple]] = {}
        self.executions: dict[str, Execution] = {}
        self.reads = 0
        self.written: list[str] = []
        self.gate: asyncio.Event | None = None
        self._here: list = []

    def on_execution_written(self, callback) -> None:
        pass

    def on_execution_written_here(self, callback) -> None:
        self._here.append(callback)

    def written_elsewhere(self, execution_id: str) -> None:
        self.written.append(execution_id)

    def writes_unheard(self, unheard: bool) -> None:
        pass

    def store_lines(self, execution_id: str, count: int) -> int:
        rows = self.rows.setdefault(execution_id, [])
        start = len(rows)
        rows.extend(
            (execution_id, i + 1, 0, "s", 1, f"l{i + 1}") for i in range(start, start + count)
        )
        return len(rows)

    async def read_log_rows(self, execution_id, *, after_seq, upto_seq, limit):
        self.reads += 1
        if self.gate is not None:
            await self.gate.wait()
        rows = [r for r in self.rows.get(execution_id, []) if after_seq < r[1] <= upto_seq]
        return rows[:limit]

    async def last_log_seq(self, execution_id):
        return len(self.rows.get(execution_id, []))

    async def get_execution(self, group, execution_id):
        self.reads += 1
        if self.gate is not None:
            await self.gate.wait()
        if execution_id not in self.executions:
            raise NotFound.of("execution", execution_id)
        return self.executions[execution_id]


def execution_with(execution_id: str, statuses: list[Status]) -> Execution:
    history = []
    previous = None
    for seq, status in enumerate(statuses, start=1):
        history.append(Transition(seq, execution_id, previous, status, NOW, "test", ""))
        previous = status
    return Execution(
        id=execution_id,
        resource_group="g",
        configuration_id="c",
        executable_id="x",
        scenario_id="s",
        status=statuses[-1],
        step_details=[StepDetail(name="train", phase=StepPhase.RUNNING)],
        history=history,
    )


@pytest.fixture
def parts():
    store = FakeStore()
    plane = ControlPlane(store=store)  # type: ignore[arg-type]
    broker = LocalBroker()
    plane.listeners.append(broker.publish_event)
    heard: list[ExecutionEvent] = []
    plane.listeners.append(heard.append)
    notifier = PostgresNotifier(
        "postgresql://nobody@127.0.0.1:1/none",
        replica_id="b",
        store=store,  # type: ignore[arg-type]
        plane=plane,
        broker=broker,
        chunk_lines=7,
    )
    return store, plane, broker, notifier, heard


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def test_local_changes_are_sent_as_ids_and_numbers_logs_first(parts):
    store, plane, broker, notifier, _ = parts
    execution = execution_with("e1", [Status.PENDING, Status.RUNNING])
    notifier._on_rows("e1", [("e1", 1, 0, "s", 1, "a"), ("e1", 2, 0, "s", 1, "b")])
    notifier._on_rows("e1", [("e1", 3, 0, "s", 1, "c")])
    for callback in store._here:
        callback("e1")
        callback("e2")
    plane._announce(ExecutionEvent("transition", execution, transition=execution.history[-1]))
    plane._announce(ExecutionEvent("step", execution, step=execution.step_details[0]))
    plane._announce(
        ExecutionEvent("transition", execution, transition=execution.history[-1], origin="a")
    )
    assert notifier._take_outbound() == [
        (LOG_CHANNEL, "b|e1|3"),
        (EVENT_CHANNEL, "b|transition|g|e1|2"),
        (EVENT_CHANNEL, "b|step|g|e1|train"),
        (EVENT_CHANNEL, "b|written||e2|"),  # e1's write came with its events
    ]
    plane._announce(ExecutionEvent("deleted", execution))
    assert notifier._take_outbound() == [
        (EVENT_CHANNEL, "b|deleted|g|e1|RUNNING,s,c,x"),
    ]


def test_lines_are_published_once_from_the_head_while_a_tailer_is_live(parts):
    store, _, broker, notifier, _ = parts

    async def scenario():
        subscription = broker.subscribe_logs("e1", max_lines=10_000, max_bytes=10**9)
        # Not live: nothing is read, the head moves.
        notifier._on_notify(LOG_CHANNEL, f"a|e1|{store.store_lines('e1', 5)}")
        assert broker.head_seq("e1") == 5 and store.reads == 0
        subscription.go_live()
        store.gate = asyncio.Event()
        notifier._on_notify(LOG_CHANNEL, f"a|e1|{store.store_lines('e1', 10)}")
        await settle()
        # A second notification while the read is in flight only raises the target;
        # a publish of this replica's own meanwhile is not doubled.
        notifier._on_notify(LOG_CHANNEL, f"a|e1|{store.store_lines('e1', 20)}")
        notifier._on_notify(LOG_CHANNEL, "b|e1|999")  # our own: ignored
        broker.publish_logs("e1", store.rows["e1"][5:8])
        store.gate.set()
        await settle()
        seqs = [row[1] for batch in subscription.take() for row in batch.rows]
        assert seqs == list(range(6, 36))
        assert broker.head_seq("e1") == 35
        assert not notifier._log_pumps
        subscription.close()

    asyncio.run(scenario())


def test_transitions_are_announced_in_history_order_once(parts):
    store, _, broker, notifier, heard = parts
    store.executions["e1"] = execution_with(
        "e1", [Status.PENDING, Status.RUNNING, Status.STOPPING, Status.STOPPED]
    )

    async def scenario():
        notifier._on_notify(EVENT_CHANNEL, "a|created|g|e1|1")
        await settle()
        # Seq 3's notification (from another replica) arrives before seq 2's.
        notifier._on_notify(EVENT_CHANNEL, "c|transition|g|e1|3")
        notifier._on_notify(EVENT_CHANNEL, "a|transition|g|e1|2")
        notifier._on_notify(EVENT_CHANNEL, "a|step|g|e1|train")
        notifier._on_notify(EVENT_CHANNEL, "a|transition|g|e1|4")
        notifier._on_notify(EVENT_CHANNEL, "a|transition|g|e1|4")  # repeated
        await settle()

    asyncio.run(scenario())
    assert [(e.kind, e.transition.seq if e.transition else None) for e in heard] == [
        ("created", 1),
        ("transition", 2),
        ("transition", 3),
        ("step", None),
        ("transition", 4),
    ]
    assert [e.execution.status for e in heard] == [
        Status.PENDING,
        Status.RUNNING,
        Status.STOPPING,
        Status.STOPPED,
        Status.STOPPED,
    ]
    assert [len(e.execution.history) for e in heard if e.kind != "step"] == [1, 2, 3, 4]
    assert {e.origin for e in heard} == {"a", "c"}
    assert store.written == ["e1"] * 6
    assert broker.stats().events_published == 5


def test_a_deletion_is_announced_from_the_payload(parts):
    store, _, _, notifier, heard = parts

    async def scenario():
        notifier._on_notify(EVENT_CHANNEL, "a|deleted|g|e9|COMPLETED,s1,c1,x1")
        notifier._on_notify(EVENT_CHANNEL, "a|written||e9|")
        notifier._on_notify(EVENT_CHANNEL, "garbage")
        await settle()

    asyncio.run(scenario())
    (event,) = heard
    assert event.kind == "deleted"
    e = event.execution
    assert (e.id, e.resource_group, e.status, e.scenario_id, e.configuration_id) == (
        "e9",
        "g",
        Status.COMPLETED,
        "s1",
        "c1",
    )
    assert str(e.target_status) == "DELETED"
    assert store.reads == 0
    assert store.written == ["e9", "e9"]


def test_a_log_notification_moves_the_sinks_stale_numbering_past_it(parts):
    from server.domain.logsink import LogSink, _Log

    store, _, _, notifier, _ = parts
    sink = LogSink(store)
    notifier.log_sink = sink
    sink._logs["e1"] = _Log(next_seq=11)  # this replica wrote lines 1-10 earlier
    sink._logs["e2"] = _Log(next_seq=50)

    async def scenario():
        notifier._on_notify(LOG_CHANNEL, "a|e1|30")
        notifier._on_notify(LOG_CHANNEL, "a|e2|20")
        notifier._on_notify(LOG_CHANNEL, "a|e3|5")

    asyncio.run(scenario())
    assert (sink.last_seq("e1"), sink.last_seq("e2")) == (30, 49)
    assert "e3" not in sink._logs  # nothing kept: its next number comes from the store
