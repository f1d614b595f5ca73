"""The Ray step runner: each step runs as a Ray job on a Ray cluster (``--runtime ray``).

Every step becomes one job, submitted through Ray's own job submission client to the
cluster's job submission address (``--ray-address http://HEAD:8265``):

* Submission id: ``trainyard-<execution id>-<step>-<attempt>`` (the step name made
  safe for a URL, with a digest of it when it had to be changed). Ray refuses a second
  job of the same id, so a submit that is retried (after a timeout, after a restart)
  never starts the step twice: "already exists" is taken as the job being ours.
* Entrypoint: ``cd <step root> && exec python3 ... <command>``, the command under the
  wrapper of ray_streams.py (its source in the job's runtime_env); the step is RUNNING
  once Ray runs it (the job left PENDING). The step root is the step's folder
  in the execution's working directory, under the artifact root that the server and
  every node of the cluster see at the same path (``--artifact-root``), so the
  planner's paths, inputs and outputs mean the same on the node as on the server.
* Entrypoint resources (``entrypoint_num_cpus``, ``entrypoint_num_gpus``,
  ``entrypoint_memory``) from the step's resource plan. A step that no node of the
  cluster could ever hold is not submitted: :meth:`RayRunner.admit` keeps it PENDING,
  saying what it needs and what the largest node has.
* ``runtime_env.env_vars``: the step's environment (the template's env, parameters,
  secrets and the ``TRAINYARD_*`` variables), the repository on ``PYTHONPATH``, and
  Ray's stop grace (``RAY_JOB_STOP_WAIT_TIME_S``, read by the job's supervisor).

Logs: Ray merges a job's stdout and stderr into one log; the wrapper starts each
stderr line with the job's mark (a random token, in the job's metadata too, so that
a server that re-attaches reads it back), which :func:`split_rows` strips, storing the
line as stderr; every other line is stdout. The log is
followed through ``tail_job_logs`` while the job runs. Ray's tail has lost the last
lines of a job in some versions, so when the job ends its full log
(``get_job_logs``) is read and the lines the tail did not deliver are stored then. The
handle counts the rows it stored; lines longer than the log sink's limit are split
here the way the sink splits them, so that a count of stored rows is an exact offset
into the job's log. After a restart, :meth:`RayRunner.reattach` is given the number of
rows of the step already stored and skips that many: no line twice, none lost.

Stop: ``stop_job`` (Ray sends SIGTERM to the entrypoint's processes), then Ray's own
forced stop, SIGKILL ``RAY_JOB_STOP_WAIT_TIME_S`` seconds later; the step ends when the
job's status is final.

Every call of Ray's client is blocking (HTTP through ``requests``): each one runs in a
worker thread, never on the event loop. The log tail is Ray's asyncio client.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
import secrets
import shlex
import signal
import socket
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import structlog

from server.domain.logsink import MAX_LINE_CHARS
from server.domain.models import LogStream
from server.domain.ports import StepExit, StepGone, StepLaunch, StepOutput, StepStartError

log = structlog.get_logger(__name__)

# The repository root: on every step's PYTHONPATH, so that steps can import `client`.
REPO_ROOT = Path(__file__).resolve().parents[2]
SUBMISSION_PREFIX = "trainyard-"
# The entrypoint wrapper that keeps a step's stderr apart (ray_streams.py): its source
# travels in the job's runtime_env, and the job's stderr mark in its metadata.
STREAMS_SOURCE = (Path(__file__).with_name("ray_streams.py")).read_text(encoding="utf-8")
STREAMS_ENV = "TRAINYARD_RAY_STREAMS"
MARK_ENV = "TRAINYARD_RAY_STDERR_MARK"
MARK_META = "trainyard_stderr_mark"
WRAPPER = ["python3", "-I", "-S", "-c", f"import os;exec(os.environ.pop({STREAMS_ENV!r}))"]
POLL_INTERVAL = 0.1  # seconds between two status reads of a running job
START_POLL = 0.02  # ... of a job Ray has not started yet
TAIL_DRAIN = 2.0  # how long the tail may take to end once the job is final
STATUS_RETRY = 0.5  # pause before reading a status again after Ray did not answer
CLUSTER_CACHE = 2.0  # seconds a read of the cluster's resources is reused
_SAFE_ID = re.compile(r"[^A-Za-z0-9_-]")


def submission_id(execution_id: str, step: str, attempt: int = 1) -> str:
    """The Ray job id of one attempt of one step: the same for the same attempt."""
    safe = _SAFE_ID.sub("_", step)
    if safe != step:
        safe = f"{safe[:40]}-{hashlib.sha256(step.encode()).hexdigest()[:8]}"
    return f"{SUBMISSION_PREFIX}{execution_id}-{safe}-{attempt}"


Rows = list[tuple[LogStream, list[str]]]  # runs of rows of one stream, in order


def new_mark() -> str:
    """A job's stderr mark: a token of its own that no step prints by chance."""
    return f"<stderr {secrets.token_hex(8)}> "


def job_mark(info: Any) -> str:
    """The stderr mark of a job as Ray reports it ("": a job that runs unwrapped)."""
    mark = (getattr(info, "metadata", None) or {}).get(MARK_META, "")
    return mark if isinstance(mark, str) else ""


def split_rows(text: str, mark: str = "") -> Rows:
    """The rows the log sink stores for complete lines ``text`` (each line ends with a
    newline), in runs of one stream: a line that starts with the job's stderr ``mark``
    is a stderr line (the mark stripped), any other a stdout line; a carriage return
    before the newline is dropped (as for a local step), lines longer than the sink's
    limit are in pieces of it."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if "\r" in text:
        lines = [line[:-1] if line.endswith("\r") else line for line in lines]
    if not lines:
        return []
    if mark and mark in text:
        size = len(mark)
        runs: Rows = []
        stream, run = None, []
        for line in lines:
            if line.startswith(mark):
                line, kind = line[size:], LogStream.STDERR
            else:
                kind = LogStream.STDOUT
            if kind is not stream:
                run = [line]
                stream = kind
                runs.append((kind, run))
            else:
                run.append(line)
    else:
        runs = [(LogStream.STDOUT, lines)]
    return [(stream, _pieces(run)) for stream, run in runs]


def _pieces(lines: list[str]) -> list[str]:
    if max(map(len, lines)) > MAX_LINE_CHARS:
        return [
            line[i : i + MAX_LINE_CHARS]
            for line in lines
            for i in range(0, len(line) or 1, MAX_LINE_CHARS)
        ]
    return lines


def _drop(runs: Rows, count: int) -> Rows:
    """``runs`` without their first ``count`` rows."""
    kept: Rows = []
    for stream, rows in runs:
        if count >= len(rows):
            count -= len(rows)
            continue
        kept.append((stream, rows[count:] if count else rows))
        count = 0
    return kept


def _count(runs: Rows) -> int:
    return sum(len(rows) for _, rows in runs)


@dataclass(frozen=True, slots=True)
class ClusterResources:
    """What the cluster's live nodes have, as its dashboard reports them."""

    nodes: int
    cpus: float
    gpus: float
    memory_bytes: int
    largest_node_cpus: float  # a job's entrypoint runs on one node: the most it can get
    largest_node_gpus: float
    largest_node_memory_bytes: int


class RayError(Exception):
    """Ray's job server refused a call or did not answer; the message says which."""


def _unknown_job(exc: RayError) -> bool:
    text = str(exc)
    return "does not exist" in text or "404" in text


def _short(exc: BaseException) -> str:
    """Ray's client puts the server's whole traceback in its errors: keep the last
    line that says something."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip(" .")]
    return lines[-1] if lines else type(exc).__name__


class RayJobs:
    """Ray's blocking job submission client, each call in a worker thread."""

    def __init__(self, address: str):
        self.address = address
        self._client = None
        self._lock = asyncio.Lock()

    async def client(self):
        if self._client is None:
            async with self._lock:
                if self._client is None:
                    self._client = await asyncio.to_thread(self._connect)
        return self._client

    def _connect(self):
        from ray.job_submission import JobSubmissionClient

        try:
            return JobSubmissionClient(self.address)
        except Exception as exc:  # ConnectionError, RuntimeError: no dashboard there
            raise RayError(f"no Ray job server at {self.address}: {_short(exc)}") from None

    async def call(self, method: str, *args, **kwargs):
        client = await self.client()
        try:
            return await asyncio.to_thread(getattr(client, method), *args, **kwargs)
        except Exception as exc:
            raise RayError(_short(exc)) from exc

    async def tail(self, job_id: str) -> AsyncIterator[str]:
        client = await self.client()
        async for chunk in client.tail_job_logs(job_id):
            yield chunk

    async def cluster(self) -> ClusterResources:
        return await asyncio.to_thread(self._cluster)

    def _cluster(self) -> ClusterResources:
        from ray.util.state import list_nodes

        try:
            nodes = list_nodes(
                address=self.address, filters=[("state", "=", "ALIVE")], detail=True,
                raise_on_missing_output=False,
            )
        except Exception as exc:
            raise RayError(
                f"the Ray cluster at {self.address} does not answer: {_short(exc)}"
            ) from None
        totals = [n.resources_total or {} for n in nodes]

        def most(key: str) -> float:
            return max((t.get(key, 0.0) for t in totals), default=0.0)

        return ClusterResources(
            nodes=len(nodes),
            cpus=sum(t.get("CPU", 0.0) for t in totals),
            gpus=sum(t.get("GPU", 0.0) for t in totals),
            memory_bytes=int(sum(t.get("memory", 0.0) for t in totals)),
            largest_node_cpus=most("CPU"),
            largest_node_gpus=most("GPU"),
            largest_node_memory_bytes=int(most("memory")),
        )


class RayJobHandle:
    """One step's Ray job: its status, its log into the step's output, its stop."""

    def __init__(
        self,
        jobs: RayJobs,
        job_id: str,
        step: str,
        output: StepOutput,
        *,
        mark: str | None = "",
        stored_rows: int = 0,
    ):
        self.jobs = jobs
        # What starts each stderr line in the job's log ("": nothing, every line is
        # stdout; None: not known yet, read from the job's metadata before its log).
        self.mark = mark
        self.job_id = job_id
        self.step = step
        self.output = output
        self.rows = 0  # rows of the job's log seen so far (stored, or skipped as stored)
        self.skip = stored_rows  # the first rows were stored by a previous server
        self.recovered = 0  # rows only the job's full log had
        self._partial = ""  # the tail's text after its last newline
        self._stop: asyncio.Task | None = None
        self._tail: asyncio.Task | None = None
        self._final = False

    @property
    def state(self) -> dict[str, Any]:
        return {"ray_job": self.job_id, "ray_address": self.jobs.address, "step": self.step}

    @property
    def where(self) -> str:
        return f"Ray job {self.job_id}"

    # -- logs ------------------------------------------------------------------------

    async def _emit(self, runs: Rows) -> None:
        """Store the rows not stored yet, in order."""
        start = self.rows
        self.rows += _count(runs)
        if self.rows <= self.skip:
            return
        if start < self.skip:
            runs = _drop(runs, self.skip - start)
        for stream, rows in runs:
            self.output.write(stream, rows)
        await self.output.room()

    async def _learn_mark(self) -> bool:
        """The job's stderr mark from its metadata, when not known yet (a job submitted
        by another call or server); False when Ray does not say."""
        for attempt in range(5):
            if self.mark is not None:
                return True
            try:
                self.mark = job_mark(await self.jobs.call("get_job_info", self.job_id))
            except RayError as exc:
                if _unknown_job(exc) or attempt == 4:
                    return False
                await asyncio.sleep(STATUS_RETRY)
        return self.mark is not None

    async def _follow(self) -> None:
        """Ray's tail of the job's log, line by line, until Ray ends it."""
        try:
            if not await self._learn_mark():
                return  # the full log, at the end, makes up for it
            async for chunk in self.jobs.tail(self.job_id):
                text = self._partial + chunk
                end = text.rfind("\n")
                if end < 0:
                    self._partial = text
                    continue
                self._partial = text[end + 1 :]
                await self._emit(split_rows(text[: end + 1], self.mark or ""))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the tail broke off: the full log makes up for it
            log.info("ray log tail ended", job=self.job_id, error=_short(exc))

    async def _reconcile(self) -> None:
        """The job is final: store what its full log has beyond the rows seen."""
        if not await self._learn_mark():
            self.output.note(
                f"step {self.step}: Ray did not say how {self.where} marks its stderr; "
                f"every line after the {self.rows}th is stored as stdout"
            )
            self.mark = ""
        for attempt in range(5):
            try:
                full = await self.jobs.call("get_job_logs", self.job_id)
                break
            except RayError as exc:
                if attempt == 4:
                    self.output.note(
                        f"step {self.step}: the full log of {self.where} could not be read "
                        f"({exc}); lines after the {self.rows}th may be missing"
                    )
                    return
                await asyncio.sleep(STATUS_RETRY)
        if full and not full.endswith("\n"):
            full += "\n"  # the last line, unterminated
        runs = split_rows(full, self.mark or "")
        missing = _drop(runs, self.rows)
        if missing:
            self._partial = ""
            self.recovered = max(0, _count(missing) - max(0, self.skip - self.rows))
            await self._emit(missing)
            if self.recovered:
                self.output.note(
                    f"step {self.step}: {self.recovered} lines of the job's log that Ray's "
                    f"tail did not deliver were read from its full log"
                )

    # -- life ------------------------------------------------------------------------

    def begin(self) -> None:
        self._tail = asyncio.create_task(self._follow(), name=f"ray-tail-{self.job_id}")

    async def started(self) -> None:
        """Until Ray runs the job's entrypoint (or the job ended first): a step is
        RUNNING when its command runs, not when Ray queued it."""
        from ray.job_submission import JobStatus

        while True:
            try:
                status = await self.jobs.call("get_job_status", self.job_id)
            except RayError as exc:
                log.warning("ray job status not read", job=self.job_id, error=str(exc))
                await asyncio.sleep(STATUS_RETRY)
                continue
            if status != JobStatus.PENDING:
                return
            await asyncio.sleep(START_POLL)

    async def wait(self) -> StepExit:
        from ray.job_submission import JobStatus

        try:
            info = await self._until_final()
        finally:
            if self._tail is not None:
                _, late = await asyncio.wait([self._tail], timeout=TAIL_DRAIN)
                for task in late:
                    task.cancel()
                await asyncio.gather(*late, return_exceptions=True)
            if self._stop is not None and not self._stop.done():
                self._stop.cancel()
        await self._reconcile()
        code = info.driver_exit_code
        if info.status == JobStatus.SUCCEEDED:
            return StepExit(0 if code is None else code)
        message = f"Ray job {self.job_id} {str(info.status.value).lower()}"
        if info.message:  # Ray's message quotes the log's last lines
            message += ": " + (info.message.replace(self.mark, "") if self.mark else info.message)
        if info.error_type:
            message += f" ({info.error_type})"
        if info.status == JobStatus.STOPPED:
            return StepExit(
                code if code else 128 + signal.SIGTERM, signal.SIGTERM, message=message
            )
        return StepExit(code if code else 1, message=message)

    async def _until_final(self):
        while True:
            try:
                info = await self.jobs.call("get_job_info", self.job_id)
            except RayError as exc:
                if _unknown_job(exc):
                    raise
                log.warning("ray job status not read", job=self.job_id, error=str(exc))
                await asyncio.sleep(STATUS_RETRY)
                continue
            if info.status.is_terminal():
                self._final = True
                return info
            await asyncio.sleep(POLL_INTERVAL)

    def stop(self, grace: float) -> None:
        if self._stop is None and not self._final:
            self._stop = asyncio.create_task(self._stop_job(grace))

    async def _stop_job(self, grace: float) -> None:
        try:
            await self.jobs.call("stop_job", self.job_id)
        except RayError as exc:
            self.output.note(f"step {self.step}: Ray did not take the stop of {self.where}: {exc}")
            return
        await asyncio.sleep(grace + 5.0)
        if not self._final:
            self.output.note(
                f"step {self.step} still running {grace + 5.0:g}s after Ray's stop_job: "
                f"Ray's forced stop (SIGKILL) is due; waiting for the job to end"
            )


class RayRunner:
    """Runs each step as a Ray job on the cluster at ``address`` (the ``ray`` runtime)."""

    name = "ray"
    # Steps run on the server's own paths (the shared artifact root), not in an image.
    isolated = False
    outlives_server = True  # a Ray job goes on while no server watches it

    def __init__(self, address: str, *, stop_grace: float = 10.0):
        self.address = address.rstrip("/")
        self.stop_grace = stop_grace
        self.jobs = RayJobs(self.address)
        self._cluster: ClusterResources | None = None
        self._cluster_at = 0.0
        self._cluster_error = ""
        self._refresh: asyncio.Task | None = None

    async def open(self) -> None:
        try:
            await self.cluster_resources(fresh=True)
        except RayError as exc:  # steps wait (admit) until the cluster answers
            log.warning("ray cluster not reachable", address=self.address, error=str(exc))
        else:
            log.info("ray cluster", address=self.address, resources=self._cluster)

    def cluster(self) -> ClusterResources | None:
        """The cluster's resources as last read (for GetMeta; never blocks). When that
        read is old, a new one starts in the background for the next caller."""
        stale = time.monotonic() - self._cluster_at > CLUSTER_CACHE
        if stale and (self._refresh is None or self._refresh.done()):
            try:
                self._refresh = asyncio.get_running_loop().create_task(self._reread())
            except RuntimeError:  # no loop: nothing to refresh on
                pass
        return self._cluster

    async def _reread(self) -> None:
        try:
            await self.cluster_resources(fresh=True)
        except RayError as exc:
            log.warning("ray cluster not read", address=self.address, error=str(exc))

    async def cluster_resources(self, fresh: bool = False) -> ClusterResources:
        now = time.monotonic()
        if fresh or self._cluster is None or now - self._cluster_at > CLUSTER_CACHE:
            try:
                self._cluster = await self.jobs.cluster()
                self._cluster_error = ""
            except RayError as exc:
                self._cluster_error = str(exc)
                raise
            self._cluster_at = now
        return self._cluster

    async def admit(self, launch: StepLaunch) -> str:
        need = launch.resources
        if not (need.cpus or need.gpus or need.memory_bytes):
            return ""
        try:
            have = await self.cluster_resources()
        except RayError as exc:
            return str(exc)
        if need.cpus and need.cpus > have.largest_node_cpus:
            return (
                f"needs {need.cpus:g} CPUs; the largest node of the Ray cluster has "
                f"{have.largest_node_cpus:g} ({have.cpus:g} in all on {have.nodes} nodes)"
            )
        if need.gpus and need.gpus > have.largest_node_gpus:
            return (
                f"needs {need.gpus} GPUs; the largest node of the Ray cluster has "
                f"{have.largest_node_gpus:g} ({have.gpus:g} in all on {have.nodes} nodes)"
            )
        if need.memory_bytes and need.memory_bytes > have.largest_node_memory_bytes:
            return (
                f"needs {need.memory_bytes} bytes of memory; the largest node of the Ray "
                f"cluster has {have.largest_node_memory_bytes}"
            )
        return ""

    def _env(self, launch: StepLaunch) -> dict[str, str]:
        env = {k: str(v) for k, v in launch.env.items()}
        python_path = [str(REPO_ROOT)]
        if env.get("PYTHONPATH"):
            python_path.append(env["PYTHONPATH"])
        env.update(
            TRAINYARD_ADDRESS=self._api_address(launch.api_address),
            PYTHONPATH=":".join(python_path),
            PYTHONUNBUFFERED="1",
            RAY_JOB_STOP_WAIT_TIME_S=str(max(1, math.ceil(self.stop_grace))),
        )
        return env

    def _api_address(self, address: str) -> str:
        """The API's address as the nodes dial it: a server bound to every interface is
        reached on loopback from its own machine, by its host name from the others."""
        host, _, port = address.rpartition(":")
        head = urlparse(self.address).hostname or ""
        if host in ("127.0.0.1", "[::1]") and head not in ("127.0.0.1", "localhost", "::1"):
            return f"{socket.gethostname()}:{port}"
        return address

    async def start(self, launch: StepLaunch, output: StepOutput) -> RayJobHandle:
        job_id = submission_id(launch.execution_id, launch.step, launch.attempt)
        need = launch.resources
        options: dict[str, Any] = {}
        if need.cpus:
            options["entrypoint_num_cpus"] = need.cpus
        if need.gpus:
            options["entrypoint_num_gpus"] = need.gpus
        if need.memory_bytes:
            options["entrypoint_memory"] = int(need.memory_bytes)
        mark = new_mark()
        entrypoint = (
            f"cd {shlex.quote(launch.root)} && exec {shlex.join([*WRAPPER, *launch.argv])}"
        )
        env = self._env(launch)
        env.update({STREAMS_ENV: STREAMS_SOURCE, MARK_ENV: mark})
        try:
            await self.jobs.call(
                "submit_job",
                entrypoint=entrypoint,
                submission_id=job_id,
                runtime_env={"env_vars": env},
                metadata={
                    "trainyard_execution_id": launch.execution_id,
                    "trainyard_step": launch.step,
                    MARK_META: mark,
                },
                **options,
            )
        except RayError as exc:
            if "already exists" not in str(exc):
                raise StepStartError(
                    f"step {launch.step} could not be submitted to Ray at {self.address}: "
                    f"{exc}"
                ) from None
            output.note(f"step {launch.step}: {job_id} was already submitted; following it")
            mark = None  # that job's own: read from Ray by the handle
        handle = RayJobHandle(self.jobs, job_id, launch.step, output, mark=mark)
        handle.begin()
        await handle.started()
        return handle

    async def reattach(
        self, state: Mapping[str, Any], output: StepOutput, lines_stored: int
    ) -> RayJobHandle | None:
        job_id = state.get("ray_job")
        if not isinstance(job_id, str):
            return None
        mark = None  # read from Ray by the handle when Ray does not answer now
        try:
            mark = job_mark(await self.jobs.call("get_job_info", job_id))
        except RayError as exc:
            if _unknown_job(exc):
                raise StepGone(
                    f"the Ray cluster at {self.address} no longer knows job {job_id}"
                ) from None
            log.warning("ray job not read at re-attach", job=job_id, error=str(exc))
        handle = RayJobHandle(
            self.jobs, job_id, str(state.get("step", "")), output,
            mark=mark, stored_rows=lines_stored,
        )
        handle.begin()
        return handle

    async def adopt(self, launch: StepLaunch, output: StepOutput) -> RayJobHandle | None:
        job_id = submission_id(launch.execution_id, launch.step, launch.attempt)
        try:
            await self.jobs.call("get_job_info", job_id)
        except RayError as exc:
            if _unknown_job(exc):
                return None  # never submitted
            raise StepStartError(
                f"step {launch.step}: Ray at {self.address} does not answer: {exc}"
            ) from None
        output.note(f"step {launch.step}: {job_id} was submitted before the restart; following it")
        return await self.reattach({"ray_job": job_id, "step": launch.step}, output, 0)

    async def alive(self, state: Mapping[str, Any]) -> bool:
        job_id = state.get("ray_job")
        if not isinstance(job_id, str):
            return False
        try:
            status = await self.jobs.call("get_job_status", job_id)
        except RayError:
            return False
        return not status.is_terminal()

    async def discard(self, state: Mapping[str, Any], grace: float) -> None:
        job_id = state.get("ray_job")
        if not isinstance(job_id, str):
            return
        try:
            await self.jobs.call("stop_job", job_id)
        except RayError:
            return
        deadline = time.monotonic() + grace + 5.0
        while time.monotonic() < deadline:
            try:
                status = await self.jobs.call("get_job_status", job_id)
            except RayError:
                return
            if status.is_terminal():
                return
            await asyncio.sleep(POLL_INTERVAL)

    async def strays(
        self, execution_ids: Sequence[str], everywhere: bool = False
    ) -> dict[str, list[str]]:
        """Jobs of these executions that still run on the cluster."""
        wanted = set(execution_ids)
        try:
            jobs = await self.jobs.call("list_jobs")
        except RayError:
            return {}
        found: dict[str, list[str]] = {}
        for job in jobs:
            eid = (job.metadata or {}).get("trainyard_execution_id")
            if eid in wanted and job.submission_id and not job.status.is_terminal():
                found.setdefault(eid, []).append(job.submission_id)
        return found

    async def remove_strays(self, strays: Sequence[str], grace: float) -> None:
        await asyncio.gather(
            *(self.discard({"ray_job": job_id}, grace) for job_id in strays),
            return_exceptions=True,
        )

    async def executions_left(self) -> list[str]:
        """Executions with a Ray job still running on the cluster."""
        try:
            jobs = await self.jobs.call("list_jobs")
        except RayError:
            return []
        return sorted(
            {
                eid
                for job in jobs
                if (eid := (job.metadata or {}).get("trainyard_execution_id"))
                and not job.status.is_terminal()
            }
        )

    async def close(self) -> None:
        if self._refresh is not None and not self._refresh.done():
            self._refresh.cancel()
            await asyncio.gather(self._refresh, return_exceptions=True)
