"""TailLogs encodes its messages by hand and its service is registered by hand: these
fail when LogLine or TailLogsResponse gain a field the encoder does not write, or
LogService gains an rpc the registration does not serve."""

from __future__ import annotations

import grpc
import pytest
from streamkit import Driver, make_execution

from server.api import logs as api_logs
from server.domain.models import LogStream, Status
from trainyard.v1 import log_pb2
from trainyard.v1 import log_service_pb2 as lpb

pytestmark = [pytest.mark.driven]


def test_the_encoder_names_every_field_of_the_messages():
    assert {f.name for f in log_pb2.LogLine.DESCRIPTOR.fields} == api_logs.ENCODED_LINE_FIELDS
    assert {
        f.name for f in lpb.TailLogsResponse.DESCRIPTOR.fields
    } == api_logs.ENCODED_RESPONSE_FIELDS


def test_tailed_lines_are_the_listed_lines_field_for_field(server, stubs):
    """The same stored lines through TailLogs (hand-encoded) and ListLogs (the
    library's encoder over convert.log_line_pb): equal messages, every field."""
    eid = make_execution(stubs)
    driver = Driver(server, eid)
    driver.write(3, step="train")
    driver.write(2, step="", stream=LogStream.STDERR, text=lambda i: f"é {i}")
    driver.transition(Status.RUNNING)
    driver.finish(Status.COMPLETED)
    tailed = [
        line
        for message in stubs.logs.TailLogs(lpb.TailLogsRequest(execution_id=eid), timeout=30)
        for line in message.lines
    ]
    listed = list(stubs.logs.ListLogs(lpb.ListLogsRequest(execution_id=eid), timeout=30).lines)
    assert len(tailed) == 5
    assert tailed == listed


def test_every_log_service_rpc_is_served(server, stubs):
    """Each method of the LogService descriptor reaches a handler: a request for a
    missing execution gets NOT_FOUND, never UNIMPLEMENTED."""
    service = lpb.DESCRIPTOR.services_by_name["LogService"]
    for method in service.methods:
        path = f"/{service.full_name}/{method.name}"
        request_class = getattr(lpb, method.input_type.name)
        response_class = getattr(lpb, method.output_type.name)
        kind = stubs.channel.unary_stream if method.server_streaming else stubs.channel.unary_unary
        call = kind(
            path,
            request_serializer=request_class.SerializeToString,
            response_deserializer=response_class.FromString,
        )
        with pytest.raises(grpc.RpcError) as caught:
            answer = call(request_class(execution_id="missing"), timeout=30)
            if method.server_streaming:
                list(answer)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND, (method.name, caught.value)
