"""The WatchExecutions stream of the execution service."""

from __future__ import annotations

import contextlib

from server.api import convert
from server.api.context import resource_group
from server.api.executions import ExecutionService
from server.domain.service import ControlPlane
from server.streams.watch import ExecutionWatches, WatchEvent, WatchOptions
from trainyard.v1 import execution_service_pb2 as pb

EVENT_TYPES = {
    "snapshot": pb.WATCH_EVENT_TYPE_SNAPSHOT,
    "transition": pb.WATCH_EVENT_TYPE_TRANSITION,
    "step": pb.WATCH_EVENT_TYPE_STEP_CHANGED,
    "created": pb.WATCH_EVENT_TYPE_CREATED,
    "deleted": pb.WATCH_EVENT_TYPE_DELETED,
}


class WatchingExecutionService(ExecutionService):
    """The execution service with its status watch stream."""

    def __init__(self, plane: ControlPlane, watches: ExecutionWatches):
        super().__init__(plane)
        self.watches = watches

    async def event_pb(self, event: WatchEvent) -> pb.WatchExecutionsResponse:
        return pb.WatchExecutionsResponse(
            type=EVENT_TYPES[event.kind],
            execution=(await self.render([event.execution], with_history=False))[0],
            transition=convert.transition_pb(event.transition) if event.transition else None,
            step=convert.step_pb(event.step) if event.step else None,
            cursor=event.cursor,
        )

    async def WatchExecutions(self, request, context):
        options = WatchOptions(
            execution_id=request.execution_id,
            statuses=tuple(convert.statuses_from_pb(request.statuses, "statuses")),
            scenario_id=request.scenario_id,
            configuration_id=request.configuration_id,
            executable_id=request.executable_id,
            keep_watching=request.keep_watching,
            after_cursor=request.after_cursor,
        )
        stream = self.watches.watch(resource_group(), options)
        async with contextlib.aclosing(stream):
            async for event in stream:
                yield await self.event_pb(event)
