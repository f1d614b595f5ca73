"""GetExecution answers from its cache of responses only what reading the execution
again would give: every write of the execution drops its response at once, announced
or not, and a response is never served to another resource group."""

from __future__ import annotations

import grpc
import pytest
from streamkit import Driver, group_md, make_execution

from server.api.executions import _Responses
from server.domain.models import Status as DomainStatus
from server.domain.models import StepDetail, StepPhase
from trainyard.v1 import execution_pb2
from trainyard.v1 import execution_service_pb2 as pb

pytestmark = pytest.mark.driven

S = execution_pb2


def get(stubs, execution_id: str, group: str = "default") -> execution_pb2.Execution:
    return stubs.executions.GetExecution(
        pb.GetExecutionRequest(execution_id=execution_id), metadata=group_md(group)
    ).execution


def cached(server, execution_id: str) -> bool:
    service_responses = server.running.extra.get("execution_responses")
    return server.run_sync(lambda: execution_id in service_responses.items)


def test_every_write_of_the_execution_shows_in_the_next_get(server, stubs):
    execution_id = make_execution(stubs)
    plane = server.plane
    assert get(stubs, execution_id).status == S.EXECUTION_STATUS_PENDING
    assert cached(server, execution_id)

    # Writes the control plane does not announce to listeners.
    server.run_sync(plane.update_execution, execution_id, submitted=True)
    assert not cached(server, execution_id)
    assert get(stubs, execution_id).HasField("submit_time")

    Driver(server, execution_id).transition(DomainStatus.RUNNING)
    assert get(stubs, execution_id).status == S.EXECUTION_STATUS_RUNNING

    step = StepDetail("train", StepPhase.RUNNING, message="epoch 3 of 20")
    server.run_sync(plane.update_execution, execution_id, step_details=[step])
    assert get(stubs, execution_id).step_details[0].message == "epoch 3 of 20"

    server.run_sync(plane.update_execution, execution_id, status_message="almost there")
    assert get(stubs, execution_id).status_message == "almost there"

    stubs.executions.StopExecution(pb.StopExecutionRequest(execution_id=execution_id))
    after_stop = get(stubs, execution_id)
    assert after_stop.status == S.EXECUTION_STATUS_STOPPING
    assert [t.to_status for t in after_stop.history][-1] == S.EXECUTION_STATUS_STOPPING

    Driver(server, execution_id).transition(DomainStatus.STOPPED)
    assert get(stubs, execution_id).status == S.EXECUTION_STATUS_STOPPED
    assert get(stubs, execution_id) == get(stubs, execution_id)

    stubs.executions.DeleteExecution(pb.DeleteExecutionRequest(execution_id=execution_id))
    with pytest.raises(grpc.RpcError) as caught:
        get(stubs, execution_id)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_a_cached_response_is_not_found_from_another_group(server, stubs):
    execution_id = make_execution(stubs)
    get(stubs, execution_id)
    assert cached(server, execution_id)
    with pytest.raises(grpc.RpcError) as caught:
        get(stubs, execution_id, group="team-b")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert get(stubs, execution_id).id == execution_id


def test_the_cache_keeps_the_most_recently_read_and_no_more():
    responses = _Responses(size=3)
    for name in "abcd":
        responses.put("g", name, pb.GetExecutionResponse())
    assert list(responses.items) == ["b", "c", "d"]
    assert responses.get("g", "b") is not None  # read: now the most recent
    responses.put("g", "e", pb.GetExecutionResponse())
    assert list(responses.items) == ["d", "b", "e"]
    assert responses.get("other", "e") is None
    responses.discard("b")
    responses.discard("missing")
    assert list(responses.items) == ["d", "e"]


def test_reads_asked_for_together_are_read_in_one_hand_off_each_with_its_own_answer(
    server, stubs
):
    """Uncached reads of executions asked for in the same turn of the loop are read by
    one store call; an execution missing, or of another group, is NotFound for its
    caller alone."""
    from server.domain.errors import NotFound

    ids = [make_execution(stubs) for _ in range(5)]
    other_group = make_execution(stubs, group="elsewhere")
    store = server.plane.store
    groups: list[int] = []
    read_many = store.sync.executions_with_context

    def counted(keys):
        groups.append(len(keys))
        return read_many(keys)

    async def read_all():
        import asyncio

        store.sync.executions_with_context = counted
        try:
            keys = [("default", i) for i in ids]
            keys += [("default", other_group), ("default", "0" * 20)]
            return await asyncio.gather(
                *(store.execution_with_context(g, i) for g, i in keys), return_exceptions=True
            )
        finally:
            del store.sync.executions_with_context

    results = server.call(read_all())
    assert groups == [7]
    assert [r[0].id for r in results[:5]] == ids
    assert all(len(r[0].history) == 1 and r[2] for r in results[:5])  # history, config name
    assert all(isinstance(r, NotFound) for r in results[5:])
