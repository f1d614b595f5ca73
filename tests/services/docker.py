"""A throwaway Docker daemon for the container tests that run through Docker, with the
test image built in it.

``dockerd`` (Debian's docker.io) starts in a temporary folder of its own: its API on a
unix socket there (no TCP listener), its images, containers and the containerd it
manages under that folder, no bridge, no iptables rules, the vfs storage driver (no
kernel overlay needed). ``DOCKER_HOST`` in this process's environment names its socket
while it runs, so the servers the tests start (and their ``docker`` commands) use it
and never the machine's own daemon, if there is one. The image is the Podman tests'
(tests/services/podman.py), imported with ``docker import``. :meth:`close` removes
every container, stops the daemon by its process group and removes the folder.

Tests take it through :func:`start_docker_or_skip`, which skips when Docker, root or a
static busybox is missing (fails under ``TRAINYARD_REQUIRE_SERVICES=1``).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from tests.services import log_tail, spawn_logged, unavailable
from tests.services.podman import EngineStore, static_busybox

START_TIMEOUT = 60.0


class DockerStartError(RuntimeError):
    """The daemon did not come up, or the image could not be imported."""


class Docker(EngineStore):
    name = "docker"
    missing_image = "No such image"

    def __init__(self, root: Path, daemon: str, binary: str):
        super().__init__(root, binary)
        self.daemon = daemon
        self.process: subprocess.Popen | None = None

    @property
    def host(self) -> str:
        return f"unix://{self.root / 'docker.sock'}"

    def env(self) -> dict[str, str]:
        return {"DOCKER_HOST": self.host}

    def trust_insecure(self, address: str) -> None:
        """Nothing to do: Docker pulls from a plain-HTTP registry on loopback as it is."""

    def push(self, image: str, remote: str, user: str, password: str) -> None:
        """Push ``image`` to the registry of ``remote`` with those credentials (kept in
        a client configuration of this push's only), leaving no ``remote`` behind."""
        config = Path(tempfile.mkdtemp(prefix="docker-config-", dir=self.root))
        try:
            self(
                "--config", str(config), "login", "--username", user, "--password-stdin",
                remote.split("/", 1)[0], input=password,
            )
            self("tag", image, remote)
            self("--config", str(config), "push", remote)
            self("rmi", remote)
        finally:
            shutil.rmtree(config, ignore_errors=True)

    def start(self) -> Docker:
        self.process = spawn_logged(
            [
                self.daemon,
                "--host", self.host,
                "--data-root", str(self.root / "data"),
                "--exec-root", str(self.root / "exec"),
                "--pidfile", str(self.root / "dockerd.pid"),
                "--bridge", "none",
                "--iptables=false",
                "--ip-forward=false",
                "--ip-masq=false",
                "--storage-driver", "vfs",
                "--containerd-namespace", "trainyard-tests",
                "--containerd-plugins-namespace", "trainyard-tests-plugins",
            ],
            self.root / "dockerd.log",
        )
        deadline = time.monotonic() + START_TIMEOUT
        while self("version", check=False, timeout=10).returncode != 0:
            if self.process.poll() is not None or time.monotonic() > deadline:
                log = log_tail(self.root / "dockerd.log")
                raise DockerStartError(f"dockerd did not start: {log}")
            time.sleep(0.2)
        self._set_env("DOCKER_HOST", self.host)
        self.import_image()
        return self

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            left = self.ours()
            if left:
                self("rm", "-f", *left, check=False)
            # The daemon, the containerd it started and their shims: one process group.
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        self._restore_env()
        _unmount_under(self.root)
        shutil.rmtree(self.root, ignore_errors=True)


def _unmount_under(root: Path) -> None:
    """Unmount what the daemon left mounted in its folder (its network namespace file),
    the deepest first: otherwise the folder cannot be removed."""
    prefix = f"{root}/"
    with open("/proc/self/mounts") as mounts:
        points = [line.split()[1] for line in mounts if line.split()[1].startswith(prefix)]
    for point in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", point], capture_output=True)


def start_docker_or_skip() -> Docker:
    daemon, binary = shutil.which("dockerd"), shutil.which("docker")
    if daemon is None or binary is None:
        unavailable("Docker not installed (apt-get install docker.io)")
    if os.geteuid() != 0:
        unavailable("dockerd needs root; the Docker tests run only as root")
    if not static_busybox():
        unavailable("no static busybox to build the test image (apt-get install busybox-static)")
    docker = Docker(Path(tempfile.mkdtemp(prefix="tyd-")), daemon, binary)
    try:
        return docker.start()
    except (DockerStartError, RuntimeError, OSError, subprocess.SubprocessError) as exc:
        docker.close()
        unavailable(f"Docker does not work here: {exc}")
