"""Rows and values as stored, and their domain objects: the conversions every
repository of the store shares. Times are integer microseconds since the epoch (UTC)."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from server.domain.errors import FailedPrecondition, InvalidArgument, Reason
from server.domain.models import (
    Artifact,
    ArtifactKind,
    Configuration,
    Executable,
    Execution,
    InputArtifactSpec,
    LogStream,
    OutputArtifactSpec,
    ParameterSpec,
    ParameterType,
    Scenario,
    Status,
    StepDetail,
    StepPhase,
    TargetStatus,
)
from server.store import tables

STREAM_CODES = {LogStream.STDOUT: 1, LogStream.STDERR: 2, LogStream.SYSTEM: 3}
STREAM_NAMES = {v: k for k, v in STREAM_CODES.items()}
# Stored names -> enum members by dictionary (calling the enum class costs a few times more).
STATUSES = {str(s): s for s in Status}
TARGET_STATUSES = {str(s): s for s in TargetStatus}
STEP_PHASES = {str(p): p for p in StepPhase}


def now_us() -> int:
    return time.time_ns() // 1000


def to_dt(us: int | None) -> datetime | None:
    if us is None:
        return None
    return datetime.fromtimestamp(us / 1_000_000, tz=UTC)


def to_us(dt: datetime | None) -> int | None:
    if dt is None:
        return None
    return int(dt.timestamp() * 1_000_000)


def _int_key(after: Any, field: str = "page_token") -> int:
    if not isinstance(after, int) or isinstance(after, bool):
        raise InvalidArgument.of(field, "malformed page token", reason=Reason.INVALID_PAGE_TOKEN)
    return after


def _str_key(after: Any, parts: int, field: str = "page_token") -> list[str]:
    if (
        not isinstance(after, list)
        or len(after) != parts
        or not all(isinstance(x, str) for x in after)
    ):
        raise InvalidArgument.of(field, "malformed page token", reason=Reason.INVALID_PAGE_TOKEN)
    return after


def request_digest(payload: Any) -> str:
    raw = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(raw.encode()).hexdigest()


def _request_id_reused(request_id: str) -> FailedPrecondition:
    return FailedPrecondition(
        message=f"request_id {request_id!r} was already used for a different request",
        reason=Reason.REQUEST_ID_REUSED,
        metadata={"request_id": request_id},
    )


# ----------------------------------------------------------------------------- rows


def _step_to_json(step: StepDetail) -> dict:
    return {
        "name": step.name,
        "phase": str(step.phase),
        "started_us": to_us(step.started_at),
        "finished_us": to_us(step.finished_at),
        "exit_code": step.exit_code,
        "message": step.message,
        "attempt": step.attempt,
        "outputs": step.output_parameters,
    }


def _step_from_json(data: dict) -> StepDetail:
    return StepDetail(
        name=data["name"],
        phase=STEP_PHASES[data["phase"]],
        started_at=to_dt(data.get("started_us")),
        finished_at=to_dt(data.get("finished_us")),
        exit_code=data.get("exit_code"),
        message=data.get("message", ""),
        attempt=data.get("attempt", 1),
        output_parameters=dict(data.get("outputs") or {}),
    )


def _scenario(row: tables.ScenarioRow) -> Scenario:
    return Scenario(
        id=row.scenario_id,
        resource_group=row.resource_group,
        name=row.name,
        description=row.description,
        labels=dict(row.labels or {}),
        created_at=to_dt(row.created_us),
        modified_at=to_dt(row.modified_us),
    )


def _executable(row: tables.ExecutableRow, scenario_name: str = "") -> Executable:
    d = row.definition
    return Executable(
        id=row.executable_id,
        resource_group=row.resource_group,
        name=row.name,
        version=row.version,
        scenario_id=row.scenario_id,
        scenario_name=scenario_name,
        description=row.description,
        deployable=row.deployable,
        labels=dict(row.labels or {}),
        parameters=[
            ParameterSpec(
                name=p["name"],
                type=ParameterType(p["type"]),
                default=p.get("default"),
                description=p.get("description", ""),
                enum=tuple(p.get("enum") or ()),
            )
            for p in d.get("parameters", [])
        ],
        input_artifacts=[
            InputArtifactSpec(
                name=a["name"],
                kind=ArtifactKind(a["kind"]) if a.get("kind") else None,
                description=a.get("description", ""),
            )
            for a in d.get("input_artifacts", [])
        ],
        output_artifacts=[
            OutputArtifactSpec(
                name=a["name"],
                kind=ArtifactKind(a["kind"]),
                path=a.get("path", ""),
                description=a.get("description", ""),
                step=a.get("step", ""),
                labels=dict(a.get("labels") or {}),
            )
            for a in d.get("output_artifacts", [])
        ],
        annotations=dict(d.get("annotations") or {}),
        spec=d.get("spec", {}),
        digest=row.digest,
        created_at=to_dt(row.created_us),
        modified_at=to_dt(row.modified_us),
    )


def _artifact(row: tables.ArtifactRow) -> Artifact:
    return Artifact(
        id=row.artifact_id,
        resource_group=row.resource_group,
        name=row.name,
        kind=ArtifactKind(row.kind),
        url=row.url,
        scenario_id=row.scenario_id,
        description=row.description,
        labels=dict(row.labels or {}),
        execution_id=row.execution_id,
        created_at=to_dt(row.created_us),
        modified_at=to_dt(row.modified_us),
        created_by=row.created_by or "",
    )


def _configuration(row: tables.ConfigurationRow) -> Configuration:
    return Configuration(
        id=row.configuration_id,
        resource_group=row.resource_group,
        name=row.name,
        executable_id=row.executable_id,
        executable_version=row.executable_version,
        scenario_id=row.scenario_id,
        parameter_bindings=dict(row.parameter_bindings or {}),
        input_artifact_bindings=dict(row.input_artifact_bindings or {}),
        created_at=to_dt(row.created_us),
        created_by=row.created_by or "",
    )


_EXEC_FIELDS = (
    "id",
    "resource_group",
    "execution_id",
    "configuration_id",
    "executable_id",
    "scenario_id",
    "status",
    "target_status",
    "status_message",
    "step_details",
    "output_artifact_ids",
    "created_us",
    "submitted_us",
    "started_us",
    "completed_us",
    "modified_us",
    "history_len",
    "owner",
    "lease_expires_us",
    "fence",
    "created_by",
    "rerun_of",
)
_EXEC_COLUMNS = ", ".join(_EXEC_FIELDS)
# The columns a new execution's row is inserted with, in _EXEC_FIELDS' order (the
# others keep their defaults until it is claimed, started or ended).
_EXEC_INSERT = tuple(
    f
    for f in _EXEC_FIELDS
    if f not in {"id", "submitted_us", "started_us", "completed_us", "owner",
                 "lease_expires_us", "fence"}
)
_TRANSITION_INSERT = (
    "execution_id", "seq", "from_status", "to_status", "at_us", "cause", "message"
)
_EVENT_INSERT = (
    "resource_group", "number", "execution_id", "kind", "seq", "detail", "at_us"
)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def _execution_from(row: dict) -> Execution:
    steps = row["step_details"]
    outputs = row["output_artifact_ids"]
    if isinstance(steps, str):
        steps = row["step_details"] = json.loads(steps)
    if isinstance(outputs, str):
        outputs = row["output_artifact_ids"] = [] if outputs == "[]" else json.loads(outputs)
    return Execution(
        id=row["execution_id"],
        resource_group=row["resource_group"],
        configuration_id=row["configuration_id"],
        executable_id=row["executable_id"],
        scenario_id=row["scenario_id"],
        status=STATUSES[row["status"]],
        target_status=TARGET_STATUSES[row["target_status"]],
        status_message=row["status_message"],
        step_details=[_step_from_json(s) for s in steps or []],
        output_artifact_ids=list(outputs or []),
        created_at=to_dt(row["created_us"]),
        submitted_at=to_dt(row["submitted_us"]),
        started_at=to_dt(row["started_us"]),
        completed_at=to_dt(row["completed_us"]),
        modified_at=to_dt(row["modified_us"]),
        owner=row["owner"] or "",
        created_by=row["created_by"] or "",
        rerun_of=row["rerun_of"] or "",
    )


def _executable_definition(exe: Executable) -> dict:
    return {
        "parameters": [
            {
                "name": p.name,
                "type": str(p.type),
                "default": p.default,
                "description": p.description,
                **({"enum": list(p.enum)} if p.enum else {}),
            }
            for p in exe.parameters
        ],
        "input_artifacts": [
            {"name": a.name, "kind": str(a.kind) if a.kind else None, "description": a.description}
            for a in exe.input_artifacts
        ],
        "output_artifacts": [asdict(a) | {"kind": str(a.kind)} for a in exe.output_artifacts],
        "annotations": exe.annotations,
        "spec": exe.spec,
    }


