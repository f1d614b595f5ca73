"""Conversions between domain objects and trainyard.v1 protobuf messages: the only
place that knows both."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from google.protobuf import timestamp_pb2

from server.domain import lifecycle, metrics
from server.domain.audit import AuditEvent
from server.domain.errors import InvalidArgument
from server.domain.models import (
    Artifact,
    ArtifactKind,
    Configuration,
    Executable,
    ExecutableStep,
    Execution,
    LogLine,
    LogStream,
    ParameterType,
    Scenario,
    Secret,
    Status,
    StepDetail,
    StepPhase,
    TargetStatus,
    Transition,
)
from trainyard.v1 import (
    artifact_pb2,
    audit_pb2,
    configuration_pb2,
    executable_pb2,
    execution_pb2,
    log_pb2,
    metric_pb2,
    scenario_pb2,
    secret_pb2,
)

STATUS_TO_PB = {
    Status.PENDING: execution_pb2.EXECUTION_STATUS_PENDING,
    Status.RUNNING: execution_pb2.EXECUTION_STATUS_RUNNING,
    Status.COMPLETED: execution_pb2.EXECUTION_STATUS_COMPLETED,
    Status.DEAD: execution_pb2.EXECUTION_STATUS_DEAD,
    Status.STOPPING: execution_pb2.EXECUTION_STATUS_STOPPING,
    Status.STOPPED: execution_pb2.EXECUTION_STATUS_STOPPED,
    Status.UNKNOWN: execution_pb2.EXECUTION_STATUS_UNKNOWN,
}
STATUS_FROM_PB = {v: k for k, v in STATUS_TO_PB.items()}

OPERATION_TO_PB = {
    lifecycle.Operation.STOP: execution_pb2.EXECUTION_OPERATION_STOP,
    lifecycle.Operation.DELETE: execution_pb2.EXECUTION_OPERATION_DELETE,
    lifecycle.Operation.RERUN: execution_pb2.EXECUTION_OPERATION_RERUN,
}
# status -> the operations it allows (Execution.allowed_operations), in enum order:
# read off the domain's lifecycle table, never restated here.
ALLOWED_OPERATIONS_PB: dict[Status, list[int]] = {
    status: sorted(OPERATION_TO_PB[op] for op in operations)
    for status, operations in lifecycle.OPERATIONS.items()
}

TARGET_TO_PB = {
    TargetStatus.COMPLETED: execution_pb2.TARGET_STATUS_COMPLETED,
    TargetStatus.STOPPED: execution_pb2.TARGET_STATUS_STOPPED,
    TargetStatus.DELETED: execution_pb2.TARGET_STATUS_DELETED,
}

PHASE_TO_PB = {
    StepPhase.PENDING: execution_pb2.STEP_PHASE_PENDING,
    StepPhase.RUNNING: execution_pb2.STEP_PHASE_RUNNING,
    StepPhase.SUCCEEDED: execution_pb2.STEP_PHASE_SUCCEEDED,
    StepPhase.FAILED: execution_pb2.STEP_PHASE_FAILED,
    StepPhase.SKIPPED: execution_pb2.STEP_PHASE_SKIPPED,
    StepPhase.STOPPED: execution_pb2.STEP_PHASE_STOPPED,
}

KIND_TO_PB = {
    ArtifactKind.DATASET: artifact_pb2.ARTIFACT_KIND_DATASET,
    ArtifactKind.MODEL: artifact_pb2.ARTIFACT_KIND_MODEL,
    ArtifactKind.RESULTSET: artifact_pb2.ARTIFACT_KIND_RESULTSET,
    ArtifactKind.OTHER: artifact_pb2.ARTIFACT_KIND_OTHER,
}
KIND_FROM_PB = {v: k for k, v in KIND_TO_PB.items()}

PARAM_TO_PB = {
    ParameterType.STRING: executable_pb2.PARAMETER_TYPE_STRING,
    ParameterType.INT: executable_pb2.PARAMETER_TYPE_INT,
    ParameterType.FLOAT: executable_pb2.PARAMETER_TYPE_FLOAT,
}

STREAM_TO_PB = {
    LogStream.STDOUT: log_pb2.LOG_STREAM_STDOUT,
    LogStream.STDERR: log_pb2.LOG_STREAM_STDERR,
    LogStream.SYSTEM: log_pb2.LOG_STREAM_SYSTEM,
}
STREAM_FROM_PB = {v: k for k, v in STREAM_TO_PB.items()}


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NAIVE_EPOCH = datetime(1970, 1, 1)


def ts(value: datetime | None) -> dict[str, int] | None:
    """A google.protobuf.Timestamp as its field dict (naive datetimes are UTC), to pass
    to a message constructor: exact integer arithmetic, and about four times cheaper
    than ``Timestamp.FromDatetime`` plus the copy of a built message into its parent."""
    if value is None:
        return None
    delta = value - (_NAIVE_EPOCH if value.tzinfo is None else _EPOCH)
    return {"seconds": delta.days * 86_400 + delta.seconds, "nanos": delta.microseconds * 1000}


def from_ts(value: timestamp_pb2.Timestamp, field: str) -> datetime:
    try:
        return value.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError) as exc:
        raise InvalidArgument.of(field, "timestamp out of range") from exc


def status_from_pb(value: int, field: str) -> Status:
    try:
        return STATUS_FROM_PB[value]
    except KeyError:
        raise InvalidArgument.of(field, f"unknown execution status {value}") from None


def statuses_from_pb(values, field: str) -> list[Status]:
    return [
        status_from_pb(v, f"{field}[{i}]")
        for i, v in enumerate(values)
        if v != execution_pb2.EXECUTION_STATUS_UNSPECIFIED
    ]


def kind_from_pb(value: int, field: str, *, allow_unspecified: bool = True) -> ArtifactKind | None:
    if value == artifact_pb2.ARTIFACT_KIND_UNSPECIFIED:
        if allow_unspecified:
            return None
        raise InvalidArgument.of(field, "is required")
    try:
        return KIND_FROM_PB[value]
    except KeyError:
        raise InvalidArgument.of(field, f"unknown artifact kind {value}") from None


def streams_from_pb(values, field: str) -> list[LogStream]:
    result = []
    for i, v in enumerate(values):
        if v == log_pb2.LOG_STREAM_UNSPECIFIED:
            continue
        if v not in STREAM_FROM_PB:
            raise InvalidArgument.of(f"{field}[{i}]", f"unknown log stream {v}")
        result.append(STREAM_FROM_PB[v])
    return result


def scenario_pb(scenario: Scenario, executable_count: int = 0) -> scenario_pb2.Scenario:
    return scenario_pb2.Scenario(
        id=scenario.id,
        name=scenario.name,
        description=scenario.description,
        labels=scenario.labels,
        create_time=ts(scenario.created_at),
        update_time=ts(scenario.modified_at),
        executable_count=executable_count,
    )


def executable_pb(
    exe: Executable, steps: Sequence[ExecutableStep] = ()
) -> executable_pb2.Executable:
    """``steps``: the executable's steps (ControlPlane.executable_steps)."""
    return executable_pb2.Executable(
        id=exe.id,
        name=exe.name,
        version=exe.version,
        scenario_id=exe.scenario_id,
        description=exe.description,
        deployable=exe.deployable,
        labels=exe.labels,
        parameters=[
            executable_pb2.ParameterSpec(
                name=p.name,
                type=PARAM_TO_PB[p.type],
                default_value=p.default,
                description=p.description,
                enum_values=p.enum,
            )
            for p in exe.parameters
        ],
        input_artifacts=[
            executable_pb2.InputArtifactSpec(
                name=a.name,
                kind=KIND_TO_PB[a.kind] if a.kind else artifact_pb2.ARTIFACT_KIND_UNSPECIFIED,
                description=a.description,
            )
            for a in exe.input_artifacts
        ],
        output_artifacts=[
            executable_pb2.OutputArtifactSpec(
                name=a.name,
                kind=KIND_TO_PB[a.kind],
                step=a.step,
                description=a.description,
                labels=a.labels,
            )
            for a in exe.output_artifacts
        ],
        steps=[s.name for s in steps],
        workflow_steps=[
            executable_pb2.ExecutableStep(
                name=s.name,
                template=s.template,
                resource_plan=s.resource_plan,
                cpus=s.resources.cpus or 0.0,
                memory_bytes=s.resources.memory_bytes or 0,
                gpus=s.resources.gpus,
                after=s.after,
            )
            for s in steps
        ],
        digest=exe.digest,
        create_time=ts(exe.created_at),
        update_time=ts(exe.modified_at),
    )


def secret_pb(secret: Secret) -> secret_pb2.Secret:
    """Name, key names and times: never the values (``sealed`` stays here)."""
    return secret_pb2.Secret(
        name=secret.name,
        keys=sorted(secret.keys),
        create_time=ts(secret.created_at),
        update_time=ts(secret.modified_at),
    )


def artifact_pb(art: Artifact) -> artifact_pb2.Artifact:
    return artifact_pb2.Artifact(
        id=art.id,
        name=art.name,
        kind=KIND_TO_PB[art.kind],
        url=art.url,
        scenario_id=art.scenario_id,
        description=art.description,
        labels=art.labels,
        execution_id=art.execution_id,
        create_time=ts(art.created_at),
        update_time=ts(art.modified_at),
        created_by=art.created_by,
    )


def configuration_pb(cfg: Configuration) -> configuration_pb2.Configuration:
    return configuration_pb2.Configuration(
        id=cfg.id,
        name=cfg.name,
        executable_id=cfg.executable_id,
        executable_version=cfg.executable_version,
        scenario_id=cfg.scenario_id,
        parameter_bindings=[
            configuration_pb2.ParameterBinding(key=k, value=v)
            for k, v in cfg.parameter_bindings.items()
        ],
        input_artifact_bindings=[
            configuration_pb2.InputArtifactBinding(key=k, artifact_id=v)
            for k, v in cfg.input_artifact_bindings.items()
        ],
        create_time=ts(cfg.created_at),
        created_by=cfg.created_by,
    )


# The message constructors below leave out the fields that would stay unset or empty
# (None, [], {}): protobuf takes a few hundred nanoseconds for each field passed, a
# microsecond for an empty list and two for an empty map, and an execution is built
# for every answer that carries one.


def _step_fields(step: StepDetail) -> dict:
    fields = {"name": step.name, "phase": PHASE_TO_PB[step.phase], "attempt": step.attempt}
    if step.started_at is not None:
        fields["start_time"] = ts(step.started_at)
    if step.finished_at is not None:
        fields["finish_time"] = ts(step.finished_at)
    if step.exit_code is not None:
        fields["exit_code"] = step.exit_code
    if step.message:
        fields["message"] = step.message
    if step.output_parameters:
        fields["output_parameters"] = step.output_parameters
    return fields


def step_pb(step: StepDetail) -> execution_pb2.StepDetail:
    return execution_pb2.StepDetail(**_step_fields(step))


def _transition_fields(tr: Transition) -> dict:
    fields = {
        "sequence": tr.seq,
        "to_status": STATUS_TO_PB[tr.to_status],
        "time": ts(tr.at),
        "cause": tr.cause,
        "message": tr.message,
    }
    if tr.from_status:
        fields["from_status"] = STATUS_TO_PB[tr.from_status]
    return fields


def transition_pb(tr: Transition) -> execution_pb2.StatusTransition:
    return execution_pb2.StatusTransition(**_transition_fields(tr))


def execution_pb(
    ex: Execution,
    artifacts: list[Artifact] | None = None,
    configuration_name: str = "",
    with_history: bool = True,
) -> execution_pb2.Execution:
    fields = {
        "id": ex.id,
        "configuration_id": ex.configuration_id,
        "configuration_name": configuration_name,
        "executable_id": ex.executable_id,
        "scenario_id": ex.scenario_id,
        "status": STATUS_TO_PB[ex.status],
        "target_status": TARGET_TO_PB[ex.target_status],
        "status_message": ex.status_message,
        "create_time": ts(ex.created_at),
        "update_time": ts(ex.modified_at),
        "allowed_operations": ALLOWED_OPERATIONS_PB[ex.status],
        "created_by": ex.created_by,
    }
    if ex.rerun_of:
        fields["rerun_of"] = ex.rerun_of
    # Nested messages as field dicts: protobuf builds them in place, without the copy
    # a list of built messages costs (this is the GetExecution hot path).
    if ex.step_details:
        fields["step_details"] = [_step_fields(s) for s in ex.step_details]
    if artifacts:
        fields["output_artifacts"] = [artifact_pb(a) for a in artifacts]
    if ex.submitted_at is not None:
        fields["submit_time"] = ts(ex.submitted_at)
    if ex.started_at is not None:
        fields["start_time"] = ts(ex.started_at)
    if ex.completed_at is not None:
        fields["complete_time"] = ts(ex.completed_at)
    if with_history and ex.history:
        fields["history"] = [_transition_fields(t) for t in ex.history]
    return execution_pb2.Execution(**fields)


def log_line_pb(line: LogLine) -> log_pb2.LogLine:
    return log_pb2.LogLine(
        sequence=line.seq,
        time=ts(line.at),
        step=line.step,
        stream=STREAM_TO_PB[line.stream],
        text=line.text,
    )


# ------------------------------------------------------------------- metrics

AGGREGATION_FROM_PB = {
    metric_pb2.METRIC_AGGREGATION_UNSPECIFIED: metrics.Aggregation.LATEST,
    metric_pb2.METRIC_AGGREGATION_LATEST: metrics.Aggregation.LATEST,
    metric_pb2.METRIC_AGGREGATION_MIN: metrics.Aggregation.MIN,
    metric_pb2.METRIC_AGGREGATION_MAX: metrics.Aggregation.MAX,
}
AGGREGATION_TO_PB = {
    metrics.Aggregation.LATEST: metric_pb2.METRIC_AGGREGATION_LATEST,
    metrics.Aggregation.MIN: metric_pb2.METRIC_AGGREGATION_MIN,
    metrics.Aggregation.MAX: metric_pb2.METRIC_AGGREGATION_MAX,
}
INFO_FORMAT_FROM_PB = {
    metric_pb2.CUSTOM_INFO_FORMAT_UNSPECIFIED: metrics.InfoFormat.TEXT,
    metric_pb2.CUSTOM_INFO_FORMAT_TEXT: metrics.InfoFormat.TEXT,
    metric_pb2.CUSTOM_INFO_FORMAT_JSON: metrics.InfoFormat.JSON,
}
INFO_FORMAT_TO_PB = {
    metrics.InfoFormat.TEXT: metric_pb2.CUSTOM_INFO_FORMAT_TEXT,
    metrics.InfoFormat.JSON: metric_pb2.CUSTOM_INFO_FORMAT_JSON,
}


def enum_from_pb(table: dict, value: int, field: str, what: str):
    try:
        return table[value]
    except KeyError:
        raise InvalidArgument.of(field, f"unknown {what} {value}") from None


def metric_points_from_pb(points) -> list[metrics.PointIn]:
    """Metric messages as plain point tuples (the write hot path: no objects per point)."""
    out = []
    append = out.append
    for p in points:
        at_us = None
        if p.HasField("time"):
            t = p.time
            at_us = t.seconds * 1_000_000 + t.nanos // 1000
        append(
            (
                p.name,
                p.value,
                p.step if p.HasField("step") else None,
                at_us,
                dict(p.labels) if p.labels else None,
            )
        )
    return out


def execution_metrics_from_pb(entries) -> list[metrics.ExecutionMetricsIn]:
    result = []
    for i, e in enumerate(entries):
        result.append(
            metrics.ExecutionMetricsIn(
                execution_id=e.execution_id,
                points=metric_points_from_pb(e.metrics),
                tags=[(t.key, t.value) for t in e.tags],
                custom_info=[
                    metrics.CustomInfo(
                        c.name,
                        c.value,
                        enum_from_pb(
                            INFO_FORMAT_FROM_PB,
                            c.format,
                            f"executions[{i}].custom_info[{j}].format",
                            "custom info format",
                        ),
                    )
                    for j, c in enumerate(e.custom_info)
                ],
            )
        )
    return result


def selector_from_pb(selector: metric_pb2.MetricSelector, field: str) -> metrics.Selector:
    return metrics.Selector(
        selector.name,
        enum_from_pb(
            AGGREGATION_FROM_PB, selector.aggregation, f"{field}.aggregation", "aggregation"
        ),
    )


def metric_pb(point: metrics.MetricPoint) -> metric_pb2.Metric:
    stamp = timestamp_pb2.Timestamp(
        seconds=point.at_us // 1_000_000, nanos=(point.at_us % 1_000_000) * 1000
    )
    return metric_pb2.Metric(
        name=point.name, value=point.value, step=point.step, time=stamp, labels=point.labels
    )


def execution_metrics_pb(entry: metrics.ExecutionMetrics) -> metric_pb2.ExecutionMetrics:
    return metric_pb2.ExecutionMetrics(
        execution_id=entry.execution_id,
        metrics=[metric_pb(p) for p in entry.points],
        tags=[metric_pb2.Tag(key=k, value=v) for k, v in entry.tags.items()],
        custom_info=[
            metric_pb2.CustomInfo(name=c.name, value=c.value, format=INFO_FORMAT_TO_PB[c.format])
            for c in entry.custom_info
        ],
    )


def compared_execution_fields(rows: list[metrics.ComparedExecution]) -> list[dict]:
    """Compared executions as ComparedExecution field dicts, to pass as a repeated field
    of the response: protobuf builds messages from plain dicts about twice as fast as
    from nested constructors, and without the copy a list of messages costs. A
    comparison has thousands of them."""
    params_cache: dict[int, list[dict[str, str]]] = {}
    aggregations = AGGREGATION_TO_PB
    statuses = STATUS_TO_PB
    result = []
    for row in rows:
        params = params_cache.get(id(row.parameters))
        if params is None:
            params = [{"key": k, "value": v} for k, v in row.parameters.items()]
            params_cache[id(row.parameters)] = params
        duration = None
        if row.duration is not None:
            us = row.duration // _MICROSECOND
            duration = {"seconds": us // 1_000_000, "nanos": (us % 1_000_000) * 1000}
        result.append(
            {
                "execution_id": row.execution_id,
                "configuration_id": row.configuration_id,
                "configuration_name": row.configuration_name,
                "executable_id": row.executable_id,
                "status": statuses[row.status],
                "parameters": params,
                "duration": duration,
                "create_time": {
                    "seconds": row.created_us // 1_000_000,
                    "nanos": (row.created_us % 1_000_000) * 1000,
                },
                "metrics": [
                    {
                        "name": m.name,
                        "aggregation": aggregations[m.aggregation],
                        "value": m.value,
                        "step": m.step,
                        "count": m.count,
                    }
                    for m in row.metrics
                ],
                "best": row.best,
            }
        )
    return result


_MICROSECOND = timedelta(microseconds=1)


def audit_event_pb(event: AuditEvent) -> audit_pb2.AuditEvent:
    return audit_pb2.AuditEvent(
        id=event.id,
        time=ts(event.at),
        principal=event.principal,
        action=event.action,
        resource_type=event.resource_type,
        resource_id=event.resource_id,
        resource_group=event.resource_group,
        outcome=event.outcome,
        request_id=event.request_id,
        detail=event.detail,
    )
