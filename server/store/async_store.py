"""The store ports (server/domain/ports.py) on the synchronous repositories.

Each method hands its repository call to a worker thread (server/store/workers.py):
reads to a reader, writes to the writer. Rows become domain objects on the worker, so
the event loop only receives finished objects. The exception: what the repository keeps
in its caches of immutable rows (configurations, executable versions) is answered on
the loop, without a query or a wait on a lock, and so is an execution's context when it
needs nothing else; every create reads them, and a hand-off costs more than the read.

Writes of an execution's row or history are tracked on the writer: once the write
has committed, the loop calls the ``on_execution_written`` callbacks with each
written execution id before the writer's caller resumes. A cache of reads (the
GetExecution responses) drops the execution then; see server/api/executions.py for
how a read that raced with a write is kept out of it.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Callable, Sequence
from typing import Any

from server.domain.models import Artifact, Configuration, Executable, Execution
from server.store.metrics import MetricStore as SyncMetricStore
from server.store.repository import Store as SyncStore
from server.store.workers import StoreWorkers, storage_fault

# Reads of executions (GetExecution's) handed to a reader together, at most.
MAX_READ_GROUP = 256


def _reader(method: Callable[..., Any]):
    name = method.__name__

    async def read(self, *args, **kwargs):
        return await self.workers.read(getattr(self.sync, name), *args, **kwargs)

    read.__name__ = read.__qualname__ = name
    read.__doc__ = method.__doc__
    return read


def _writer(method: Callable[..., Any]):
    name = method.__name__

    async def write(self, *args, **kwargs):
        return await self._write(getattr(self.sync, name), *args, **kwargs)

    write.__name__ = write.__qualname__ = name
    write.__doc__ = method.__doc__
    return write


class AsyncStore:
    """The control plane's store: catalog, executions, logs, off the event loop."""

    def __init__(self, url: str, readers: int = 4, *, busy_timeout: float = 10.0):
        self.sync = SyncStore(url, busy_timeout=busy_timeout)
        self.kind = self.sync.kind
        self.url = url
        self.workers = StoreWorkers(
            readers,
            shared=not self.sync.in_memory,
            close_connection=self.sync.close,
            on_fault=self.sync.reset_connection,
        )
        self._written = threading.local()
        self.sync.execution_write_hooks.append(self._track_written)
        self._on_written: list[Callable[[str], None]] = []
        self._on_written_here: list[Callable[[str], None]] = []
        self._on_unheard: list[Callable[[bool], None]] = []
        # Reads of executions waiting to be read together, and the task reading them.
        self._reads: list[tuple[str, str, asyncio.Future]] = []
        self._reading: asyncio.Task | None = None

    # ------------------------------------------------------------- plumbing

    def _track_written(self, execution_id: str) -> None:
        ids = getattr(self._written, "ids", None)
        if ids is not None:
            ids.append(execution_id)

    def _tracked(self, fn: Callable[..., Any], args, kwargs) -> tuple[bool, Any, list[str]]:
        """On the writer: run ``fn``, noting the executions it wrote."""
        self._written.ids = []
        try:
            return True, fn(*args, **kwargs), self._written.ids
        except Exception as exc:  # noqa: BLE001 - re-raised on the loop
            if storage_fault(exc) is not None:
                self.workers._after_fault()
            return False, exc, self._written.ids
        finally:
            self._written.ids = None

    async def _write(self, fn: Callable[..., Any], *args, **kwargs):
        ok, value, written = await self.workers.write(self._tracked, fn, args, kwargs)
        for execution_id in written:
            for callback in self._on_written:
                callback(execution_id)
            for callback in self._on_written_here:
                callback(execution_id)
        if not ok:
            raise storage_fault(value) or value
        return value

    def on_execution_written(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(execution_id)`` after every committed write of an
        execution: by this process, and (through ``written_elsewhere``) by another
        replica of the same database."""
        self._on_written.append(callback)

    def on_execution_written_here(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(execution_id)`` after every write this process committed,
        and not for writes heard of from elsewhere (what a notifier tells the others)."""
        self._on_written_here.append(callback)

    def on_writes_unheard(self, callback: Callable[[bool], None]) -> None:
        self._on_unheard.append(callback)

    def writes_unheard(self, unheard: bool) -> None:
        """True: other replicas' writes may go unheard from now on (the notifier lost
        its connection); False: they are heard again. The ``on_writes_unheard``
        callbacks drop every cached read either way."""
        for callback in self._on_unheard:
            callback(unheard)

    def written_elsewhere(self, execution_id: str) -> None:
        """Another replica committed a write of the execution (its notification was
        received, so the write is visible to reads from now on): the
        ``on_execution_written`` callbacks drop what they cached of it."""
        for callback in self._on_written:
            callback(execution_id)

    async def run_read(self, fn: Callable[..., Any], *args, **kwargs):
        """Run ``fn(sync_store, ...)`` on a reader (tests and tools)."""
        return await self.workers.read(fn, self.sync, *args, **kwargs)

    async def run_write(self, fn: Callable[..., Any], *args, **kwargs):
        """Run ``fn(sync_store, ...)`` on the writer, tracked like every write."""
        return await self._write(fn, self.sync, *args, **kwargs)

    def close(self) -> None:
        self.workers.close()
        self.sync.close()

    # -------------------------------------------------------------- catalog

    put_executable = _writer(SyncStore.put_executable)
    page_token_key = _writer(SyncStore.page_token_key)
    purge_idempotency_keys = _writer(SyncStore.purge_idempotency_keys)

    async def get_executable(
        self, resource_group: str, executable_id: str, version: str = ""
    ) -> Executable:
        """SyncStore.get_executable; an exact version that is cached is answered here,
        without the hand-off to a reader (every create reads one)."""
        if version:
            cached = self.sync.cached_executable(resource_group, executable_id, version)
            if cached is not None:
                return cached
        return await self.workers.read(
            self.sync.get_executable, resource_group, executable_id, version
        )

    list_executables = _reader(SyncStore.list_executables)
    get_scenario = _reader(SyncStore.get_scenario)
    count_executables = _reader(SyncStore.count_executables)
    list_scenarios = _reader(SyncStore.list_scenarios)
    create_artifact = _writer(SyncStore.create_artifact)
    get_artifact = _reader(SyncStore.get_artifact)
    get_artifacts = _reader(SyncStore.get_artifacts)
    list_artifacts = _reader(SyncStore.list_artifacts)
    create_configuration = _writer(SyncStore.create_configuration)

    async def get_configuration(self, resource_group: str, configuration_id: str) -> Configuration:
        """SyncStore.get_configuration; a cached one is answered here, without the
        hand-off to a reader (every create reads one)."""
        cached = self.sync.cached_configuration(resource_group, configuration_id)
        if cached is not None:
            return cached
        return await self.workers.read(
            self.sync.get_configuration, resource_group, configuration_id
        )

    get_configurations = _reader(SyncStore.get_configurations)
    list_configurations = _reader(SyncStore.list_configurations)

    # ----------------------------------------------------------- executions

    create_executions = _writer(SyncStore.create_executions)
    create_execution = _writer(SyncStore.create_execution)
    get_execution = _reader(SyncStore.get_execution)
    async def execution_context(
        self, resource_group: str, executions: Sequence[Execution]
    ) -> tuple[dict[str, Artifact], dict[str, str]]:
        """SyncStore.execution_context; answered here, without the hand-off to a reader,
        when the executions have no output artifacts and their configurations are
        cached (a create's response, and most reads of executions still running)."""
        if not any(e.output_artifact_ids for e in executions):
            names: dict[str, str] = {}
            for configuration_id in {e.configuration_id for e in executions}:
                cached = self.sync.cached_configuration(resource_group, configuration_id)
                if cached is None:
                    break
                names[configuration_id] = cached.name
            else:
                return {}, names
        return await self.workers.read(self.sync.execution_context, resource_group, executions)

    async def execution_with_context(
        self, resource_group: str, execution_id: str
    ) -> tuple[Execution, dict[str, Artifact], dict[str, str]]:
        """SyncStore.execution_with_context, read together with the other reads of
        executions asked for meanwhile: one hand-off to a reader, and one statement per
        table, for all of them (the hand-off and the wake-up of the loop cost more than
        such a read). Reads asked for while a group is being read wait for the next."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._reads.append((resource_group, execution_id, future))
        if self._reading is None:
            self._reading = loop.create_task(self._read_groups(), context=contextvars.Context())
        return await future

    async def _read_groups(self) -> None:
        try:
            while self._reads:
                await asyncio.sleep(0)  # the reads of this turn of the loop join
                group = [item for item in self._reads[:MAX_READ_GROUP] if not item[2].done()]
                del self._reads[:MAX_READ_GROUP]
                if not group:
                    continue
                try:
                    results = await self.workers.read(
                        self.sync.executions_with_context, [(g, e) for g, e, _ in group]
                    )
                except Exception as exc:  # noqa: BLE001 - every caller of the group hears it
                    results = [exc] * len(group)
                for (_, _, future), result in zip(group, results, strict=True):
                    if future.done():
                        continue
                    if isinstance(result, BaseException):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        finally:
            self._reading = None
    history = _reader(SyncStore.history)
    last_transition_seqs = _reader(SyncStore.last_transition_seqs)
    list_executions = _reader(SyncStore.list_executions)
    executions_in = _reader(SyncStore.executions_in)
    transition = _writer(SyncStore.transition)
    record_unchanged = _writer(SyncStore.record_unchanged)
    request_stop = _writer(SyncStore.request_stop)
    delete_execution = _writer(SyncStore.delete_execution)
    record_audit = _writer(SyncStore.record_audit)
    list_audit_events = _reader(SyncStore.list_audit_events)
    update_execution = _writer(SyncStore.update_execution)
    last_event_number = _reader(SyncStore.last_event_number)
    read_events = _reader(SyncStore.read_events)
    purge_events = _writer(SyncStore.purge_events)
    force_status = _writer(SyncStore.force_status)

    # ---------------------------------------------------------------- leases

    claim_pending = _writer(SyncStore.claim_pending)
    claim_for_recovery = _writer(SyncStore.claim_for_recovery)
    release_leases = _writer(SyncStore.release_leases)
    release_claim = _writer(SyncStore.release_claim)
    renew_leases = _writer(SyncStore.renew_leases)
    queue_position = _reader(SyncStore.queue_position)

    # ----------------------------------------------------------------- logs

    last_log_seq = _reader(SyncStore.last_log_seq)
    read_logs = _reader(SyncStore.read_logs)
    read_log_rows = _reader(SyncStore.read_log_rows)
    read_log_rows_to_end = _reader(SyncStore.read_log_rows_to_end)
    first_log_seq_at = _reader(SyncStore.first_log_seq_at)
    # A writer: its chunks take turns with every other write on the writer thread.
    purge_logs = _writer(SyncStore.purge_logs)

    # -------------------------------------------------------------- secrets

    create_secret = _writer(SyncStore.create_secret)
    update_secret = _writer(SyncStore.update_secret)
    get_secrets = _reader(SyncStore.get_secrets)
    list_secrets = _reader(SyncStore.list_secrets)
    delete_secret = _writer(SyncStore.delete_secret)


class AsyncMetricStore:
    """The metric port on the synchronous metric repository, on the same workers."""

    def __init__(self, store: AsyncStore):
        self.sync = SyncMetricStore(store.sync)
        self.workers = store.workers
        self._store = store

    async def _write(self, fn, *args, **kwargs):
        return await self._store._write(fn, *args, **kwargs)

    write = _writer(SyncMetricStore.write)
    delete = _writer(SyncMetricStore.delete)
    require_executions = _reader(SyncMetricStore.require_executions)
    require_visible = _reader(SyncMetricStore.require_visible)
    latest_points = _reader(SyncMetricStore.latest_points)
    series_points = _reader(SyncMetricStore.series_points)
    tags = _reader(SyncMetricStore.tags)
    custom_info = _reader(SyncMetricStore.custom_info)
    summaries = _reader(SyncMetricStore.summaries)
    compare_page = _reader(SyncMetricStore.compare_page)
