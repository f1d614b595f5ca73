"""The ports: what the domain needs of the store, one protocol per aggregate.

The use cases (server/domain/service.py, logs.py, metrics.py), the runtime and the
streams depend on these protocols only. Every method is a coroutine: an adapter runs
the work off the event loop (server/store/async_store.py runs the SQLite and
PostgreSQL repositories on worker threads) and raises the domain's errors:
NotFound, AlreadyExists, FailedPrecondition for refused lifecycle changes, and
StoreUnavailable for storage faults (nothing of the refused call is written).

Client request ids (idempotency keys) are not a port of their own: each is recorded
in the same transaction as the resource it created, so it belongs to that aggregate's
writes (``create_executions``, ``create_artifact``, ``create_configuration``).

Writes are single transactions. Lifecycle changes are compare-and-set: the adapter
changes the status only if it is still one the lifecycle table allows, and records
the transition in the history in the same transaction, so the rules hold with many
writers on many replicas.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from server.domain.audit import AuditEvent, AuditFilter
from server.domain.metrics import (
    ComparedExecution,
    CompareQuery,
    CustomInfo,
    ExecutionMetricsIn,
    MetricPoint,
    Summary,
)
from server.domain.models import (
    Artifact,
    ArtifactKind,
    Configuration,
    Executable,
    Execution,
    Lease,
    LogLine,
    LogStream,
    Page,
    Scenario,
    Secret,
    Status,
    StepDetail,
    StoredEvent,
    TargetStatus,
    Transition,
)
from server.domain.paging import PageRequest
from server.domain.resources import Resources


class CatalogStore(Protocol):
    """Scenarios, executables, artifacts and configurations of the resource groups.
    Executable versions and configurations never change once written."""

    async def put_executable(
        self, exe: Executable, audit: AuditEvent | None = None
    ) -> tuple[Executable, bool]:
        """Register a version; (stored, created). Another definition under the same id
        and version is AlreadyExists. ``audit`` (every write below takes one) is
        recorded in the same transaction as the change, and only if it is made."""
        ...

    async def get_executable(
        self, resource_group: str, executable_id: str, version: str = ""
    ) -> Executable: ...

    async def list_executables(
        self, resource_group: str, page: PageRequest, scenario_id: str = "",
        all_versions: bool = False,
    ) -> Page[Executable]: ...

    async def get_scenario(self, resource_group: str, scenario_id: str) -> Scenario: ...

    async def count_executables(self, resource_group: str, scenario_id: str) -> int: ...

    async def list_scenarios(self, resource_group: str, page: PageRequest) -> Page[Scenario]: ...

    async def create_artifact(
        self, art: Artifact, request_id: str = "", audit: AuditEvent | None = None
    ) -> Artifact:
        """Insert; a known request id returns the first artifact."""
        ...

    async def get_artifact(self, resource_group: str, artifact_id: str) -> Artifact: ...

    async def get_artifacts(
        self, resource_group: str, artifact_ids: Sequence[str]
    ) -> list[Artifact]: ...

    async def list_artifacts(
        self, resource_group: str, page: PageRequest, *, scenario_id: str = "",
        kind: ArtifactKind | None = None, execution_id: str = "",
        labels: dict[str, str] | None = None, name: str = "",
    ) -> Page[Artifact]: ...

    async def create_configuration(
        self, cfg: Configuration, request_id: str = "", audit: AuditEvent | None = None
    ) -> Configuration: ...

    async def get_configuration(
        self, resource_group: str, configuration_id: str
    ) -> Configuration: ...

    async def get_configurations(
        self, resource_group: str, configuration_ids: Sequence[str]
    ) -> dict[str, Configuration]: ...

    async def list_configurations(
        self, resource_group: str, page: PageRequest, scenario_id: str = "",
        executable_id: str = "",
    ) -> Page[Configuration]: ...


class ExecutionStore(Protocol):
    """Executions with their history of transitions, and their client request ids
    (idempotent creates). ``resource_group`` None reads across groups (runtime use)."""

    async def create_executions(
        self,
        items: Sequence[tuple[Execution, str]],
        audit: Sequence[AuditEvent | None] | None = None,
    ) -> list[tuple[Execution, bool] | Exception]:
        """Many creates (each with its request id or "") in one transaction; per item
        (execution, created) or the DomainError that refused it. ``audit``: per item,
        the event recorded if it is created."""
        ...

    async def create_execution(
        self, execution: Execution, request_id: str = "", audit: AuditEvent | None = None
    ) -> tuple[Execution, bool]: ...

    async def get_execution(
        self, resource_group: str | None, execution_id: str, with_history: bool = True
    ) -> Execution: ...

    async def execution_context(
        self, resource_group: str, executions: Sequence[Execution]
    ) -> tuple[dict[str, Artifact], dict[str, str]]:
        """Output artifacts by id and configuration names by id of executions of one
        group (what their messages show beside their own rows)."""
        ...

    async def execution_with_context(
        self, resource_group: str, execution_id: str
    ) -> tuple[Execution, dict[str, Artifact], dict[str, str]]:
        """:meth:`get_execution` with its history and :meth:`execution_context`, read
        together (one hand-off to the store for a read of one execution)."""
        ...

    async def history(self, execution_id: str) -> list[Transition]: ...

    async def last_transition_seqs(self, execution_ids: Sequence[str]) -> dict[str, int]: ...

    async def list_executions(
        self, resource_group: str, page: PageRequest, statuses: Sequence[Status] = (),
        scenario_id: str = "", executable_id: str = "", configuration_id: str = "",
        rerun_of: str = "",
    ) -> Page[Execution]: ...

    async def executions_in(self, statuses: Iterable[Status]) -> list[Execution]:
        """Executions of every group in these statuses, oldest first."""
        ...

    async def transition(
        self, execution_id: str, to_status: Status, cause: str, message: str = "", *,
        expected: Iterable[Status] | None = None, status_message: str | None = None,
        step_details: list[StepDetail] | None = None,
        target_status: TargetStatus | None = None, at: datetime | None = None,
        lease: Lease | None = None,
    ) -> Execution:
        """Compare-and-set: FailedPrecondition unless the current status may go to
        ``to_status`` (and is one of ``expected``, when given)."""
        ...

    async def record_unchanged(
        self, execution_id: str, cause: str, message: str, *,
        expected: Iterable[Status], lease: Lease | None = None,
    ) -> Execution:
        """A history entry that keeps the status (from and to are the current one),
        announced as a transition; FailedPrecondition unless it is one of ``expected``."""
        ...

    async def request_stop(
        self, resource_group: str, execution_id: str, audit: AuditEvent | None = None
    ) -> Execution:
        """PENDING or RUNNING -> STOPPING with target STOPPED; FailedPrecondition
        (EXECUTION_NOT_STOPPABLE) in any other status."""
        ...

    async def delete_execution(
        self, resource_group: str, execution_id: str, keep_metrics: bool = False,
        audit: AuditEvent | None = None,
    ) -> None:
        """Delete a final execution with its history; FailedPrecondition
        (EXECUTION_NOT_DELETABLE) in any other status. Its log lines are hidden from
        every read at once and queued for :meth:`LogStore.purge_logs`, which removes
        them later: the delete takes as long with millions of lines as with none."""
        ...

    async def update_execution(
        self, execution_id: str, *, step_details: list[StepDetail] | None = None,
        output_artifact_ids: list[str] | None = None, status_message: str | None = None,
        submitted: bool = False, lease: Lease | None = None, changed_step: str = "",
    ) -> Execution:
        """``changed_step``: the step whose change is recorded as a change event."""
        ...

    async def last_event_number(self, resource_group: str) -> int:
        """The number of the group's last recorded change (0: none). Every creation,
        transition, step change and deletion is recorded in its write's transaction,
        numbered in its resource group in commit order, on every replica alike."""
        ...

    async def read_events(
        self, resource_group: str, after: int, limit: int
    ) -> tuple[int, list[StoredEvent], dict[str, Execution]]:
        """The group's recorded changes after number ``after`` (at most ``limit``, in
        order): the group's last number read before them, the changes, and the
        executions they name that still exist, with their history."""
        ...

    async def purge_events(self, before_us: int) -> int:
        """Delete the changes recorded before ``before_us``; returns how many."""
        ...

    async def force_status(self, execution_id: str, status: Status) -> None:
        """Tests drive the lifecycle table with it."""
        ...


class ExecutionEvents(Protocol):
    """The events port: who hears of committed writes of executions, on this replica
    and from the others (through the database's notifications). Caches of reads and
    the runtime's view of remote stops subscribe here; the event and log streams read
    the rows themselves (streams/), so an event lost here costs only a cache entry,
    never a line or a transition a client sees."""

    def on_execution_written(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(execution_id)`` on the event loop after every committed
        write of an execution's row or history, before the writer resumes; and, on a
        database shared by replicas, when another replica's write of it is heard of."""
        ...

    def on_writes_unheard(self, callback: Callable[[bool], None]) -> None:
        """Call ``callback(True)`` when other replicas' writes may go unheard from now
        on (their notifications are lost): whatever was cached of executions may be
        stale and nothing should be cached; ``callback(False)`` once they are heard
        again (caches start empty again)."""
        ...


class ClaimStore(Protocol):
    """Which replica runs which execution: claims, leases and fencing tokens. Every
    claim takes a new token; writes made under an older one are refused
    (FailedPrecondition LEASE_LOST)."""

    async def claim_pending(
        self, owner: str, limit: int, lease_until_us: int
    ) -> list[tuple[Execution, Lease]]:
        """Up to ``limit`` unclaimed PENDING executions, oldest first, each claimed by
        one replica only."""
        ...

    async def claim_for_recovery(
        self, owner: str, now_us: int, lease_until_us: int, limit: int = 1000,
        include_own: bool = True,
    ) -> list[tuple[Execution, Lease, str, bool]]:
        """The active executions ``owner`` must reconcile (its own from before a
        restart, unowned running ones, and those of replicas whose lease lapsed or was
        released), with the previous owner of each and whether it released the lease."""
        ...

    async def release_leases(self, owner: str) -> int:
        """End ``owner``'s leases on active executions now (a graceful shutdown), so
        that another replica takes them over at its next round; returns how many."""
        ...

    async def release_claim(self, execution_id: str, lease: Lease) -> bool: ...

    async def renew_leases(
        self, owner: str, lease_until_us: int, held: Sequence[str] = ()
    ) -> dict[str, int]:
        """Extend ``owner``'s leases; the token of each execution of ``held`` it still
        holds (active or just ended)."""
        ...

    async def queue_position(self, execution_id: str) -> int | None: ...


class LogStore(Protocol):
    """Stored log lines of executions, numbered 1, 2, 3, ... per execution."""

    async def last_log_seq(self, execution_id: str) -> int: ...

    async def read_logs(
        self, execution_id: str, *, after_seq: int = 0, before_seq: int | None = None,
        limit: int = 1000, descending: bool = False, steps: Sequence[str] = (),
        streams: Sequence[LogStream] = (), start_us: int | None = None,
        end_us: int | None = None,
    ) -> list[LogLine]: ...

    async def read_log_rows(
        self, execution_id: str, *, after_seq: int = 0, upto_seq: int | None = None,
        before_seq: int | None = None, limit: int = 1000, descending: bool = False,
        steps: Sequence[str] = (), stream_codes: Sequence[int] = (),
        start_us: int | None = None, end_us: int | None = None,
    ) -> list[tuple]: ...

    async def read_log_rows_to_end(
        self, execution_id: str, *, after_seq: int, limit: int, steps: Sequence[str] = (),
        stream_codes: Sequence[int] = (),
    ) -> tuple[int, list[tuple]]:
        """(the highest stored sequence number, read first; then up to ``limit`` rows
        after ``after_seq``). A short read covers every line up to that number."""
        ...

    async def first_log_seq_at(self, execution_id: str, start_us: int) -> int: ...

    async def purge_logs(self, chunk: int) -> int:
        """Delete up to ``chunk`` stored lines of one deleted execution, in a short
        transaction of its own (the queue goes on where it stopped after a restart);
        the number deleted, 0 when no deleted execution has lines left. Safe to call
        from several replicas at once."""
        ...


class MetricStore(Protocol):
    """Metric series, points, tags and custom info of executions."""

    async def write(
        self,
        resource_group: str,
        entries: Sequence[ExecutionMetricsIn],
        now_us: int,
        request_id: str = "",
        request_digest: str = "",
    ) -> tuple[int, int, int]: ...

    async def require_executions(
        self, resource_group: str, execution_ids: Sequence[str]
    ) -> None: ...

    async def require_visible(self, resource_group: str, execution_ids: Sequence[str]) -> None: ...

    async def latest_points(
        self, execution_id: str, names: Sequence[str], after: tuple[str, int] | None, limit: int
    ) -> list[MetricPoint]: ...

    async def series_points(
        self, execution_id: str, names: Sequence[str], after: tuple[str, int] | None, limit: int
    ) -> list[MetricPoint]: ...

    async def tags(self, execution_ids: Sequence[str]) -> dict[str, dict[str, str]]: ...

    async def custom_info(self, execution_ids: Sequence[str]) -> dict[str, list[CustomInfo]]: ...

    async def summaries(self, execution_ids: Sequence[str]) -> dict[str, dict[str, Summary]]: ...

    async def delete(self, resource_group: str, execution_id: str, names: Sequence[str]) -> int: ...

    async def compare_page(
        self, q: CompareQuery
    ) -> tuple[list[tuple[ComparedExecution, tuple]], int, float | None]: ...


class SecretStore(Protocol):
    """The secrets of the resource groups, their values sealed (the store keeps what
    the cipher made of them, never plain values). A group sees its own only."""

    async def create_secret(self, secret: Secret, audit: AuditEvent | None = None) -> Secret:
        """Insert; AlreadyExists when the group has a secret of that name. ``audit`` (on
        each write here) is recorded in the same transaction, if the change is made."""
        ...

    async def update_secret(self, secret: Secret, audit: AuditEvent | None = None) -> Secret:
        """Replace the keys and sealed values; NotFound when there is no such secret."""
        ...

    async def get_secrets(self, resource_group: str, names: Sequence[str]) -> dict[str, Secret]:
        """The group's secrets of these names that exist, by name."""
        ...

    async def list_secrets(self, resource_group: str, page: PageRequest) -> Page[Secret]: ...

    async def delete_secret(
        self, resource_group: str, name: str, audit: AuditEvent | None = None
    ) -> None:
        """NotFound when there is no such secret."""
        ...


class SecretCipher(Protocol):
    """Encrypts secret values at rest (server/store/cipher.py: Fernet, with the
    server's key file). Synchronous and fast: a few microseconds a secret."""

    def seal(self, plain: bytes) -> str:
        """The encrypted text of ``plain``."""
        ...

    def unseal(self, sealed: str) -> bytes:
        """``plain`` again; ValueError when this key cannot open it."""
        ...


class AuditStore(Protocol):
    """The audit trail (written by the other ports' writes, with their changes)."""

    async def record_audit(self, events: list[AuditEvent]) -> None:
        """Events of changes made outside the store (the token file), on their own."""
        ...

    async def list_audit_events(
        self, where: AuditFilter, page: PageRequest
    ) -> Page[AuditEvent]:
        """Newest first."""
        ...


class Store(
    CatalogStore, ExecutionStore, ExecutionEvents, ClaimStore, LogStore, AuditStore, Protocol
):
    """Everything the control plane reads and writes of its metadata."""

    kind: str  # "sqlite" or "postgresql"


# ------------------------------------------------------------------ step runners
#
# The executor (server/runtime/executor.py) walks an execution's workflow and hands
# each step to a StepRunner: the local process runner, the container runner, the Ray
# runner. A runner only starts, watches and stops one step at a time; ordering,
# failures, statuses, logs storage and outputs stay with the executor.


class StepCredentials(Protocol):
    """Issues each execution's step token: a credential scoped to that execution alone
    (write its metrics, read its own configuration), given to its steps as
    TRAINYARD_TOKEN and revoked when the execution ends."""

    def issue(self, execution_id: str, resource_group: str, configuration_id: str) -> str: ...

    def revoke(self, execution_id: str) -> None: ...


class StepStartError(Exception):
    """A step could not start (a missing image, a command not found, an engine error).
    The message is shown as the step's failure and the execution's DEAD cause."""


class StepGone(Exception):
    """:meth:`StepRunner.reattach`: the engine no longer knows the step recorded (a Ray
    job the cluster forgot). The execution then ends UNKNOWN with this message."""


@dataclass(frozen=True, slots=True)
class Mount:
    """A host path the step sees at ``target`` in its own file system."""

    source: str  # path on the server's machine
    target: str  # absolute path in the step's file system
    read_only: bool = False
    # A file the step writes (an output parameter): a runner with a file system of
    # its own copies it out after the step exited instead of mounting it.
    copy_out: bool = False
    # A volume of the template (``volumes`` / ``volumeMounts``): "emptyDir", a folder
    # made empty for each attempt, or "secret", the ``contents`` (relative path, text)
    # written as files before the step starts and removed once it ended.
    volume: str = ""
    contents: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class StepLaunch:
    """Everything a runner needs to start one step."""

    execution_id: str
    resource_group: str
    step: str  # the step's name, as StepDetail names it
    template: str  # the template it runs
    attempt: int  # 1 for the first try
    image: str  # the template's image ("" when none)
    command: tuple[str, ...]  # the template's command (empty: the image's entrypoint)
    args: tuple[str, ...]
    env: Mapping[str, str]  # the template's env and the TRAINYARD_* variables
    api_address: str  # host:port of the API, as a process on the server's machine dials it
    root: str  # the step's directory on the server's machine (its file system root)
    scratch: str = ""  # a directory for the runner's own files of the step (may not exist)
    api_url: str = ""  # http://host:port of the API over HTTP (Connect protocol), or ""
    working_dir: str = ""  # the template's workingDir in the step's file system, or ""
    mounts: tuple[Mount, ...] = ()  # artifacts and scripts, at their template paths
    resources: Resources = field(default_factory=Resources)
    pull_auth: str | None = None  # registry credentials (a container auth file's text)

    @property
    def argv(self) -> list[str]:
        return [*self.command, *self.args]


@dataclass(frozen=True, slots=True)
class StepExit:
    """How a step ended."""

    exit_code: int  # 128 + N when killed by signal N
    signal: int | None = None  # the signal that killed it, when one did
    message: str = ""  # the engine's account of a failure (Ray's job message), or ""


class StepOutput(Protocol):
    """Where a runner sends a step's output: the executor's log pipeline."""

    def write(self, stream: LogStream, lines: list[str]) -> None:
        """Lines of the step's stdout or stderr, without their ends of line."""
        ...

    async def room(self) -> None:
        """Wait until the log pipeline takes more lines (await it between reads)."""
        ...

    def backlog(self) -> bool:
        """Whether lines written are still waiting to be stored (the store is slow)."""
        ...

    def note(self, text: str) -> None:
        """A line of the runner's own (a system log line of the step)."""
        ...


class StepHandle(Protocol):
    """A running step."""

    @property
    def state(self) -> dict[str, Any]:
        """JSON-serialisable: what a later server needs to find the step again
        (:meth:`StepRunner.reattach`, :meth:`StepRunner.discard`)."""
        ...

    @property
    def where(self) -> str:
        """What runs the step, for messages: ``process group 123``, ``container 4f2a``."""
        ...

    async def wait(self) -> StepExit:
        """Until the step ended and its output is read (or given up on, said as a
        note); what remains of the step is gone by then."""
        ...

    def stop(self, grace: float) -> None:
        """Begin a stop: SIGTERM (or the engine's stop) now, SIGKILL ``grace`` seconds
        later if the step is still running. Returns at once; :meth:`wait` tells the end."""
        ...


class StepRunner(Protocol):
    """Runs steps somewhere: local processes, containers, Ray jobs."""

    name: str
    # Whether steps run in a file system of their own, where the launch's mounts put
    # the artifacts at their template paths (a container); else in ``root`` on the
    # server's machine, with the command and artifact paths pointing there.
    isolated: bool
    # Whether a step goes on running while no server watches it (a Ray job): then a
    # server shutdown leaves its steps running, for the next start to re-attach.
    outlives_server: bool

    async def open(self) -> None:
        """Once, at server start, before any other call (detect an engine, ...)."""
        ...

    async def admit(self, launch: StepLaunch) -> str:
        """"" when the step may start now; else why it waits (``waiting for 4 CPUs``),
        shown in its step detail. The executor asks again a little later."""
        ...

    async def start(self, launch: StepLaunch, output: StepOutput) -> StepHandle:
        """Start the step; raises StepStartError when it cannot."""
        ...

    async def reattach(
        self, state: Mapping[str, Any], output: StepOutput, lines_stored: int
    ) -> StepHandle | None:
        """After a restart: the step recorded as ``state``, watched again (whether it
        still runs or ended meanwhile), its output resumed after the first
        ``lines_stored`` lines of stdout and stderr (those the log store holds). None
        when the runner cannot re-attach (the step is then ended with :meth:`discard`);
        StepGone when the engine no longer knows the step."""
        ...

    async def adopt(self, launch: StepLaunch, output: StepOutput) -> StepHandle | None:
        """After a restart: the attempt ``launch`` describes, if a server that died
        while starting it (before it recorded the handle) had started it, watched as
        :meth:`reattach` would, from its first line; None when it never started (it is
        then started now)."""
        ...

    async def alive(self, state: Mapping[str, Any]) -> bool:
        """Whether anything of the step recorded as ``state`` still runs."""
        ...

    async def discard(self, state: Mapping[str, Any], grace: float) -> None:
        """End whatever is left of the step recorded as ``state``."""
        ...

    async def strays(
        self, execution_ids: Sequence[str], everywhere: bool = False
    ) -> dict[str, list[str]]:
        """What still runs for these executions outside the handles the executor
        holds or recorded (processes that left their group, containers of deleted
        executions), by execution id. ``everywhere``: after a restart, look beyond
        what this server started."""
        ...

    async def remove_strays(self, strays: Sequence[str], grace: float) -> None:
        """End what :meth:`strays` found."""
        ...

    async def executions_left(self) -> list[str]:
        """Ids of the executions this runner (on this replica) still holds anything of,
        whether running or not: after a restart, the executor removes what belongs to
        executions that are gone (:meth:`strays`, :meth:`remove_strays`)."""
        ...

    async def close(self) -> None:
        """Server shutdown (after every handle was stopped or left to recovery)."""
        ...
