"""A private Podman store for the container tests, and a test image built in it.

The store (images, containers, the engine's state) lives in a temp folder, named to
Podman through ``CONTAINERS_STORAGE_CONF`` and ``CONTAINERS_CONF`` in this process's
environment (servers started by the tests inherit it), so the tests neither touch nor
race on the machine's own store. The image is built with no registry: a busybox-static
root file system (``/bin/busybox`` and a link per applet), a shell script of "training
code" under ``/app/src``, imported with ``podman import``.

Tests take it through :func:`start_podman_or_skip`, which skips when Podman or a static
busybox is missing (fails under ``TRAINYARD_REQUIRE_SERVICES=1``). :meth:`close` removes
every container and image and the folder.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from tests.services import unavailable

IMAGE = "localhost/trainyard-test:1"

# "Training code" in the image, as SAP's samples keep theirs in /app/src: reads the
# data set at /app/data, reports a metric through the API over HTTP, writes a model.
TRAIN_SH = r"""set -e
echo "training on $(cat /app/data/*.csv | wc -l) rows as $(id -u)"
echo "greeting: $GREETING"
i=1
while [ "$i" -le "${1:-3}" ]; do echo "epoch $i"; i=$((i + 1)); done
echo "warning: to stderr" >&2
if [ -n "$TRAINYARD_API_URL" ]; then
  wget -q -O /dev/null \
    --header "Content-Type: application/json" \
    --header "ai-resource-group: $TRAINYARD_RESOURCE_GROUP" \
    --post-data "{\"executions\": [{\"executionId\": \"$TRAINYARD_EXECUTION_ID\",
      \"metrics\": [{\"name\": \"accuracy\", \"value\": 0.93}]}]}" \
    "$TRAINYARD_API_URL/trainyard.v1.MetricService/WriteMetrics"
  echo "metric reported"
fi
mkdir -p /app/model
echo "weights" > /app/model/model.txt
"""


# The test image's settings, as its import gives them (the same for every engine).
IMAGE_CHANGES = ("--change", "ENV PATH=/bin", "--change",
                 'ENTRYPOINT ["/bin/echo", "from the entrypoint:"]')


class EngineStore:
    """What the container tests ask of an engine's private store (Podman's here,
    Docker's in tests/services/docker.py): its command run against that store only,
    the containers in it, its images, and the variables of this process's environment
    that name the store to the servers the tests start (restored at the end)."""

    name = ""
    missing_image = ""  # the engine's words for an image the store lacks

    def __init__(self, root: Path, binary: str):
        self.root = root
        self.binary = binary
        self._saved: dict[str, str | None] = {}

    def env(self) -> dict[str, str]:
        """The variables that point the engine's command at this store."""
        return {}

    def __call__(
        self, *args: str, check: bool = True, timeout: float = 120, input: str | None = None
    ):
        result = subprocess.run(
            [self.binary, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            env={**os.environ, **self.env()},
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"{self.name} {' '.join(args)}: {result.stderr.strip()}")
        return result

    def ours(self) -> list[str]:
        """Ids of the containers in the store (all of them are the tests')."""
        return self("ps", "-a", "-q").stdout.split()

    def wait_empty(self, what: str = "every container to be removed", timeout: float = 30) -> None:
        """Wait until the store holds no container. A step's container is removed in the
        background after its outputs are copied, so an execution may end before it goes."""
        from tests.workflow_helpers import wait_for

        wait_for(lambda: self.ours() == [], timeout, what)

    def has_image(self, name: str) -> bool:
        return self("image", "inspect", name, check=False).returncode == 0

    def import_image(self) -> None:
        """The test image (IMAGE), imported from its root file system."""
        self("import", *IMAGE_CHANGES, str(write_image_tar(self.root / "image.tar")), IMAGE)

    def _set_env(self, key: str, value: str) -> None:
        self._saved.setdefault(key, os.environ.get(key))
        os.environ[key] = value

    def _restore_env(self) -> None:
        for key, value in self._saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved.clear()


class Podman(EngineStore):
    name = "podman"
    missing_image = "image not known"  # the engine's words for an image it lacks

    def env(self) -> dict[str, str]:
        return {
            "CONTAINERS_STORAGE_CONF": str(self.root / "storage.conf"),
            "CONTAINERS_CONF": str(self.root / "containers.conf"),
        }

    def start(self) -> Podman:
        (self.root / "storage.conf").write_text(
            "[storage]\n"
            'driver = "vfs"\n'
            f'graphroot = "{self.root / "graph"}"\n'
            f'runroot = "{self.root / "run"}"\n'
        )
        (self.root / "containers.conf").write_text(
            f'[engine]\ntmp_dir = "{self.root / "tmp"}"\nvolume_path = "{self.root / "volumes"}"\n'
        )
        for key, value in self.env().items():
            self._set_env(key, value)
        self.import_image()
        return self

    def trust_insecure(self, address: str) -> None:
        """Let the store pull from and push to the plain-HTTP registry at ``address``
        (host:port; the tests' own, on loopback), through a registries.conf of the
        store's own named in this process's environment (servers started by the tests
        inherit it)."""
        conf = self.root / "registries.conf"
        conf.write_text(f'[[registry]]\nlocation = "{address}"\ninsecure = true\n')
        self._set_env("CONTAINERS_REGISTRIES_CONF", str(conf))

    def push(self, image: str, remote: str, user: str, password: str) -> None:
        """Push ``image`` to the registry of ``remote`` (its new name there) with those
        credentials, leaving no ``remote`` in the store."""
        self("push", "--creds", f"{user}:{password}", image, remote)

    def close(self) -> None:
        self("rm", "-a", "-f", "-t", "0", check=False)
        self("rmi", "-a", "-f", check=False)
        self._restore_env()
        shutil.rmtree(self.root, ignore_errors=True)


def write_image_tar(path: Path) -> Path:
    """The test image's root file system as a tar file at ``path``: a static busybox
    with a link per applet, and the "training code" under /app/src."""
    busybox = shutil.which("busybox")
    assert busybox is not None
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        for name, mode in (("bin", 0o755), ("tmp", 0o1777), ("app", 0o755), ("app/src", 0o755)):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, mode
            tar.addfile(info)
        tar.add(busybox, "bin/busybox")
        applets = subprocess.run(
            [busybox, "--list"], capture_output=True, text=True, check=True
        ).stdout.split()
        for applet in applets:
            if applet == "busybox":
                continue
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(info)
        script = TRAIN_SH.encode()
        info = tarfile.TarInfo("app/src/train.sh")
        info.size, info.mode = len(script), 0o755
        tar.addfile(info, io.BytesIO(script))
    path.write_bytes(data.getvalue())
    return path


def static_busybox() -> bool:
    """Whether the machine has a static busybox to build the test image from."""
    busybox = shutil.which("busybox")
    return busybox is not None and "static" in subprocess.run(
        ["file", "-L", busybox], capture_output=True, text=True
    ).stdout + _static_hint(busybox)


def start_podman_or_skip() -> Podman:
    binary = shutil.which("podman")
    if binary is None:
        unavailable("Podman not installed (apt-get install podman runc busybox-static)")
    if not static_busybox():
        unavailable("no static busybox to build the test image (apt-get install busybox-static)")
    podman = Podman(Path(tempfile.mkdtemp(prefix="trainyard-podman-")), binary)
    try:
        return podman.start()
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        podman.close()
        unavailable(f"Podman does not work here: {exc}")


def _static_hint(path: str) -> str:
    """'static' when the binary has no program interpreter (no `file` command needed)."""
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16)
    except OSError:
        return ""
    return "" if b"/lib64/ld-linux" in head or b"/lib/ld-" in head else "static"
