"""Helpers of the stream tests: make executions and drive them from the test, as the
runtime would (lines through the log sink, transitions through the control plane)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path

from server.domain.models import LogStream, Status
from trainyard.v1 import (
    artifact_pb2,
    artifact_service_pb2,
    configuration_pb2,
    configuration_service_pb2,
    executable_service_pb2,
    execution_service_pb2,
)

SAMPLES = Path(__file__).resolve().parent.parent / "samples" / "executables"


def group_md(name: str) -> tuple[tuple[str, str], ...]:
    return (("ai-resource-group", name),)


def make_configuration(stubs, group: str = "default") -> str:
    """A configuration of the iris-train sample (its data set registered first)."""
    md = group_md(group)
    if group != "default":
        # The sample executables are loaded into the default group only.
        stubs.executables.CreateExecutable(
            executable_service_pb2.CreateExecutableRequest(
                definition=(SAMPLES / "iris-train.yaml").read_text()
            ),
            metadata=md,
        )
    artifact = stubs.artifacts.CreateArtifact(
        artifact_service_pb2.CreateArtifactRequest(
            artifact=artifact_pb2.Artifact(
                name="iris",
                kind=artifact_pb2.ARTIFACT_KIND_DATASET,
                url="file:///tmp/iris.csv",
                scenario_id="iris",
            )
        ),
        metadata=md,
    ).artifact
    configuration = stubs.configurations.CreateConfiguration(
        configuration_service_pb2.CreateConfigurationRequest(
            configuration=configuration_pb2.Configuration(
                name=f"cfg-{uuid.uuid4().hex[:6]}",
                executable_id="iris-train",
                scenario_id="iris",
                input_artifact_bindings=[
                    configuration_pb2.InputArtifactBinding(key="iris-data", artifact_id=artifact.id)
                ],
            )
        ),
        metadata=md,
    ).configuration
    return configuration.id


def make_execution(stubs, configuration_id: str | None = None, group: str = "default") -> str:
    configuration_id = configuration_id or make_configuration(stubs, group)
    response = stubs.executions.CreateExecution(
        execution_service_pb2.CreateExecutionRequest(configuration_id=configuration_id),
        metadata=group_md(group),
    )
    return response.execution.id


class Driver:
    """Plays the runtime's part for one execution, on the server's loop thread."""

    def __init__(self, server, execution_id: str):
        self.server = server
        self.execution_id = execution_id
        self.sink = server.running.extra["log_sink"]
        self.written = 0

    def write(self, count: int, step: str = "train", stream: LogStream = LogStream.STDOUT,
              text: Callable[[int], str] | None = None, flush: bool = True) -> None:
        """Write ``count`` lines (numbered on from what this driver wrote)."""
        start = self.written

        def _write():
            for i in range(start, start + count):
                self.sink.write(
                    self.execution_id, step, stream, text(i) if text else f"line {i + 1}"
                )
            if flush:
                return self.sink.flushed()  # awaited on the loop, as the runtime does
            return None

        self.server.run_sync(_write)
        self.written += count

    def flush(self) -> None:
        self.server.run_sync(self.sink.flushed)

    def transition(self, status: Status, cause: str = "test", message: str = "") -> None:
        plane = self.server.plane
        self.server.run_sync(plane.transition, self.execution_id, status, cause, message)

    def finish(self, status: Status = Status.COMPLETED) -> None:
        """Flush, then the final transition: what the runtime does at the end."""
        self.flush()
        self.transition(status, "test_finished")

    def stored(self) -> list[tuple]:
        store = self.server.plane.store
        return self.server.run_sync(
            store.read_log_rows, self.execution_id, limit=10_000_000
        )


def wait_for(predicate: Callable[[], object], timeout: float = 10.0, what: str = "condition"):
    """Poll ``predicate`` until it is truthy (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)
