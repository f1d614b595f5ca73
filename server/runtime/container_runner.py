"""The container step runner (``--runtime container``): each step runs in its image.

Podman (daemonless) is the engine; Docker is driven through the same commands where
Podman is missing. A step is one container, started detached (``run -d``), so that it
outlives the server:

* the template's ``command`` replaces the image's entrypoint, its ``args`` the image's
  command (no ``command``: the image's entrypoint runs with the args); ``env`` and
  ``workingDir`` as written; the ``TRAINYARD_*`` variables of the step;
* input artifacts are mounted read-only at their template paths; an output artifact
  path is mounted from the step's folder on this machine (collected as on the local
  runtime). An output whose last path element has a dot (``/tmp/result.txt``) is taken
  as a file: it is not mounted but copied out of the container after it exited;
* ``volumeMounts`` of the template's (or the workflow's) ``volumes``: an ``emptyDir`` is
  a folder of the step's runner folder made empty for each attempt; a ``secret``
  volume holds the secret's keys as files, mounted read-only, removed once the step
  ended;
* an unprivileged user (``--user``, default 65534:65534), no network
  (``--network none``) unless the server is told otherwise, the step's resources as
  ``--cpus`` / ``--memory`` limits;
* images from the local store (``--pull never``); with registry credentials
  (``imagePullSecrets``) a missing image is pulled with them;
* labels name the execution, step, attempt and replica, so that a later server finds
  its containers again: after a restart a running step is re-attached (its log is read
  on from where the stored lines end) and containers of executions that are gone are
  removed.

Output: the engine writes the container's stdout and stderr to a log file of its own
(Podman's ``k8s-file`` driver, in the step's runner folder; Docker's ``json-file``),
which the handle reads by offset. Every line reaches the log pipeline once; after the
container exited the file is read to its end before the step counts as ended.

Stop: the engine's stop with the grace period (SIGTERM, SIGKILL after it), then the
container is removed once its outputs were collected.

Engines on some machines need options a normal machine does not: runc where crun
refuses the host's cgroup layout, and explicit ``--ulimit nofile=N:N --ulimit
nproc=N:N`` where the engine's default limits cannot be set. :meth:`ContainerRunner.open`
probes the engine once with a throwaway container and keeps the first set of options
that works (see docs/runtime.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import os
import re
import resource
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from server.domain.models import LogStream
from server.domain.ports import Mount, StepExit, StepLaunch, StepOutput, StepStartError
from server.runtime.processes import MAX_LINE_BYTES

log = structlog.get_logger(__name__)

LABEL_EXECUTION = "trainyard.execution"
LABEL_STEP = "trainyard.step"
LABEL_ATTEMPT = "trainyard.attempt"
LABEL_REPLICA = "trainyard.replica"
DEFAULT_USER = "65534:65534"
# The default network ("api"): the step reaches this machine's loopback (where the API
# listens) at API_HOST and nothing else: slirp4netns lets the container dial the host's
# loopback, and sends every other connection from 127.0.0.1, which cannot leave it.
API_NETWORK = "slirp4netns:allow_host_loopback=true,outbound_addr=127.0.0.1"
API_HOST = "10.0.2.2"
READ_CHUNK = 1024 * 1024
POLL_MIN = 0.005  # seconds between reads of a log file that just grew ...
POLL_MAX = 0.05  # ... and of one that stays still
ENGINE_TIMEOUT = 60.0  # an engine command that takes longer than this failed
EXIT_DRAIN_TIMEOUT = 5.0  # how long the log file may take to reach its end after exit
EXIT_PAUSE = 0.02  # after the exit, an empty read this long after the last says "complete"


class EngineError(Exception):
    """The container engine is missing or unusable."""


@dataclass(slots=True)
class Engine:
    """How to call the engine: its binary, global options, options of every run."""

    binary: str
    kind: str  # "podman" | "docker"
    global_options: list[str] = field(default_factory=list)
    run_options: list[str] = field(default_factory=list)

    def argv(self, *args: str) -> list[str]:
        return [self.binary, *self.global_options, *args]


async def run_engine(
    engine: Engine, *args: str, timeout: float = ENGINE_TIMEOUT, stdin: bytes | None = None
) -> tuple[int, str, str]:
    """Run one engine command; (exit code, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        *engine.argv(*args),
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,  # a signal to the server's group does not reach it
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(stdin), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        return 124, "", f"{engine.binary} {args[0]} timed out after {timeout:g}s"
    return process.returncode, out.decode(errors="replace"), err.decode(errors="replace")


def _engine_error(err: str) -> str:
    """The engine's message, on one line, without its ``Error:`` prefix."""
    text = " ".join(line.strip() for line in err.strip().splitlines() if line.strip())
    return re.sub(r"^(Error(response from daemon)?:\s*)+", "", text) or "no message"


def container_name(launch: StepLaunch) -> str:
    """A name the engine accepts, unique per execution, step and attempt."""
    safe = re.sub(r"[^a-zA-Z0-9_.-]", "_", launch.step)[:40]
    digest = hashlib.sha256(launch.step.encode()).hexdigest()[:8]
    return f"trainyard-{launch.execution_id}-{safe}-{digest}-{launch.attempt}"


def _is_file_path(target: str) -> bool:
    return "." in target.rstrip("/").rsplit("/", 1)[-1]


Runs = list[tuple[LogStream, list[str]]]  # runs of lines of one stream, in order

# A chunk of k8s-file records that are all whole stdout lines (the common case), each
# line's text at once, by one C-level pass over the chunk: "<time> stdout F <text>".
# The time holds no space, so the first " stdout F" of such a record is its header.
_STDOUT_WHOLE = re.compile(r" stdout F(?: (.*))?$", re.M)
# Headers of the records that are not whole stdout lines: pieces ("P") and stderr. A
# step whose output is block-buffered (Python's print to a pipe, C's stdio) has a piece
# wherever a write ended mid-line, about one in a thousand records: the records between
# pieces still go in one pass.
_NOT_WHOLE_STDOUT = (b" stdout P", b" stderr ")


def _not_whole_stdout(data: bytes, end: int) -> list[int]:
    """Where each record of ``data[:end]`` (whole records) that is not a whole stdout
    line starts, in order. Found by substring search (a regular expression anchored at
    each line is several times slower); an occurrence in a line's text rather than in
    its header is left out."""
    starts = set()
    for header in _NOT_WHOLE_STDOUT:
        hit = data.find(header, 0, end)
        while hit >= 0:
            start = data.rfind(b"\n", 0, hit) + 1
            if b" " not in data[start:hit]:  # the time, then the header: this record
                starts.add(start)
            hit = data.find(header, hit + 1, end)
    return sorted(starts)


def _append(runs: Runs, stream: LogStream, texts: list[str]) -> None:
    if runs and runs[-1][0] is stream:
        runs[-1][1].extend(texts)
    else:
        runs.append((stream, texts))


class LogFile:
    """Reads a container's log file by offset, into complete lines per stream."""

    def __init__(self, path: Path, kind: str, offset: int = 0):
        self.path = path
        self.kind = kind  # "podman": k8s-file records; "docker": json-file records
        self.offset = offset
        self._rest = b""
        self._partial: dict[LogStream, bytearray] = {}

    def read(self) -> Runs:
        """The lines completed since the last read, in the order written, in runs of
        one stream."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read(READ_CHUNK)
        except FileNotFoundError:
            return []
        if not data:
            return []
        self.offset += len(data)
        data = self._rest + data
        end = data.rfind(b"\n")
        if end < 0:
            self._rest = data
            return []
        self._rest = data[end + 1 :]
        runs: Runs = []
        if self.kind == "podman":
            self._podman(data, end + 1, runs)
        else:
            for record in data[:end].split(b"\n"):
                self._record(record, runs)
        return runs

    def _podman(self, data: bytes, end: int, runs: Runs) -> None:
        """k8s-file records of ``data[:end]``: the stretches of whole stdout records in
        one pass each, the other records (and those that end a piece) one by one."""
        pos = 0
        specials = iter(_not_whole_stdout(data, end))
        special = next(specials, end)
        while pos < end:
            while special < pos:
                special = next(specials, end)
            if not self._partial:
                stop = special
                if stop > pos:
                    fast = self._whole_stdout(data[pos:stop])
                    if fast is None:  # text that looks like a header: line by line
                        for record in data[pos : stop - 1].split(b"\n"):
                            self._record(record, runs)
                    elif fast:
                        _append(runs, LogStream.STDOUT, fast)
                    pos = stop
                    continue
            newline = data.index(b"\n", pos, end)
            self._record(data[pos:newline], runs)
            pos = newline + 1

    def _record(self, record: bytes, runs: Runs) -> None:
        """One record: a whole line, or a piece of one (kept until its end comes)."""
        partial = self._partial
        if self.kind == "podman" and not partial:  # a whole line, no piece pending
            parts = record.split(b" ", 3)
            if len(parts) >= 3 and parts[2] == b"F" and len(record) < MAX_LINE_BYTES:
                stream = LogStream.STDERR if parts[1] == b"stderr" else LogStream.STDOUT
                _append(runs, stream, [_decode(parts[3] if len(parts) > 3 else b"")])
                return
        parsed = self._parse(record)
        if parsed is None:
            return
        stream, text, complete = parsed
        buffer = partial.setdefault(stream, bytearray())
        buffer += text
        while len(buffer) >= MAX_LINE_BYTES:
            _append(runs, stream, [_decode(buffer[:MAX_LINE_BYTES])])
            del buffer[:MAX_LINE_BYTES]
        if complete:
            _append(runs, stream, [_decode(buffer)])
            del partial[stream]

    @staticmethod
    def _whole_stdout(data: bytes) -> list[str] | None:
        """The texts of ``data`` (k8s-file records, each ending with a newline) when
        every record is a whole stdout line shorter than the piece size; else None."""
        text = data.decode("utf-8", errors="replace")
        if " stderr " in text or " stdout P " in text:
            return None  # stderr lines or pieces (or text that looks so): line by line
        found = _STDOUT_WHOLE.findall(text)
        if len(found) != text.count("\n"):
            return None  # what is no record of a whole stdout line: line by line
        # A line of this many characters may hold MAX_LINE_BYTES bytes: line by line.
        if found and len(data) >= MAX_LINE_BYTES and max(map(len, found)) * 4 >= MAX_LINE_BYTES:
            return None
        if "\r\n" in text:  # a carriage return before the newline is dropped
            found = [t[:-1] if t.endswith("\r") else t for t in found]
        return found

    def flush(self) -> Runs:
        """What is left in partial lines once the container ended."""
        runs = [(s, [_decode(b)]) for s, b in self._partial.items() if b]
        self._partial.clear()
        return runs

    def _parse(self, record: bytes) -> tuple[LogStream, bytes, bool] | None:
        if self.kind == "docker":
            try:
                entry = json.loads(record)
            except ValueError:
                return None
            text = entry.get("log", "").encode()
            stream = LogStream.STDERR if entry.get("stream") == "stderr" else LogStream.STDOUT
            complete = text.endswith(b"\n")
            return stream, text[:-1] if complete else text, complete
        # k8s-file: "<time> <stdout|stderr> <F|P> <text>"
        parts = record.split(b" ", 3)
        if len(parts) < 3:
            return None
        stream = LogStream.STDERR if parts[1] == b"stderr" else LogStream.STDOUT
        text = parts[3] if len(parts) > 3 else b""
        return stream, text, parts[2] != b"P"


def _decode(data: bytes | bytearray) -> str:
    if data.endswith(b"\r"):
        data = data[:-1]
    return bytes(data).decode("utf-8", errors="replace")


class ContainerHandle:
    """One step's container."""

    def __init__(
        self,
        runner: ContainerRunner,
        step: str,
        container_id: str,
        log_path: Path,
        copies: list[tuple[str, str]],
        output: StepOutput,
        *,
        offset: int = 0,
        skip: int = 0,
        secrets: Sequence[str] = (),
    ):
        self.runner = runner
        self.step = step
        self.id = container_id
        self.copies = copies  # (path in the container, path on this machine)
        self.output = output
        self.log = LogFile(log_path, runner.engine.kind, offset)
        self._skip = skip  # lines a previous server already stored
        self.secrets = list(secrets)  # folders of its secret volumes, removed at its end
        self._stopping = False
        self._exited = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()

    @property
    def state(self) -> dict[str, Any]:
        return {
            "container": self.id,
            "engine": self.runner.engine.kind,
            "log": str(self.log.path),
            "copies": [list(c) for c in self.copies],
            "step": self.step,
            "secrets": self.secrets,
        }

    @property
    def where(self) -> str:
        return f"container {self.id[:12]}"

    def stop(self, grace: float) -> None:
        if self._stopping or self._exited.is_set():
            return
        self._stopping = True
        task = asyncio.ensure_future(self._stop(grace))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _stop(self, grace: float) -> None:
        seconds = max(0, math.ceil(grace))
        code, _, err = await run_engine(
            self.runner.engine, "stop", "-t", str(seconds), self.id, timeout=seconds + 30
        )
        if code != 0 and not self._exited.is_set():
            self.output.note(f"step {self.step}: the engine's stop failed: {_engine_error(err)}")
            await run_engine(self.runner.engine, "kill", self.id)

    async def wait(self) -> StepExit:
        reader = asyncio.create_task(self._read())
        try:
            code = await self._wait_exit()
        finally:
            self._exited.set()
            try:
                await asyncio.wait_for(reader, EXIT_DRAIN_TIMEOUT + 60)
            except TimeoutError:
                self.output.note(f"step {self.step}: stopped reading its log")
        if code == 0:
            await self._copy_outputs()
        if self.secrets:  # the values stay in the store only
            await asyncio.to_thread(_remove_all, self.secrets)
        # Read to its end: the engine's log file holds the step's lines as printed,
        # secrets unmasked, so it goes before the step counts as ended (Docker's is in
        # its own folder; its removal of the container does not miss it).
        with contextlib.suppress(OSError):
            await asyncio.to_thread(self.log.path.unlink, missing_ok=True)
        # Removed in the background: the step's end (and the execution's) need not wait
        # for the engine's clean-up; a server that dies meanwhile removes it at start.
        # Not the log's path: a retry of the step may already have a new file there.
        self.runner.remove_later(self.id)
        return StepExit(code)

    async def _wait_exit(self) -> int:
        engine = self.runner.engine
        while True:
            process = await asyncio.create_subprocess_exec(
                *engine.argv(
                    "wait", *(["--interval", "20ms"] if engine.kind == "podman" else []), self.id
                ),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
            out, err = await process.communicate()
            text = out.decode().strip().splitlines()
            if process.returncode == 0 and text and text[-1].lstrip("-").isdigit():
                return int(text[-1])
            # The container is gone (removed behind our back) or the engine failed:
            # ask what it knows, else give up with the engine's message.
            status = await self.runner.inspect_exit(self.id)
            if status is not None:
                return status
            self.output.note(
                f"step {self.step}: the engine lost its container: {_engine_error(err.decode())}"
            )
            return 255

    async def _read(self) -> None:
        delay = POLL_MIN
        loop = asyncio.get_running_loop()
        drain_by: float | None = None
        while True:
            lines = await asyncio.to_thread(self.log.read)
            if lines:
                self._emit(lines)
                await self.output.room()
                delay = POLL_MIN
                continue
            if self._exited.is_set():
                # conmon writes every record before it reports the exit; one more
                # empty read after a short pause says the file is complete.
                if drain_by is None:
                    drain_by = loop.time() + EXIT_PAUSE
                elif loop.time() >= drain_by:
                    break
                await asyncio.sleep(min(delay, EXIT_PAUSE))
            else:  # the container's exit wakes the reader at once
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._exited.wait(), delay)
            delay = min(delay * 2, POLL_MAX)
        rest = self.log.flush()
        if rest:
            self._emit(rest)

    def _emit(self, runs: Runs) -> None:
        for stream, lines in runs:
            if self._skip:  # lines a previous server stored
                dropped = min(self._skip, len(lines))
                self._skip -= dropped
                lines = lines[dropped:]
            if lines:
                self.output.write(stream, lines)

    async def _copy_outputs(self) -> None:
        for inner, outer in self.copies:
            Path(outer).parent.mkdir(parents=True, exist_ok=True)
            code, _, err = await run_engine(self.runner.engine, "cp", f"{self.id}:{inner}", outer)
            if code != 0:
                self.output.note(f"step {self.step}: no {inner} to collect: {_engine_error(err)}")


class ContainerRunner:
    """Runs each step in a container of its image (the ``container`` runtime)."""

    name = "container"
    isolated = True
    # A container goes on while no server watches it: a shutdown (an upgrade, say)
    # leaves it running, and the next start re-attaches it.
    outlives_server = True

    def __init__(
        self,
        *,
        engine: str = "",
        replica_id: str = "local",
        user: str = DEFAULT_USER,
        network: str = "api",
        api_host: str = "",
    ):
        self.requested = engine  # "", "podman", "docker" or a path to one
        self.replica_id = replica_id
        self.user = user
        self.network = network
        self.api_host = api_host  # what a step dials for the API instead of the host's
        self.engine = Engine("", "")
        self._probed = False
        self._removals: set[asyncio.Task] = set()
        self._removing: set[str] = set()  # ids of containers being removed

    # ------------------------------------------------------------------ set-up

    async def open(self) -> None:
        self.engine = await self._detect()
        log.info(
            "container engine",
            binary=self.engine.binary,
            run_options=" ".join(self.engine.run_options),
        )

    async def _detect(self) -> Engine:
        names = [self.requested] if self.requested else ["podman", "docker"]
        binary = next((shutil.which(n) for n in names if shutil.which(n)), None)
        if binary is None:
            raise EngineError(
                f"no container engine found ({' or '.join(names)}); install Podman "
                f"(apt-get install podman runc) or start the server with --runtime local"
            )
        kind = "docker" if Path(binary).name.startswith("docker") else "podman"
        engine = Engine(binary, kind)
        code, out, err = await run_engine(engine, "version", "--format", "{{.Client.Version}}")
        if code != 0:
            raise EngineError(f"{binary} does not answer: {_engine_error(err)}")
        self.engine = engine
        # The probe needs an image: a local one, if there is any (no pull); else the
        # first step's image, when the engine's defaults refuse to start it.
        code, out, _ = await run_engine(engine, "images", "--format", "{{.ID}}")
        if code == 0 and out.split():
            await self._probe(out.split()[0])
        return engine

    async def _probe(self, image: str) -> None:
        """Keep the first set of run options with which the engine starts a process."""
        self._probed = True
        engine = self.engine
        for options in self._candidates(engine.kind):
            engine.run_options = options
            code, _, err = await run_engine(
                engine, "run", "--rm", "--network", "none", "--pull", "never", *options,
                "--entrypoint", "/trainyard-probe", image,
            )
            if code == 0 or not _limits_refused(err):
                # Started (the probe's command does not exist: the runtime said so).
                if "image not known" not in err and "No such image" not in err:
                    return
            log.info("container engine probe", options=" ".join(options), error=err.strip())
        engine.run_options = []

    def _candidates(self, kind: str) -> list[list[str]]:
        soft_files, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        soft_procs, _ = resource.getrlimit(resource.RLIMIT_NPROC)
        files = soft_files if soft_files != resource.RLIM_INFINITY else 1048576
        procs = soft_procs if soft_procs != resource.RLIM_INFINITY else 1048576
        limits = [
            [f"--ulimit=nofile={files}:{files}", f"--ulimit=nproc={n}:{n}"]
            for n in sorted({procs, min(procs, 32768), min(procs, 4096)}, reverse=True)
        ]
        candidates: list[list[str]] = [[]]
        runtimes = [[]]
        if kind == "podman" and shutil.which("runc"):
            runtimes.append(["--runtime", "runc"])
        for runtime in runtimes:
            if runtime:
                candidates.append(runtime)
            candidates += [runtime + lim for lim in limits]
        return candidates

    # ------------------------------------------------------------------ steps

    async def admit(self, launch: StepLaunch) -> str:
        return ""

    async def start(self, launch: StepLaunch, output: StepOutput) -> ContainerHandle:
        if not launch.image:
            raise StepStartError(f"step {launch.step}: the template names no image")
        scratch = Path(launch.scratch or launch.root + ".runner")
        await asyncio.to_thread(_prepare, scratch, launch)
        log_path = scratch / "container.log"
        base_before = len(self.engine.run_options)
        argv = ["run", "-d", *self.engine.run_options]
        name = container_name(launch)
        if self.engine.kind == "podman":
            argv += ["--replace", "--log-driver", "k8s-file", "--log-opt", f"path={log_path}"]
        else:
            await run_engine(self.engine, "rm", "-f", name)
            argv += ["--log-driver", "json-file"]
        argv += [
            "--name", name,
            "--label", f"{LABEL_EXECUTION}={launch.execution_id}",
            "--label", f"{LABEL_STEP}={launch.step}",
            "--label", f"{LABEL_ATTEMPT}={launch.attempt}",
            "--label", f"{LABEL_REPLICA}={self.replica_id}",
            "--user", self.user,
            "--network", self._network(),
            "--security-opt", "no-new-privileges",
        ]
        auth: Path | None = None
        config: list[str] = []  # options of the engine's own, before the command
        if launch.pull_auth:
            # Docker's run takes no auth file: its client reads config.json of --config.
            docker = self.engine.kind == "docker"
            auth = scratch / ("docker-config/config.json" if docker else "auth.json")
            await asyncio.to_thread(_write_private, auth, launch.pull_auth)
            if docker:
                config = ["--config", str(auth.parent)]
            argv += ["--pull", "missing", *([] if docker else ["--authfile", str(auth)])]
        else:
            argv += ["--pull", "never"]
        resources = launch.resources
        if resources.cpus:
            argv += ["--cpus", f"{resources.cpus:g}"]
        if resources.memory_bytes:
            argv += ["--memory", str(resources.memory_bytes)]
        if launch.working_dir:
            argv += ["--workdir", launch.working_dir]
        for mount in launch.mounts:
            if mount.volume:
                argv += ["--mount", _bind(mount.source, mount.target, mount.read_only)]
            elif mount.read_only:
                argv += ["--mount", _bind(mount.source, mount.target, True)]
            elif not _copied(mount):
                argv += ["--mount", _bind(mount.source, mount.target, False)]
        copies = _copies(launch)
        env = dict(launch.env)
        env["TRAINYARD_ADDRESS"] = self._api_address(launch.api_address)
        env["TRAINYARD_API_URL"] = (
            f"http://{self._api_address(launch.api_url.removeprefix('http://'))}"
            if launch.api_url
            else ""
        )
        for key, value in env.items():
            argv += ["--env", f"{key}={value}"]
        args = list(launch.args)
        if launch.command and self.engine.kind == "podman":
            argv += ["--entrypoint", json.dumps(list(launch.command))]
        elif launch.command:  # Docker's entrypoint is one word
            argv += ["--entrypoint", launch.command[0]]
            args = [*launch.command[1:], *args]
        argv += [launch.image, *args]
        try:
            code, out, err = await run_engine(self.engine, *config, *argv)
            if code != 0 and not self._probed and _limits_refused(err):
                # The engine's defaults do not work here: find options that do, once.
                await self._probe(launch.image)
                argv = ["run", "-d", *self.engine.run_options, *argv[2 + base_before:]]
                code, out, err = await run_engine(self.engine, *config, *argv)
        finally:
            if auth is not None:  # the registry credentials: the pull is over
                await asyncio.to_thread(auth.unlink, missing_ok=True)
                if config:  # Docker's folder of them
                    await asyncio.to_thread(shutil.rmtree, auth.parent, True)
        if code != 0:
            await run_engine(self.engine, "rm", "-f", name)
            raise StepStartError(
                f"step {launch.step}: cannot run image {launch.image}: {_engine_error(err)}"
            )
        container_id = out.strip().splitlines()[-1]
        if self.engine.kind == "docker":
            log_path = Path(await self._docker_log_path(container_id))
        secrets = [m.source for m in launch.mounts if m.volume == "secret"]
        return ContainerHandle(
            self, launch.step, container_id, log_path, copies, output, secrets=secrets
        )

    def _network(self) -> str:
        if self.network == "api":
            if self.engine.kind == "podman":
                return API_NETWORK
            return "none"  # Docker: no way to the host's loopback alone
        return self.network

    def _api_address(self, address: str) -> str:
        """How the step dials the API at ``address`` (host:port on this machine)."""
        if self.network == "api" and self.engine.kind == "podman":
            host = API_HOST
        elif self.network == "host":
            return address
        elif not self.api_host:
            return address
        else:
            host = self.api_host
        return f"{host}:{address.rpartition(':')[2]}"

    async def _docker_log_path(self, container_id: str) -> str:
        code, out, err = await run_engine(
            self.engine, "inspect", "--format", "{{.LogPath}}", container_id
        )
        return out.strip()

    async def inspect_exit(self, container_id: str) -> int | None:
        """The exit code of an exited container; None when it is unknown or running."""
        code, out, _ = await run_engine(
            self.engine,
            "inspect",
            "--format",
            "{{.State.Status}} {{.State.ExitCode}}",
            container_id,
        )
        parts = out.split()
        if code != 0 or len(parts) != 2 or parts[0] not in ("exited", "stopped", "dead"):
            return None
        return int(parts[1])

    async def remove(self, container_id: str, log: Path | None = None) -> None:
        """Remove the container and its log file: the file holds what the step printed
        as it printed it, secrets unmasked (the stored lines are masked)."""
        await run_engine(self.engine, "rm", "-f", "-v", container_id)
        if log is not None and self.engine.kind == "podman":  # Docker removes its own
            await asyncio.to_thread(log.unlink, missing_ok=True)

    def remove_later(self, container_id: str, log: Path | None = None) -> None:
        self._removing.add(container_id)
        task = asyncio.ensure_future(self.remove(container_id, log))
        self._removals.add(task)

        def done(task: asyncio.Task) -> None:
            self._removals.discard(task)
            self._removing.discard(container_id)

        task.add_done_callback(done)

    # ------------------------------------------------------------------ recovery

    async def reattach(
        self, state: Mapping[str, Any], output: StepOutput, lines_stored: int
    ) -> ContainerHandle | None:
        container_id = state.get("container")
        if not isinstance(container_id, str) or not await self._exists(container_id):
            return None
        copies = [(str(a), str(b)) for a, b in state.get("copies") or []]
        return ContainerHandle(
            self,
            str(state.get("step", "")),
            container_id,
            Path(str(state.get("log", ""))),
            copies,
            output,
            skip=lines_stored,
            secrets=[str(path) for path in state.get("secrets") or []],
        )

    async def adopt(self, launch: StepLaunch, output: StepOutput) -> ContainerHandle | None:
        name = container_name(launch)
        code, out, _ = await run_engine(self.engine, "inspect", "--format", "{{.Id}}", name)
        container_id = out.strip()
        if code != 0 or not container_id:
            return None  # never created
        scratch = Path(launch.scratch or launch.root + ".runner")
        log_path = scratch / "container.log"
        if self.engine.kind == "docker":
            log_path = Path(await self._docker_log_path(container_id))
        output.note(
            f"step {launch.step}: container {container_id[:12]} was started before the "
            "restart; watching it"
        )
        return ContainerHandle(
            self,
            launch.step,
            container_id,
            log_path,
            _copies(launch),
            output,
            secrets=[m.source for m in launch.mounts if m.volume == "secret"],
        )

    async def _exists(self, container_id: str) -> bool:
        code, _, _ = await run_engine(self.engine, "inspect", "--format", "{{.Id}}", container_id)
        return code == 0

    async def alive(self, state: Mapping[str, Any]) -> bool:
        container_id = state.get("container")
        if not isinstance(container_id, str):
            return False
        code, out, _ = await run_engine(
            self.engine, "inspect", "--format", "{{.State.Running}}", container_id
        )
        return code == 0 and out.strip() == "true"

    async def discard(self, state: Mapping[str, Any], grace: float) -> None:
        container_id = state.get("container")
        if isinstance(container_id, str):
            await run_engine(self.engine, "stop", "-t", str(max(0, math.ceil(grace))), container_id)
            log = state.get("log")
            await self.remove(container_id, Path(log) if isinstance(log, str) and log else None)
        secrets = state.get("secrets")
        if isinstance(secrets, list) and secrets:
            await asyncio.to_thread(_remove_all, [str(path) for path in secrets])

    async def _labelled(self, *filters: str) -> list[tuple[str, str]]:
        """(container id, execution id) of our containers that match the filters."""
        args = ["ps", "-a", "--no-trunc", "--filter", f"label={LABEL_REPLICA}={self.replica_id}"]
        for f in filters:
            args += ["--filter", f]
        args += ["--format", "{{.ID}} {{.Labels}}"]
        code, out, _ = await run_engine(self.engine, *args)
        if code != 0:
            return []
        found = []
        for line in out.splitlines():
            container_id, _, labels = line.partition(" ")
            match = re.search(rf"{re.escape(LABEL_EXECUTION)}[:=]([^ ,\]]+)", labels)
            if container_id and match:
                found.append((container_id, match.group(1)))
        return found

    async def strays(
        self, execution_ids: Sequence[str], everywhere: bool = False
    ) -> dict[str, list[str]]:
        wanted = set(execution_ids)
        found: dict[str, list[str]] = {}
        if not wanted:
            return found
        for container_id, execution_id in await self._labelled():
            if execution_id in wanted and container_id not in self._removing:
                found.setdefault(execution_id, []).append(container_id)
        return found

    async def remove_strays(self, strays: Sequence[str], grace: float) -> None:
        for container_id in strays:
            await self.discard({"container": container_id}, grace)

    async def executions_left(self) -> list[str]:
        return sorted({eid for _, eid in await self._labelled()})

    async def close(self) -> None:
        if self._removals:
            await asyncio.wait(list(self._removals), timeout=ENGINE_TIMEOUT)


def _copied(mount: Mount) -> bool:
    """Whether a mount is a file the step writes, copied out after it exited."""
    return not mount.volume and not mount.read_only and (
        mount.copy_out or _is_file_path(mount.target)
    )


def _copies(launch: StepLaunch) -> list[tuple[str, str]]:
    """(path in the container, path on this machine) of the files copied out."""
    return [(m.target, m.source) for m in launch.mounts if _copied(m)]


def _limits_refused(err: str) -> bool:
    """Whether the engine's error says the runtime could not set up the container's
    limits or cgroups (rather than, say, a missing image or command)."""
    text = err.lower()
    return any(w in text for w in ("rlimit", "cgroup", "operation not permitted"))


def _bind(source: str, target: str, read_only: bool) -> str:
    for path in (source, target):
        if "," in path:
            raise StepStartError(f"a mounted path cannot hold a comma: {path}")
    return f"type=bind,source={source},target={target}" + (",ro=true" if read_only else "")


def _prepare(scratch: Path, launch: StepLaunch) -> None:
    """The runner's folder of the step, and output folders the step's user can write."""
    scratch.mkdir(parents=True, exist_ok=True)
    for name in ("container.log", "auth.json"):
        with contextlib.suppress(FileNotFoundError):
            (scratch / name).unlink()
    shutil.rmtree(scratch / "docker-config", ignore_errors=True)  # credentials, as auth.json
    for mount in launch.mounts:
        if mount.volume:
            _fresh_volume(Path(mount.source), mount.contents if mount.volume == "secret" else None)
            continue
        if mount.read_only or mount.copy_out or _is_file_path(mount.target):
            continue
        path = Path(mount.source)
        path.mkdir(parents=True, exist_ok=True)
        os.chmod(path, 0o777)  # the step runs as another, unprivileged user


def _fresh_volume(path: Path, files: Sequence[tuple[str, str]] | None) -> None:
    """An emptyDir (``files`` None): an empty folder the step's user can write; a secret
    volume: a folder holding ``files``, which the step's user can read (it runs as
    another, unprivileged user) and nobody can change."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    if files is None:
        os.chmod(path, 0o777)
        return
    for name, text in files:
        file = path / name
        file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
    for folder, _, _ in os.walk(path):
        os.chmod(folder, 0o555)


def _remove_all(paths: Sequence[str]) -> None:
    for path in paths:
        for folder, _, _ in os.walk(path):
            with contextlib.suppress(OSError):
                os.chmod(folder, 0o700)
        shutil.rmtree(path, ignore_errors=True)


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
