"""Shared set-up of the stream benchmarks: a real server on a loopback port with a
fresh temporary database, one RUNNING execution, and a client in another process."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from contextlib import asynccontextmanager
from pathlib import Path

from bench.common import PYTHON, ROOT, env_with_root
from server.app import TrainyardServer, start_server
from server.config import Settings
from server.domain.models import ArtifactKind, Status
from server.log_setup import configure_logging
from server.process_tuning import tune_process

SAMPLES = ROOT / "samples" / "executables"
GROUP = "default"


@asynccontextmanager
async def bench_server():
    """A server with a fresh database in a temporary directory; stopped at the end."""
    configure_logging("console", "error")
    with tempfile.TemporaryDirectory(prefix="trainyard-bench-") as tmp:
        settings = Settings(
            address="127.0.0.1:0",
            data_dir=Path(tmp),
            executables_dir=SAMPLES,
            log_format="console",
            log_level="error",
            # The bench drives the execution itself (its lines and its final status):
            # with the local runtime the sample would run and end it on its own.
            runtime="none",
        )
        running = await start_server(settings)
        tune_process()  # as `python -m server` does
        try:
            yield running
        finally:
            await running.stop(grace=0.5)


async def running_execution(running: TrainyardServer) -> str:
    """A RUNNING execution of the iris-train sample."""
    plane = running.plane
    artifact = await plane.create_artifact(
        GROUP, name="iris", kind=ArtifactKind.DATASET, url="file:///tmp/iris.csv",
        scenario_id="iris",
    )
    configuration = await plane.create_configuration(
        GROUP, name="bench", executable_id="iris-train", scenario_id="iris", parameters=[],
        artifact_bindings=[("iris-data", artifact.id)],
    )
    execution = await plane.create_execution(GROUP, configuration.id)
    await plane.transition(execution.id, Status.RUNNING, "bench")
    return execution.id


def spawn_client(module: str, *args: str) -> subprocess.Popen:
    """Run ``python -m MODULE --client ARGS`` in another process; it prints one JSON
    line of results."""
    return subprocess.Popen(
        [PYTHON, "-m", module, "--client", *args],
        stdout=subprocess.PIPE,
        stdin=subprocess.PIPE,
        text=True,
        env=env_with_root(),
        cwd=ROOT,
    )


def _busy_ticks() -> int:
    """CPU time the whole machine spent busy, in clock ticks (/proc/stat)."""
    with open("/proc/stat") as stat:
        fields = stat.readline().split()[1:]
    # user nice system idle iowait irq softirq steal ...
    values = [int(v) for v in fields]
    return sum(values) - values[3] - values[4]


def _process_ticks(pid: int | str) -> int:
    """CPU time of a process (all its threads), in clock ticks (/proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as stat:
        after_name = stat.read().rsplit(")", 1)[1].split()
    return int(after_name[11]) + int(after_name[12])  # utime + stime


class OtherLoad:
    """How busy the machine was with work other than the benchmark's own processes
    (this one and ``pids``) while it measured: on a shared 2-core machine a figure
    taken next to other work is not a figure of the code."""

    def __init__(self, pids: list[int]):
        self.pids = ["self", *pids]
        self._began = 0.0
        self._busy = self._own = 0

    def _own_ticks(self) -> int:
        total = 0
        for pid in self.pids:
            try:
                total += _process_ticks(pid)
            except (FileNotFoundError, ProcessLookupError):
                pass
        return total

    def start(self) -> None:
        self._began = time.monotonic()
        self._busy, self._own = _busy_ticks(), self._own_ticks()

    def stop(self) -> float:
        """Cores used by other processes since ``start`` (0.0 on an idle machine)."""
        elapsed = time.monotonic() - self._began
        busy, own = _busy_ticks() - self._busy, self._own_ticks() - self._own
        return max(0.0, (busy - own) / os.sysconf("SC_CLK_TCK") / max(elapsed, 1e-9))
