"""Handlers of the execution service (unary calls; the watch stream lives in
server/api/watch.py)."""

from __future__ import annotations

from collections import OrderedDict

import grpc

from server.api import convert
from server.api.context import caller, resource_group
from server.domain.models import Artifact, Execution
from server.domain.service import BatchOutcome, ControlPlane
from trainyard.v1 import execution_pb2, execution_service_pb2_grpc
from trainyard.v1 import execution_service_pb2 as pb

# GetExecution responses kept, of the most recently read executions.
RESPONSE_CACHE_SIZE = 4096


class _Responses:
    """GetExecution responses of recently read executions, each with the resource
    group it was read in. An execution's response is dropped after every committed
    write of the execution (the store's ``on_execution_written``, called on the loop
    before the writer resumes), so a response here is what reading the execution
    again would give: its row and history change only through those writes, and its
    artifacts and configuration never change.

    A read runs on a store thread while writes go on, so a read that began before a
    write committed may return the state before it. ``begin`` marks a read in flight;
    a write of that execution while it is in flight marks it stale, and ``put`` keeps
    nothing read stale. Across replicas the same drop comes from the cross-replica
    notifications (server/streams/notify.py calls the same callbacks when it hears of
    another replica's write, which is then visible to reads); while those may be lost
    (the notifier is reconnecting) nothing is cached, and the cache starts empty again
    once they are heard (``unheard``).

    Dashboards and bots poll GetExecution; between two changes of an execution they
    all get the same message, built once."""

    def __init__(self, size: int = RESPONSE_CACHE_SIZE):
        self.size = size
        self.items: OrderedDict[str, tuple[str, pb.GetExecutionResponse]] = OrderedDict()
        # Reads in flight per execution id: [count, written meanwhile].
        self.reading: dict[str, list] = {}
        # False while other replicas' writes may go unheard.
        self.enabled = True

    def get(self, resource_group: str, execution_id: str) -> pb.GetExecutionResponse | None:
        item = self.items.get(execution_id)
        if item is None or item[0] != resource_group:
            return None
        self.items.move_to_end(execution_id)
        return item[1]

    def begin(self, execution_id: str) -> None:
        state = self.reading.get(execution_id)
        if state is None:
            self.reading[execution_id] = [1, False]
        else:
            state[0] += 1

    def end(self, execution_id: str) -> bool:
        """The read is over; whether a write came while any read of it was in flight
        (its result may be stale)."""
        state = self.reading[execution_id]
        stale = state[1]
        state[0] -= 1
        if state[0] == 0:
            del self.reading[execution_id]
        return stale

    def put(self, resource_group: str, execution_id: str, response: pb.GetExecutionResponse):
        if not self.enabled:
            return
        self.items[execution_id] = (resource_group, response)
        self.items.move_to_end(execution_id)
        if len(self.items) > self.size:
            self.items.popitem(last=False)

    def discard(self, execution_id: str) -> None:
        self.items.pop(execution_id, None)
        state = self.reading.get(execution_id)
        if state is not None:
            state[1] = True

    def unheard(self, unheard: bool) -> None:
        """Writes elsewhere may go unheard (True) or are heard again (False): drop
        everything, and cache nothing meanwhile."""
        self.enabled = not unheard
        self.items.clear()
        for state in self.reading.values():
            state[1] = True


def _message(
    execution: Execution,
    artifacts: dict[str, Artifact],
    names: dict[str, str],
    with_history: bool,
) -> execution_pb2.Execution:
    """An execution as a message, given its artifacts and its configuration's name."""
    return convert.execution_pb(
        execution,
        artifacts=[artifacts[a] for a in execution.output_artifact_ids if a in artifacts],
        configuration_name=names.get(execution.configuration_id, ""),
        with_history=with_history,
    )


class ExecutionService(execution_service_pb2_grpc.ExecutionServiceServicer):
    def __init__(self, plane: ControlPlane):
        self.plane = plane
        self.responses = _Responses()
        plane.on_execution_written(self.responses.discard)
        plane.on_writes_unheard(self.responses.unheard)

    async def render(
        self, executions: list[Execution], with_history: bool
    ) -> list[execution_pb2.Execution]:
        """Executions as messages, with their artifacts and configuration names read in
        one store call for the whole list."""
        if not executions:
            return []
        artifacts, names = await self.plane.store.execution_context(
            executions[0].resource_group, executions
        )
        return [_message(e, artifacts, names, with_history) for e in executions]

    async def one(self, execution: Execution) -> execution_pb2.Execution:
        return (await self.render([execution], with_history=True))[0]

    async def CreateExecution(self, request, context):
        execution = await self.plane.create_execution_grouped(
            resource_group(),
            request.configuration_id,
            request.request_id,
            caller(),
            rerun_of=request.rerun_of,
        )
        return pb.CreateExecutionResponse(execution=await self.one(execution))

    async def GetExecution(self, request, context):
        group = resource_group()
        execution_id = request.execution_id
        response = self.responses.get(group, execution_id)
        if response is not None:
            return response
        self.responses.begin(execution_id)
        stale = True
        try:
            execution, artifacts, names = await self.plane.get_execution_with_context(
                group, execution_id
            )
            response = pb.GetExecutionResponse(
                execution=_message(execution, artifacts, names, with_history=True)
            )
        finally:
            stale = self.responses.end(execution_id)
        if not stale:
            self.responses.put(group, execution.id, response)
        return response

    async def ListExecutions(self, request, context):
        page = await self.plane.list_executions(
            resource_group(),
            request.page_size,
            request.page_token,
            statuses=convert.statuses_from_pb(request.statuses, "statuses"),
            scenario_id=request.scenario_id,
            executable_id=request.executable_id,
            configuration_id=request.configuration_id,
            rerun_of=request.rerun_of,
        )
        return pb.ListExecutionsResponse(
            executions=await self.render(page.items, with_history=False),
            next_page_token=page.next_page_token,
            total_size=page.total_size,
        )

    async def StopExecution(self, request, context):
        execution = await self.plane.stop_execution(
            resource_group(), request.execution_id, caller()
        )
        return pb.StopExecutionResponse(execution=await self.one(execution))

    async def DeleteExecution(self, request, context):
        await self.plane.delete_execution(
            resource_group(),
            request.execution_id,
            keep_metrics=request.keep_metrics,
            caller=caller(),
        )
        return pb.DeleteExecutionResponse(execution_id=request.execution_id)

    async def BatchStopExecutions(self, request, context):
        outcomes = await self.plane.batch_stop(
            resource_group(), list(request.execution_ids), caller()
        )
        return pb.BatchStopExecutionsResponse(outcomes=[_outcome_pb(o) for o in outcomes])

    async def BatchDeleteExecutions(self, request, context):
        outcomes = await self.plane.batch_delete(
            resource_group(),
            list(request.execution_ids),
            keep_metrics=request.keep_metrics,
            caller=caller(),
        )
        return pb.BatchDeleteExecutionsResponse(outcomes=[_outcome_pb(o) for o in outcomes])

    async def ListExecutionHistory(self, request, context):
        history = await self.plane.execution_history(resource_group(), request.execution_id)
        return pb.ListExecutionHistoryResponse(
            transitions=[convert.transition_pb(t) for t in history]
        )


def _outcome_pb(outcome: BatchOutcome) -> pb.BatchItemOutcome:
    return pb.BatchItemOutcome(
        execution_id=outcome.execution_id,
        ok=outcome.ok,
        code=getattr(grpc.StatusCode, outcome.code).value[0],
        reason=outcome.reason,
        message=outcome.message,
        status=convert.STATUS_TO_PB[outcome.status] if outcome.status else 0,
    )
