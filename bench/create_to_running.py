"""Create -> RUNNING latency of a trivial executable (server timestamps), beside the
bare cost of spawning the same process.

    python -m bench.create_to_running [--executions 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from bench.common import median, trainyard_server, verdict
from client.client import TrainyardClient
from trainyard.v1 import execution_pb2

TRIVIAL = {
    "apiVersion": "argoproj.io/v1alpha1",
    "kind": "WorkflowTemplate",
    "metadata": {
        "name": "bench-trivial",
        "labels": {"scenarios.ai.sap.com/id": "bench", "ai.sap.com/version": "1.0.0"},
    },
    "spec": {
        "entrypoint": "main",
        "templates": [{"name": "main", "container": {"image": "busybox", "command": ["true"]}}],
    },
}
FINAL = {
    execution_pb2.EXECUTION_STATUS_COMPLETED,
    execution_pb2.EXECUTION_STATUS_DEAD,
    execution_pb2.EXECUTION_STATUS_STOPPED,
    execution_pb2.EXECUTION_STATUS_UNKNOWN,
}


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


async def spawn_times(n: int) -> list[float]:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        process = await asyncio.create_subprocess_exec("true", start_new_session=True)
        times.append(time.perf_counter() - start)
        await process.wait()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--executions", type=int, default=200)
    parser.add_argument("--verbose", action="store_true", help="print each execution's delays")
    args = parser.parse_args()
    delays: list[float] = []
    with trainyard_server() as (address, _process):
        with TrainyardClient(address) as ty:
            ty.create_executable(json.dumps(TRIVIAL))
            config = ty.create_configuration("trivial", "bench-trivial", "bench")
            for _ in range(args.executions):
                execution = ty.create_execution(config.id)
                deadline = time.monotonic() + 30
                while execution.status not in FINAL and time.monotonic() < deadline:
                    time.sleep(0.002)
                    execution = ty.get_execution(execution.id)
                running = [
                    t
                    for t in execution.history
                    if t.to_status == execution_pb2.EXECUTION_STATUS_RUNNING
                ]
                if running:
                    created = execution.create_time.ToNanoseconds()
                    delays.append((running[0].time.ToNanoseconds() - created) / 1e6)
                    if args.verbose:
                        submitted = execution.submit_time.ToNanoseconds()
                        print(
                            f"  submit {(submitted - created) / 1e6:7.2f} ms"
                            f"  start {(running[0].time.ToNanoseconds() - submitted) / 1e6:7.2f} ms"
                        )
    spawn = [t * 1000 for t in asyncio.run(spawn_times(args.executions))]
    p50, p99 = median(delays), percentile(delays, 0.99)
    print(f"Create -> RUNNING   p50 {p50:7.2f} ms   p99 {p99:7.2f} ms   ({len(delays)} runs)")
    print(
        f"process spawn       p50 {median(spawn):7.2f} ms   p99 {percentile(spawn, 0.99):7.2f} ms"
        "   (baseline)"
    )
    print(f"  target p50 < 50 ms and p99 < 200 ms: {verdict(p50 < 50 and p99 < 200)}")


if __name__ == "__main__":
    main()
