"""A throwaway Ray cluster for tests and benchmarks: a head node and one more worker
node, both on 127.0.0.1 only, every port chosen free, in a temporary folder of its own.

Ray binds some of its servers (dashboard, agents, metrics) to every interface unless
told otherwise, so each one gets the loopback address or a port of ours explicitly.
Each ``ray start --block`` runs in a process group of its own; stopping the cluster
signals those groups and every process descended from them (the job drivers Ray starts
in sessions of their own included), never the other Ray processes of the machine.

    with RayCluster(head_cpus=1, worker_cpus=1) as cluster:
        cluster.address        # http://127.0.0.1:PORT, the job submission address

Tests take it through ``start_ray_or_skip()`` (the ``ray_cluster`` fixture), which skips
when Ray is not installed or does not start, and fails instead when
``TRAINYARD_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from tests.services import spawn_logged, unavailable

HOST = "127.0.0.1"
WORKER_PORTS = 40  # ports for each node's worker processes


# `ray start`, except that a worker node may join a one-machine cluster (which `ray start`
# refuses under RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0) and keeps its loopback address.
_RAY_START = """
import sys
from ray._private import ray_constants, services
from ray.scripts import scripts

if "--head" not in sys.argv:
    ray_constants.ENABLE_RAY_CLUSTER = True
    services.resolve_ip_for_localhost = lambda host: host
sys.argv[0] = "ray"
scripts.main()
"""


class RayNotFound(RuntimeError):
    """The ray package (its ``ray`` command) is not installed."""


class RayStartError(RuntimeError):
    """A node did not start, or the cluster did not come up in time."""


def free_port(avoid: set[int] | frozenset[int] = frozenset()) -> int:
    """A port free on loopback right now, none of ``avoid``."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((HOST, 0))
            port = s.getsockname()[1]
        if port not in avoid:
            return port


def free_range(size: int, avoid: set[int] | frozenset[int] = frozenset()) -> tuple[int, int]:
    """``size`` consecutive ports free right now, none of ``avoid`` (a best effort:
    ephemeral ports can be taken by anyone a moment later; Ray skips those in use)."""
    for _ in range(200):
        first = free_port(avoid)
        if first + size > 65535:
            continue
        taken = False
        for port in range(first, first + size):
            if port in avoid:
                taken = True
                break
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind((HOST, port))
                except OSError:
                    taken = True
                    break
        if not taken:
            return first, first + size - 1
    raise RayStartError(f"no {size} consecutive free ports")


def ray_command() -> str:
    """The ``ray`` program next to this interpreter, or on PATH."""
    beside = Path(sys.executable).parent / "ray"
    if beside.exists():
        return str(beside)
    found = shutil.which("ray")
    if found:
        return found
    raise RayNotFound("no `ray` command beside the interpreter or on PATH")


def _summary(text: str, lines: int = 3) -> str:
    kept = [line.strip() for line in text.splitlines() if line.strip()]
    return " / ".join(kept[-lines:]) or "(no output)"


class RayCluster:
    """A head and ``workers`` more nodes. ``start()`` starts them and waits until the
    cluster's CPUs are all there; ``stop()`` ends every process they started and removes
    the folder. Both are idempotent; a context manager does the two."""

    def __init__(
        self,
        *,
        head_cpus: int = 1,
        worker_cpus: int = 1,
        workers: int = 1,
        start_timeout: float = 120.0,
    ):
        self.head_cpus = head_cpus
        self.worker_cpus = worker_cpus
        self.workers = workers
        self.start_timeout = start_timeout
        self.base_dir: Path | None = None
        self.gcs_port: int | None = None
        self.dashboard_port: int | None = None
        self._nodes: list[subprocess.Popen] = []
        self._ports: set[int] = set()  # every port handed to a node so far
        self._names: dict[int, str] = {}  # node process id -> its log's name
        self._ray = ray_command()

    @property
    def address(self) -> str:
        """The job submission (dashboard) address."""
        assert self.dashboard_port is not None, "cluster not started"
        return f"http://{HOST}:{self.dashboard_port}"

    @property
    def gcs_address(self) -> str:
        assert self.gcs_port is not None, "cluster not started"
        return f"{HOST}:{self.gcs_port}"

    @property
    def total_cpus(self) -> int:
        return self.head_cpus + self.workers * self.worker_cpus

    @property
    def temp_dir(self) -> Path:
        assert self.base_dir is not None, "cluster not started"
        return self.base_dir / "r"

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        env.pop("RAY_ADDRESS", None)
        # Ray turns a loopback --node-ip-address into the machine's address (so that
        # other machines can reach the node) unless it runs as a one-machine cluster,
        # which this switch (meant for Windows and macOS) selects: then every server
        # of the node, agents and workers included, binds 127.0.0.1.
        env.update(RAY_USAGE_STATS_ENABLED="0", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
        return env

    def _port(self) -> int:
        port = free_port(self._ports)
        self._ports.add(port)
        return port

    def _node_args(self, cpus: int) -> list[str]:
        low, high = free_range(WORKER_PORTS, self._ports)
        self._ports.update(range(low, high + 1))
        return [
            f"--node-ip-address={HOST}",
            f"--num-cpus={cpus}",
            "--num-gpus=0",
            f"--node-manager-port={self._port()}",
            f"--object-manager-port={self._port()}",
            f"--min-worker-port={low}",
            f"--max-worker-port={high}",
            f"--metrics-export-port={self._port()}",
            f"--dashboard-agent-listen-port={self._port()}",
            f"--dashboard-agent-grpc-port={self._port()}",
            f"--runtime-env-agent-port={self._port()}",
            f"--temp-dir={self.temp_dir}",
            "--disable-usage-stats",
            "--block",
        ]

    def _spawn(self, args: list[str], name: str) -> subprocess.Popen:
        assert self.base_dir is not None
        process = spawn_logged(
            [sys.executable, "-c", _RAY_START, "start", *args],
            self.base_dir / f"{name}.log",
            cwd=self.base_dir,
            env=self._env(),
        )
        self._nodes.append(process)
        self._names[process.pid] = name
        return process

    def start(self) -> RayCluster:
        if self.base_dir is not None:
            return self
        # Short: Ray's unix socket paths live under it (at most 107 bytes).
        self.base_dir = Path(tempfile.mkdtemp(prefix="tyr-", dir="/tmp"))
        atexit.register(self.stop)
        for attempt in range(3):
            try:
                self._start_nodes()
                return self
            except RayStartError as exc:
                # A port chosen free was taken before the node bound it: other ports.
                self._stop_nodes()
                if attempt == 2 or "port" not in str(exc):
                    self.stop()
                    raise
            except BaseException:
                self.stop()
                raise
        return self

    def _start_nodes(self) -> None:
        self.gcs_port = self._port()
        self.dashboard_port = self._port()
        self._spawn(
            [
                "--head",
                f"--port={self.gcs_port}",
                "--include-dashboard=true",
                f"--dashboard-host={HOST}",
                f"--dashboard-port={self.dashboard_port}",
                f"--ray-client-server-port={self._port()}",
                *self._node_args(self.head_cpus),
            ],
            "head",
        )
        self._wait_for_dashboard()
        for i in range(self.workers):
            self._spawn(
                [f"--address={self.gcs_address}", *self._node_args(self.worker_cpus)],
                f"worker-{i}",
            )
        self._wait_for_cpus()

    def _check_nodes(self) -> None:
        assert self.base_dir is not None
        for process in self._nodes:
            code = process.poll()
            if code is not None:
                name = self._names[process.pid]
                log = (self.base_dir / f"{name}.log").read_text(errors="replace")
                raise RayStartError(f"ray start ({name}) exited with {code}: {_summary(log)}")

    def _wait_for_dashboard(self) -> None:
        import urllib.error
        import urllib.request

        deadline = time.monotonic() + self.start_timeout
        last = "no answer"
        while True:
            self._check_nodes()
            try:
                with urllib.request.urlopen(f"{self.address}/api/version", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError) as exc:
                last = str(exc)
            if time.monotonic() > deadline:
                raise RayStartError(
                    f"no dashboard at {self.address} within {self.start_timeout:.0f}s: {last}"
                )
            time.sleep(0.2)

    def cluster_cpus(self) -> float:
        """The CPUs of the cluster's live nodes, as the dashboard reports them."""
        import json
        import urllib.request

        with urllib.request.urlopen(
            f"{self.address}/api/cluster_status?format=0", timeout=5
        ) as r:
            body = json.loads(r.read())
        usage = (
            body.get("data", {}).get("clusterStatus", {}).get("loadMetricsReport", {})
            .get("usage", {})
        )
        cpu = usage.get("CPU")
        return float(cpu[1]) if cpu else 0.0

    def _wait_for_cpus(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        seen = 0.0
        while True:
            self._check_nodes()
            try:
                seen = self.cluster_cpus()
            except OSError:
                pass
            if seen >= self.total_cpus:
                return
            if time.monotonic() > deadline:
                raise RayStartError(
                    f"{seen:g} of {self.total_cpus} CPUs joined within "
                    f"{self.start_timeout:.0f}s"
                )
            time.sleep(0.2)

    def processes(self) -> list[psutil.Process]:
        """Every live process this cluster started: the node groups and their
        descendants (job drivers run in sessions of their own)."""
        found: dict[int, psutil.Process] = {}
        groups = {p.pid for p in self._nodes}
        for proc in psutil.process_iter():
            try:
                if os.getpgid(proc.pid) in groups:
                    found[proc.pid] = proc
            except (ProcessLookupError, PermissionError, psutil.Error):
                continue
        for proc in list(found.values()):
            try:
                for child in proc.children(recursive=True):
                    found[child.pid] = child
            except psutil.Error:
                continue
        return list(found.values())

    def stop(self) -> None:
        """SIGTERM to this cluster's processes, SIGKILL to what is left after a grace
        period, then the folder goes."""
        atexit.unregister(self.stop)
        self._stop_nodes()
        if self.base_dir is not None:
            shutil.rmtree(self.base_dir, ignore_errors=True)
            self.base_dir = None

    def _stop_nodes(self) -> None:
        if self._nodes:
            victims = self.processes()
            for proc in victims:
                try:
                    proc.terminate()
                except psutil.Error:
                    pass
            _, alive = psutil.wait_procs(victims, timeout=5)
            # What started meanwhile (a worker in the middle of its start) goes too.
            alive = {p.pid: p for p in alive}
            alive.update({p.pid: p for p in self.processes()})
            for proc in alive.values():
                try:
                    proc.kill()
                except psutil.Error:
                    pass
            psutil.wait_procs(list(alive.values()), timeout=10)
            for node in self._nodes:
                try:
                    node.wait(5)
                except subprocess.TimeoutExpired:
                    pass
            self._nodes = []

    def __enter__(self) -> RayCluster:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


def start_ray_or_skip(**options) -> RayCluster:
    """A started cluster, or the calling test skipped (failed when services are
    required) with one line saying why."""
    try:
        import ray.job_submission  # noqa: F401
    except ImportError as exc:
        unavailable(f"Ray not installed (pip install '.[ray]'): {exc}")
    try:
        cluster = RayCluster(**options)
    except RayNotFound as exc:
        unavailable(f"Ray not installed: {exc}")
    try:
        return cluster.start()
    except RayStartError as exc:
        unavailable(f"Ray cluster did not start: {exc}")
