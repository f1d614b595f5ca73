"""Request ids: WriteMetrics is idempotent under its request id (the step helper sends
one per batch and reuses it on a retry), and every request id expires after the
idempotency retention, through the background purge; on both backends."""

from __future__ import annotations

import grpc
import pytest
from metricslib import Runs, metric_stub

from client.client import TrainyardError
from client.metrics import MetricsLogger
from tests.helpers import details, rpc_error, wait_for
from trainyard.v1 import metric_pb2, metric_service_pb2

pytestmark = pytest.mark.backends("sqlite", "postgresql")


def _request(eid: str, values, request_id: str) -> metric_service_pb2.WriteMetricsRequest:
    return metric_service_pb2.WriteMetricsRequest(
        executions=[
            metric_pb2.ExecutionMetrics(
                execution_id=eid,
                metrics=[
                    metric_pb2.Metric(name="loss", value=v, step=i) for i, v in enumerate(values)
                ],
            )
        ],
        request_id=request_id,
    )


def _points(stub, eid: str) -> list[float]:
    response = stub.ListMetrics(
        metric_service_pb2.ListMetricsRequest(
            execution_ids=[eid], view=metric_service_pb2.METRIC_VIEW_SERIES
        ),
        timeout=30,
    )
    return [m.value for e in response.executions for m in e.metrics]


def test_a_repeated_write_metrics_is_stored_once(server):
    runs = Runs(server)
    try:
        eid = runs.execution()
        stub = metric_stub(grpc.insecure_channel(server.address))
        first = stub.WriteMetrics(_request(eid, [0.5, 0.25], "batch-1"), timeout=30)
        again = stub.WriteMetrics(_request(eid, [0.5, 0.25], "batch-1"), timeout=30)
        assert again.metrics_written == first.metrics_written == 2
        assert _points(stub, eid) == [0.5, 0.25]
        reused = rpc_error(stub.WriteMetrics, _request(eid, [0.1], "batch-1"))
        assert reused.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert details(reused)["reason"] == "REQUEST_ID_REUSED"
        stub.WriteMetrics(_request(eid, [0.125], "batch-2"), timeout=30)
        assert _points(stub, eid) == [0.5, 0.25, 0.125]
    finally:
        runs.close()


def test_the_step_helper_retries_a_lost_answer_with_the_same_request_id(server):
    """The first send lands but its answer is lost (DEADLINE_EXCEEDED, as a client
    sees it): the retry sends the same batch under the same id, and the server keeps
    one copy."""
    runs = Runs(server)
    try:
        eid = runs.execution()
        logger = MetricsLogger(eid, server.address, batch_size=10_000, flush_interval=3600)
        sent_ids: list[str] = []
        real_send = logger._send

        def send_and_lose_the_first_answer(entry, request_id, timeout):
            sent_ids.append(request_id)
            real_send(entry, request_id, timeout)
            if len(sent_ids) == 1:
                raise TrainyardError(grpc.StatusCode.DEADLINE_EXCEEDED, "answer lost")

        logger._send = send_and_lose_the_first_answer
        for i in range(5):
            logger.log_metric("acc", i / 10, step=i)
        assert logger.flush() is False  # the first try "failed"
        logger.log_metric("acc", 0.9, step=9)  # more points meanwhile
        assert logger.flush() is True
        logger.close()
        assert sent_ids[0] == sent_ids[1] and len(set(sent_ids)) == 2
        stub = metric_stub(grpc.insecure_channel(server.address))
        assert _points(stub, eid) == [0.0, 0.1, 0.2, 0.3, 0.4, 0.9]
    finally:
        runs.close()


def test_request_ids_expire_after_the_retention(server_factory):
    """With a retention of half a second the purge forgets a request id: the same id
    with other content is then a new request, for creates and for WriteMetrics."""
    server = server_factory(idempotency_retention_seconds=0.5)
    runs = Runs(server)
    try:
        eid = runs.execution()
        stub = metric_stub(grpc.insecure_channel(server.address))
        stub.WriteMetrics(_request(eid, [1.0], "r"), timeout=30)
        assert rpc_error(stub.WriteMetrics, _request(eid, [2.0], "r")).code() == (
            grpc.StatusCode.FAILED_PRECONDITION
        )

        def accepted() -> bool:
            try:
                stub.WriteMetrics(_request(eid, [2.0], "r"), timeout=30)
                return True
            except grpc.RpcError as error:
                assert details(error)["reason"] == "REQUEST_ID_REUSED"
                return False

        wait_for(accepted, timeout=30, interval=0.1)
        assert _points(stub, eid) == [1.0, 2.0]
        assert server.running.extra["idempotency_purger"].purged >= 1
    finally:
        runs.close()
