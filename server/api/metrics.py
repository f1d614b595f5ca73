"""Handlers of the metric service."""

from __future__ import annotations

import hashlib

from server.api import convert
from server.api.context import resource_group
from server.domain.errors import Reason, ResourceExhausted
from server.domain.metrics import MetricsService, MetricView
from trainyard.v1 import metric_service_pb2 as pb
from trainyard.v1 import metric_service_pb2_grpc

VIEW_FROM_PB = {
    pb.METRIC_VIEW_UNSPECIFIED: MetricView.LATEST,
    pb.METRIC_VIEW_LATEST: MetricView.LATEST,
    pb.METRIC_VIEW_SERIES: MetricView.SERIES,
}


class MetricService(metric_service_pb2_grpc.MetricServiceServicer):
    def __init__(self, metrics: MetricsService, max_message_bytes: int):
        self.metrics = metrics
        self.max_message_bytes = max_message_bytes

    async def WriteMetrics(self, request, context):
        digest = ""
        if request.request_id:
            # The content a repeat must match: the entries as sent, canonically encoded.
            digest = hashlib.sha256(
                b"".join(e.SerializeToString(deterministic=True) for e in request.executions)
            ).hexdigest()
        points, tags, infos = await self.metrics.write(
            resource_group(),
            convert.execution_metrics_from_pb(request.executions),
            request.request_id,
            digest,
        )
        return pb.WriteMetricsResponse(
            metrics_written=points, tags_written=tags, custom_info_written=infos
        )

    async def ListMetrics(self, request, context):
        view = convert.enum_from_pb(VIEW_FROM_PB, request.view, "view", "metric view")
        entries, token = await self.metrics.read(
            resource_group(),
            list(request.execution_ids),
            list(request.names),
            view,
            request.page_size,
            request.page_token,
        )
        response = pb.ListMetricsResponse(
            executions=[convert.execution_metrics_pb(e) for e in entries], next_page_token=token
        )
        size = response.ByteSize()
        if size > self.max_message_bytes:
            raise ResourceExhausted(
                message=(
                    f"the page would be {size} bytes, over the server's limit "
                    f"of {self.max_message_bytes}: ask for fewer executions or a smaller page_size"
                ),
                reason=Reason.LIMIT_EXCEEDED,
            )
        return response

    async def DeleteMetrics(self, request, context):
        deleted = await self.metrics.delete(
            resource_group(), request.execution_id, list(request.names)
        )
        return pb.DeleteMetricsResponse(metrics_deleted=deleted)

    async def CompareExecutions(self, request, context):
        comparison = await self.metrics.compare(
            resource_group(),
            execution_ids=list(request.execution_ids),
            executable_id=request.executable_id,
            configuration_id=request.configuration_id,
            statuses=convert.statuses_from_pb(request.statuses, "statuses"),
            selectors=[
                convert.selector_from_pb(s, f"metrics[{i}]") for i, s in enumerate(request.metrics)
            ],
            order_by=(
                convert.selector_from_pb(request.order_by, "order_by")
                if request.HasField("order_by")
                else None
            ),
            ascending=request.ascending,
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return pb.CompareExecutionsResponse(
            executions=convert.compared_execution_fields(comparison.executions),
            next_page_token=comparison.next_page_token,
            total_size=comparison.total_size,
            best_value=comparison.best_value,
        )
