"""The executor: walks an execution's workflow and hands each step to a step runner.

The executor is runner-agnostic: a :class:`~server.domain.ports.StepRunner` starts,
watches and stops one step (a local process group, server/runtime/process_runner.py;
a container; a Ray job); ordering, failures, statuses, logs and outputs stay here.

An execution goes through these stages, each reported through the control plane:

1. Queued (PENDING) until one of ``max_concurrent`` slots is free, in creation order;
   ``submitted`` is stamped when a slot takes it.
2. Planned (server/runtime/plan.py): commands resolved, paths placed in the working
   directory ``<work_dir>/<execution id>``. A workflow that cannot run is DEAD here.
3. Staged: every input artifact bound in the configuration is copied into the root of
   each step that reads it, in a worker thread. A URL the runtime cannot read (another
   scheme, a missing file) makes the execution DEAD before any step runs.
4. Run: a step starts once the steps it waits for succeeded and its runner admits it
   (a runner may hold it back, saying why in the step's message), with its stdout and
   stderr going into the log sink. The first start moves the execution to RUNNING. A
   step that exits non-zero (or leaves a declared output missing) fails the execution:
   running siblings are stopped, later steps are SKIPPED and never start, and it goes
   DEAD with ``step NAME exited with code N``.
5. Collected: after every step succeeded, each declared output artifact is moved to
   ``<artifacts_dir>/<execution id>/<name>/`` (so it survives the execution's deletion),
   registered as an Artifact of the executable's kind, and listed in the execution's
   outputs. Then COMPLETED.

Stop: the runner's stop of every running step (SIGTERM, SIGKILL ``stop_grace`` seconds
later); then the exit handler runs (``{{workflow.status}}`` is ``Failed``, as Argo gives
for a stopped workflow) while the execution stays STOPPING; STOPPED once its steps ended.
Only a shutdown or a handler step's own deadline cut the handler short (a STOPPING
execution takes no second stop). A queued execution goes STOPPED at once.

Crash safety: ``<work dir>/state.json`` (replaced atomically, fsynced) holds the walk.
When a step attempt starts, the runner's state of its handle (a process group and its
leader's start time, a container id, a Ray job) and the attempt's number; when it ends,
its outcome: exit code, phase, failure (and whether a depends expression handles it),
its output parameters and result. An attempt that could not start is recorded too.
Beside the steps: the decisions of steps that ran no process (a false ``when`` or
``depends``, a refusal), each withParam loop's items once resolved, the exit handler's
workflow status once it began, a workflow deadline's failure, and when the walk began.

After a restart (``server_restart``) or another replica's lease takeover
(``replica_lost``, or ``replica_shutdown`` when that replica released its leases as it
shut down; same work dir), :meth:`Executor.recover` reads it. When the runner's
steps outlive the server (containers, Ray jobs), a RUNNING or STOPPING execution runs
on from there (:meth:`Executor._resume`): the walk is taken again from the start, each
recorded decision and ended attempt counting as it was (nothing runs twice, outputs
feed later steps, a recorded failure halts or retries as it did), each attempt that
ran is watched again (its log read on after the lines stored), the rest starts as the
walk reaches it, then the exit handler (on from where it was) and the end; a STOPPING
one stops what runs, runs its exit handler and ends STOPPED. Otherwise (a local
process's steps die with the server) survivors are ended and the records tell how the
execution ended; as a last resort it asks the runner for strays of the execution
(processes with its id in their environment). What cannot go on keeps its end: a lost
state file is UNKNOWN, a step whose job the engine lost is UNKNOWN saying so.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import re
import shlex
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import structlog

from server.domain.errors import DomainError, FailedPrecondition, NotFound, Reason
from server.domain.expressions import ExpressionError, parse_when
from server.domain.lifecycle import is_final
from server.domain.logsink import LogSink, LogsNotStored
from server.domain.models import (
    Artifact,
    Execution,
    Lease,
    LogStream,
    Status,
    StepDetail,
    StepPhase,
)
from server.domain.ports import (
    Mount,
    StepCredentials,
    StepExit,
    StepGone,
    StepHandle,
    StepLaunch,
    StepRunner,
    StepStartError,
)
from server.domain.retry import until_stored
from server.domain.secrets import Mask, Resolved
from server.domain.service import ControlPlane
from server.domain.workflow import MAX_ITEMS
from server.runtime import processes as procs
from server.runtime import staging
from server.runtime.base import ExecutionInfo, Runtime, StepProcess
from server.runtime.plan import (
    RESULT_LIMIT,
    SCRIPT_IN_STEP,
    SCRIPTS_DIR,
    WORKFLOW_FAILURES,
    WORKFLOW_STATUS,
    Failure,
    Plan,
    PlanError,
    PlannedStep,
    build_plan,
    failures_value,
    late_key,
    loop_item,
    resolve_late,
)
from server.runtime.scheduler import Scheduler
from server.runtime.staging import StagingError

log = structlog.get_logger(__name__)

STATE_FILE = "state.json"
RUNNER_DIR = "runner"  # <work dir>/runner/<step>: files of the step's runner
VOLUMES_DIR = "volumes"  # <work dir>/runner/<step>/volumes/<volume>: its template's volumes
KILL_TIMEOUT = 5.0  # how long a killed step may take to disappear
DRAIN_TIMEOUT = 2.0  # how long a runner reads a step's output after it ended
ADMIT_DELAY_MAX = 1.0  # longest pause between two admission checks of a waiting step


def reachable_address(address: str) -> str:
    """The address a local process dials to reach a server bound to ``address``."""
    host, _, port = address.rpartition(":")
    if host in ("", "0.0.0.0", "*"):
        host = "127.0.0.1"
    elif host in ("[::]", "::"):
        host = "[::1]"
    return f"{host}:{port}"


def _now_us() -> int:
    return time.time_ns() // 1000


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(eq=False)
class _Step:
    """A started step: its runner's handle."""

    step: str
    handle: StepHandle
    signalled: str = ""  # why we stopped it, if we did
    exited: bool = False
    overdue: str = ""  # it ran past its template's activeDeadlineSeconds: why it ended


@dataclass(frozen=True, slots=True)
class _Resumed:
    """A step's last attempt as the state file recorded it before a restart: under way
    (re-attached: its runner's handle and its output) or ended (its outcome in
    ``record``)."""

    attempt: int
    record: dict
    handle: StepHandle | None = None
    output: _Output | None = None
    # The attempt was being started and its runner has no trace of it: start it now.
    unstarted: bool = False


class _Output:
    """A step's output, into the execution's log sink (see StepOutput)."""

    __slots__ = ("sink", "execution_id", "step", "kept", "kept_size")

    def __init__(self, sink: LogSink, execution_id: str, step: str, keep: bool = False):
        self.sink, self.execution_id, self.step = sink, execution_id, step
        # The standard output kept for {{steps.X.outputs.result}}, up to RESULT_LIMIT.
        self.kept: list[str] | None = [] if keep else None
        self.kept_size = 0

    def write(self, stream: LogStream, lines: list[str]) -> None:
        if self.kept is not None and stream == LogStream.STDOUT:
            for line in lines:
                self.kept_size += len(line) + 1
                if self.kept_size <= RESULT_LIMIT:
                    self.kept.append(line)
        self.sink.write_lines(self.execution_id, self.step, stream, lines)

    def result(self) -> str:
        return "\n".join(self.kept or []).rstrip("\n")

    async def room(self) -> None:
        await self.sink.wait_for_room(self.execution_id)

    def backlog(self) -> bool:
        return bool(self.sink.queued(self.execution_id))

    def note(self, text: str) -> None:
        self.sink.system(self.execution_id, text, step=self.step)


async def _save_state(run: _Run) -> None:
    """state.json as the run's state is now, durably, off the loop."""
    data = procs.encode_state(run.state)
    async with run.state_lock:
        await asyncio.to_thread(procs.write_state, run.work_dir / STATE_FILE, data)


@dataclass(eq=False)
class _Run:
    """One execution held by a worker slot."""

    execution: Execution
    work_dir: Path
    plan: Plan | None = None
    details: dict[str, StepDetail] = field(default_factory=dict)
    processes: dict[str, _Step] = field(default_factory=dict)
    state: dict = field(default_factory=dict)  # what state.json holds
    # Writes of state.json, one at a time and in order (each in a thread).
    state_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    task: asyncio.Task | None = None
    lease: Lease | None = None  # this replica's claim: every write of the run carries it
    fenced: bool = False  # another replica took the execution over
    running: bool = False  # moved to RUNNING
    stopping: bool = False  # the user asked for a stop
    closing: bool = False  # the server is shutting down
    deleted: bool = False  # the execution was deleted: nothing more starts, not even the handler
    # The exit handler of a stopped execution runs: its steps start despite the stop.
    handling_stop: bool = False
    failure: str = ""  # status message of the first failure
    failure_cause: str = "step_failed"  # the history's cause of the DEAD it leads to
    # How each ended step turned out, as depends names it: Succeeded, Failed, Errored,
    # Skipped (its when was false), Omitted (its depends was false), Stopped.
    results: dict[str, str] = field(default_factory=dict)
    # Step outputs, workflow.status and workflow.failures.
    values: dict[str, str] = field(default_factory=dict)
    # What ran each attempt of a step, by (step, attempt): its handle's ``where``.
    ran_by: dict[tuple[str, int], str] = field(default_factory=dict)
    attempts: dict[str, list[StepDetail]] = field(default_factory=dict)  # earlier tries
    loops: dict[str, tuple[str, ...]] = field(default_factory=dict)  # loop -> its items
    wake: asyncio.Event = field(default_factory=asyncio.Event)  # set when it halts
    token: str = ""  # the steps' credential (TRAINYARD_TOKEN), while it runs
    # After a restart: the steps the state file says were started, by name, taken by
    # the walk as it reaches them (finished ones are not run again).
    resumed: dict[str, _Resumed] = field(default_factory=dict)
    # After a restart: the stored details of every step, attempts in order, by name.
    restored: dict[str, list[StepDetail]] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.execution.id

    @property
    def halted(self) -> bool:
        """No new step may start."""
        stopped = self.stopping and not self.handling_stop
        return stopped or self.closing or self.deleted or bool(self.failure)

    @property
    def walk(self) -> dict:
        """What state.json holds of the walk besides the steps' records: decisions
        (``decided``: step -> result, phase, message of a step that ran no process),
        withParam expansions (``loops``: loop -> its items), the exit handler's
        workflow status once it began (``handler``), a workflow deadline's failure
        (``failure``: message, cause) and when the walk began (``started``)."""
        return self.state.setdefault("walk", {})

    def detail_of(self, name: str) -> StepDetail:
        """The step's detail as stored before a restart (its earlier attempts into
        ``attempts``), or a new one."""
        tries = self.restored.get(name)
        if not tries:
            return StepDetail(name)
        if len(tries) > 1:
            self.attempts[name] = list(tries[:-1])
        return tries[-1]

    def step_details(self) -> list[StepDetail]:
        """Every step's details in workflow order, earlier attempts first."""
        return [
            d for name, last in self.details.items() for d in (*self.attempts.get(name, ()), last)
        ]


class Executor(Runtime):
    """Runs executions, each step through ``runner``."""

    def __init__(
        self,
        plane: ControlPlane,
        log_sink: LogSink,
        *,
        runner: StepRunner,
        work_dir: Path,
        artifacts_dir: Path,
        max_concurrent: int = 4,
        stop_grace: float = 10.0,
        replica_id: str = "local",
        lease_seconds: float = 10.0,
        credentials: StepCredentials | None = None,
    ):
        self.plane = plane
        # Step tokens (server/security/tokens.py) when the server checks credentials.
        self.credentials = credentials
        self.sink = log_sink
        self.runner = runner
        self.name = runner.name
        self.work_dir = Path(work_dir).resolve()
        self.artifacts_dir = Path(artifacts_dir).resolve()
        self.max_concurrent = max(1, max_concurrent)
        self.stop_grace = stop_grace
        self.replica_id = replica_id
        self.server_address = ""
        # host:port of the API over HTTP (the Connect protocol), once it is served.
        self.http_address = ""
        self._runs: dict[str, _Run] = {}
        self._background: set[asyncio.Task] = set()
        self._closed = False
        self.scheduler = Scheduler(
            plane.store,
            replica_id,
            free_slots=lambda: 0 if self._closed else self.max_concurrent - len(self._runs),
            launch=self._launch,
            reconcile=self._reconcile,
            held=lambda: {eid: run.lease for eid, run in self._runs.items()},
            fenced=self._fenced,
            lease_seconds=lease_seconds,
        )
        plane.listeners.append(self._on_event)
        self._log_reports: dict[str, asyncio.Future] = {}  # status messages of lost logs
        log_sink.loss_listeners.append(self._logs_not_stored)

    # ----------------------------------------------------------------- interface

    async def start(self, server_address: str) -> None:
        self.server_address = reachable_address(server_address)
        await asyncio.to_thread(self._make_dirs)
        await self.runner.open()
        await self.scheduler.start()
        await self._sweep()
        log.info(
            "runtime started",
            runner=self.runner.name,
            max_concurrent=self.max_concurrent,
            work_dir=str(self.work_dir),
            replica_id=self.replica_id,
        )
        self.scheduler.wake()

    async def _sweep(self) -> None:
        """Remove what the runner still holds of executions this replica does not run
        (deleted or ended while no server watched, or queued again). The jobs of an
        execution another replica has claimed are that replica's: a Ray cluster or a
        container engine may serve several replicas."""
        gone = []
        for eid in await self.runner.executions_left():
            if eid in self._runs:
                continue
            try:
                execution = await self.plane.store.get_execution(None, eid, with_history=False)
            except NotFound:
                gone.append(eid)
                continue
            if is_final(execution.status) or execution.owner in ("", self.replica_id):
                gone.append(eid)
        if not gone:
            return
        strays = await self.runner.strays(gone)
        for execution_id, found in strays.items():
            if execution_id in self._runs:
                continue
            log.info("removing leftovers", execution_id=execution_id, found=found)
            await self.runner.remove_strays(found, 0)

    def submit(self, execution_id: str) -> None:
        if not self._closed:
            self.scheduler.wake()

    async def stop(self, execution_id: str) -> None:
        run = self._runs.get(execution_id)
        if run is not None:
            self._stop_run(run)
            return
        if self._closed:
            return
        try:
            execution = await self.plane.store.get_execution(
                None, execution_id, with_history=False
            )
        except NotFound:
            return
        if execution.status != Status.STOPPING:
            return
        if execution.owner in ("", self.replica_id):
            # Unclaimed (queued): no process ever ran for it, whoever stops it ends it.
            await self._stop_unstarted(execution_id, "stopped before it started")
        # Otherwise the replica that runs it hears of the stop and ends it there.

    def _stop_run(self, run: _Run) -> None:
        if not run.stopping:
            run.stopping = True
            self._terminate(run, "stop requested")

    def _on_event(self, event) -> None:
        """A committed change announced here or by another replica: a stop of an
        execution this replica runs, or new work to claim."""
        execution = event.execution
        if event.kind == "created":
            if not self._closed:
                self.scheduler.wake()
        elif event.kind == "transition" and execution.status == Status.STOPPING:
            run = self._runs.get(execution.id)
            if run is not None:
                self._stop_run(run)
        elif event.kind == "deleted":
            run = self._runs.get(execution.id)
            if run is not None:
                run.stopping = run.deleted = True
                self._terminate(run, "execution deleted")

    def forget(self, execution_id: str) -> None:
        run = self._runs.get(execution_id)
        if run is not None:
            run.stopping = run.deleted = True
            self._terminate(run, "execution deleted")
        self.sink.forget(execution_id)
        self._spawn_background(asyncio.to_thread(staging.remove_dir, self.work_dir / execution_id))

    async def inspect(self, execution_id: str) -> ExecutionInfo | None:
        run = self._runs.get(execution_id)
        if run is None:
            position = await self.plane.store.queue_position(execution_id)
            if position is None:
                return None
            return ExecutionInfo(execution_id, "queued", queue_position=position)
        return ExecutionInfo(
            execution_id,
            "active",
            work_dir=str(run.work_dir),
            processes=tuple(
                StepProcess(p.step, p.handle.state["pid"], p.handle.state["pgid"])
                for p in run.processes.values()
                if not p.exited and "pgid" in p.handle.state
            ),
        )

    async def close(self) -> None:
        self._closed = True
        if self._on_event in self.plane.listeners:
            self.plane.listeners.remove(self._on_event)
        await self.scheduler.close()
        runs = list(self._runs.values())
        for run in runs:
            run.closing = True
            if not self.runner.outlives_server:
                self._terminate(run, "server shutting down")
        tasks = [r.task for r in runs if r.task is not None]
        if tasks and self.runner.outlives_server:
            # The steps go on without us (Ray jobs): the next start re-attaches.
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks, timeout=5.0)
        elif tasks:
            _, late = await asyncio.wait(
                tasks, timeout=self.stop_grace + KILL_TIMEOUT + DRAIN_TIMEOUT
            )
            for task in late:
                task.cancel()
            await asyncio.gather(
                *(
                    self.runner.discard(p.handle.state, 0)
                    for run in runs
                    for p in run.processes.values()
                    if not p.exited
                ),
                return_exceptions=True,
            )
            if late:
                await asyncio.wait(late, timeout=1.0)
        if self._background:
            await asyncio.wait(list(self._background), timeout=5.0)
        await self.runner.close()
        log.info("runtime closed", interrupted=len(runs))

    # ---------------------------------------------------------------- scheduling

    def _make_dirs(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.artifacts_dir.mkdir(parents=True, exist_ok=True)

    def _spawn_background(self, coro) -> asyncio.Future:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    def _launch(self, execution: Execution, lease: Lease) -> None:
        """The scheduler claimed ``execution`` for this replica: run it."""
        run = _Run(execution, self.work_dir / execution.id, lease=lease)
        if self.credentials is not None:
            run.token = self.credentials.issue(
                execution.id, execution.resource_group, execution.configuration_id
            )
        self._runs[execution.id] = run
        run.task = asyncio.create_task(self._execute(run), name=f"execution-{execution.id}")
        run.task.add_done_callback(partial(self._run_done, run))

    def _fenced(self, execution_id: str) -> None:
        """Another replica took the execution over: stop its processes here and write
        nothing more (the writes would be refused anyway)."""
        run = self._runs.get(execution_id)
        if run is not None and not run.fenced:
            run.fenced = True
            run.closing = True
            self._terminate(run, "lease lost to another replica")

    def _revoke_token(self, run: _Run) -> None:
        """The execution's processes have ended: its steps' token goes before the final
        status is written, so a client that sees that status finds the token refused."""
        if self.credentials is not None:
            self.credentials.revoke(run.id)

    def _run_done(self, run: _Run, task: asyncio.Task) -> None:
        self._runs.pop(run.id, None)
        self._revoke_token(run)
        if not task.cancelled() and task.exception() is not None:
            log.error("execution task failed", execution_id=run.id, exc_info=task.exception())
        self.scheduler.wake()

    async def _stop_unstarted(self, execution_id: str, message: str) -> None:
        """A stop of an execution no process ever ran for: STOPPING -> STOPPED now."""
        try:
            execution = await self.plane.store.get_execution(
                None, execution_id, with_history=False
            )
        except NotFound:
            return
        details = [
            _ended(d, StepPhase.SKIPPED, "not started: the execution was stopped")
            for d in execution.step_details
        ]
        await self.sink.open(execution_id)
        self.sink.system(execution_id, f"execution stopped: {message}")
        lost = await self._flush_logs(execution_id)
        try:
            await until_stored(
                self.plane.transition,
                execution_id,
                Status.STOPPED,
                "processes_exited",
                message,
                expected=[Status.STOPPING],
                status_message=f"{message}; {lost}" if lost else message,
                step_details=details,
            )
        except DomainError as exc:
            log.warning("stop not applied", execution_id=execution_id, error=str(exc))
        self.sink.forget(execution_id)

    # ---------------------------------------------------------------- one execution

    async def _execute(self, run: _Run, resumed: bool = False) -> None:
        try:
            await self.sink.open(run.id)
            if resumed:
                await self._run_rest(run)
            else:
                await self._run_execution(run)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug must not leave the execution RUNNING forever
            log.exception("runtime error", execution_id=run.id)
            self._terminate(run, "runtime error")
            await asyncio.gather(
                *(self.runner.discard(p.handle.state, 0.5) for p in list(run.processes.values())),
                return_exceptions=True,
            )
            await self._finish(run, Status.DEAD, "runtime_error", f"the runtime failed: {exc}")
        if not run.closing:
            await self._kill_strays(run.id)

    async def _run_execution(self, run: _Run) -> None:
        execution = run.execution
        try:
            run.plan = await self._plan(execution, run.work_dir)
        except (PlanError, DomainError) as exc:
            await self._finish(run, Status.DEAD, "start_failed", f"cannot start: {exc}")
            return
        stored = {d.name: d for d in execution.step_details}
        run.details = {n: stored.get(n) or StepDetail(n) for n in run.plan.names}

        try:
            await asyncio.to_thread(self._prepare_dir, run)
            run.state = {"execution_id": run.id, "steps": {}}
            await _save_state(run)
            await self._stage_inputs(run)
        except (StagingError, OSError) as exc:
            if not (run.closing or run.stopping):
                await self._finish(run, Status.DEAD, "start_failed", f"cannot start: {exc}")
                return
        if await self._cut_short(run):
            return
        # From here on the state file holds the walk: a restart goes on from it.
        run.walk.update(started=time.time(), decided={}, loops={})
        await _save_state(run)
        await self._run_rest(run)

    async def _run_rest(self, run: _Run) -> None:
        """Walk the steps (after a restart: on from where the state file says the walk
        was, ``run.resumed``), the exit handler, then end the execution."""
        main = [s for s in run.plan.steps if not s.exit_handler]
        timer = None
        if run.plan.deadline is not None:
            # After a restart the deadline counts from the walk's first start.
            began = min(time.time(), run.walk.get("started") or time.time())
            left = max(0.0, run.plan.deadline - (time.time() - began))
            timer = asyncio.get_running_loop().call_later(
                left, self._overdue, run, run.plan.deadline
            )
        try:
            await self._run_steps(run, main)
        finally:
            if timer is not None:
                timer.cancel()
        handler = [s for s in run.plan.steps if s.exit_handler]
        if handler and not (run.closing or run.deleted):
            await self._run_exit_handler(run, handler)
        await self._drop_unwalked(run)
        if await self._cut_short(run):
            return
        if run.failure:
            await self._finish(run, Status.DEAD, run.failure_cause, run.failure)
            return

        try:
            await self._collect_outputs(run)
        except (StagingError, OSError, DomainError) as exc:
            if not (run.closing or run.stopping):
                message = f"cannot collect outputs: {exc}"
                await self._finish(run, Status.DEAD, "step_failed", message)
                return
        if await self._cut_short(run):
            return
        await self._finish(run, Status.COMPLETED, "steps_succeeded", "every step succeeded")

    async def _cut_short(self, run: _Run) -> bool:
        """A shutdown leaves the execution as it is (the next start reconciles it); a
        stop ends it STOPPED."""
        if run.closing:
            return True
        if run.stopping:
            await self._finish_stopped(run)
            return True
        return False

    async def _plan(self, execution: Execution, work_dir: Path) -> Plan:
        store = self.plane.store
        group = execution.resource_group
        configuration = await store.get_configuration(group, execution.configuration_id)
        executable = await store.get_executable(
            group, configuration.executable_id, configuration.executable_version
        )
        bindings = configuration.input_artifact_bindings
        artifacts = {
            a.id: a for a in await store.get_artifacts(group, list(bindings.values()))
        }
        urls = {}
        for name, artifact_id in bindings.items():
            if artifact_id not in artifacts:
                raise PlanError(f"input artifact {name}: artifact {artifact_id} does not exist")
            urls[name] = artifacts[artifact_id].url
        resolved = await self._secrets(execution, executable)
        library = await self.plane.template_library(group, executable.spec, created=True)
        return build_plan(
            executable,
            configuration.parameter_bindings,
            urls,
            execution_id=execution.id,
            resource_group=group,
            work_dir=work_dir,
            plans=self.plane.resource_plans,
            secrets=resolved.values,
            pull_auth=resolved.pull_auth,
            library=library,
            step_paths=self.runner.isolated,
        )

    async def _secrets(self, execution: Execution, executable) -> Resolved:
        """The values of the group's secrets the executable uses, opened now (at its
        start, or its recovery); from here on they are masked in its stored lines."""
        refs = self.plane.secret_references(executable)
        if not refs:
            return Resolved()
        if self.plane.secrets is None:
            raise PlanError("the executable uses secrets, and this server keeps none")
        try:
            resolved = await self.plane.secrets.resolve(execution.resource_group, refs)
        except ValueError as exc:
            raise PlanError(str(exc)) from None
        self.sink.mask(execution.id, Mask(resolved.masked))
        return resolved

    def _prepare_dir(self, run: _Run) -> None:
        """A fresh working directory with a root for every step (worker thread)."""
        staging.reset_dir(run.work_dir)
        (run.work_dir / SCRIPTS_DIR).mkdir()
        for step in run.plan.steps:
            step.root.mkdir(parents=True, exist_ok=True)

    async def _stage_inputs(self, run: _Run) -> None:
        """Copy bound artifacts and inline data into each step's root; every URL is
        checked before anything is copied."""
        items = [(s, i) for s in run.plan.steps for i in s.inputs if not i.source.step]
        urls = sorted({i.source.url for _, i in items if i.source.url})
        sources = dict(zip(urls, await asyncio.to_thread(_check_sources, urls), strict=True))
        for step, item in items:
            if run.stopping or run.closing:
                return
            if item.source.url:
                size = await asyncio.to_thread(
                    staging.copy_into, sources[item.source.url], item.path
                )
            else:
                size = await asyncio.to_thread(staging.write_raw, item.path, item.source.raw)
            self.sink.system(
                run.id,
                f"staged input artifact {item.name} for step {step.name}: "
                f"{item.source.describe()} -> {item.path} ({_size(size)})",
                step=step.name,
            )

    def _overdue(self, run: _Run, seconds: float) -> None:
        """The workflow's activeDeadlineSeconds passed: its running steps are stopped
        and it ends DEAD (its exit handler still runs)."""
        if run.halted:
            return
        message = f"the workflow ran past its activeDeadlineSeconds ({seconds:g} s)"
        self.sink.system(run.id, message)
        run.failure, run.failure_cause = message, "deadline_exceeded"
        run.walk["failure"] = [message, "deadline_exceeded"]
        self._spawn_background(_save_state(run))
        run.wake.set()
        self._terminate(run, message)

    async def _run_exit_handler(self, run: _Run, steps: list[PlannedStep]) -> None:
        """The exit handler runs after the main flow, whatever its outcome (a stop
        included: the execution stays STOPPING meanwhile and ends STOPPED); its own
        failure fails an execution that had succeeded."""
        status = run.walk.get("handler")
        if status not in ("Succeeded", "Failed"):  # else it began before a restart
            status = "Succeeded" if not (run.failure or run.stopping) else "Failed"
            self.sink.system(run.id, f"running the exit handler (workflow status {status})")
            run.walk["handler"] = status
            await _save_state(run)
        run.values[WORKFLOW_STATUS] = status
        failure, cause = run.failure, run.failure_cause
        run.failure = ""
        run.handling_stop = run.stopping
        run.wake.clear()
        try:
            await self._run_steps(run, steps)
        finally:
            run.handling_stop = False
        if failure:
            run.failure, run.failure_cause = failure, cause

    async def _run_steps(self, run: _Run, steps: list[PlannedStep]) -> None:
        """Start every step once the steps it waits for ended and its conditions hold,
        until none is left to start. After a restart, a step the walk had decided or
        started before is taken as the state file recorded it (a halted walk too goes
        on through those): its decision again, its running attempt watched again, its
        ended attempt's outcome, and the retries of its retryStrategy from there."""
        pending = list(steps)
        tasks: dict[asyncio.Task, PlannedStep] = {}
        decided = run.walk.get("decided") or {}
        while True:
            progressed = True
            while progressed:
                progressed = False
                _gather_loops(run)
                for step in [s for s in pending if s.after <= run.results.keys()]:
                    replayed = step.name in decided or step.name in run.resumed or (
                        bool(step.loop) and step.name in (run.walk.get("loops") or {})
                    )
                    if run.halted and not replayed:
                        continue
                    pending.remove(step)
                    progressed = True
                    if step.name in decided:
                        self._replay_decision(run, step, decided[step.name])
                        continue
                    why = None if replayed else await self._decide(run, step)
                    if why is None:
                        run_it = self._run_loop if step.loop else self._run_step
                        tasks[asyncio.create_task(run_it(run, step))] = step
            if not tasks:
                break
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                tasks.pop(task)
        if run.closing:
            return
        stopped = run.stopping and not run.handling_stop
        why = "the execution was stopped" if stopped or run.deleted else "an earlier step failed"
        if run.failure_cause == "deadline_exceeded" and not run.stopping:
            why = "the workflow ran past its activeDeadlineSeconds"
        for step in pending:
            detail = run.details[step.name]
            _ended(detail, StepPhase.SKIPPED, f"not started: {why}")
            await self._step_changed(run, detail)

    async def _decide(self, run: _Run, step: PlannedStep) -> str | None:
        """Whether a ready step runs: None when it does; else it is ended here (SKIPPED
        when a condition is false, FAILED when one cannot be decided) and why is
        returned."""
        detail = run.details[step.name]
        if step.exit_handler:  # its when may read the failures so far
            run.values[WORKFLOW_FAILURES] = failures_value(_failures(run))
        for requirement in step.requires:
            try:
                holds = requirement.expression.evaluate(partial(_task_result, run, requirement))
            except ExpressionError as exc:
                return await self._refuse_start(run, step, f"depends: {exc}")
            if not holds:
                why = f"omitted: depends {requirement.expression.text!r} is false"
                return await self._skip(run, detail, "Omitted", why)
        for text in () if step.loop else step.when:  # a loop's items decide theirs
            try:
                resolved = resolve_late(text, run.values, f"step {step.name}: when")
                holds = parse_when(resolved).evaluate()
            except (PlanError, ExpressionError) as exc:
                return await self._refuse_start(run, step, f"when {text!r}: {exc}")
            if not holds:
                why = f"skipped: when {resolved!r} is false"
                return await self._skip(run, detail, "Skipped", why)
        return None

    async def _skip(self, run: _Run, detail: StepDetail, result: str, why: str) -> str:
        """End a ready step SKIPPED with ``result`` (as Argo names it) and say why."""
        run.results[detail.name] = result
        _ended(detail, StepPhase.SKIPPED, why)
        self.sink.system(run.id, f"step {detail.name} {why}", step=detail.name)
        await self._decided(run, detail, result)
        await self._step_changed(run, detail)
        return why

    async def _decided(self, run: _Run, detail: StepDetail, result: str) -> None:
        """Record in the state file how the walk decided a step that runs no process."""
        if "decided" in run.walk:
            run.walk["decided"][detail.name] = {
                "result": result,
                "phase": str(detail.phase),
                "message": detail.message,
            }
            await _save_state(run)

    def _replay_decision(self, run: _Run, step: PlannedStep, decision: dict) -> None:
        """A decision recorded before a restart, taken again (no log line twice)."""
        result = str(decision.get("result") or "Skipped")
        run.results[step.name] = result
        detail = run.details[step.name]
        if detail.phase in (StepPhase.PENDING, StepPhase.RUNNING):
            phase = _phase(decision.get("phase")) or StepPhase.SKIPPED
            _ended(detail, phase, str(decision.get("message") or ""))
        if result == "Errored":
            self._halt(run, str(decision.get("message") or ""), step.name, quiet=True)

    async def _run_loop(self, run: _Run, step: PlannedStep) -> None:
        """A withParam loop over a list known now: one step per item, run like the
        steps of a group; the loop's result is theirs. After a restart, the items are
        those the state file recorded."""
        loops = run.walk.get("loops")
        items = None if loops is None else loops.get(step.name)
        replayed = isinstance(items, list)
        if not replayed:
            try:
                text = resolve_late(step.loop, run.values, f"step {step.name}: withParam")
                items = json.loads(text)
                if not isinstance(items, list):
                    raise ValueError(f"{text!r} is not a JSON list")
                if len(items) > MAX_ITEMS:
                    raise ValueError(f"more than {MAX_ITEMS} items")
            except (PlanError, ValueError) as exc:
                await self._refuse_start(run, step, f"withParam: {exc}")
                return
            if loops is not None:
                loops[step.name] = items
                await _save_state(run)
        else:
            text = json.dumps(items)
        expanded = [loop_item(step, i, item, run.work_dir) for i, item in enumerate(items)]
        names = [s.name for s in expanded]
        if not expanded:
            why = f"skipped: withParam {text!r} gives no items"
            run.results[step.name] = "Skipped"
            _ended(run.details[step.name], StepPhase.SKIPPED, why)
            if not replayed:
                self.sink.system(run.id, f"step {step.name} {why}", step=step.name)
            await self._step_changed(run, run.details[step.name])
            return
        if len(set(names)) != len(names) or any(n in run.details for n in names):
            await self._refuse_start(run, step, "withParam: two items give one step name")
            return
        run.loops[step.name] = tuple(names)
        details: dict[str, StepDetail] = {}
        for name, detail in run.details.items():
            if name != step.name:
                details[name] = detail
            else:
                details.update((n, run.detail_of(n)) for n in names)
        run.details = details
        run.plan.steps[run.plan.steps.index(step) : run.plan.steps.index(step) + 1] = expanded
        if not replayed:
            self.sink.system(
                run.id,
                f"step {step.name}: withParam gives {len(items)} items: {_steps_list(names)}",
            )
        for item in run.plan.collect:  # an output artifact: the last item's
            if item.step == step.name:
                last = expanded[-1]
                item.step = last.name
                item.path = last.root / item.path.relative_to(step.root)
        await asyncio.to_thread(_make_roots, expanded)
        await self._step_changed(run, details[names[0]])
        await self._run_steps(run, expanded)
        _gather(run, step.name, names, expanded[0])
        ended = [run.results.get(n, "") for n in names]
        if "Succeeded" in ended and all(r in ("Succeeded", "Skipped") for r in ended):
            run.results[step.name] = "Succeeded"
        elif all(r == "Skipped" for r in ended):
            run.results[step.name] = "Skipped"
        else:
            run.results[step.name] = next(
                (r for r in ("Errored", "Failed", "Stopped", "Omitted") if r in ended), "Failed"
            )

    async def _refuse_start(self, run: _Run, step: PlannedStep, why: str) -> str:
        message = f"step {step.name}: {why}"
        run.results[step.name] = "Errored"
        await self._fail(run, step, None, message)
        await self._decided(run, run.details[step.name], "Errored")
        self._halt(run, message, step.name)
        return message

    async def _run_step(self, run: _Run, step: PlannedStep) -> bool:
        """Run one step to its end, with the retries of its retryStrategy; True when it
        succeeded. Its result is in ``run.results`` then. After a restart it goes on
        from the attempt the state file recorded (watched again, or its outcome)."""
        retry = step.retry
        resumed = run.resumed.pop(step.name, None)
        first_start = time.time()
        attempt = 1
        if resumed is not None:
            attempt = resumed.attempt
            since = resumed.record.get("since")
            if isinstance(since, (int, float)):
                first_start = min(first_start, since)
        while True:
            replayed = resumed is not None and resumed.handle is None and not resumed.unstarted
            if replayed:
                ok, failure, errored = await self._replay_attempt(
                    run, step, attempt, resumed.record
                )
            else:
                ok, failure, errored = await self._attempt(run, step, attempt, resumed)
            resumed = None
            if ok or not failure:  # succeeded, or stopped
                run.results[step.name] = "Succeeded" if ok else "Stopped"
                return ok
            kind = "Errored" if errored else "Failed"
            wanted = retry is not None and (
                retry.policy == "Always"
                or (retry.policy == "OnFailure" and not errored)
                or (retry.policy in ("OnError", "OnTransientError") and errored)
            )
            delay = retry.delay(attempt) if retry is not None else 0.0
            elapsed = time.time() - first_start
            if (
                not wanted
                or attempt > retry.limit
                or run.halted
                or (retry.max_duration is not None and elapsed + delay > retry.max_duration)
            ):
                if retry is not None and attempt > 1:
                    failure = f"{failure} (attempt {attempt} of {retry.limit + 1})"
                run.results[step.name] = kind
                self._halt(run, failure, step.name, quiet=replayed)
                return False
            detail = run.details[step.name]
            run.attempts.setdefault(step.name, []).append(detail)
            attempt += 1
            run.details[step.name] = StepDetail(
                step.name,
                attempt=attempt,
                message=f"retry {attempt - 1} of {retry.limit} in {delay:g} s",
            )
            self.sink.system(
                run.id,
                f"step {step.name}: {failure}; retry {attempt - 1} of {retry.limit} "
                f"in {delay:g} s",
                step=step.name,
            )
            await self._step_changed(run, run.details[step.name])
            if delay > 0:
                try:
                    await asyncio.wait_for(run.wake.wait(), timeout=delay)
                except TimeoutError:
                    pass
            if run.halted:
                run.results[step.name] = kind
                detail = run.details[step.name]
                if not run.closing:
                    _ended(detail, StepPhase.SKIPPED, "not retried: the execution is ending")
                    await self._step_changed(run, detail)
                return False

    async def _attempt(
        self, run: _Run, step: PlannedStep, attempt: int, attached: _Resumed | None = None
    ) -> tuple[bool, str, bool]:
        """One try of a step: (succeeded, why it failed or "" when it was stopped or
        did not start because the execution ends, whether it could not start).
        ``attached``: the try runs already (re-attached after a restart): watch it."""
        detail = run.details[step.name]
        if step.exit_handler:  # the failures so far, the handler's own steps' included
            run.values[WORKFLOW_FAILURES] = failures_value(_failures(run))
        previous = run.state["steps"].get(step.name) or {}
        since = previous.get("since") if attempt > 1 else None
        since = since if isinstance(since, (int, float)) else time.time()
        try:
            step = _resolved(step, run.values)
        except PlanError as exc:
            await self._fail(run, step, None, str(exc))
            await self._errored(run, step, attempt, since, str(exc))
            return False, str(exc), True
        if attached is not None and attached.handle is not None:
            run.ran_by[(step.name, attempt)] = attached.handle.where
            started = _Step(step.name, attached.handle)
            run.processes[step.name] = started
            await self._mark_running(run, step)  # adopted while the execution was PENDING
            return await self._watch(run, step, started, attached.output)
        try:
            await asyncio.to_thread(_stage_step, run.plan, step)
        except StagingError as exc:
            message = f"step {step.name}: {exc}"
            await self._fail(run, step, None, message)
            await self._errored(run, step, attempt, since, message)
            return False, message, True
        launch = dataclasses.replace(self._launch_of(run, step), attempt=attempt)
        if not await self._admitted(run, launch, detail) or run.halted:
            if not run.closing:
                _ended(detail, StepPhase.SKIPPED, "not started: the execution is ending")
                await self._step_changed(run, detail)
            return False, "", False

        self.sink.system(
            run.id, f"starting step {step.name}: {shlex.join(step.argv)}", step=step.name
        )
        if note := self._image_note(step):
            self.sink.system(run.id, f"step {step.name}: {note}", step=step.name)
        output = _Output(self.sink, run.id, step.name, keep=step.keeps_result)
        begun = _now()  # before any line of this attempt: a restart counts its lines from here
        if self.runner.outlives_server:
            # A server that dies while the runner starts the step finds it by this
            # record after its restart (StepRunner.adopt), rather than starting it twice.
            run.state["steps"][step.name] = {
                "starting": True,
                "exit_code": None,
                "attempt": attempt,
                "since": since,
                "started_at": begun.isoformat(),
            }
            await _save_state(run)
        try:
            handle = await self.runner.start(launch, output)
        except StepStartError as exc:
            await self._fail(run, step, None, str(exc))
            await self._errored(run, step, attempt, since, str(exc))
            return False, str(exc), True
        run.ran_by[(step.name, attempt)] = handle.where
        started = _Step(step.name, handle)
        run.processes[step.name] = started
        run.state["steps"][step.name] = {
            "handle": handle.state,
            "where": handle.where,
            "started_at": begun.isoformat(),
            "exit_code": None,
            "attempt": attempt,
            "since": since,  # when its first attempt began (retryStrategy maxDuration)
        }
        await _save_state(run)
        detail.phase, detail.started_at = StepPhase.RUNNING, _now()
        detail.message = ""
        await self._mark_running(run, step)
        await self._step_changed(run, detail)
        return await self._watch(run, step, started, output)

    async def _mark_running(self, run: _Run, step: PlannedStep) -> None:
        """PENDING → RUNNING once its first step runs."""
        if run.running or run.halted or run.stopping:
            return
        run.running = True
        try:
            await self.plane.transition(
                run.id,
                Status.RUNNING,
                "step_started",
                f"step {step.name} started",
                expected=[Status.PENDING],
                lease=run.lease,
                status_message="",
            )
        except DomainError as exc:
            log.warning("not moved to RUNNING", execution_id=run.id, error=str(exc))

    async def _errored(
        self, run: _Run, step: PlannedStep, attempt: int, since: float, message: str
    ) -> None:
        """Record in the state file an attempt that could not start (no process)."""
        run.state["steps"][step.name] = {
            "exit_code": None,
            "ended": True,
            "errored": True,
            "phase": str(StepPhase.FAILED),
            "failure": message,
            "message": run.details[step.name].message,
            "attempt": attempt,
            "since": since,
            **({"handled": True} if step.name in run.plan.handled else {}),
        }
        await _save_state(run)

    async def _replay_attempt(
        self, run: _Run, step: PlannedStep, attempt: int, record: dict
    ) -> tuple[bool, str, bool]:
        """An attempt that had ended before a restart, as the state file recorded it
        (what :meth:`_attempt` returns): its outputs and its detail again, no process."""
        detail = run.details[step.name]
        if isinstance(record.get("where"), str) and record["where"]:
            run.ran_by[(step.name, attempt)] = record["where"]
        phase = _phase(record.get("phase"))
        code = record.get("exit_code")
        code = code if isinstance(code, int) else None
        message = str(record.get("message") or "")
        open_ = detail.phase in (StepPhase.PENDING, StepPhase.RUNNING)
        if phase == StepPhase.SUCCEEDED:
            values = record.get("parameters")
            if not isinstance(values, dict):  # a record of an older server
                values, _ = await asyncio.to_thread(_read_parameters, step)
            for name, value in values.items():
                run.values[late_key(step.name, f"parameters.{name}")] = str(value)
            if step.keeps_result:
                run.values[late_key(step.name, "result")] = str(record.get("result") or "")
            if open_:
                _ended(detail, StepPhase.SUCCEEDED, message, code)
                detail.output_parameters = {k: str(v) for k, v in values.items()}
            return True, "", False
        if phase == StepPhase.STOPPED:
            if open_:
                _ended(detail, StepPhase.STOPPED, message, code)
            return False, "", False
        failure = str(record.get("failure") or f"step {step.name} exited with code {code}")
        if open_:
            _ended(detail, StepPhase.FAILED, message or failure, code)
        return False, failure, bool(record.get("errored"))

    async def _watch(
        self, run: _Run, step: PlannedStep, started: _Step, output: _Output
    ) -> tuple[bool, str, bool]:
        """Wait for a started step to end (what :meth:`_attempt` returns)."""
        handle = started.handle
        if run.halted:  # a stop or a failure came while the step was being started
            why = "stop requested" if run.stopping or run.closing else "another step failed"
            self._signal(run, started, why)

        timer = None
        if step.deadline is not None:
            timer = asyncio.get_running_loop().call_later(
                step.deadline, self._step_overdue, run, started, step.deadline
            )
        try:
            ended = await handle.wait()
        finally:
            started.exited = True
            if timer is not None:
                timer.cancel()
            del run.processes[step.name]
        if run.closing:
            return False, "", False  # the next start tells how it ended
        return await self._step_exited(run, step, started, ended, output)

    def _step_overdue(self, run: _Run, started: _Step, seconds: float) -> None:
        """The step ran past its template's activeDeadlineSeconds: stop it; it fails."""
        if started.exited or started.signalled:
            return
        started.overdue = f"ran past its activeDeadlineSeconds ({seconds:g} s)"
        self.sink.system(
            run.id,
            f"step {started.step} {started.overdue}: stopping it ({started.handle.where})",
            step=started.step,
        )
        started.handle.stop(self.stop_grace)

    def _launch_of(self, run: _Run, step: PlannedStep) -> StepLaunch:
        env = dict(step.env)
        env.update(
            TRAINYARD_EXECUTION_ID=run.id,
            TRAINYARD_RESOURCE_GROUP=run.execution.resource_group,
            TRAINYARD_STEP=step.name,
        )
        if run.token:
            env["TRAINYARD_TOKEN"] = run.token
        mounts = [Mount(str(i.path), _inner(step, i.path), True) for i in step.inputs]
        mounts += [Mount(str(o.path), _inner(step, o.path)) for o in step.outputs]
        mounts += [
            Mount(str(p.path), _inner(step, p.path), copy_out=True) for p in step.parameters
        ]
        if step.script_path is not None:
            mounts.append(Mount(str(step.script_path), SCRIPT_IN_STEP, True))
        scratch = run.work_dir / RUNNER_DIR / _file_name(step.name)
        mounts += [
            Mount(
                str(scratch / VOLUMES_DIR / _file_name(v.name)),
                v.mount_path,
                v.read_only,
                volume="secret" if v.secret else "emptyDir",
                contents=v.files or (),
            )
            for v in step.volumes
        ]
        return StepLaunch(
            execution_id=run.id,
            resource_group=run.execution.resource_group,
            step=step.name,
            template=step.template,
            attempt=1,
            image=step.image,
            command=tuple(step.command),
            args=tuple(step.args),
            env=env,
            api_address=self.server_address,
            api_url=f"http://{self.http_address}" if self.http_address else "",
            root=str(step.root),
            scratch=str(scratch),
            working_dir=step.working_dir,
            mounts=tuple(mounts),
            resources=step.resources,
            pull_auth=run.plan.pull_auth,
        )

    async def _admitted(self, run: _Run, launch: StepLaunch, detail: StepDetail) -> bool:
        """Wait until the runner admits the step; False when the execution ends first."""
        delay = 0.05
        said = ""
        while not run.halted:
            why = await self.runner.admit(launch)
            if not why:
                return True
            if why != said:
                said = detail.message = why
                self.sink.system(run.id, f"step {launch.step} waits: {why}", step=launch.step)
                await self._step_changed(
                    run, detail, status_message=f"step {launch.step} waits: {why}"
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, ADMIT_DELAY_MAX)
        return False

    async def _step_exited(
        self, run: _Run, step: PlannedStep, started: _Step, ended: StepExit, output: _Output
    ) -> tuple[bool, str, bool]:
        detail = run.details[step.name]
        code = ended.exit_code
        # A shell that runs the command exits with 128 + N when the command died of
        # signal N (SIGTERM: 143): name the signal either way.
        killed_by = ended.signal or procs.signal_of_exit_code(code)
        if killed_by:
            how = f"was killed by {procs.signal_name(killed_by)} (exit code {code})"
        else:
            how = f"exited with code {code}"
        self.sink.system(run.id, f"step {step.name} {how}", step=step.name)
        if ended.message:
            how = f"{how}: {ended.message}"
        record = run.state["steps"][step.name]
        record["exit_code"] = code

        failure = ""
        if started.overdue:
            failure = f"step {step.name} {started.overdue}; {how}"
            _ended(detail, StepPhase.FAILED, f"{started.overdue}; {how}", code)
        elif started.signalled:
            _ended(detail, StepPhase.STOPPED, f"{started.signalled}; {how}", code)
            record["phase"] = str(StepPhase.STOPPED)
        elif code != 0:
            failure = f"step {step.name} {how}"
            note = self._image_note(step)
            _ended(detail, StepPhase.FAILED, f"{how}; {note}" if note else how, code)
        else:
            missing = [o for o in step.outputs if not o.optional and not o.path.exists()]
            if missing:
                failure = (
                    f"step {step.name} did not write its output artifact {missing[0].name} "
                    f"at {missing[0].path}"
                )
            else:
                values, failure = await asyncio.to_thread(_read_parameters, step)
                detail.output_parameters = values
            if failure:
                _ended(detail, StepPhase.FAILED, failure, code)
                self.sink.system(run.id, failure, step=step.name)
            else:
                for name, value in detail.output_parameters.items():
                    run.values[late_key(step.name, f"parameters.{name}")] = value
                record["parameters"] = dict(detail.output_parameters)
                if step.keeps_result:
                    run.values[late_key(step.name, "result")] = record["result"] = (
                        output.result()
                    )
                _ended(detail, StepPhase.SUCCEEDED, self._image_note(step), code)
                record["phase"] = str(StepPhase.SUCCEEDED)
        if failure:
            record.update(phase=str(StepPhase.FAILED), failure=failure)
            if step.name in run.plan.handled:
                record["handled"] = True
        record["message"] = detail.message
        await _save_state(run)
        await self._step_changed(run, detail)
        return not failure and not started.signalled, failure, False

    def _image_note(self, step: PlannedStep) -> str:
        """What a step's message says of an image its runner does not use."""
        if self.runner.isolated or not step.image:
            return ""
        return f"image {step.image} was not used: the command ran on the host"

    async def _fail(self, run: _Run, step: PlannedStep, code: int | None, message: str) -> None:
        """A step failed before its process ran (the caller halts the run, or retries)."""
        detail = run.details[step.name]
        self.sink.system(run.id, message, step=step.name)
        _ended(detail, StepPhase.FAILED, message, code)
        await self._step_changed(run, detail)

    def _halt(self, run: _Run, message: str, step: str, quiet: bool = False) -> None:
        """The first failure decides the status message; running siblings end. A
        failure that a depends expression handles (``X.Failed``) ends nothing.
        ``quiet``: a failure taken again from the state file after a restart."""
        if step in run.plan.handled:
            if not quiet:
                self.sink.system(run.id, f"step {step} failed; a depends expression handles it")
            return
        if run.failure or (run.stopping and not run.handling_stop):
            return
        run.failure = message
        run.wake.set()
        self._terminate(run, f"step {step} failed")

    # ------------------------------------------------------------------- signals

    def _terminate(self, run: _Run, why: str) -> None:
        run.wake.set()
        for started in list(run.processes.values()):
            self._signal(run, started, why)

    def _signal(self, run: _Run, started: _Step, why: str) -> None:
        """The runner's stop of the step: SIGTERM now, SIGKILL after the grace period."""
        if started.signalled or started.exited:
            return
        started.signalled = why
        self.sink.system(
            run.id,
            f"{why}: sending SIGTERM to step {started.step} ({started.handle.where})",
            step=started.step,
        )
        started.handle.stop(self.stop_grace)

    async def _kill_strays(self, execution_id: str) -> None:
        """What is left of the execution outside its steps' handles (processes that
        left their step's group but carry the execution id)."""
        strays = (await self.runner.strays([execution_id])).get(execution_id, [])
        if strays:
            self.sink.system(execution_id, f"stopping {len(strays)} leftover processes: {strays}")
            await self._flush_logs(execution_id)
            await self.runner.remove_strays(strays, self.stop_grace)

    # -------------------------------------------------------------------- reports

    async def _step_changed(self, run: _Run, detail: StepDetail, **changes) -> None:
        if run.fenced:
            return
        try:
            await self.plane.update_execution(
                run.id,
                step_details=run.step_details(),
                changed_step=detail,
                lease=run.lease,
                **changes,
            )
        except FailedPrecondition as exc:
            if exc.reason != Reason.LEASE_LOST:
                raise
            log.warning("step change not written", execution_id=run.id, error=str(exc))
            self._fenced(run.id)

    async def _finish(self, run: _Run, status: Status, cause: str, message: str) -> None:
        """Record the final status, after every log line of the execution is stored
        (or given up on, which the status message then says)."""
        for detail in run.details.values():
            if detail.phase == StepPhase.PENDING:
                _ended(detail, StepPhase.SKIPPED, "not started")
        self.sink.system(run.id, f"execution {str(status).lower()}: {message}")
        lost = await self._flush_logs(run.id)
        if lost:
            message = f"{message}; {lost}"
        expected = (
            [Status.RUNNING] if status == Status.COMPLETED else [Status.PENDING, Status.RUNNING]
        )
        details = run.step_details() or None
        self._revoke_token(run)
        try:
            await until_stored(
                self.plane.transition,
                run.id,
                status,
                cause,
                message,
                expected=expected,
                lease=run.lease,
                status_message=message,
                step_details=details,
            )
        except FailedPrecondition as exc:
            if exc.reason == Reason.LEASE_LOST:
                log.warning("final status not written", execution_id=run.id, error=str(exc))
                return
            # Stopped meanwhile: a stopping execution ends STOPPED, whatever happened.
            await self._finish_stopped(run)
            return
        except NotFound:
            pass
        self.sink.forget(run.id)
        log.info("execution finished", execution_id=run.id, status=str(status), message=message)

    async def _finish_stopped(self, run: _Run) -> None:
        for detail in run.details.values():
            if detail.phase == StepPhase.PENDING:
                _ended(detail, StepPhase.SKIPPED, "not started: the execution was stopped")
        message = "stopped; every process has exited"
        self.sink.system(run.id, f"execution stopped: {message}")
        lost = await self._flush_logs(run.id)
        self._revoke_token(run)
        try:
            await until_stored(
                self.plane.transition,
                run.id,
                Status.STOPPED,
                "processes_exited",
                message,
                expected=[Status.STOPPING],
                lease=run.lease,
                status_message=f"stopped; {lost}" if lost else "stopped",
                step_details=run.step_details() or None,
            )
        except DomainError as exc:
            log.warning("stop not recorded", execution_id=run.id, error=str(exc))
        self.sink.forget(run.id)
        log.info("execution stopped", execution_id=run.id)

    async def _flush_logs(self, execution_id: str) -> str:
        """Wait until every line of the execution written so far is stored: "" then,
        else what its status message should say of the lines that could not be."""
        try:
            await self.sink.flush(execution_id)
        except LogsNotStored as exc:
            report = self._log_reports.get(execution_id)
            if report is not None:  # the final status message comes after it
                await asyncio.wait([report])
            return str(exc)
        return ""

    def _logs_not_stored(self, execution_id: str, message: str) -> None:
        """The log sink gave up on lines of the execution: say so in its status
        message now (its final status message says it again)."""
        self._log_reports[execution_id] = self._spawn_background(
            self._report_lost_logs(execution_id, message)
        )

    async def _report_lost_logs(self, execution_id: str, message: str) -> None:
        try:
            await until_stored(self.plane.update_execution, execution_id, status_message=message)
        except DomainError as exc:
            log.warning("lost logs not reported", execution_id=execution_id, error=str(exc))
        finally:
            self._log_reports.pop(execution_id, None)

    async def _collect_outputs(self, run: _Run) -> None:
        """Move each declared output to the artifact store and register it."""
        execution = run.execution
        group = execution.resource_group
        registered = {
            a.name: a
            for a in (
                await self.plane.list_artifacts(group, 100, "", execution_id=run.id)
            ).items
        }
        ids: list[str] = []
        for item in run.plan.collect:
            if run.results.get(item.step, "Succeeded") != "Succeeded":
                continue  # skipped, or a failure a depends expression handled
            spec = item.spec
            if spec.name in registered:
                ids.append(registered[spec.name].id)
                continue
            if item.optional and not item.path.exists():
                continue
            path = await asyncio.to_thread(
                staging.collect, item.path, self.artifacts_dir / run.id / spec.name
            )
            artifact = await self.plane.register_output_artifact(
                Artifact(
                    id="",
                    resource_group=group,
                    name=spec.name,
                    kind=spec.kind,
                    url=path.as_uri(),
                    scenario_id=execution.scenario_id,
                    description=spec.description,
                    labels=dict(spec.labels),
                    execution_id=run.id,
                )
            )
            ids.append(artifact.id)
            self.sink.system(
                run.id,
                f"registered output artifact {spec.name} ({spec.kind}) as {artifact.id}: "
                f"{artifact.url}",
                step=item.step,
            )
        if ids:
            await self.plane.update_execution(run.id, output_artifact_ids=ids, lease=run.lease)

    # ------------------------------------------------------------------ recovery

    async def recover(self) -> None:
        """Reconcile what this replica must (see Scheduler.start); idempotent."""
        lease_us = int(self.scheduler.lease_seconds * 1_000_000)
        taken = await self.plane.store.claim_for_recovery(
            self.replica_id, _now_us(), _now_us() + lease_us
        )
        await self._reconcile(taken)

    async def _reconcile(self, taken: list[tuple[Execution, Lease, str, bool]]) -> None:
        """End what a previous server (this replica before a restart, or a replica that
        was lost or shut down) left active: pending ones go back to the queue, the others end with
        a cause, and none of their processes is left."""
        if not taken:
            return
        strays = await self.runner.strays([e.id for e, *_ in taken], everywhere=True)
        await asyncio.gather(
            *(
                self._recover(e, strays.get(e.id, []), lease, previous, released)
                for e, lease, previous, released in taken
            )
        )
        log.info("executions reconciled", count=len(taken))

    async def _recover(
        self,
        execution: Execution,
        strays: list[str],
        lease: Lease,
        previous: str,
        released: bool = False,
    ) -> None:
        eid = execution.id
        await self.sink.open(eid)
        lost = bool(previous) and previous != self.replica_id
        if not lost:
            cause, what = "server_restart", "server restarted"
        elif released:  # it shut down and handed its executions over
            cause, what = "replica_shutdown", f"replica {previous} shut down"
        else:
            cause, what = "replica_lost", f"replica {previous} was lost"
        work_dir = self.work_dir / eid
        state = procs.read_state(work_dir / STATE_FILE)
        records = state["steps"] if state else {}
        # A PENDING one resumes too when its first step was being started: the runner
        # may have started it (StepRunner.adopt).
        starting = execution.status == Status.PENDING and any(
            isinstance(r, dict) and r.get("starting") for r in records.values()
        )
        if (
            state is not None
            and (execution.status in (Status.RUNNING, Status.STOPPING) or starting)
            and await self._resume(execution, lease, work_dir, state, strays, what, cause)
        ):
            return
        alive: list[str] = []  # steps whose processes survived the restart
        lost: list[str] = []  # steps that ended while no server watched them
        survivors: list[dict] = []  # the runner's states of their handles
        for name, record in records.items():
            if not _under_way(record):
                continue
            handle = _handle_state(record)
            if await self.runner.alive(handle):
                alive.append(name)
                survivors.append(handle)
                self.sink.system(
                    eid,
                    f"{what}: step {name} still has processes ({_where(record)}); "
                    f"stopping them",
                    step=name,
                )
            else:
                lost.append(name)
        if strays:
            self.sink.system(eid, f"{what}: stopping leftover processes {strays}")
        await asyncio.gather(
            *(self.runner.discard(h, self.stop_grace) for h in survivors),
            self.runner.remove_strays(strays, self.stop_grace),
        )

        if execution.status == Status.PENDING:
            self.sink.system(eid, f"{what}: the execution is queued again")
            await self._flush_logs(eid)
            await self.plane.store.release_claim(eid, lease)
            return
        details: dict[str, StepDetail] = {}
        earlier: dict[str, list[StepDetail]] = {}  # attempts before the last, by step
        for detail in execution.step_details:
            if detail.name in details:
                earlier.setdefault(detail.name, []).append(details[detail.name])
            details[detail.name] = detail
        not_started = [n for n, d in details.items() if d.phase == StepPhase.PENDING]
        for name, record in records.items():  # outcomes recorded but not yet reported
            detail = details.get(name)
            phase = _phase(record.get("phase"))
            if (
                phase
                and detail is not None
                and detail.phase in (StepPhase.PENDING, StepPhase.RUNNING)
            ):
                _ended(detail, phase, record.get("failure", ""), record.get("exit_code"))
        for name in alive + lost:
            detail = details.setdefault(name, StepDetail(name))
            if execution.status == Status.STOPPING:
                _ended(detail, StepPhase.STOPPED, f"stopped: {what}")
            else:
                _ended(detail, StepPhase.FAILED, f"interrupted: {what}")
        for detail in details.values():
            if detail.phase == StepPhase.PENDING:
                _ended(detail, StepPhase.SKIPPED, f"not started: {what}")
            elif detail.phase == StepPhase.RUNNING:  # running, yet not in the state file
                _ended(detail, StepPhase.FAILED, f"interrupted: {what}")
        failures = [
            r["failure"] for r in records.values() if r.get("failure") and not r.get("handled")
        ]

        if execution.status == Status.STOPPING:
            status = Status.STOPPED
            message = f"{what} while stopping; every process is gone"
        elif state is None:
            status = Status.UNKNOWN
            message = f"{what} while running; the runtime state of the execution was lost"
        elif failures:
            status, message = Status.DEAD, failures[0]
        elif alive or lost:
            status = Status.DEAD
            message = f"{what} while running; {_steps(alive + lost)} interrupted"
        else:
            done = [n for n, r in records.items() if r.get("phase") == str(StepPhase.SUCCEEDED)]
            if await self._complete_after_restart(
                execution, work_dir, done, details, lease, earlier, what=what, cause=cause
            ):
                return
            status = Status.DEAD
            waiting = [n for n in not_started if n not in records]
            message = f"{what} while running" + (
                f"; {_steps(waiting)} not started" if waiting else ""
            )
        self.sink.system(eid, f"execution {str(status).lower()}: {message}")
        lost = await self._flush_logs(eid)
        if lost:
            message = f"{message}; {lost}"
        try:
            await until_stored(
                self.plane.transition,
                eid,
                status,
                cause,
                message,
                expected=[execution.status],
                lease=lease,
                status_message=message,
                step_details=_with_attempts(details, earlier) or None,
            )
        except DomainError as exc:
            log.warning("execution not reconciled", execution_id=eid, error=str(exc))
        self.sink.forget(eid)

    async def _resume(
        self,
        execution: Execution,
        lease: Lease,
        work_dir: Path,
        state: dict,
        strays: list[str],
        what: str,
        cause: str = "server_restart",
    ) -> bool:
        """Run a RUNNING or STOPPING execution on from where the state file says its
        walk was, when its steps outlive the server (their runner re-attaches: a
        container, a Ray job): the steps running then are watched again, the ended ones
        count as they ended (outputs, failures, retries), the others start as the walk
        reaches them, then the exit handler (on from where it was) and the end; a
        STOPPING one finishes its stop. False, with nothing done, when it cannot go on
        (the runner's steps die with the server, the walk had not begun, a step's
        process is gone)."""
        if not self.runner.outlives_server or not isinstance(state.get("walk"), dict):
            return False
        records = state["steps"]
        run = _Run(execution, work_dir, lease=lease)
        run.state = state
        run.running = execution.status != Status.PENDING
        run.stopping = execution.status == Status.STOPPING
        try:
            run.plan = await self._plan(execution, work_dir)
        except (PlanError, DomainError):
            return False
        steps = {s.name: s for s in run.plan.steps}
        walk = run.walk
        for key in ("decided", "loops"):
            if not isinstance(walk.get(key), dict):
                walk[key] = {}
        failure = walk.get("failure")
        if isinstance(failure, list) and len(failure) == 2:
            run.failure, run.failure_cause = str(failure[0]), str(failure[1])
        run.restored = _restored_details(execution.step_details, records)
        run.details = {n: run.detail_of(n) for n in run.plan.names}
        attached: dict[str, _Resumed] = {}
        adopted = False
        # The steps a record may be of: the plan's, and the items of the withParam
        # loops expanded before the restart.
        planned = dict(steps)
        for step in steps.values():
            items = walk["loops"].get(step.name) if step.loop else None
            if isinstance(items, list):
                expanded = (loop_item(step, i, item, work_dir) for i, item in enumerate(items))
                planned.update((s.name, s) for s in expanded)
        for name, record in list(records.items()):
            if not isinstance(record, dict):
                return False
            attempt = record.get("attempt")
            if not isinstance(attempt, int) or attempt < 1:
                attempt = run.restored[name][-1].attempt or 1
            if not _under_way(record):
                run.resumed[name] = _Resumed(attempt, record)
                continue
            if record.get("starting"):
                if name not in planned:
                    return False
                output = _Output(self.sink, execution.id, name, keep=planned[name].keeps_result)
                launch = dataclasses.replace(self._launch_of(run, planned[name]), attempt=attempt)
                try:
                    handle = await self.runner.adopt(launch, output)
                except (StepGone, StepStartError) as exc:
                    log.warning("step not adopted", execution_id=execution.id, error=str(exc))
                    await self._let_go(attached)
                    return False
                if handle is None:
                    run.resumed[name] = _Resumed(attempt, record, unstarted=True)
                    continue
                # Recorded as any started attempt: a later restart re-attaches it.
                record = records[name] = {
                    **record, "starting": False, "handle": handle.state, "where": handle.where
                }
                adopted = True
                attached[name] = run.resumed[name] = _Resumed(attempt, record, handle, output)
                detail = run.details.get(name)
                if detail is not None and detail.phase == StepPhase.PENDING:
                    detail.phase = StepPhase.RUNNING
                    detail.started_at = _parse_time(record.get("started_at")) or _now()
                continue
            keep = steps[name].keeps_result if name in steps else any(
                s.keeps_result  # an item of a withParam loop
                for s in steps.values()
                if s.loop and name.startswith(f"{s.name}(")
            )
            stored, kept = await self._lines_stored(
                execution.id, name, keep, since=_parse_time(record.get("started_at"))
            )
            output = _Output(self.sink, execution.id, name, keep=keep)
            if output.kept is not None:
                output.kept, output.kept_size = kept, sum(len(t) + 1 for t in kept)
            try:
                handle = await self.runner.reattach(_handle_state(record), output, stored)
            except StepGone as exc:
                await self._let_go(attached)
                await self._end_unknown(execution, lease, what, cause, f"step {name}: {exc}")
                return True
            if handle is None:  # the recovery that follows ends what still runs
                return False
            attached[name] = run.resumed[name] = _Resumed(attempt, record, handle, output)
            detail = run.details.get(name)
            if detail is not None and detail.phase == StepPhase.PENDING:
                detail.phase = StepPhase.RUNNING
                detail.started_at = _parse_time(record.get("started_at")) or _now()
        if adopted:
            await _save_state(run)
        if self.credentials is not None:  # for the steps that start from now on
            run.token = self.credentials.issue(
                execution.id, execution.resource_group, execution.configuration_id
            )
        kept = {
            v
            for a in attached.values()
            if a.handle is not None
            for v in a.handle.state.values()
            if isinstance(v, str)
        }
        leftovers = [s for s in strays if s not in kept]
        if leftovers:
            self.sink.system(execution.id, f"{what}: stopping leftover processes {leftovers}")
            await self.runner.remove_strays(leftovers, self.stop_grace)
        for name, item in attached.items():
            self.sink.system(
                execution.id,
                f"{what}: step {name} still runs ({item.handle.where}); watching it again",
                step=name,
            )
        ended = sorted(n for n, r in run.resumed.items() if r.handle is None and not r.unstarted)
        done = sorted({*ended, *walk["decided"]})
        if done:
            self.sink.system(
                execution.id, f"{what}: going on after {_steps_list(done)}, not run again"
            )
        await self._record_resumed(run, what, cause, sorted(attached), done)
        self._runs[execution.id] = run
        run.task = asyncio.create_task(
            self._execute(run, resumed=True), name=f"execution-{execution.id}"
        )
        run.task.add_done_callback(partial(self._run_done, run))
        log.info(
            "execution resumed",
            execution_id=execution.id,
            watched=sorted(attached),
            ended=ended,
            stopping=run.stopping,
        )
        return True

    async def _record_resumed(
        self, run: _Run, what: str, cause: str, watched: list[str], done: list[str]
    ) -> None:
        """The history entry of a resume: the status stays, the cause says why the
        execution changed hands (``replica_lost``, ``replica_shutdown``,
        ``server_restart``) and the message which replica goes on with which steps."""
        if cause != "server_restart":
            message = f"{what}; replica {self.replica_id} took the execution over"
        else:
            message = f"{what}; the execution goes on"
        going = []
        if watched:
            going.append(f"{_steps_list(watched)} watched again")
        if done:
            going.append(f"going on after {_steps_list(done)}")
        if going:
            message += ": " + "; ".join(going)
        try:
            await until_stored(
                self.plane.record_unchanged,
                run.id,
                cause,
                message,
                expected=[run.execution.status],
                lease=run.lease,
            )
        except DomainError as exc:
            log.warning("resume not recorded", execution_id=run.id, error=str(exc))

    async def _let_go(self, attached: dict[str, _Resumed]) -> None:
        """Stop re-attached steps the execution will not watch, and await their end."""
        handles = [a.handle for a in attached.values() if a.handle is not None]
        for handle in handles:
            handle.stop(self.stop_grace)
        await asyncio.gather(*(h.wait() for h in handles), return_exceptions=True)

    async def _drop_unwalked(self, run: _Run) -> None:
        """Steps re-attached after a restart that the walk did not reach (it ended
        first): stopped, and awaited."""
        left = {n: r for n, r in run.resumed.items() if r.handle is not None}
        run.resumed.clear()
        if left and not run.closing:  # a shutdown leaves them to the next start
            for name in left:
                self.sink.system(
                    run.id, f"step {name} is not part of the walk any more: stopping it",
                    step=name,
                )
            await self._let_go(left)

    async def _end_unknown(
        self, execution: Execution, lease: Lease, what: str, cause: str, why: str
    ) -> None:
        """The engine lost a step that outlived the server: the execution ends UNKNOWN."""
        eid = execution.id
        details = {d.name: d for d in execution.step_details}
        for detail in details.values():
            if detail.phase == StepPhase.PENDING:
                _ended(detail, StepPhase.SKIPPED, f"not started: {what}")
            elif detail.phase == StepPhase.RUNNING:
                _ended(detail, StepPhase.FAILED, f"lost: {what}")
        message = f"{what}; {why}"
        self.sink.system(eid, f"execution unknown: {message}")
        lost = await self._flush_logs(eid)
        try:
            await until_stored(
                self.plane.transition,
                eid,
                Status.UNKNOWN,
                cause,
                message,
                expected=[execution.status],
                lease=lease,
                status_message=f"{message}; {lost}" if lost else message,
                step_details=list(details.values()) or None,
            )
        except DomainError as exc:
            log.warning("execution not reconciled", execution_id=eid, error=str(exc))
        self.sink.forget(eid)

    async def _lines_stored(
        self, execution_id: str, step: str, keep: bool = False, since: datetime | None = None
    ) -> tuple[int, list[str]]:
        """How many stdout and stderr lines of the step's attempt that began at ``since``
        the log store holds (the lines of its earlier attempts were all stored before
        it began), and (with ``keep``) its standard output's first lines, up to
        RESULT_LIMIT."""
        count, after, kept, size = 0, 0, [], 0
        start_us = None if since is None else int(since.timestamp() * 1_000_000)
        while True:
            lines = await self.plane.store.read_logs(
                execution_id,
                after_seq=after,
                limit=5000,
                steps=[step],
                streams=[LogStream.STDOUT, LogStream.STDERR],
                start_us=start_us,
            )
            count += len(lines)
            if keep:
                for line in lines:
                    if line.stream == LogStream.STDOUT:
                        size += len(line.text) + 1
                        if size <= RESULT_LIMIT:
                            kept.append(line.text)
            if len(lines) < 5000:
                return count, kept
            after = lines[-1].seq

    async def _complete_after_restart(
        self,
        execution: Execution,
        work_dir: Path,
        succeeded: list[str],
        details: dict[str, StepDetail],
        lease: Lease,
        earlier: dict[str, list[StepDetail]] | None = None,
        *,
        what: str = "server restarted",
        cause: str = "server_restart",
    ) -> bool:
        """Every step had succeeded when the server stopped (``what``: or the replica
        that ran it was lost): register the outputs and complete. False when that
        cannot be done."""
        try:
            plan = await self._plan(execution, work_dir)
        except (PlanError, DomainError):
            return False
        if set(plan.names) != set(succeeded):
            return False
        run = _Run(execution, work_dir, plan, lease=lease)
        run.details = details
        try:
            await self._collect_outputs(run)
        except (StagingError, OSError, DomainError):
            return False
        message = f"{what} after every step succeeded; outputs registered"
        self.sink.system(execution.id, f"execution completed: {message}")
        lost = await self._flush_logs(execution.id)
        if lost:
            message = f"{message}; {lost}"
        await until_stored(
            self.plane.transition,
            execution.id,
            Status.COMPLETED,
            cause,
            message,
            expected=[Status.RUNNING],
            lease=lease,
            status_message=message,
            step_details=_with_attempts(details, earlier or {}) or None,
        )
        self.sink.forget(execution.id)
        return True


def _task_result(run: _Run, requirement, task: str, result: str) -> bool:
    """Whether ``task`` (the steps it expanded to) ended as ``result`` (depends)."""
    ended = [
        run.results.get(item, "")
        for name in requirement.tasks.get(task, ())
        for item in run.loops.get(name, (name,))
    ]
    if not ended:
        return False
    if result == "AnySucceeded":
        return "Succeeded" in ended
    if result == "AllFailed":
        return all(r in ("Failed", "Errored") for r in ended)
    if result == "Succeeded":
        return "Succeeded" in ended and all(r in ("Succeeded", "Skipped") for r in ended)
    if result in ("Failed", "Errored"):
        return result in ended
    if result in ("Skipped", "Omitted"):
        return all(r == result for r in ended)
    return False  # Daemoned: no daemons here


def _failures(run: _Run) -> list[Failure]:
    """The attempts of steps that ended FAILED or STOPPED, in workflow order (Argo's
    failed nodes: a stopped pod is Failed there too; one that never ran is Error)."""
    templates = {s.name: s.template for s in run.plan.steps}
    states = run.state.get("steps", {})
    failures = []
    for detail in run.step_details():
        if detail.phase not in (StepPhase.FAILED, StepPhase.STOPPED):
            continue
        ran_by = run.ran_by.get((detail.name, detail.attempt), "")
        errored = detail.phase == StepPhase.FAILED and detail.exit_code is None
        if not ran_by and not errored and run.details.get(detail.name) is detail:
            ran_by = str(states.get(detail.name, {}).get("where") or "")  # before a restart
        failures.append(
            Failure(
                display_name=detail.name,
                message=detail.message,
                template_name=templates.get(detail.name, ""),
                phase="Error" if errored else "Failed",
                pod_name=ran_by,
                finished_at=detail.finished_at,
            )
        )
    return failures


def _resolved(step: PlannedStep, values: dict[str, str]) -> PlannedStep:
    """The step with the outputs of earlier steps (and the workflow's status and
    failures) pasted into its command, env and script. Raises PlanError."""
    where = f"step {step.name}"
    return dataclasses.replace(
        step,
        argv=[resolve_late(a, values, where) for a in step.argv],
        env={k: resolve_late(v, values, where) for k, v in step.env.items()},
        script=None if step.script is None else resolve_late(step.script, values, where),
    )


def _read_parameters(step: PlannedStep) -> tuple[dict[str, str], str]:
    """The step's output parameters from their files (worker thread): (values, why
    one could not be read or "")."""
    values: dict[str, str] = {}
    for parameter in step.parameters:
        try:
            text = parameter.path.read_text(encoding="utf-8", errors="replace")
            values[parameter.name] = text.rstrip("\r\n")
        except OSError as exc:
            if parameter.default is None:
                return values, (
                    f"step {step.name} did not write its output parameter {parameter.name} "
                    f"at {parameter.path}: {exc.strerror or exc}"
                )
            values[parameter.name] = parameter.default
    return values, ""


def _gather_loops(run: _Run) -> None:
    """Each withItems loop whose items all ended: their outputs under its name."""
    for group, names in run.plan.groups.items():
        if late_key(group, "result") in run.values or any(
            late_key(group, f"parameters.{p.name}") in run.values
            for p in run.plan.step(names[0]).parameters
        ):
            continue
        if all(n in run.results for n in names):
            _gather(run, group, list(names), run.plan.step(names[0]))


def _gather(run: _Run, loop: str, names: list[str], first: PlannedStep) -> None:
    """``{{steps.LOOP.outputs.parameters.P}}`` / ``.result``: the JSON list of the
    values of the items that gave one, in item order."""
    for parameter in first.parameters:
        keys = [late_key(n, f"parameters.{parameter.name}") for n in names]
        found = [run.values[k] for k in keys if k in run.values]
        run.values[late_key(loop, f"parameters.{parameter.name}")] = json.dumps(found)
    if first.keeps_result:
        found = [run.values[k] for k in (late_key(n, "result") for n in names) if k in run.values]
        run.values[late_key(loop, "result")] = json.dumps(found)


def _with_attempts(
    details: dict[str, StepDetail], earlier: dict[str, list[StepDetail]]
) -> list[StepDetail]:
    return [d for name, last in details.items() for d in (*earlier.get(name, ()), last)]


def _make_roots(steps: list[PlannedStep]) -> None:
    for step in steps:
        step.root.mkdir(parents=True, exist_ok=True)


def _steps_list(names: list[str]) -> str:
    return ", ".join(names) if names else "none"


def _check_sources(urls: list[str]) -> list[Path]:
    return [staging.check_source(url) for url in urls]


def _stage_step(plan: Plan, step: PlannedStep) -> None:
    """What a step needs just before it starts: other steps' outputs, its script
    (worker thread)."""
    for item in step.inputs:
        if item.source.step:
            producer = plan.step(item.source.step)
            output = producer.output(item.source.output)
            if not output.path.exists():
                raise StagingError(
                    f"input artifact {item.name}: step {producer.name} left no "
                    f"{output.name} at {output.path}"
                )
            staging.copy_into(output.path, item.path)
    if step.script is not None:
        staging.write_script(step.script_path, step.script)


def _file_name(step: str) -> str:
    """A file name for a step's name that tools take as it is (a loop item's name holds
    parentheses and a colon): the name's safe characters and a digest of it."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", step)
    if safe == step:
        return step
    return f"{safe[:60]}-{hashlib.sha256(step.encode()).hexdigest()[:8]}"


def _under_way(record: dict) -> bool:
    """Whether the state file's record is of an attempt whose process may still run."""
    return record.get("exit_code") is None and not record.get("ended")


def _parse_time(value: object) -> datetime | None:
    try:
        return datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _restored_details(
    stored: list[StepDetail], records: dict[str, dict]
) -> dict[str, list[StepDetail]]:
    """The stored details of every step by name, attempts in order, brought in line
    with the state file's records (which are ahead of the database when the server
    died between a step's start and its report; behind when it died between a retry's
    announcement and its start: that announced attempt is announced again)."""
    tries: dict[str, list[StepDetail]] = {}
    for detail in stored:
        tries.setdefault(detail.name, []).append(detail)
    for name, record in records.items():
        found = tries.setdefault(name, [StepDetail(name)])
        attempt = record.get("attempt") if isinstance(record, dict) else None
        if not isinstance(attempt, int) or attempt < 1:
            continue
        while len(found) > 1 and (found[-1].attempt or 1) > attempt:
            found.pop()
        if (found[-1].attempt or 1) < attempt:
            found.append(StepDetail(name, attempt=attempt))
    return tries


def _handle_state(record: dict) -> dict:
    """The runner's state of a step's handle in its state file record (older records
    held a process group's fields at their top)."""
    handle = record.get("handle")
    return handle if isinstance(handle, dict) else record


def _where(record: dict) -> str:
    where = record.get("where")
    if isinstance(where, str) and where:
        return where
    return f"process group {_handle_state(record).get('pgid')}"


def _inner(step: PlannedStep, path: Path) -> str:
    """Where a path under the step's root is in the step's own file system."""
    try:
        return "/" + path.relative_to(step.root).as_posix()
    except ValueError:
        return str(path)


def _ended(
    detail: StepDetail, phase: StepPhase, message: str, exit_code: int | None = None
) -> StepDetail:
    detail.phase = phase
    detail.message = message
    if exit_code is not None:
        detail.exit_code = exit_code
    if phase != StepPhase.SKIPPED and detail.finished_at is None:
        detail.finished_at = _now()
    return detail


def _phase(value: object) -> StepPhase | None:
    try:
        return StepPhase(value) if value else None
    except ValueError:
        return None


def _steps(names: list[str]) -> str:
    """``step a was`` / ``steps a, b were``, for messages."""
    if len(names) == 1:
        return f"step {names[0]} was"
    return f"steps {', '.join(names)} were"


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
