"""WatchExecutions: snapshot then every change in order, resume by cursor, end at the
final status, filtered watches, tenant isolation, release of subscriptions."""

from __future__ import annotations

import grpc
import pytest
from conftest import make_stubs
from streamkit import Driver, group_md, make_configuration, make_execution, wait_for

from client.client import TrainyardError
from server.domain.models import Status, StepDetail, StepPhase
from trainyard.v1 import execution_pb2 as xpb
from trainyard.v1 import execution_service_pb2 as epb

pytestmark = [pytest.mark.driven, pytest.mark.backends("sqlite", "postgresql")]

SNAPSHOT = epb.WATCH_EVENT_TYPE_SNAPSHOT
TRANSITION = epb.WATCH_EVENT_TYPE_TRANSITION
STEP = epb.WATCH_EVENT_TYPE_STEP_CHANGED
CREATED = epb.WATCH_EVENT_TYPE_CREATED
DELETED = epb.WATCH_EVENT_TYPE_DELETED
PENDING = xpb.EXECUTION_STATUS_PENDING
RUNNING = xpb.EXECUTION_STATUS_RUNNING
STOPPING = xpb.EXECUTION_STATUS_STOPPING
STOPPED = xpb.EXECUTION_STATUS_STOPPED
COMPLETED = xpb.EXECUTION_STATUS_COMPLETED


def watch(stubs, timeout: float = 30, metadata=None, **kwargs):
    return stubs.executions.WatchExecutions(
        epb.WatchExecutionsRequest(**kwargs), timeout=timeout, metadata=metadata
    )


def moves(events) -> list[tuple[int, int, int]]:
    return [(e.type, e.transition.from_status, e.transition.to_status) for e in events]


def broker(server):
    return server.running.extra["broker"]


def test_watch_delivers_every_transition_in_order_including_stopping_to_stopped(server, stubs):
    execution_id = make_execution(stubs)
    driver = Driver(server, execution_id)
    call = watch(stubs, execution_id=execution_id)
    snapshot = next(call)
    assert snapshot.type == SNAPSHOT
    assert snapshot.execution.id == execution_id
    assert snapshot.execution.status == PENDING
    assert not snapshot.execution.history
    driver.transition(Status.RUNNING, "step_started")
    stubs.executions.StopExecution(epb.StopExecutionRequest(execution_id=execution_id))
    driver.transition(Status.STOPPED, "processes_exited")
    events = list(call)  # ends by itself after the final status
    assert moves(events) == [
        (TRANSITION, PENDING, RUNNING),
        (TRANSITION, RUNNING, STOPPING),
        (TRANSITION, STOPPING, STOPPED),
    ]
    assert [e.transition.sequence for e in events] == [2, 3, 4]
    assert [e.transition.cause for e in events] == [
        "step_started",
        "stop_requested",
        "processes_exited",
    ]
    assert [e.execution.status for e in events] == [RUNNING, STOPPING, STOPPED]
    assert all(e.transition.time.seconds for e in events)
    # The unary history read agrees with the stream.
    history = stubs.executions.ListExecutionHistory(
        epb.ListExecutionHistoryRequest(execution_id=execution_id)
    ).transitions
    assert [(t.from_status, t.to_status) for t in history] == [
        (0, PENDING),
        (PENDING, RUNNING),
        (RUNNING, STOPPING),
        (STOPPING, STOPPED),
    ]
    wait_for(lambda: broker(server).stats().event_subscriptions == 0, what="release")


def test_watch_sends_step_changes(server, stubs):
    execution_id = make_execution(stubs)
    driver = Driver(server, execution_id)
    call = watch(stubs, execution_id=execution_id)
    next(call)
    driver.transition(Status.RUNNING)
    step = StepDetail(name="train", phase=StepPhase.RUNNING)
    server.run_sync(
        server.plane.update_execution, execution_id, step_details=[step], changed_step=step
    )
    driver.transition(Status.COMPLETED)
    events = list(call)
    assert [e.type for e in events] == [TRANSITION, STEP, TRANSITION]
    assert events[1].step.name == "train"
    assert events[1].step.phase == xpb.STEP_PHASE_RUNNING
    assert events[1].execution.step_details[0].phase == xpb.STEP_PHASE_RUNNING


def test_watch_resumes_after_a_cursor_with_the_transitions_missed(server, stubs):
    execution_id = make_execution(stubs)
    driver = Driver(server, execution_id)
    call = watch(stubs, execution_id=execution_id)
    cursor = next(call).cursor
    call.cancel()
    driver.transition(Status.RUNNING)  # missed while disconnected
    resumed = watch(stubs, execution_id=execution_id, after_cursor=cursor)
    first = next(resumed)
    assert (first.type, first.transition.to_status) == (TRANSITION, RUNNING)
    cursor = first.cursor
    resumed.cancel()
    driver.transition(Status.COMPLETED)
    again = list(watch(stubs, execution_id=execution_id, after_cursor=cursor))
    assert moves(again) == [(TRANSITION, RUNNING, COMPLETED)]
    # Resuming from the last cursor of a final execution: nothing more, the stream ends.
    assert list(watch(stubs, execution_id=execution_id, after_cursor=again[-1].cursor)) == []


def test_watch_of_a_final_execution_sends_its_snapshot_and_ends(server, stubs):
    execution_id = make_execution(stubs)
    driver = Driver(server, execution_id)
    driver.transition(Status.RUNNING)
    driver.transition(Status.COMPLETED)
    events = list(watch(stubs, execution_id=execution_id))
    assert [(e.type, e.execution.status) for e in events] == [(SNAPSHOT, COMPLETED)]


def test_keep_watching_stays_open_after_the_final_status_until_deleted(server, stubs):
    execution_id = make_execution(stubs)
    driver = Driver(server, execution_id)
    call = watch(stubs, execution_id=execution_id, keep_watching=True)
    next(call)
    driver.transition(Status.RUNNING)
    driver.transition(Status.COMPLETED)
    assert moves([next(call), next(call)]) == [
        (TRANSITION, PENDING, RUNNING),
        (TRANSITION, RUNNING, COMPLETED),
    ]
    stubs.executions.DeleteExecution(epb.DeleteExecutionRequest(execution_id=execution_id))
    rest = list(call)
    assert [e.type for e in rest] == [DELETED]


def test_filtered_watch_snapshots_matching_executions_then_follows_changes(server, stubs):
    configuration_id = make_configuration(stubs)
    running = make_execution(stubs, configuration_id)
    pending = make_execution(stubs, configuration_id)
    Driver(server, running).transition(Status.RUNNING)
    call = watch(stubs, statuses=[RUNNING])
    snapshot = next(call)
    assert (snapshot.type, snapshot.execution.id) == (SNAPSHOT, running)
    Driver(server, pending).transition(Status.RUNNING)
    Driver(server, running).transition(Status.COMPLETED)
    Driver(server, pending).transition(Status.DEAD)
    events = [next(call) for _ in range(3)]
    assert [(e.execution.id, e.transition.to_status) for e in events] == [
        (pending, RUNNING),
        (running, COMPLETED),
        (pending, xpb.EXECUTION_STATUS_DEAD),
    ]
    # Each event's cursor resumes after it: replay the last two.
    call.cancel()
    replay = watch(stubs, statuses=[RUNNING], after_cursor=events[0].cursor)
    assert [(e.execution.id, e.transition.to_status) for e in [next(replay), next(replay)]] == [
        (running, COMPLETED),
        (pending, xpb.EXECUTION_STATUS_DEAD),
    ]
    replay.cancel()


def test_filtered_watch_by_configuration_sees_new_executions(server, stubs):
    configuration_id = make_configuration(stubs)
    other_configuration = make_configuration(stubs)
    call = watch(stubs, configuration_id=configuration_id)
    wait_for(lambda: broker(server).stats().event_subscriptions == 1, what="subscribed")
    make_execution(stubs, other_configuration)
    created = make_execution(stubs, configuration_id)
    event = next(call)
    assert (event.type, event.execution.id, event.transition.to_status) == (
        CREATED,
        created,
        PENDING,
    )
    call.cancel()


def test_filtered_watch_resumes_after_a_restart_from_its_cursor(server_factory, tmp_path):
    """A set-watch cursor is a number of the store's, not of the server process: a
    server started again on the same database resumes it, with the changes made
    meanwhile (while no server ran) and no snapshot."""
    data_dir = tmp_path / "restarted"
    first_server = server_factory(data_dir=data_dir)
    stubs = make_stubs(first_server.address)
    configuration_id = make_configuration(stubs)
    execution_id = make_execution(stubs, configuration_id)
    call = watch(stubs, configuration_id=configuration_id)
    first = next(call)
    assert (first.type, first.execution.id) == (SNAPSHOT, execution_id)
    call.cancel()
    Driver(first_server, execution_id).transition(Status.RUNNING)
    stubs.channel.close()
    first_server.stop()
    second_server = server_factory(data_dir=data_dir)
    stubs = make_stubs(second_server.address)
    try:
        Driver(second_server, execution_id).transition(Status.COMPLETED)
        again = watch(stubs, configuration_id=configuration_id, after_cursor=first.cursor)
        events = [next(again), next(again)]
        assert [(e.type, e.execution.id, e.transition.to_status) for e in events] == [
            (TRANSITION, execution_id, RUNNING),
            (TRANSITION, execution_id, COMPLETED),
        ]
        again.cancel()
        # The last event's cursor resumes after it: nothing more until a change.
        created = make_execution(stubs, configuration_id)
        tail = watch(stubs, configuration_id=configuration_id, after_cursor=events[-1].cursor)
        event = next(tail)
        assert (event.type, event.execution.id) == (CREATED, created)
        tail.cancel()
    finally:
        stubs.channel.close()


def test_filtered_watch_with_a_cursor_past_the_kept_changes_starts_over_with_snapshots(
    server, stubs
):
    execution_id = make_execution(stubs)
    call = watch(stubs)
    first = next(call)
    call.cancel()
    Driver(server, execution_id).transition(Status.RUNNING)
    # The changes after the cursor are past their retention (the purge's cut-off is
    # later than every change recorded): the watch cannot resume, it starts over.
    store = server.plane.store
    assert server.run_sync(store.purge_events, 2**62) >= 2
    again = watch(stubs, after_cursor=first.cursor)
    event = next(again)
    assert (event.type, event.execution.id, event.execution.status) == (
        SNAPSHOT,
        execution_id,
        RUNNING,
    )
    again.cancel()
    # A cursor of the numbering servers used before (their own, per process): the same.
    import base64
    import json

    data = json.loads(base64.urlsafe_b64decode(first.cursor + "=" * (-len(first.cursor) % 4)))
    old = {"p": "00000000", "n": data["g"], "f": data["f"]}
    stale = base64.urlsafe_b64encode(json.dumps(old).encode()).decode().rstrip("=")
    again = watch(stubs, after_cursor=stale)
    assert next(again).type == SNAPSHOT
    again.cancel()


def test_watch_of_another_groups_execution_is_not_found(server, stubs):
    execution_id = make_execution(stubs)
    with pytest.raises(grpc.RpcError) as caught:
        list(watch(stubs, execution_id=execution_id, metadata=group_md("team-b")))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    # A filtered watch of team B never sees team A's executions.
    call = watch(stubs, metadata=group_md("team-b"))
    wait_for(lambda: broker(server).stats().event_subscriptions == 1, what="subscribed")
    Driver(server, execution_id).transition(Status.RUNNING)
    other = make_execution(stubs, group="team-b")
    event = next(call)
    # The watch's snapshot is read off the event loop, so it may already hold the new
    # execution (then the CREATED event is not repeated): either way, team B's only.
    assert event.execution.id == other and event.type in (SNAPSHOT, CREATED)
    call.cancel()
    wait_for(lambda: broker(server).stats().event_subscriptions == 0, what="release")


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"execution_id": "abc", "scenario_id": "iris"}, "execution_id"),
        ({"keep_watching": True}, "keep_watching"),
        ({"after_cursor": "not a cursor!"}, "after_cursor"),
        ({"statuses": [42]}, "statuses[0]"),
    ],
)
def test_bad_watch_requests_are_invalid_argument(stubs, request_fields, field):
    with pytest.raises(grpc.RpcError) as caught:
        list(watch(stubs, **request_fields))
    error = TrainyardError.from_rpc_error(caught.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in error.violations] == [field]


def test_cursor_of_another_execution_is_invalid(server, stubs):
    first = make_execution(stubs)
    second = make_execution(stubs)
    call = watch(stubs, execution_id=first)
    cursor = next(call).cursor
    call.cancel()
    with pytest.raises(grpc.RpcError) as caught:
        list(watch(stubs, execution_id=second, after_cursor=cursor))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_cancelled_watch_releases_its_subscription(server, stubs):
    execution_id = make_execution(stubs)
    call = watch(stubs, execution_id=execution_id)
    next(call)
    assert broker(server).stats().event_subscriptions == 1
    assert server.running.extra["watches"].active == 1
    call.cancel()
    wait_for(lambda: broker(server).stats().event_subscriptions == 0, what="release")
    wait_for(lambda: server.running.extra["watches"].active == 0, what="watch ended")


def test_watcher_that_falls_behind_is_cut_off_with_a_cursor(server, stubs):
    from server.domain.errors import ResourceExhausted
    from server.streams.watch import WatchOptions

    execution_id = make_execution(stubs)
    watches = server.running.extra["watches"]
    watches.max_pending_events = 3
    plane = server.plane

    async def scenario():
        stream = watches.watch("default", WatchOptions(execution_id=execution_id))
        snapshot = await anext(stream)
        # Five changes before the watcher reads again: more than it may queue.
        for i in range(5):
            step = StepDetail(name=f"s{i}", phase=StepPhase.RUNNING)
            await plane.update_execution(execution_id, step_details=[step], changed_step=step)
        try:
            await anext(stream)
        except ResourceExhausted as error:
            return snapshot, error
        finally:
            await stream.aclose()
        raise AssertionError("not cut off")

    snapshot, error = server.call(scenario())
    assert error.reason == "LIMIT_EXCEEDED"
    assert error.metadata["cursor"] == snapshot.cursor
    assert broker(server).stats().event_subscriptions == 0
    # The cursor resumes: nothing was lost from the history.
    resumed = watch(stubs, execution_id=execution_id, after_cursor=error.metadata["cursor"])
    Driver(server, execution_id).transition(Status.RUNNING)
    Driver(server, execution_id).transition(Status.COMPLETED)
    assert moves(list(resumed)) == [
        (TRANSITION, PENDING, RUNNING),
        (TRANSITION, RUNNING, COMPLETED),
    ]


def test_set_watchers_at_the_same_position_share_their_read_of_the_store(server, stubs):
    configuration_id = make_configuration(stubs)
    execution_id = make_execution(stubs, configuration_id)
    calls = [watch(stubs, configuration_id=configuration_id) for _ in range(4)]
    for call in calls:
        assert next(call).type == SNAPSHOT

    def waiting() -> bool:  # each watcher read what there was and waits on the broker
        subscriptions = broker(server)._by_group.get("default", [])
        return len(subscriptions) == 4 and all(s._waiter is not None for s in subscriptions)

    wait_for(lambda: server.run_sync(waiting), what="4 watchers waiting")
    store = server.plane.store
    reads: list[int] = []
    read_events = store.read_events

    async def counted(group, after, limit):
        reads.append(after)
        return await read_events(group, after, limit)

    # The watchers that are caught up are waiting on the broker: one change wakes all
    # four at once, and they read what came after the same number together.
    server.run_sync(lambda: setattr(store, "read_events", counted))
    try:
        Driver(server, execution_id).transition(Status.RUNNING)
        events = [next(call) for call in calls]
    finally:
        server.run_sync(lambda: delattr(store, "read_events"))
    assert {(e.type, e.execution.id, e.transition.to_status) for e in events} == {
        (TRANSITION, execution_id, RUNNING)
    }
    assert len(reads) == 1, reads
    for call in calls:
        call.cancel()
