"""Helpers of the metrics tests: executions in a known status, written straight through
the store (so that no runtime picks them up), and the metric stub."""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2, status_pb2

from client.client import TrainyardClient
from server.domain.models import Execution, Status
from server.domain.service import new_id
from trainyard.v1 import metric_service_pb2_grpc


class Runs:
    """Creates configurations of iris-train and executions of them in one group."""

    def __init__(self, server, resource_group: str = "default"):
        self.server = server
        self.resource_group = resource_group
        self.client = TrainyardClient(server.address, resource_group=resource_group)
        self.dataset = self.client.create_artifact(
            "iris", "file:///data/iris.csv", "iris", description="test data"
        )

    def close(self) -> None:
        self.client.close()

    def configuration(self, learning_rate: float, epochs: int = 20) -> str:
        cfg = self.client.create_configuration(
            f"lr-{learning_rate}",
            "iris-train",
            "iris",
            {"learning_rate": learning_rate, "epochs": epochs},
            {"iris-data": self.dataset.id},
        )
        return cfg.id

    def execution(
        self, learning_rate: float = 0.1, status: Status = Status.COMPLETED, config: str = ""
    ) -> str:
        """An execution of a configuration with this learning rate, put in ``status``."""
        config_id = config or self.configuration(learning_rate)
        store = self.server.plane.store
        execution = Execution(
            id=new_id(),
            resource_group=self.resource_group,
            configuration_id=config_id,
            executable_id="iris-train",
            scenario_id="iris",
        )
        self.server.run_sync(store.create_execution, execution)
        if status is not Status.PENDING:
            self.server.run_sync(store.force_status, execution.id, Status.RUNNING)
        if status not in (Status.PENDING, Status.RUNNING):
            self.server.run_sync(store.force_status, execution.id, status)
        return execution.id


def metric_stub(channel: grpc.Channel) -> metric_service_pb2_grpc.MetricServiceStub:
    return metric_service_pb2_grpc.MetricServiceStub(channel)


def error_details(error: grpc.RpcError) -> tuple[str, list[tuple[str, str]]]:
    """(ErrorInfo reason, [(field, description)]) of a failed call."""
    reason, fields = "", []
    for key, value in error.trailing_metadata() or ():
        if key != "grpc-status-details-bin":
            continue
        for detail in status_pb2.Status.FromString(value).details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason = info.reason
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                fields = [(v.field, v.description) for v in bad.field_violations]
    return reason, fields


def table_counts(server, execution_id: str) -> dict[str, int]:
    """Rows of an execution in every metric table."""

    def count() -> dict[str, int]:
        db = server.plane.store.sync
        result = {}
        for table in ("metric_owner", "metric_series", "metric_tag", "metric_custom_info"):
            result[table] = db.execute(
                f"SELECT COUNT(*) FROM {table} WHERE execution_id = ?", (execution_id,)
            ).fetchone()[0]
        result["metric_point"] = db.execute(
            "SELECT COUNT(*) FROM metric_point WHERE series_id IN "
            "(SELECT series_id FROM metric_series WHERE execution_id = ?)",
            (execution_id,),
        ).fetchone()[0]
        result["metric_point_all"] = db.execute("SELECT COUNT(*) FROM metric_point").fetchone()[
            0
        ]
        return result

    return server.run_sync(count)
