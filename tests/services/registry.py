"""A throwaway container registry for the image pull tests: Debian's docker-registry
(the CNCF distribution registry) on a loopback port, storing in a temporary folder of
its own, with one user whose password it checks (htpasswd, bcrypt).

It serves plain HTTP on 127.0.0.1: the Podman store of the tests is told to trust it
(:meth:`tests.services.podman.Podman.trust_insecure`). :meth:`close` stops it by its
process group and removes the folder.

Tests take it through :func:`start_registry_or_skip`, which skips when the registry or
bcrypt is missing (fails under ``TRAINYARD_REQUIRE_SERVICES=1``).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.services import log_tail, spawn_logged, unavailable

HOST = "127.0.0.1"
START_TIMEOUT = 30.0


class RegistryStartError(RuntimeError):
    """The registry did not answer in time."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class Registry:
    def __init__(self, root: Path, binary: str, user: str, password: str):
        self.root = root
        self.binary = binary
        self.user = user
        self.password = password
        self.port = 0
        self.process: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        """host:port, as image names and auth files name the registry."""
        return f"{HOST}:{self.port}"

    def start(self) -> Registry:
        import bcrypt

        hashed = bcrypt.hashpw(self.password.encode(), bcrypt.gensalt(rounds=4)).decode()
        (self.root / "htpasswd").write_text(f"{self.user}:{hashed}\n")
        for _ in range(3):  # a port chosen free may be taken before the registry binds it
            self.port = _free_port()
            # JSON is YAML: the registry reads this as its configuration file.
            config = {
                "version": 0.1,
                "log": {"level": "warn"},
                "storage": {"filesystem": {"rootdirectory": str(self.root / "data")}},
                "http": {"addr": self.address, "secret": secrets.token_hex(16)},
                "auth": {
                    "htpasswd": {"realm": "trainyard-tests", "path": str(self.root / "htpasswd")}
                },
            }
            (self.root / "config.yml").write_text(json.dumps(config))
            self.process = spawn_logged(
                [self.binary, "serve", str(self.root / "config.yml")],
                self.root / "registry.log",
            )
            if self._answers():
                return self
            self._stop()
        log = log_tail(self.root / "registry.log")
        raise RegistryStartError(f"the registry did not start: {log}")

    def _answers(self) -> bool:
        """Whether the registry came up (its API asks for credentials: 401)."""
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                return False
            try:
                urllib.request.urlopen(f"http://{self.address}/v2/", timeout=2)
            except urllib.error.HTTPError as exc:
                return exc.code == 401
            except OSError:
                time.sleep(0.1)
                continue
            return False  # answered without asking for credentials
        return False

    def _stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        self.process = None

    def close(self) -> None:
        self._stop()
        shutil.rmtree(self.root, ignore_errors=True)


def start_registry_or_skip(user: str, password: str) -> Registry:
    binary = shutil.which("docker-registry")
    if binary is None:
        unavailable("no container registry (apt-get install docker-registry)")
    try:
        import bcrypt  # noqa: F401 - the registry's password file needs its hashes
    except ImportError:
        unavailable("bcrypt is not installed (the dev extra of pyproject.toml)")
    registry = Registry(Path(tempfile.mkdtemp(prefix="trainyard-registry-")), binary, user,
                        password)
    try:
        return registry.start()
    except (RegistryStartError, OSError, subprocess.SubprocessError) as exc:
        registry.close()
        unavailable(f"the registry does not work here: {exc}")
