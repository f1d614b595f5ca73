"""Domain objects of Trainyard.

Plain dataclasses: no protobuf, no peewee. The API layer converts them to and from
protobuf messages (server/api/convert.py); the store converts them to and from rows.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

from server.domain.resources import Resources

T = TypeVar("T")

# The resource group of the executables loaded from the executables directory: they
# (and their scenarios) are seen by every resource group, as SAP AI Core's executables
# are tenant-wide. No request can name it (a group starts with a letter or digit).
SHARED_GROUP = "*"


class Status(enum.StrEnum):
    """Lifecycle status of an execution (see server/domain/lifecycle.py)."""

    UNKNOWN = "UNKNOWN"
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    DEAD = "DEAD"
    STOPPING = "STOPPING"
    STOPPED = "STOPPED"


class TargetStatus(enum.StrEnum):
    """What the user asked the execution to become."""

    COMPLETED = "COMPLETED"
    STOPPED = "STOPPED"
    DELETED = "DELETED"


class ParameterType(enum.StrEnum):
    STRING = "string"
    INT = "int"
    FLOAT = "float"


class ArtifactKind(enum.StrEnum):
    DATASET = "dataset"
    MODEL = "model"
    RESULTSET = "resultset"
    OTHER = "other"


class StepPhase(enum.StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"
    STOPPED = "STOPPED"


class LogStream(enum.StrEnum):
    STDOUT = "stdout"
    STDERR = "stderr"
    SYSTEM = "system"


@dataclass(slots=True)
class Scenario:
    id: str
    resource_group: str
    name: str
    description: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    created_at: datetime | None = None
    modified_at: datetime | None = None


@dataclass(slots=True)
class ParameterSpec:
    """A typed parameter placeholder of an executable."""

    name: str
    type: ParameterType = ParameterType.STRING
    default: str | None = None
    description: str = ""
    enum: tuple[str, ...] = ()  # the values a configuration may bind; () for any


@dataclass(slots=True)
class InputArtifactSpec:
    """An input artifact placeholder: the configuration binds an artifact to it."""

    name: str
    kind: ArtifactKind | None = None  # None: any kind is accepted
    description: str = ""


@dataclass(slots=True)
class OutputArtifactSpec:
    """An output artifact the executable declares; registered after a successful run."""

    name: str
    kind: ArtifactKind = ArtifactKind.OTHER
    path: str = ""  # path inside the step's working directory, from the template
    description: str = ""
    step: str = ""  # the template that produces it
    # From the artifacts.ai.sap.com/<name>.labels annotation: the registered artifact's.
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Executable:
    """A versioned workflow template (an Argo WorkflowTemplate subset)."""

    id: str
    resource_group: str
    name: str
    version: str
    scenario_id: str
    scenario_name: str = ""
    scenario_description: str = ""
    description: str = ""
    deployable: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    parameters: list[ParameterSpec] = field(default_factory=list)
    input_artifacts: list[InputArtifactSpec] = field(default_factory=list)
    output_artifacts: list[OutputArtifactSpec] = field(default_factory=list)
    # metadata.annotations of the WorkflowTemplate, as written (``artifacts.ai.sap.com/``
    # ones describe the outputs of the templates its templateRefs run too).
    annotations: dict[str, str] = field(default_factory=dict)
    # The parsed template (spec of the WorkflowTemplate), kept as plain data for the runtime.
    spec: dict[str, Any] = field(default_factory=dict)
    # Digest of the definition: a changed definition is a new version.
    digest: str = ""
    created_at: datetime | None = None
    modified_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ExecutableStep:
    """One step of an executable's workflow, named as its executions' step details
    name it, with the template it runs and what it may use of a machine."""

    name: str
    template: str
    resource_plan: str = ""  # ai.sap.com/resourcePlan, "" when none applies
    resources: Resources = field(default_factory=Resources)
    # The steps that end before this one starts, in workflow order: its direct
    # dependencies only (a step another listed step already waits for is left out).
    after: tuple[str, ...] = ()


@dataclass(slots=True)
class Artifact:
    id: str
    resource_group: str
    name: str
    kind: ArtifactKind
    url: str
    scenario_id: str
    description: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    execution_id: str = ""  # the execution that produced it, empty for registered ones
    created_at: datetime | None = None
    modified_at: datetime | None = None
    created_by: str = ""  # the principal that registered it ("" before auth existed)


@dataclass(slots=True)
class Configuration:
    id: str
    resource_group: str
    name: str
    executable_id: str
    scenario_id: str
    executable_version: str = ""
    parameter_bindings: dict[str, str] = field(default_factory=dict)
    input_artifact_bindings: dict[str, str] = field(default_factory=dict)  # name -> artifact id
    created_at: datetime | None = None
    created_by: str = ""  # the principal that created it


@dataclass(slots=True)
class Secret:
    """A named set of key/value pairs of a resource group. ``sealed`` holds the values,
    encrypted by the server's cipher (a SecretCipher port); it never leaves the server,
    and nothing but the runtime's start of an execution opens it."""

    name: str
    resource_group: str
    keys: list[str] = field(default_factory=list)
    sealed: str = ""
    created_at: datetime | None = None
    modified_at: datetime | None = None


@dataclass(slots=True)
class StepDetail:
    name: str
    phase: StepPhase = StepPhase.PENDING
    started_at: datetime | None = None
    finished_at: datetime | None = None
    exit_code: int | None = None
    message: str = ""
    attempt: int = 1  # which try of the step, from 1 (retryStrategy)
    output_parameters: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Transition:
    """One recorded lifecycle transition of an execution."""

    seq: int
    execution_id: str
    from_status: Status | None
    to_status: Status
    at: datetime
    cause: str
    message: str = ""


@dataclass(slots=True)
class StoredEvent:
    """A change of an execution as the store recorded it: numbered in its resource
    group in the order the changes committed (the set-watch cursors' numbers).
    ``kind``: created, transition, step or deleted; ``seq``: the history entry of a
    created or transition change; ``detail``: the step's name of a step change,
    ``status,scenario_id,configuration_id,executable_id`` of a deleted execution."""

    number: int
    execution_id: str
    kind: str
    seq: int = 0
    detail: str = ""


@dataclass(slots=True)
class Execution:
    id: str
    resource_group: str
    configuration_id: str
    executable_id: str
    scenario_id: str
    status: Status = Status.PENDING
    target_status: TargetStatus = TargetStatus.COMPLETED
    status_message: str = ""
    step_details: list[StepDetail] = field(default_factory=list)
    output_artifact_ids: list[str] = field(default_factory=list)
    created_at: datetime | None = None
    submitted_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    modified_at: datetime | None = None
    history: list[Transition] = field(default_factory=list)
    # The replica that has claimed it to run it ("" when none has), runtime use.
    owner: str = ""
    created_by: str = ""  # the principal that created it
    # The ended execution this one re-runs, with its configuration ("" for a first run).
    rerun_of: str = ""


@dataclass(frozen=True, slots=True)
class Lease:
    """A replica's claim on an execution: its id and the claim's fencing token. Writes
    made under a lease are refused once another replica has taken the execution over
    (the token moved on)."""

    owner: str
    token: int


@dataclass(slots=True)
class LogLine:
    execution_id: str
    seq: int
    at: datetime
    step: str
    stream: LogStream
    text: str


@dataclass(slots=True)
class Page(Generic[T]):
    """One page of a list: the items, the opaque token of the next page, the total."""

    items: list[T]
    next_page_token: str
    total_size: int


def deleted_execution(execution_id: str, resource_group: str, detail: str) -> Execution:
    """What is known of a deleted execution from the detail of its deletion notice
    (``status,scenario_id,configuration_id,executable_id``; empty when absent)."""
    parts = detail.split(",")
    status, scenario_id, configuration_id, executable_id = (
        parts if len(parts) == 4 else ("", "", "", "")
    )
    try:
        parsed = Status(status) if status else Status.UNKNOWN
    except ValueError:
        parsed = Status.UNKNOWN
    return Execution(
        id=execution_id,
        resource_group=resource_group,
        configuration_id=configuration_id,
        executable_id=executable_id,
        scenario_id=scenario_id,
        status=parsed,
        target_status=TargetStatus.DELETED,
    )
