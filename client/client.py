"""A typed Python client for the Trainyard API.

    from client.client import TrainyardClient
    with TrainyardClient("127.0.0.1:50051", resource_group="team-a") as ty:
        for exe in ty.list_executables():
            print(exe.id, exe.version)

Every call carries the client's resource group and deadline; list methods return
iterators that follow page tokens; errors are ``TrainyardError`` with the gRPC code,
the machine-readable reason and the field violations from the status details.
"""

from __future__ import annotations

import enum
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2

from client.metrics_api import MetricsCalls
from trainyard.v1 import (
    artifact_pb2,
    artifact_service_pb2,
    artifact_service_pb2_grpc,
    configuration_pb2,
    configuration_service_pb2,
    configuration_service_pb2_grpc,
    executable_pb2,
    executable_service_pb2,
    executable_service_pb2_grpc,
    execution_pb2,
    execution_service_pb2,
    execution_service_pb2_grpc,
    log_pb2,
    log_service_pb2,
    log_service_pb2_grpc,
    meta_service_pb2,
    meta_service_pb2_grpc,
    scenario_pb2,
    scenario_service_pb2,
    scenario_service_pb2_grpc,
    secret_pb2,
    secret_service_pb2,
    secret_service_pb2_grpc,
)

DEFAULT_ADDRESS = "127.0.0.1:50051"


class ArtifactKind(enum.IntEnum):
    """The kind of an artifact (trainyard.v1.ArtifactKind); ``ArtifactKind.MODEL``, or
    by name: ``ArtifactKind.parse("model")``."""

    UNSPECIFIED = artifact_pb2.ARTIFACT_KIND_UNSPECIFIED
    DATASET = artifact_pb2.ARTIFACT_KIND_DATASET
    MODEL = artifact_pb2.ARTIFACT_KIND_MODEL
    RESULTSET = artifact_pb2.ARTIFACT_KIND_RESULTSET
    OTHER = artifact_pb2.ARTIFACT_KIND_OTHER

    @classmethod
    def parse(cls, value: ArtifactKind | int | str) -> ArtifactKind:
        """A kind from itself, its number, or its name in any case (``"dataset"``,
        ``"ARTIFACT_KIND_DATASET"``)."""
        if isinstance(value, str):
            name = value.strip().upper().removeprefix("ARTIFACT_KIND_")
            try:
                return cls[name]
            except KeyError:
                known = ", ".join(k.name.lower() for k in cls if k)
                raise ValueError(f"unknown artifact kind {value!r} (known: {known})") from None
        return cls(value)


def artifact_kind(artifact: artifact_pb2.Artifact) -> ArtifactKind:
    """The kind of an artifact message as an :class:`ArtifactKind`."""
    return ArtifactKind(artifact.kind)
RESOURCE_GROUP_KEY = "ai-resource-group"
# A file holding a token (its first line), for TRAINYARD_CREDENTIALS / --credentials.
DEFAULT_CREDENTIALS = os.path.join("~", ".config", "trainyard", "token")


def _read(path: str | None) -> bytes | None:
    if not path:
        return None
    with open(os.path.expanduser(path), "rb") as handle:
        return handle.read()


def find_token(token: str | None = None, credentials: str | None = None) -> str:
    """The bearer token to send: ``token``, else TRAINYARD_TOKEN, else the first line
    of the credentials file (``credentials``, TRAINYARD_CREDENTIALS, or
    ~/.config/trainyard/token when it exists); "" for none."""
    if token:
        return token.strip()
    if os.environ.get("TRAINYARD_TOKEN"):
        return os.environ["TRAINYARD_TOKEN"].strip()
    path = credentials or os.environ.get("TRAINYARD_CREDENTIALS")
    if not path:
        path = os.path.expanduser(DEFAULT_CREDENTIALS)
        if not os.path.exists(path):
            return ""
    text = _read(path) or b""
    lines = text.decode().strip().splitlines()
    return lines[0].strip() if lines else ""


@dataclass
class FieldViolation:
    field: str
    description: str


@dataclass
class TrainyardError(Exception):
    """An RPC failed. ``reason`` and ``metadata`` come from google.rpc.ErrorInfo."""

    code: grpc.StatusCode
    message: str
    reason: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    violations: list[FieldViolation] = field(default_factory=list)

    def __str__(self) -> str:
        text = f"{self.code.name}: {self.message}"
        if self.reason:
            text += f" [{self.reason}]"
        return text

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> TrainyardError:
        code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
        message = error.details() if hasattr(error, "details") else str(error)
        result = cls(code=code, message=message or "")
        trailing = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
        for key, value in trailing or ():
            if key != "grpc-status-details-bin":
                continue
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                    info = error_details_pb2.ErrorInfo()
                    detail.Unpack(info)
                    result.reason = info.reason
                    result.metadata = dict(info.metadata)
                elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                    bad = error_details_pb2.BadRequest()
                    detail.Unpack(bad)
                    result.violations = [
                        FieldViolation(v.field, v.description) for v in bad.field_violations
                    ]
        return result


class TrainyardClient(MetricsCalls):
    """Blocking client over one gRPC channel."""

    def __init__(
        self,
        address: str | None = None,
        *,
        resource_group: str | None = None,
        timeout: float | None = 30.0,
        channel: grpc.Channel | None = None,
        token: str | None = None,
        credentials: str | None = None,
        ca: str | None = None,
        cert: str | None = None,
        key: str | None = None,
    ):
        """``token`` (else TRAINYARD_TOKEN, else the ``credentials`` file) goes in the
        ``authorization`` metadata of every call. ``ca`` (TRAINYARD_CA: a PEM bundle
        to trust) turns TLS on; ``cert`` and ``key`` (TRAINYARD_CERT, TRAINYARD_KEY)
        are the client certificate of mutual TLS."""
        self.address = address or os.environ.get("TRAINYARD_ADDRESS", DEFAULT_ADDRESS)
        self.resource_group = resource_group or os.environ.get(
            "TRAINYARD_RESOURCE_GROUP", "default"
        )
        self.timeout = timeout
        self.token = find_token(token, credentials)
        ca = ca or os.environ.get("TRAINYARD_CA")
        cert = cert or os.environ.get("TRAINYARD_CERT")
        key = key or os.environ.get("TRAINYARD_KEY")
        options = [
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            ("grpc.keepalive_time_ms", 30_000),
        ]
        if channel is None and (ca or cert):
            tls = grpc.ssl_channel_credentials(
                root_certificates=_read(ca), private_key=_read(key), certificate_chain=_read(cert)
            )
            channel = grpc.secure_channel(self.address, tls, options=options)
        self.channel = channel or grpc.insecure_channel(self.address, options=options)
        self._metadata: tuple[tuple[str, str], ...] = ((RESOURCE_GROUP_KEY, self.resource_group),)
        if self.token:
            self._metadata += (("authorization", f"Bearer {self.token}"),)
        self.scenarios = scenario_service_pb2_grpc.ScenarioServiceStub(self.channel)
        self.executables = executable_service_pb2_grpc.ExecutableServiceStub(self.channel)
        self.artifacts = artifact_service_pb2_grpc.ArtifactServiceStub(self.channel)
        self.configurations = configuration_service_pb2_grpc.ConfigurationServiceStub(self.channel)
        self.executions = execution_service_pb2_grpc.ExecutionServiceStub(self.channel)
        self.logs = log_service_pb2_grpc.LogServiceStub(self.channel)
        self.meta = meta_service_pb2_grpc.MetaServiceStub(self.channel)
        self.secrets = secret_service_pb2_grpc.SecretServiceStub(self.channel)

    # ------------------------------------------------------------------ plumbing

    def __enter__(self) -> TrainyardClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        if self._metadata[0][1] != self.resource_group:
            self._metadata = ((RESOURCE_GROUP_KEY, self.resource_group), *self._metadata[1:])
        return self._metadata

    def call(self, method: Callable[..., Any], request: Any, timeout: float | None = None) -> Any:
        """Invoke a unary method with the client's group and deadline."""
        try:
            return method(
                request,
                metadata=self.metadata,
                timeout=timeout if timeout is not None else self.timeout,
            )
        except grpc.RpcError as error:
            raise TrainyardError.from_rpc_error(error) from None

    def stream(
        self, method: Callable[..., Any], request: Any, timeout: float | None = None
    ) -> Iterator[Any]:
        """Invoke a server-streaming method; yields its messages."""
        call = method(request, metadata=self.metadata, timeout=timeout)
        try:
            yield from call
        except grpc.RpcError as error:
            raise TrainyardError.from_rpc_error(error) from None
        finally:
            call.cancel()

    def _pages(
        self, method: Callable[..., Any], request: Any, items: str, page_size: int
    ) -> Iterator[Any]:
        request.page_size = page_size
        while True:
            response = self.call(method, request)
            yield from getattr(response, items)
            if not response.next_page_token:
                return
            request.page_token = response.next_page_token

    # ----------------------------------------------------------------- meta

    def get_meta(self) -> meta_service_pb2.GetMetaResponse:
        return self.call(self.meta.GetMeta, meta_service_pb2.GetMetaRequest())

    # -------------------------------------------------------------- secrets

    def create_secret(self, name: str, data: dict[str, str]) -> secret_pb2.Secret:
        """Create a secret of the client's group; the values are never read back."""
        request = secret_service_pb2.CreateSecretRequest(name=name, data=data)
        return self.call(self.secrets.CreateSecret, request).secret

    def update_secret(self, name: str, data: dict[str, str]) -> secret_pb2.Secret:
        """Replace every value of a secret."""
        request = secret_service_pb2.UpdateSecretRequest(name=name, data=data)
        return self.call(self.secrets.UpdateSecret, request).secret

    def list_secrets(self, page_size: int = 100) -> Iterator[secret_pb2.Secret]:
        """Names, key names and times of the group's secrets."""
        request = secret_service_pb2.ListSecretsRequest()
        return self._pages(self.secrets.ListSecrets, request, "secrets", page_size)

    def delete_secret(self, name: str) -> None:
        self.call(self.secrets.DeleteSecret, secret_service_pb2.DeleteSecretRequest(name=name))

    # ------------------------------------------------------------ scenarios

    def get_scenario(self, scenario_id: str) -> scenario_pb2.Scenario:
        request = scenario_service_pb2.GetScenarioRequest(scenario_id=scenario_id)
        return self.call(self.scenarios.GetScenario, request).scenario

    def list_scenarios(self, page_size: int = 100) -> Iterator[scenario_pb2.Scenario]:
        request = scenario_service_pb2.ListScenariosRequest()
        return self._pages(self.scenarios.ListScenarios, request, "scenarios", page_size)

    # ---------------------------------------------------------- executables

    def create_executable(self, definition: str) -> executable_pb2.Executable:
        request = executable_service_pb2.CreateExecutableRequest(definition=definition)
        return self.call(self.executables.CreateExecutable, request).executable

    def get_executable(self, executable_id: str, version: str = "") -> executable_pb2.Executable:
        request = executable_service_pb2.GetExecutableRequest(
            executable_id=executable_id, version=version
        )
        return self.call(self.executables.GetExecutable, request).executable

    def list_executables(
        self, scenario_id: str = "", all_versions: bool = False, page_size: int = 100
    ) -> Iterator[executable_pb2.Executable]:
        request = executable_service_pb2.ListExecutablesRequest(
            scenario_id=scenario_id, all_versions=all_versions
        )
        return self._pages(self.executables.ListExecutables, request, "executables", page_size)

    # ------------------------------------------------------------ artifacts

    def create_artifact(
        self,
        name: str,
        url: str,
        scenario_id: str,
        kind: ArtifactKind | int | str = ArtifactKind.DATASET,
        description: str = "",
        labels: dict[str, str] | None = None,
        request_id: str = "",
    ) -> artifact_pb2.Artifact:
        request = artifact_service_pb2.CreateArtifactRequest(
            artifact=artifact_pb2.Artifact(
                name=name,
                url=url,
                scenario_id=scenario_id,
                kind=ArtifactKind.parse(kind),
                description=description,
                labels=labels or {},
            ),
            request_id=request_id,
        )
        return self.call(self.artifacts.CreateArtifact, request).artifact

    def get_artifact(self, artifact_id: str) -> artifact_pb2.Artifact:
        request = artifact_service_pb2.GetArtifactRequest(artifact_id=artifact_id)
        return self.call(self.artifacts.GetArtifact, request).artifact

    def list_artifacts(
        self,
        scenario_id: str = "",
        kind: ArtifactKind | int | str = ArtifactKind.UNSPECIFIED,
        execution_id: str = "",
        labels: dict[str, str] | None = None,
        name: str = "",
        page_size: int = 100,
    ) -> Iterator[artifact_pb2.Artifact]:
        request = artifact_service_pb2.ListArtifactsRequest(
            scenario_id=scenario_id,
            kind=ArtifactKind.parse(kind),
            execution_id=execution_id,
            labels=labels or {},
            name=name,
        )
        return self._pages(self.artifacts.ListArtifacts, request, "artifacts", page_size)

    # ------------------------------------------------------- configurations

    def create_configuration(
        self,
        name: str,
        executable_id: str,
        scenario_id: str = "",
        parameters: dict[str, Any] | None = None,
        artifacts: dict[str, str] | None = None,
        executable_version: str = "",
        request_id: str = "",
    ) -> configuration_pb2.Configuration:
        """Bind parameter values and input artifacts to an executable. The scenario is
        the executable's unless given (as the CLI does)."""
        if not scenario_id:
            scenario_id = self.get_executable(executable_id, executable_version).scenario_id
        request = configuration_service_pb2.CreateConfigurationRequest(
            configuration=configuration_pb2.Configuration(
                name=name,
                executable_id=executable_id,
                executable_version=executable_version,
                scenario_id=scenario_id,
                parameter_bindings=[
                    configuration_pb2.ParameterBinding(key=k, value=str(v))
                    for k, v in (parameters or {}).items()
                ],
                input_artifact_bindings=[
                    configuration_pb2.InputArtifactBinding(key=k, artifact_id=v)
                    for k, v in (artifacts or {}).items()
                ],
            ),
            request_id=request_id,
        )
        return self.call(self.configurations.CreateConfiguration, request).configuration

    def get_configuration(self, configuration_id: str) -> configuration_pb2.Configuration:
        request = configuration_service_pb2.GetConfigurationRequest(
            configuration_id=configuration_id
        )
        return self.call(self.configurations.GetConfiguration, request).configuration

    def list_configurations(
        self, scenario_id: str = "", executable_id: str = "", page_size: int = 100
    ) -> Iterator[configuration_pb2.Configuration]:
        request = configuration_service_pb2.ListConfigurationsRequest(
            scenario_id=scenario_id, executable_id=executable_id
        )
        return self._pages(
            self.configurations.ListConfigurations, request, "configurations", page_size
        )

    # ----------------------------------------------------------- executions

    def create_execution(
        self, configuration_id: str, request_id: str | None = None
    ) -> execution_pb2.Execution:
        """Start an execution. A request id is generated when none is given, so a
        retry of this call inside the client never starts a second execution."""
        request = execution_service_pb2.CreateExecutionRequest(
            configuration_id=configuration_id, request_id=request_id or uuid.uuid4().hex
        )
        return self.call(self.executions.CreateExecution, request).execution

    def rerun_execution(
        self, execution_id: str, request_id: str | None = None
    ) -> execution_pb2.Execution:
        """Start a re-run of an ended execution: a new execution of its configuration,
        whose ``rerun_of`` names it (``list_executions(rerun_of=...)`` lists them)."""
        request = execution_service_pb2.CreateExecutionRequest(
            rerun_of=execution_id, request_id=request_id or uuid.uuid4().hex
        )
        return self.call(self.executions.CreateExecution, request).execution

    def get_execution(self, execution_id: str) -> execution_pb2.Execution:
        request = execution_service_pb2.GetExecutionRequest(execution_id=execution_id)
        return self.call(self.executions.GetExecution, request).execution

    def list_executions(
        self,
        statuses: list[int] | None = None,
        scenario_id: str = "",
        executable_id: str = "",
        configuration_id: str = "",
        page_size: int = 100,
        rerun_of: str = "",
    ) -> Iterator[execution_pb2.Execution]:
        request = execution_service_pb2.ListExecutionsRequest(
            statuses=statuses or [],
            scenario_id=scenario_id,
            executable_id=executable_id,
            configuration_id=configuration_id,
            rerun_of=rerun_of,
        )
        return self._pages(self.executions.ListExecutions, request, "executions", page_size)

    def stop_execution(self, execution_id: str) -> execution_pb2.Execution:
        request = execution_service_pb2.StopExecutionRequest(execution_id=execution_id)
        return self.call(self.executions.StopExecution, request).execution

    def delete_execution(self, execution_id: str, keep_metrics: bool = False) -> None:
        request = execution_service_pb2.DeleteExecutionRequest(
            execution_id=execution_id, keep_metrics=keep_metrics
        )
        self.call(self.executions.DeleteExecution, request)

    def batch_stop(self, execution_ids: list[str]) -> list[execution_service_pb2.BatchItemOutcome]:
        request = execution_service_pb2.BatchStopExecutionsRequest(execution_ids=execution_ids)
        return list(self.call(self.executions.BatchStopExecutions, request).outcomes)

    def batch_delete(
        self, execution_ids: list[str], keep_metrics: bool = False
    ) -> list[execution_service_pb2.BatchItemOutcome]:
        request = execution_service_pb2.BatchDeleteExecutionsRequest(
            execution_ids=execution_ids, keep_metrics=keep_metrics
        )
        return list(self.call(self.executions.BatchDeleteExecutions, request).outcomes)

    def execution_history(self, execution_id: str) -> list[execution_pb2.StatusTransition]:
        request = execution_service_pb2.ListExecutionHistoryRequest(execution_id=execution_id)
        return list(self.call(self.executions.ListExecutionHistory, request).transitions)

    # ----------------------------------------------------------------- logs

    def list_logs(
        self,
        execution_id: str,
        after_sequence: int = 0,
        limit: int = 1000,
        steps: list[str] | None = None,
        streams: list[int] | None = None,
        descending: bool = False,
    ) -> Iterator[log_pb2.LogLine]:
        """Every stored line (paged reads), oldest first unless ``descending``."""
        request = log_service_pb2.ListLogsRequest(
            execution_id=execution_id,
            after_sequence=after_sequence,
            page_size=limit,
            steps=steps or [],
            streams=streams or [],
            order=log_service_pb2.LOG_ORDER_DESCENDING
            if descending
            else log_service_pb2.LOG_ORDER_ASCENDING,
        )
        while True:
            response = self.call(self.logs.ListLogs, request)
            yield from response.lines
            if not response.next_page_token:
                return
            request.page_token = response.next_page_token
