"""The lifecycle table: every (from, to) pair and every (status, operation) pair, in the
domain and through the API with the store driven into each status."""

from __future__ import annotations

import asyncio
import itertools

import grpc
import pytest

from server.domain import lifecycle
from server.domain.errors import FailedPrecondition
from server.domain.models import Status
from tests.helpers import details, iris_configuration, register_iris, rpc_error
from trainyard.v1 import execution_pb2
from trainyard.v1 import execution_service_pb2 as pb

pytestmark = pytest.mark.backends("sqlite", "postgresql")

# DESIGN.md, "Lifecycle": status -> (stop allowed, delete allowed)
# status -> (stop, delete, rerun) allowed
TABLE = {
    Status.UNKNOWN: (False, True, True),
    Status.PENDING: (True, False, False),
    Status.RUNNING: (True, False, False),
    Status.COMPLETED: (False, True, True),
    Status.STOPPING: (False, False, False),
    Status.STOPPED: (False, True, True),
    Status.DEAD: (False, True, True),
}

# DESIGN.md, "Flow"
FLOW = {
    (Status.PENDING, Status.RUNNING),
    (Status.RUNNING, Status.COMPLETED),
    (Status.RUNNING, Status.DEAD),
    (Status.PENDING, Status.STOPPING),
    (Status.RUNNING, Status.STOPPING),
    (Status.STOPPING, Status.STOPPED),
    (Status.PENDING, Status.DEAD),
    (Status.PENDING, Status.UNKNOWN),
    (Status.RUNNING, Status.UNKNOWN),
    (Status.STOPPING, Status.UNKNOWN),
}


@pytest.mark.parametrize("current,new", list(itertools.product(Status, Status)))
def test_every_transition_pair(current, new):
    assert lifecycle.can_transition(current, new) == ((current, new) in FLOW)
    if (current, new) in FLOW:
        lifecycle.check_transition("e", current, new)
    else:
        with pytest.raises(FailedPrecondition):
            lifecycle.check_transition("e", current, new)


@pytest.mark.parametrize("status", list(Status))
def test_every_operation_pair(status):
    stop, delete, rerun = TABLE[status]
    assert lifecycle.allows(status, lifecycle.Operation.STOP) == stop
    assert lifecycle.allows(status, lifecycle.Operation.DELETE) == delete
    assert lifecycle.allows(status, lifecycle.Operation.RERUN) == rerun


def test_final_statuses_allow_no_transition():
    for status in lifecycle.FINAL_STATUSES:
        assert not lifecycle.TRANSITIONS[status]


@pytest.fixture
def idle(server, stubs):
    """A server whose executions are never picked up by a runtime, so the test can
    drive each one into any status through the store."""
    assert server.plane.runtime is None  # none from the start (marker driven)
    dataset = register_iris(stubs)
    configuration = iris_configuration(stubs, dataset)

    def make(status: Status) -> str:
        execution = stubs.executions.CreateExecution(
            pb.CreateExecutionRequest(configuration_id=configuration)
        ).execution
        if status != Status.PENDING:
            server.run_sync(server.plane.store.force_status, execution.id, status)
        return execution.id

    return make


STATUS_PB = {s: getattr(execution_pb2, f"EXECUTION_STATUS_{s.value}") for s in Status}


@pytest.mark.driven
@pytest.mark.parametrize("status", list(Status))
def test_stop_follows_the_table(idle, stubs, status):
    execution_id = idle(status)
    request = pb.StopExecutionRequest(execution_id=execution_id)
    if TABLE[status][0]:
        execution = stubs.executions.StopExecution(request).execution
        assert execution.status == execution_pb2.EXECUTION_STATUS_STOPPING
        assert execution.target_status == execution_pb2.TARGET_STATUS_STOPPED
        assert execution.history[-1].cause == "stop_requested"
    else:
        error = rpc_error(stubs.executions.StopExecution, request)
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        info = details(error)
        assert info["reason"] == "EXECUTION_NOT_STOPPABLE"
        assert info["metadata"]["status"] == status.value
        after = stubs.executions.GetExecution(pb.GetExecutionRequest(execution_id=execution_id))
        assert after.execution.status == STATUS_PB[status]


@pytest.mark.driven
@pytest.mark.parametrize("status", list(Status))
def test_delete_follows_the_table(idle, stubs, status):
    execution_id = idle(status)
    request = pb.DeleteExecutionRequest(execution_id=execution_id)
    if TABLE[status][1]:
        stubs.executions.DeleteExecution(request)
        error = rpc_error(
            stubs.executions.GetExecution, pb.GetExecutionRequest(execution_id=execution_id)
        )
        assert error.code() == grpc.StatusCode.NOT_FOUND
    else:
        error = rpc_error(stubs.executions.DeleteExecution, request)
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        info = details(error)
        assert info["reason"] == "EXECUTION_NOT_DELETABLE"
        assert info["metadata"]["status"] == status.value
        stubs.executions.GetExecution(pb.GetExecutionRequest(execution_id=execution_id))


@pytest.mark.driven
@pytest.mark.parametrize("status", list(Status))
def test_allowed_operations_follow_the_table(idle, stubs, status):
    """Execution.allowed_operations, in a read, a list and a watch snapshot, is the
    table's row of the execution's status: what the console enables its buttons by."""
    execution_id = idle(status)
    stop, delete, rerun = TABLE[status]
    expected = [
        op
        for op, allowed in (
            (execution_pb2.EXECUTION_OPERATION_STOP, stop),
            (execution_pb2.EXECUTION_OPERATION_DELETE, delete),
            (execution_pb2.EXECUTION_OPERATION_RERUN, rerun),
        )
        if allowed
    ]
    read = stubs.executions.GetExecution(pb.GetExecutionRequest(execution_id=execution_id))
    assert list(read.execution.allowed_operations) == expected
    listed = stubs.executions.ListExecutions(pb.ListExecutionsRequest()).executions
    assert [list(e.allowed_operations) for e in listed if e.id == execution_id] == [expected]
    snapshot = next(
        iter(stubs.executions.WatchExecutions(pb.WatchExecutionsRequest(execution_id=execution_id)))
    )
    assert list(snapshot.execution.allowed_operations) == expected


@pytest.mark.driven
def test_history_records_every_transition(idle, stubs, server):
    execution_id = idle(Status.PENDING)
    server.run_sync(server.plane.transition, execution_id, Status.RUNNING, "step_started")
    stubs.executions.StopExecution(pb.StopExecutionRequest(execution_id=execution_id))
    server.run_sync(server.plane.transition, execution_id, Status.STOPPED, "processes_exited")
    history = stubs.executions.ListExecutionHistory(
        pb.ListExecutionHistoryRequest(execution_id=execution_id)
    ).transitions
    assert [(t.from_status, t.to_status, t.cause) for t in history] == [
        (0, execution_pb2.EXECUTION_STATUS_PENDING, "created"),
        (
            execution_pb2.EXECUTION_STATUS_PENDING,
            execution_pb2.EXECUTION_STATUS_RUNNING,
            "step_started",
        ),
        (
            execution_pb2.EXECUTION_STATUS_RUNNING,
            execution_pb2.EXECUTION_STATUS_STOPPING,
            "stop_requested",
        ),
        (
            execution_pb2.EXECUTION_STATUS_STOPPING,
            execution_pb2.EXECUTION_STATUS_STOPPED,
            "processes_exited",
        ),
    ]
    assert [t.sequence for t in history] == [1, 2, 3, 4]
    execution = stubs.executions.GetExecution(
        pb.GetExecutionRequest(execution_id=execution_id)
    ).execution
    assert execution.HasField("start_time") and execution.HasField("complete_time")


@pytest.mark.driven
def test_an_ungrouped_create_is_stored_like_a_grouped_one(idle, stubs, server):
    """ControlPlane.create_execution (the one-at-a-time path that tools and a failed
    group fall back to) stores a PENDING execution with its "created" transition, and
    a repeated request id returns the same execution."""
    grouped = stubs.executions.GetExecution(
        pb.GetExecutionRequest(execution_id=idle(Status.PENDING))
    ).execution
    created = server.run_sync(
        server.plane.create_execution, "default", grouped.configuration_id, "one-at-a-time"
    )
    again = server.run_sync(
        server.plane.create_execution, "default", grouped.configuration_id, "one-at-a-time"
    )
    assert again.id == created.id != grouped.id
    stored = stubs.executions.GetExecution(
        pb.GetExecutionRequest(execution_id=created.id)
    ).execution
    assert stored.status == execution_pb2.EXECUTION_STATUS_PENDING
    assert stored.configuration_id == grouped.configuration_id
    assert [s.name for s in stored.step_details] == [s.name for s in grouped.step_details]
    history = stubs.executions.ListExecutionHistory(
        pb.ListExecutionHistoryRequest(execution_id=created.id)
    ).transitions
    assert [(t.to_status, t.cause) for t in history] == [
        (execution_pb2.EXECUTION_STATUS_PENDING, "created")
    ]


@pytest.mark.driven
def test_creates_a_few_loop_turns_apart_share_one_commit(server, stubs, monkeypatch):
    """Creates that arrive within a few turns of the event loop of each other (as a
    burst of calls does, gRPC taking several turns per call) are written in one
    transaction; each gets its own execution."""
    assert server.plane.runtime is None  # none from the start (marker driven)
    configuration = iris_configuration(stubs, register_iris(stubs))
    store = server.plane.store
    groups = []
    create_executions = store.create_executions

    async def counting(items, *rest, **kwargs):
        groups.append(len(items))
        return await create_executions(items, *rest, **kwargs)

    monkeypatch.setattr(store, "create_executions", counting)

    async def burst():
        async def one(turns: int):
            for _ in range(turns):
                await asyncio.sleep(0)
            return await server.plane.create_execution_grouped("default", configuration)

        return await asyncio.gather(*(one(turns) for turns in range(0, 20, 2)))

    created = server.run_sync(burst)
    assert groups == [10]
    assert len({e.id for e in created}) == 10
    for execution in created:
        stored = stubs.executions.GetExecution(pb.GetExecutionRequest(execution_id=execution.id))
        assert stored.execution.status == execution_pb2.EXECUTION_STATUS_PENDING


@pytest.mark.driven
def test_runtime_cannot_break_the_table(idle, server):
    execution_id = idle(Status.COMPLETED)
    with pytest.raises(FailedPrecondition):
        server.run_sync(server.plane.transition, execution_id, Status.RUNNING, "bogus")


@pytest.mark.driven
def test_bulk_operations_report_per_item(idle, stubs):
    pending = idle(Status.PENDING)
    running = idle(Status.RUNNING)
    dead = idle(Status.DEAD)
    completed = idle(Status.COMPLETED)
    stopping = idle(Status.STOPPING)
    outcomes = stubs.executions.BatchStopExecutions(
        pb.BatchStopExecutionsRequest(execution_ids=[pending, running, dead, "0000000000000000"])
    ).outcomes
    assert [o.execution_id for o in outcomes] == [pending, running, dead, "0000000000000000"]
    assert [o.ok for o in outcomes] == [True, True, False, False]
    assert outcomes[0].status == execution_pb2.EXECUTION_STATUS_STOPPING
    assert outcomes[2].reason == "EXECUTION_NOT_STOPPABLE"
    assert outcomes[2].code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert outcomes[2].status == execution_pb2.EXECUTION_STATUS_DEAD
    assert outcomes[3].code == grpc.StatusCode.NOT_FOUND.value[0]
    assert outcomes[3].reason == "EXECUTION_NOT_FOUND"

    outcomes = stubs.executions.BatchDeleteExecutions(
        pb.BatchDeleteExecutionsRequest(execution_ids=[dead, completed, stopping, running])
    ).outcomes
    assert [o.ok for o in outcomes] == [True, True, False, False]
    assert outcomes[2].reason == "EXECUTION_NOT_DELETABLE"
    assert outcomes[2].status == execution_pb2.EXECUTION_STATUS_STOPPING
    for gone in (dead, completed):
        error = rpc_error(stubs.executions.GetExecution, pb.GetExecutionRequest(execution_id=gone))
        assert error.code() == grpc.StatusCode.NOT_FOUND


def test_bulk_refuses_malformed_requests(stubs):
    for ids, field in (
        ([], "execution_ids"),
        (["a", "a"], "execution_ids[1]"),
        (["x"] * 101, "execution_ids"),
    ):
        error = rpc_error(
            stubs.executions.BatchStopExecutions, pb.BatchStopExecutionsRequest(execution_ids=ids)
        )
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field in details(error)["fields"]
