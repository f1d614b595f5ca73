"""Helpers of the runtime tests: small WorkflowTemplates built in code, and a client
that registers them, starts executions and waits on their state with deadlines."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from client.client import TrainyardClient
from trainyard.v1 import execution_pb2

REPO_ROOT = Path(__file__).resolve().parent.parent
IMAGE = "python:3.11-slim"
SCENARIO = "runtime-tests"

STATUS = {
    name: execution_pb2.ExecutionStatus.Value(f"EXECUTION_STATUS_{name}")
    for name in ("PENDING", "RUNNING", "COMPLETED", "DEAD", "STOPPING", "STOPPED", "UNKNOWN")
}
STATUS_NAME = {v: k for k, v in STATUS.items()}
PHASE_NAME = {v: k.removeprefix("STEP_PHASE_") for k, v in execution_pb2.StepPhase.items()}
FINAL = ("COMPLETED", "DEAD", "STOPPED", "UNKNOWN")


# ------------------------------------------------------------------ templates


def workflow(
    name: str,
    templates: list[dict],
    *,
    entrypoint: str = "main",
    parameters: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
) -> str:
    """A WorkflowTemplate document (JSON, which is YAML too)."""
    return json.dumps(
        {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "WorkflowTemplate",
            "metadata": {
                "name": name,
                "annotations": annotations or {},
                "labels": {"scenarios.ai.sap.com/id": SCENARIO, "ai.sap.com/version": "1.0.0"},
            },
            "spec": {
                "entrypoint": entrypoint,
                "arguments": {
                    "parameters": [{"name": k, "default": v} for k, v in (parameters or {}).items()]
                },
                "templates": templates,
            },
        }
    )


def container(name: str, *command: str, **extra: Any) -> dict:
    return {"name": name, "container": {"image": IMAGE, "command": list(command)}, **extra}


def python(name: str, code: str, **extra: Any) -> dict:
    """A container template running ``python3 -c CODE``."""
    return container(name, "python3", "-c", code, **extra)


def script(name: str, source: str, **extra: Any) -> dict:
    return {
        "name": name,
        "script": {"image": IMAGE, "command": ["python3"], "source": source},
        **extra,
    }


def steps(name: str, *groups: list[tuple[str, str]]) -> dict:
    """A steps template: groups of (step name, template name)."""
    return {
        "name": name,
        "steps": [[{"name": s, "template": t} for s, t in group] for group in groups],
    }


def dag(name: str, *tasks: dict) -> dict:
    return {"name": name, "dag": {"tasks": list(tasks)}}


def inputs(*parameters: str, artifacts: dict[str, str] | None = None) -> dict:
    """``inputs`` of a template: parameter names, artifacts name -> path."""
    return {
        "parameters": [{"name": p} for p in parameters],
        "artifacts": [{"name": k, "path": v} for k, v in (artifacts or {}).items()],
    }


# ------------------------------------------------------------------- waiting


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "condition"):
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.2)


def live_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of a process group."""
    found = []
    for proc in psutil.process_iter(["status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(proc.pid)
        except (ProcessLookupError, psutil.Error):
            continue
    return found


# -------------------------------------------------------------------- client


class Runner:
    """A client that registers test workflows and drives executions."""

    def __init__(self, address: str, resource_group: str = "default"):
        self.client = TrainyardClient(address, resource_group=resource_group, timeout=30)

    def close(self) -> None:
        self.client.close()

    def register(self, definition: str) -> str:
        return self.client.create_executable(definition).id

    def dataset(self, url: str, name: str = "data", scenario: str = SCENARIO) -> str:
        return self.client.create_artifact(name=name, url=url, scenario_id=scenario).id

    def configure(
        self,
        executable_id: str,
        parameters: dict[str, Any] | None = None,
        artifacts: dict[str, str] | None = None,
        scenario: str = SCENARIO,
    ) -> str:
        return self.client.create_configuration(
            name=f"{executable_id}-config",
            executable_id=executable_id,
            scenario_id=scenario,
            parameters=parameters,
            artifacts=artifacts,
        ).id

    def start(self, configuration_id: str) -> str:
        return self.client.create_execution(configuration_id).id

    def get(self, execution_id: str) -> execution_pb2.Execution:
        return self.client.get_execution(execution_id)

    def status(self, execution_id: str) -> str:
        return STATUS_NAME[self.get(execution_id).status]

    def wait(self, execution_id: str, *statuses: str, timeout: float = 30.0):
        """Wait until the execution is in one of ``statuses`` (default: any final)."""
        wanted = statuses or FINAL

        def reached():
            execution = self.get(execution_id)
            return execution if STATUS_NAME[execution.status] in wanted else None

        return wait_for(reached, timeout, f"execution {execution_id} to be {'/'.join(wanted)}")

    def steps(self, execution_id: str) -> dict[str, execution_pb2.StepDetail]:
        return {s.name: s for s in self.get(execution_id).step_details}

    def logs(self, execution_id: str) -> list[tuple[str, str, str]]:
        """(step, stream, text) of every stored line."""
        streams = {1: "stdout", 2: "stderr", 3: "system"}
        return [
            (line.step, streams.get(line.stream, "?"), line.text)
            for line in self.client.list_logs(execution_id)
        ]

    def output(self, execution_id: str, step: str | None = None) -> list[str]:
        """The stdout lines of the execution (of one step)."""
        return [
            text
            for s, stream, text in self.logs(execution_id)
            if stream == "stdout" and (step is None or s == step)
        ]

    def wait_output(self, execution_id: str, text: str, timeout: float = 30.0) -> list[str]:
        return wait_for(
            lambda: text in self.output(execution_id) and self.output(execution_id),
            timeout,
            f"{text!r} in the output of {execution_id}",
        )

    def history(self, execution_id: str) -> list[tuple[str, str, str]]:
        """(to status, cause, message) of every transition."""
        return [
            (STATUS_NAME[t.to_status], t.cause, t.message) for t in self.get(execution_id).history
        ]


# -------------------------------------------------------------- server process


class ServerProcess:
    """`python -m server` in a process of its own, on a data directory that outlives it."""

    def __init__(self, tmp_path: Path):
        self.tmp_path = tmp_path
        self.data_dir = tmp_path / "data"
        self.port_file = tmp_path / "port"
        self.process: subprocess.Popen | None = None
        self.address = ""
        self.starts = 0

    def start(self, *options: str) -> ServerProcess:
        self.port_file.unlink(missing_ok=True)
        self.starts += 1
        with open(self.tmp_path / f"server-{self.starts}.log", "wb") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "server",
                    "--address",
                    "127.0.0.1:0",
                    "--port-file",
                    str(self.port_file),
                    "--data-dir",
                    str(self.data_dir),
                    "--log-format",
                    "json",
                    # The console's default port is one for the machine: a test server
                    # serves none, so that servers of parallel tests never collide on it.
                    "--no-console",
                    *options,
                ],
                cwd=REPO_ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

        def port():
            assert self.process.poll() is None, f"server exited: {self.log()}"
            return self.port_file.exists() and self.port_file.read_text().strip()

        self.address = f"127.0.0.1:{wait_for(port, 60, 'the server to serve')}"
        return self

    def log(self) -> str:
        return (self.tmp_path / f"server-{self.starts}.log").read_text(errors="replace")

    def kill(self) -> None:
        """kill -9: no shutdown code runs."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def terminate(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        assert self.process.wait(30) == 0, self.log()


def replica_process(tmp_path: Path, name: str) -> ServerProcess:
    """The server process of replica ``name``, in a folder of its own under ``tmp_path``
    (its data directory, port file and logs)."""
    folder = tmp_path / name
    folder.mkdir()
    return ServerProcess(folder)
