"""Typed client calls of the metric service (mixed into ``TrainyardClient``).

with TrainyardClient() as ty:
    ty.write_metrics(execution_id, [("loss", 0.31, 1), ("loss", 0.22, 2)],
                     tags={"dataset": "iris-v2"})
    latest = ty.latest_metrics(execution_id)          # {"loss": Metric(...)}
    best = ty.compare_executions(executable_id="iris-train",
                                 order_by="accuracy").executions[0]
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from trainyard.v1 import metric_pb2, metric_service_pb2, metric_service_pb2_grpc

AGGREGATIONS = {
    "latest": metric_pb2.METRIC_AGGREGATION_LATEST,
    "min": metric_pb2.METRIC_AGGREGATION_MIN,
    "max": metric_pb2.METRIC_AGGREGATION_MAX,
}

# A metric as the client accepts it: a Metric message, or (name, value) / (name, value,
# step) / (name, value, step, labels).
MetricLike = metric_pb2.Metric | tuple


def to_metric(item: MetricLike) -> metric_pb2.Metric:
    if isinstance(item, metric_pb2.Metric):
        return item
    name, value, *rest = item
    metric = metric_pb2.Metric(name=name, value=float(value))
    if rest and rest[0] is not None:
        metric.step = int(rest[0])
    if len(rest) > 1 and rest[1]:
        metric.labels.update({str(k): str(v) for k, v in rest[1].items()})
    return metric


def custom_info_entry(name: str, value: Any) -> metric_pb2.CustomInfo:
    """A custom info entry: strings are TEXT, anything else is stored as JSON
    (ValueError for NaN or infinities, which JSON cannot hold)."""
    if isinstance(value, str):
        return metric_pb2.CustomInfo(
            name=name, value=value, format=metric_pb2.CUSTOM_INFO_FORMAT_TEXT
        )
    return metric_pb2.CustomInfo(
        name=name,
        value=json.dumps(value, allow_nan=False),
        format=metric_pb2.CUSTOM_INFO_FORMAT_JSON,
    )


def selector(spec: str | metric_pb2.MetricSelector) -> metric_pb2.MetricSelector:
    """``"accuracy"``, ``"loss:min"`` or a MetricSelector."""
    if isinstance(spec, metric_pb2.MetricSelector):
        return spec
    name, sep, aggregation = spec.rpartition(":")
    if sep and aggregation.lower() in AGGREGATIONS:
        return metric_pb2.MetricSelector(name=name, aggregation=AGGREGATIONS[aggregation.lower()])
    return metric_pb2.MetricSelector(name=spec, aggregation=metric_pb2.METRIC_AGGREGATION_LATEST)


def value_of(metric: metric_pb2.MetricValue) -> float | None:
    """The value of a compared metric, None when the execution lacks it."""
    return metric.value if metric.HasField("value") else None


class MetricsCalls:
    """Metric calls; needs ``call`` and ``channel`` from the client it is mixed into."""

    channel: Any
    call: Any

    @property
    def metric_service(self) -> metric_service_pb2_grpc.MetricServiceStub:
        stub = self.__dict__.get("_metric_stub")
        if stub is None:
            stub = self.__dict__["_metric_stub"] = metric_service_pb2_grpc.MetricServiceStub(
                self.channel
            )
        return stub

    # ----------------------------------------------------------------- write

    def write_metrics(
        self,
        execution_id: str,
        metrics: Iterable[MetricLike] = (),
        tags: Mapping[str, str] | None = None,
        custom_info: Mapping[str, Any] | None = None,
    ) -> metric_service_pb2.WriteMetricsResponse:
        """Record points, tags and custom info of one execution in one call."""
        entry = metric_pb2.ExecutionMetrics(
            execution_id=execution_id,
            metrics=[to_metric(m) for m in metrics],
            tags=[metric_pb2.Tag(key=k, value=str(v)) for k, v in (tags or {}).items()],
            custom_info=[custom_info_entry(k, v) for k, v in (custom_info or {}).items()],
        )
        return self.write_metrics_batch([entry])

    def write_metrics_batch(
        self,
        entries: Sequence[metric_pb2.ExecutionMetrics],
        timeout: float | None = None,
        request_id: str = "",
    ) -> metric_service_pb2.WriteMetricsResponse:
        """Record the metrics of several executions in one call (one transaction). A
        retry of the same entries with the same ``request_id`` writes nothing twice."""
        request = metric_service_pb2.WriteMetricsRequest(
            executions=entries, request_id=request_id
        )
        return self.call(self.metric_service.WriteMetrics, request, timeout)

    # ------------------------------------------------------------------ read

    def list_metrics(
        self,
        execution_ids: Sequence[str],
        names: Sequence[str] = (),
        series: bool = False,
        page_size: int = 10_000,
    ) -> list[metric_pb2.ExecutionMetrics]:
        """Metrics of executions, every page merged: one entry per execution, in order."""
        request = metric_service_pb2.ListMetricsRequest(
            execution_ids=list(execution_ids),
            names=list(names),
            view=metric_service_pb2.METRIC_VIEW_SERIES
            if series
            else metric_service_pb2.METRIC_VIEW_LATEST,
            page_size=page_size,
        )
        merged: dict[str, metric_pb2.ExecutionMetrics] = {}
        while True:
            response = self.call(self.metric_service.ListMetrics, request)
            for entry in response.executions:
                if entry.execution_id in merged:
                    merged[entry.execution_id].metrics.extend(entry.metrics)
                else:
                    merged[entry.execution_id] = entry
            if not response.next_page_token:
                return list(merged.values())
            request.page_token = response.next_page_token

    def latest_metrics(self, execution_id: str) -> dict[str, metric_pb2.Metric]:
        """The latest point of every metric of one execution, by name."""
        entry = self.list_metrics([execution_id])[0]
        return {m.name: m for m in entry.metrics}

    def metric_series(
        self, execution_ids: Sequence[str], name: str
    ) -> dict[str, list[metric_pb2.Metric]]:
        """Every point of one metric, per execution, in write order."""
        entries = self.list_metrics(execution_ids, [name], series=True)
        return {e.execution_id: list(e.metrics) for e in entries}

    def delete_metrics(self, execution_id: str, names: Sequence[str] = ()) -> int:
        """Delete the named series, or every metric, tag and custom info of an
        execution. Returns the number of points deleted."""
        request = metric_service_pb2.DeleteMetricsRequest(
            execution_id=execution_id, names=list(names)
        )
        return self.call(self.metric_service.DeleteMetrics, request).metrics_deleted

    # --------------------------------------------------------------- compare

    def compare_executions(
        self,
        execution_ids: Sequence[str] = (),
        *,
        executable_id: str = "",
        configuration_id: str = "",
        statuses: Sequence[int] = (),
        metrics: Sequence[str | metric_pb2.MetricSelector] = (),
        order_by: str | metric_pb2.MetricSelector | None = None,
        ascending: bool = False,
        limit: int = 0,
        page_size: int = 1000,
    ) -> metric_service_pb2.CompareExecutionsResponse:
        """Executions side by side, every page merged (at most ``limit`` when set).
        Metrics and ``order_by`` are names with an optional ``:min``, ``:max`` or
        ``:latest``."""
        request = metric_service_pb2.CompareExecutionsRequest(
            execution_ids=list(execution_ids),
            executable_id=executable_id,
            configuration_id=configuration_id,
            statuses=list(statuses),
            metrics=[selector(m) for m in metrics],
            ascending=ascending,
            page_size=min(page_size, limit) if limit else page_size,
        )
        if order_by:
            request.order_by.CopyFrom(selector(order_by))
        result = metric_service_pb2.CompareExecutionsResponse()
        while True:
            response = self.call(self.metric_service.CompareExecutions, request)
            result.executions.extend(response.executions)
            result.total_size = response.total_size
            if response.HasField("best_value"):
                result.best_value = response.best_value
            if not response.next_page_token or (limit and len(result.executions) >= limit):
                break
            request.page_token = response.next_page_token
        if limit:
            del result.executions[limit:]
        return result
