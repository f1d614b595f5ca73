"""Two replicas on one PostgreSQL database behave as one service for streams: lines
written on A are tailed on B exactly once and in order, resumed by sequence number on
either, transitions and creations made on A are watched on B, B's GetExecution cache
hears A's writes, and the notifier comes back after its connection is killed with no
line or transition lost (server/streams/notify.py).

The module needs PostgreSQL (its servers share the test's database, ``postgres_url``).
Both replicas run no runtime: the tests play its part on A (lines through A's log
sink, transitions through A's control plane), as the ``driven`` stream tests do."""

from __future__ import annotations

import threading

import pytest
from streamkit import Driver, make_configuration, make_execution, wait_for

from server.domain.models import Status, StepDetail, StepPhase
from trainyard.v1 import execution_pb2 as xpb
from trainyard.v1 import execution_service_pb2 as epb
from trainyard.v1 import log_service_pb2 as lpb

SNAPSHOT = epb.WATCH_EVENT_TYPE_SNAPSHOT
TRANSITION = epb.WATCH_EVENT_TYPE_TRANSITION
STEP = epb.WATCH_EVENT_TYPE_STEP_CHANGED
CREATED = epb.WATCH_EVENT_TYPE_CREATED
DELETED = epb.WATCH_EVENT_TYPE_DELETED
pytestmark = pytest.mark.backends("postgresql")

PENDING = xpb.EXECUTION_STATUS_PENDING
RUNNING = xpb.EXECUTION_STATUS_RUNNING
STOPPING = xpb.EXECUTION_STATUS_STOPPING
STOPPED = xpb.EXECUTION_STATUS_STOPPED
COMPLETED = xpb.EXECUTION_STATUS_COMPLETED


@pytest.fixture
def replicas(postgres_url, server_factory, stubs_for, tmp_path):
    """Replicas "a" and "b" on one fresh database, each with its own data folder,
    and stubs for each."""
    a = server_factory(
        database_url=postgres_url, data_dir=tmp_path / "a", runtime="none", replica_id="a"
    )
    b = server_factory(
        database_url=postgres_url,
        data_dir=tmp_path / "b",
        runtime="none",
        replica_id="b",
        executables_dir=None,
    )
    return a, b, stubs_for(a), stubs_for(b)


def tail(stubs, execution_id: str, timeout: float = 120, **kwargs):
    return stubs.logs.TailLogs(
        lpb.TailLogsRequest(execution_id=execution_id, **kwargs), timeout=timeout
    )


def watch(stubs, timeout: float = 60, **kwargs):
    return stubs.executions.WatchExecutions(epb.WatchExecutionsRequest(**kwargs), timeout=timeout)


def lines(messages) -> list[tuple[int, str]]:
    return [(line.sequence, line.text) for message in messages for line in message.lines]


def broker(server):
    return server.running.extra["broker"]


def notifier(server):
    return server.running.extra["notifier"]


def wait_live(server, execution_id: str, count: int = 1) -> None:
    def live():
        subs = server.run_sync(broker(server).log_subscriptions, execution_id)
        return sum(1 for s in subs if s.live) >= count

    wait_for(live, timeout=30, what=f"{count} live tailers")


class Collector:
    """Consumes a stream in a thread of its own."""

    def __init__(self, call):
        self.call = call
        self.messages: list = []
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for message in self.call:
                self.messages.append(message)
        except BaseException as exc:  # noqa: BLE001 - the test looks at it
            self.error = exc

    def join(self, timeout: float = 120) -> list:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the stream did not end"
        if self.error is not None:
            raise self.error
        return self.messages


def expected(count: int, start: int = 0) -> list[tuple[int, str]]:
    return [(i + 1, f"line {i + 1}") for i in range(start, count)]


def test_both_replicas_notify_each_other_on_their_own_connections(replicas, postgres_url):
    import psycopg

    a, b, _, _ = replicas
    assert notifier(a).listening and notifier(b).listening
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        names = {
            row[0]
            for row in conn.execute(
                "SELECT application_name FROM pg_stat_activity WHERE application_name LIKE"
                " 'trainyard-%'"
            )
        }
    assert {"trainyard-a-listen", "trainyard-b-listen"} <= names


def test_tail_on_b_of_lines_written_on_a_gets_every_line_once_in_order(replicas):
    a, b, stubs_a, stubs_b = replicas
    execution_id = make_execution(stubs_a)
    driver = Driver(a, execution_id)
    driver.transition(Status.RUNNING)
    driver.write(500)  # some history before the tailer starts
    collector = Collector(tail(stubs_b, execution_id, follow=True))
    wait_live(b, execution_id)
    for _ in range(100):  # 99,500 more, in batches, while B follows
        driver.write(995)
    driver.finish()
    received = lines(collector.join())
    assert len(received) == 100_000
    assert received == expected(100_000)
    # Most of them reached B live, through the notifications (not by reading the
    # store at the end).
    assert notifier(b).counters["lines_published"] > 50_000


def test_tailer_on_b_resumes_with_after_sequence_on_either_replica(replicas):
    a, b, stubs_a, stubs_b = replicas
    execution_id = make_execution(stubs_a)
    driver = Driver(a, execution_id)
    driver.transition(Status.RUNNING)
    driver.write(200)
    first = tail(stubs_b, execution_id, follow=True)
    received: list[tuple[int, str]] = []
    for message in first:
        received.extend(lines([message]))
        if received[-1][0] >= 100:
            break
    first.cancel()
    cursor = received[-1][0]
    driver.write(300)  # written while no tailer follows
    second = tail(stubs_b, execution_id, follow=True, after_sequence=cursor)
    for message in second:
        received.extend(lines([message]))
        if received[-1][0] >= 400:
            break
    second.cancel()
    driver.write(100)
    # The third leg on A: B's cursor is A's cursor.
    third = Collector(tail(stubs_a, execution_id, follow=True, after_sequence=received[-1][0]))
    wait_live(a, execution_id)
    driver.write(100)
    driver.finish()
    received.extend(lines(third.join()))
    assert received == expected(700)


def test_watch_on_b_of_an_execution_changed_on_a_and_b_gets_every_change(replicas):
    a, b, stubs_a, stubs_b = replicas
    execution_id = make_execution(stubs_a)
    driver = Driver(a, execution_id)
    call = watch(stubs_b, execution_id=execution_id)
    snapshot = next(call)
    assert (snapshot.type, snapshot.execution.status) == (SNAPSHOT, PENDING)
    driver.transition(Status.RUNNING, "step_started")
    events = [next(call)]
    step = StepDetail(name="train", phase=StepPhase.RUNNING)
    a.run_sync(
        a.plane.update_execution, execution_id, changed_step=step, step_details=[step]
    )
    events.append(next(call))
    # Stopped through B (the user's stop), ended on A (the runtime's part).
    stubs_b.executions.StopExecution(epb.StopExecutionRequest(execution_id=execution_id))
    events.append(next(call))
    driver.transition(Status.STOPPED, "processes_exited")
    events.extend(call)  # ends by itself after the final status
    assert [(e.type, e.transition.from_status, e.transition.to_status) for e in events] == [
        (TRANSITION, PENDING, RUNNING),
        (STEP, 0, 0),
        (TRANSITION, RUNNING, STOPPING),
        (TRANSITION, STOPPING, STOPPED),
    ]
    assert events[1].step.name == "train"
    assert events[-1].execution.status == STOPPED
    assert [e.execution.status for e in events] == [RUNNING, RUNNING, STOPPING, STOPPED]
    # The cursors are history positions: valid on A too.
    replay = list(watch(stubs_a, execution_id=execution_id, after_cursor=events[0].cursor))
    assert [e.transition.to_status for e in replay] == [STOPPING, STOPPED]
    # A deletion on A ends a keep_watching watch on B.
    keep = watch(stubs_b, execution_id=execution_id, keep_watching=True)
    assert next(keep).type == SNAPSHOT
    stubs_a.executions.DeleteExecution(epb.DeleteExecutionRequest(execution_id=execution_id))
    rest = list(keep)
    assert [e.type for e in rest] == [DELETED]
    assert rest[0].execution.id == execution_id


def test_filtered_watch_on_b_sees_creations_and_changes_on_a(replicas):
    a, b, stubs_a, stubs_b = replicas
    configuration_id = make_configuration(stubs_a)
    other = make_configuration(stubs_a)
    call = watch(stubs_b, configuration_id=configuration_id)
    wait_for(lambda: broker(b).stats().event_subscriptions == 1, what="subscribed on B")
    make_execution(stubs_a, other)
    created = make_execution(stubs_a, configuration_id)
    event = next(call)
    # B's snapshot is read off the event loop, so it may already hold the new execution
    # (then its CREATED event is not repeated); the other configuration's never shows.
    assert event.execution.id == created and event.type in (SNAPSHOT, CREATED)
    assert event.execution.status == PENDING
    Driver(a, created).transition(Status.RUNNING)
    event = next(call)
    assert (event.type, event.execution.id, event.transition.to_status) == (
        TRANSITION,
        created,
        RUNNING,
    )
    Driver(a, created).transition(Status.COMPLETED)
    stubs_a.executions.DeleteExecution(epb.DeleteExecutionRequest(execution_id=created))
    events = [next(call)]
    while events[-1].type != DELETED:
        events.append(next(call))
    # B rebuilds each change from the store: when the delete commits before B has read
    # the execution for its last transition, B's watchers get the deletion alone.
    assert [(e.type, e.execution.id) for e in events] in (
        [(TRANSITION, created), (DELETED, created)],
        [(DELETED, created)],
    )
    assert events[-1].execution.configuration_id == configuration_id
    call.cancel()


def changes(events) -> list[tuple[int, str, int]]:
    return [(e.type, e.execution.id, e.execution.status) for e in events]


def test_set_watch_cursor_of_a_resumes_on_b_with_every_change_once(replicas):
    """A set watch's cursor is the database's: taken on A, it resumes on B with the
    changes made since on either replica, each once and in order, no snapshot; B's
    cursors resume on A the same way."""
    a, b, stubs_a, stubs_b = replicas
    configuration_id = make_configuration(stubs_a)
    first = make_execution(stubs_a, configuration_id)
    call = watch(stubs_a, configuration_id=configuration_id)
    assert changes([next(call)]) == [(SNAPSHOT, first, PENDING)]
    Driver(a, first).transition(Status.RUNNING)
    moved = next(call)
    assert changes([moved]) == [(TRANSITION, first, RUNNING)]
    call.cancel()
    # While nobody watches: changes on both replicas.
    second = make_execution(stubs_b, configuration_id)
    Driver(b, first).transition(Status.COMPLETED)
    Driver(a, second).transition(Status.RUNNING)
    again = watch(stubs_b, configuration_id=configuration_id, after_cursor=moved.cursor)
    events = [next(again) for _ in range(3)]
    assert changes(events) == [
        (CREATED, second, PENDING),
        (TRANSITION, first, COMPLETED),
        (TRANSITION, second, RUNNING),
    ]
    # Then live on B, of changes made on A.
    stubs_a.executions.DeleteExecution(epb.DeleteExecutionRequest(execution_id=first))
    Driver(a, second).transition(Status.COMPLETED)
    events += [next(again), next(again)]
    assert changes(events[3:]) == [(DELETED, first, COMPLETED), (TRANSITION, second, COMPLETED)]
    assert events[3].execution.configuration_id == configuration_id
    again.cancel()
    # B's cursors resume on A: after the third event, the last two again, once each.
    replay = watch(stubs_a, configuration_id=configuration_id, after_cursor=events[2].cursor)
    assert changes([next(replay), next(replay)]) == changes(events[3:])
    replay.cancel()
    assert len({e.cursor for e in events}) == len(events)


def test_get_execution_on_b_shows_changes_made_on_a(replicas):
    a, b, stubs_a, stubs_b = replicas
    execution_id = make_execution(stubs_a)
    request = epb.GetExecutionRequest(execution_id=execution_id)
    assert stubs_b.executions.GetExecution(request).execution.status == PENDING
    assert stubs_b.executions.GetExecution(request).execution.status == PENDING  # cached
    Driver(a, execution_id).transition(Status.RUNNING)
    wait_for(
        lambda: stubs_b.executions.GetExecution(request).execution.status == RUNNING,
        what="B's GetExecution to show RUNNING",
    )
    # A write with no event (the status message) drops B's cached response too.
    assert stubs_b.executions.GetExecution(request).execution.status_message != "half way"
    a.run_sync(a.plane.update_execution, execution_id, status_message="half way")
    wait_for(
        lambda: stubs_b.executions.GetExecution(request).execution.status_message == "half way",
        what="B's GetExecution to show the status message",
    )


def _terminate(postgres_url: str, application_name: str) -> int:
    import psycopg

    with psycopg.connect(postgres_url, autocommit=True) as conn:
        return len(
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = %s",
                (application_name,),
            ).fetchall()
        )


def test_notifier_recovers_after_its_connections_are_killed_and_loses_nothing(
    replicas, postgres_url
):
    a, b, stubs_a, stubs_b = replicas
    nb = notifier(b)
    nb.max_backoff = 0.1
    execution_id = make_execution(stubs_a)
    driver = Driver(a, execution_id)
    driver.transition(Status.RUNNING)
    driver.write(1000)
    collector = Collector(tail(stubs_b, execution_id, follow=True))
    wait_live(b, execution_id)
    one = watch(stubs_b, execution_id=execution_id)
    assert next(one).type == SNAPSHOT
    group_watch = watch(stubs_b)
    assert next(group_watch).type == SNAPSHOT
    wait_for(lambda: broker(b).stats().event_subscriptions >= 3, what="watchers on B")
    request = epb.GetExecutionRequest(execution_id=execution_id)
    assert stubs_b.executions.GetExecution(request).execution.status == RUNNING  # cached

    # Kill B's LISTEN connection, and keep B from connecting again for a while.
    url = nb.url
    nb.url = url.rsplit("/", 1)[0] + "/no_such_database"
    assert _terminate(postgres_url, "trainyard-b-listen") == 1
    wait_for(lambda: not nb.listening, what="B to notice its lost connection")
    driver.write(1000)  # while B hears nothing
    driver.transition(Status.STOPPING, "test")
    assert not nb.listening
    assert broker(b).head_seq(execution_id) <= 1000
    # Nothing is cached while B may miss writes: A's change shows at once.
    assert stubs_b.executions.GetExecution(request).execution.status == STOPPING
    nb.url = url
    wait_for(lambda: nb.listening, timeout=30, what="B to listen again")
    assert nb.connects == 2
    driver.write(1000)
    # A's sending connection too: what A sends meanwhile is sent again.
    assert _terminate(postgres_url, "trainyard-a-notify") == 1
    driver.write(1000)
    driver.finish(Status.STOPPED)

    assert lines(collector.join()) == expected(4000)
    events = list(one)
    assert [(e.type, e.transition.to_status) for e in events] == [
        (TRANSITION, STOPPING),
        (TRANSITION, STOPPED),
    ]
    # The set watcher reads what it missed from the store once B hears again: the
    # change made while B was deaf, then the last one, each once.
    assert changes([next(group_watch), next(group_watch)]) == [
        (TRANSITION, execution_id, STOPPING),
        (TRANSITION, execution_id, STOPPED),
    ]
    group_watch.cancel()
    assert notifier(a).counters["send_failures"] >= 1


def test_set_watch_cursors_issued_before_a_lost_connection_still_resume(replicas, postgres_url):
    a, b, stubs_a, stubs_b = replicas
    execution_id = make_execution(stubs_a)
    call = watch(stubs_b)
    first = next(call)
    call.cancel()
    _terminate(postgres_url, "trainyard-b-listen")
    wait_for(lambda: notifier(b).connects >= 2 and notifier(b).listening, what="reconnected")
    Driver(a, execution_id).transition(Status.RUNNING)
    again = watch(stubs_b, after_cursor=first.cursor)
    assert changes([next(again)]) == [(TRANSITION, execution_id, RUNNING)]
    again.cancel()
