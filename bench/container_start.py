"""The container runtime beside bare Podman, in the same run.

1. Create -> RUNNING of a one-step executable on ``--runtime container`` (server
   timestamps: RUNNING is written once the engine started the container), alternating
   with a bare ``podman run --rm`` of the same image and command, with the same engine
   options the server uses (those its probe found for this machine) and the same
   network. Target: p50 ratio <= 1.2.
2. Log lines/s stored from a container step (busybox ``seq``) beside the same number of
   lines from a local-process step (the host's ``seq``) on ``--runtime local``, runs
   alternating. Target: ratio >= 0.5.

Both use a private Podman store in a temp folder and an image built from busybox-static
(as the tests do).

    python -m bench.container_start [--runs 15] [--lines 200000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

from bench.common import median, trainyard_server, verdict
from client.client import TrainyardClient
from server.runtime.container_runner import API_NETWORK, ContainerRunner
from tests.services.podman import IMAGE, Podman
from trainyard.v1 import execution_pb2, log_pb2

START_TARGET = 1.2
LINES_TARGET = 0.5
FINAL = {
    execution_pb2.EXECUTION_STATUS_COMPLETED,
    execution_pb2.EXECUTION_STATUS_DEAD,
    execution_pb2.EXECUTION_STATUS_STOPPED,
    execution_pb2.EXECUTION_STATUS_UNKNOWN,
}


def executable(name: str, command: list[str]) -> str:
    return json.dumps(
        {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "WorkflowTemplate",
            "metadata": {
                "name": name,
                "labels": {"scenarios.ai.sap.com/id": "bench", "ai.sap.com/version": "1.0.0"},
            },
            "spec": {
                "entrypoint": "main",
                "templates": [{"name": "main", "container": {"image": IMAGE, "command": command}}],
            },
        }
    )


def finished(client: TrainyardClient, execution_id: str) -> execution_pb2.Execution:
    deadline = time.monotonic() + 600
    while True:
        execution = client.get_execution(execution_id)
        if execution.status in FINAL:
            if execution.status != execution_pb2.EXECUTION_STATUS_COMPLETED:
                raise RuntimeError(f"execution {execution_id}: {execution.status_message}")
            return execution
        if time.monotonic() > deadline:
            raise RuntimeError(f"execution {execution_id} did not finish")
        time.sleep(0.01)


def transition_ms(execution: execution_pb2.Execution, status: int) -> float:
    return next(t.time.ToNanoseconds() for t in execution.history if t.to_status == status) / 1e6


def create_to_running(client: TrainyardClient, configuration_id: str) -> float:
    execution = finished(client, client.create_execution(configuration_id).id)
    running = transition_ms(execution, execution_pb2.EXECUTION_STATUS_RUNNING)
    client.delete_execution(execution.id)
    return running - execution.create_time.ToNanoseconds() / 1e6


def lines_per_second(client: TrainyardClient, configuration_id: str, lines: int) -> float:
    execution = finished(client, client.create_execution(configuration_id).id)
    seconds = (
        transition_ms(execution, execution_pb2.EXECUTION_STATUS_COMPLETED)
        - transition_ms(execution, execution_pb2.EXECUTION_STATUS_RUNNING)
    ) / 1e3
    last = next(
        client.list_logs(
            execution.id, limit=1, streams=[log_pb2.LOG_STREAM_STDOUT], descending=True
        )
    )
    if last.text != str(lines):
        raise RuntimeError(f"last stored line is {last.text[:20]!r}, not {lines}")
    client.delete_execution(execution.id)
    return lines / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--lines", type=int, default=200_000)
    args = parser.parse_args()
    podman = Podman(Path(tempfile.mkdtemp(prefix="trainyard-bench-podman-")), "podman")
    podman.start()
    try:
        runner = ContainerRunner()
        asyncio.run(runner.open())
        options = runner.engine.run_options
        network = API_NETWORK if runner.engine.kind == "podman" else "none"
        print(f"engine options: {' '.join(options) or '(none)'}; network {network}")

        starts: list[float] = []
        bare: list[float] = []
        container_rates: list[float] = []
        with trainyard_server("--runtime", "container", "--no-console") as (address, _):
            with TrainyardClient(address) as client:
                client.create_executable(executable("bench-true", ["true"]))
                trivial = client.create_configuration("true", "bench-true", "bench").id
                client.create_executable(executable("bench-seq", ["seq", "1", str(args.lines)]))
                printer = client.create_configuration("seq", "bench-seq", "bench").id
                create_to_running(client, trivial)  # warm-up
                for _ in range(args.runs):
                    starts.append(create_to_running(client, trivial))
                    begin = time.perf_counter()
                    podman("run", "--rm", "--network", network, *options, IMAGE, "true")
                    bare.append((time.perf_counter() - begin) * 1000)
                for _ in range(max(3, args.runs // 3)):
                    container_rates.append(lines_per_second(client, printer, args.lines))

        local_rates: list[float] = []
        with trainyard_server("--runtime", "local", "--no-console") as (address, _):
            with TrainyardClient(address) as client:
                client.create_executable(executable("bench-seq", ["seq", "1", str(args.lines)]))
                printer = client.create_configuration("seq", "bench-seq", "bench").id
                for _ in range(max(3, args.runs // 3)):
                    local_rates.append(lines_per_second(client, printer, args.lines))
    finally:
        podman.close()

    start_ratio = median(starts) / median(bare)
    print(
        f"Create -> RUNNING (container)  p50 {median(starts):7.1f} ms   "
        f"({len(starts)} runs, {min(starts):.1f} to {max(starts):.1f})"
    )
    print(
        f"bare podman run --rm           p50 {median(bare):7.1f} ms   (baseline; "
        f"{min(bare):.1f} to {max(bare):.1f})"
    )
    print(
        f"  ratio {start_ratio:.2f}   target <= {START_TARGET}: "
        f"{verdict(start_ratio <= START_TARGET)}"
    )
    lines_ratio = median(container_rates) / median(local_rates)
    print(
        f"log lines/s, container step    {median(container_rates):10,.0f}   "
        f"({len(container_rates)} runs of {args.lines:,} lines)"
    )
    print(
        f"log lines/s, local process     {median(local_rates):10,.0f}   (baseline; "
        f"{len(local_rates)} runs)"
    )
    print(
        f"  ratio {lines_ratio:.2f}   target >= {LINES_TARGET}: "
        f"{verdict(lines_ratio >= LINES_TARGET)}"
    )


if __name__ == "__main__":
    main()
