"""Handlers of the log service."""

from __future__ import annotations

from server.api import convert
from server.api.context import resource_group
from server.domain.logs import LogReader
from trainyard.v1 import log_service_pb2 as pb
from trainyard.v1 import log_service_pb2_grpc


class LogService(log_service_pb2_grpc.LogServiceServicer):
    def __init__(self, reader: LogReader):
        self.reader = reader

    async def ListLogs(self, request, context):
        start = (
            convert.from_ts(request.start_time, "start_time")
            if request.HasField("start_time")
            else None
        )
        end = (
            convert.from_ts(request.end_time, "end_time") if request.HasField("end_time") else None
        )
        lines, token = self.reader.list_page(
            resource_group(),
            request.execution_id,
            limit=request.limit,
            page_token=request.page_token,
            descending=request.order == pb.LOG_ORDER_DESCENDING,
            steps=list(request.steps),
            streams=convert.streams_from_pb(request.streams, "streams"),
            start=start,
            end=end,
            after_sequence=request.after_sequence,
        )
        return pb.ListLogsResponse(
            lines=[convert.log_line_pb(line) for line in lines], next_page_token=token
        )
