"""Deletes that do not freeze: deleting an execution with a million log lines returns at
once, its lines are invisible at once, and the background purger removes them in
chunks while every other call goes on answering; a purge interrupted by a stop goes on
after the next start. Both backends."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from streamkit import Driver, make_configuration, make_execution

from server.domain.errors import StoreUnavailable
from server.domain.logpurge import LogPurger
from server.domain.models import Status
from server.domain.service import ExecutionEvent
from tests.helpers import rpc_error, wait_for
from trainyard.v1 import execution_service_pb2 as epb
from trainyard.v1 import log_service_pb2 as lpb
from trainyard.v1 import meta_service_pb2 as mpb

pytestmark = [pytest.mark.driven, pytest.mark.backends("sqlite", "postgresql")]

# Lines of the big execution: (stored through append_logs, times that many in all).
# PostgreSQL takes lines in through the store's INSERTs several times slower than
# SQLite (a quarter of a million take seconds there), so half of its lines are a copy
# made inside the database; its one-transaction delete of the half million still
# takes tens of times longer than a DeleteExecution that only queues them.
LINES = {"sqlite": (1_000_000, 1), "postgresql": (250_000, 2)}
BATCH = 100_000  # lines per append_logs transaction
TEXT = "epoch 12/100 step 3456/10000 loss=0.123456 accuracy=0.987654 lr=0.001 elapsed=12.3s"


def _append(server, execution_id: str, count: int) -> None:
    """Store ``count`` lines of the execution, straight through the server's writer."""
    store = server.plane.store
    for start in range(1, count + 1, BATCH):
        rows = [
            (execution_id, seq, 1_700_000_000_000_000 + seq, "train", 1, f"{seq} {TEXT}")
            for seq in range(start, min(start + BATCH, count + 1))
        ]
        server.run_sync(store.run_write, lambda s, rows=rows: s.append_logs(rows), timeout=120)


def _copy(server, source: str, target: str, offset: int = 0) -> None:
    """Copy the lines of ``source`` to ``target`` inside the database, numbered from
    ``offset`` + 1 on."""
    server.run_sync(
        server.plane.store.run_write,
        lambda s: s.execute(
            "INSERT INTO log_line (execution_id, seq, at_us, step, stream, text)"
            " SELECT ?, seq + ?, at_us + ?, step, stream, text FROM log_line"
            " WHERE execution_id = ?",
            (target, offset, offset, source),
        ),
        timeout=120,
    )


def _query(server, sql: str, *args):
    """Raw rows of ``sql`` on a reader: what the tables hold, hidden lines included."""
    return server.run_sync(
        server.plane.store.run_read, lambda s: s.execute(sql, args).fetchall(), timeout=120
    )


def _top_line(server, execution_id: str) -> int | None:
    """The highest stored sequence number of the execution, hidden or not (the purge
    goes up from the lowest, so this stays until its last chunk); a cheap probe."""
    rows = _query(server, "SELECT MAX(seq) FROM log_line WHERE execution_id = ?", execution_id)
    return rows[0][0]


def _purged(server, execution_id: str) -> bool:
    if _top_line(server, execution_id) is not None:
        return False
    left = _query(server, "SELECT COUNT(*) FROM log_line WHERE execution_id = ?", execution_id)
    queued = _query(server, "SELECT COUNT(*) FROM log_purge")
    return left[0][0] == 0 and queued[0][0] == 0


def _finished_execution(server, stubs, configuration_id: str) -> str:
    execution_id = make_execution(stubs, configuration_id)
    server.run_sync(server.plane.store.force_status, execution_id, Status.COMPLETED)
    return execution_id


def _old_delete(server, execution_id: str) -> float:
    """What DeleteExecution did before purging: the execution and every line of it in
    one transaction. Seconds it held the writer (and SQLite's write lock)."""

    def delete(s) -> float:
        started = time.perf_counter()
        with s.write_lock():
            s.delete_execution("default", execution_id)
            s.execute("DELETE FROM log_line WHERE execution_id = ?", (execution_id,))
            s.execute("DELETE FROM log_purge WHERE execution_id = ?", (execution_id,))
        return time.perf_counter() - started

    return server.run_sync(server.plane.store.run_write, delete, timeout=120)


def _not_found(stubs, execution_id: str) -> None:
    listed = rpc_error(stubs.logs.ListLogs, lpb.ListLogsRequest(execution_id=execution_id))
    assert listed.code() == grpc.StatusCode.NOT_FOUND
    tail = stubs.logs.TailLogs(lpb.TailLogsRequest(execution_id=execution_id), timeout=30)
    assert rpc_error(next, tail).code() == grpc.StatusCode.NOT_FOUND
    followed = stubs.logs.TailLogs(
        lpb.TailLogsRequest(execution_id=execution_id, follow=True, tail_lines=10), timeout=30
    )
    assert rpc_error(next, followed).code() == grpc.StatusCode.NOT_FOUND


def test_delete_of_a_million_lines_returns_at_once_and_the_purge_lets_calls_through(
    server, stubs, backend
):
    appended, times = LINES[backend]
    lines = appended * times
    configuration_id = make_configuration(stubs)
    big = _finished_execution(server, stubs, configuration_id)
    baseline = _finished_execution(server, stubs, configuration_id)
    _append(server, big, appended)
    for copy in range(1, times):
        _copy(server, big, big, offset=copy * appended)
    _copy(server, big, baseline)  # the same lines for the baseline
    running = Driver(server, make_execution(stubs, configuration_id))
    running.transition(Status.RUNNING, "step_started")
    newest = lpb.ListLogsRequest(execution_id=big, limit=5, order=lpb.LOG_ORDER_DESCENDING)
    page = stubs.logs.ListLogs(newest)
    assert [line.sequence for line in page.lines] == list(range(lines, lines - 5, -1))

    old = _old_delete(server, baseline)
    assert _top_line(server, baseline) is None

    started = time.perf_counter()
    stubs.executions.DeleteExecution(epb.DeleteExecutionRequest(execution_id=big))
    new = time.perf_counter() - started
    # Invisible at once, while the lines are still stored: every log read of it is
    # NOT_FOUND, and the store's own reads of its lines find none.
    _not_found(stubs, big)
    store = server.plane.store
    hidden = server.run_sync(
        store.run_read,
        lambda s: (
            s.read_log_rows(big, limit=10),
            s.last_log_seq(big),
            s.execute("SELECT MAX(seq) FROM log_line WHERE execution_id = ?", (big,)).fetchone()[0],
        ),
    )
    assert hidden == ([], 0, lines)
    # The one-transaction delete of as many lines took `old` seconds (about 0.9 s for
    # a million lines on SQLite, 0.3 s for half a million on PostgreSQL, on 2 cores);
    # the delete that queues them, over gRPC, a few milliseconds whatever their number.
    assert new < old / 4, f"DeleteExecution took {new:.3f} s, the old delete {old:.3f} s"

    # While the purge runs, other calls answer: writes wait for one chunk at most, and
    # so do the lines of a running execution (stored on the log sink's connection).
    answered_meanwhile = 0
    slowest = 0.0
    deadline = time.monotonic() + 60
    while _top_line(server, big) is not None and time.monotonic() < deadline:
        started = time.perf_counter()
        stubs.meta.GetMeta(mpb.GetMetaRequest(), timeout=10)
        created = stubs.executions.CreateExecution(
            epb.CreateExecutionRequest(configuration_id=configuration_id), timeout=10
        ).execution
        running.write(1)  # stored and flushed
        slowest = max(slowest, time.perf_counter() - started)
        if _top_line(server, big) is not None:
            answered_meanwhile += 1  # answered before the purge was done
        got = stubs.executions.GetExecution(epb.GetExecutionRequest(execution_id=created.id))
        assert got.execution.id == created.id
    assert answered_meanwhile >= 3, "no call was answered while the purge ran"
    assert [r[1] for r in running.stored()] == list(range(1, running.written + 1))
    # A chunk is at most 20,000 lines, and smaller when it takes over 0.1 s: a call
    # waits for a few of them at worst, never for the purge of the million.
    assert slowest < 1.0, f"a call took {slowest:.3f} s during the purge"

    purger = server.running.extra["log_purger"]
    wait_for(lambda: purger.purged == lines and _purged(server, big), timeout=60)


def test_purge_goes_on_after_a_restart(server_factory, stubs_for):
    server = server_factory()
    stubs = stubs_for(server)
    # No purging on this server: what it queues is left for the next one.
    server.call(server.running.extra["log_purger"].close())
    execution_id = _finished_execution(server, stubs, make_configuration(stubs))
    _append(server, execution_id, 30_000)
    stubs.executions.DeleteExecution(epb.DeleteExecutionRequest(execution_id=execution_id))
    _not_found(stubs, execution_id)
    assert _query(server, "SELECT execution_id FROM log_purge") == [(execution_id,)]
    assert _top_line(server, execution_id) == 30_000
    server.stop()

    restarted = server_factory()
    purger = restarted.running.extra["log_purger"]
    wait_for(lambda: purger.purged == 30_000 and _purged(restarted, execution_id), timeout=60)
    _not_found(stubs_for(restarted), execution_id)


# ------------------------------------------------------- the purger on its own


class _Store:
    """purge_logs of a fake store: fails as told, then deletes from ``lines``."""

    def __init__(self, lines: int, faults: int = 0):
        self.lines = lines
        self.faults = faults
        self.sizes: list[int] = []
        self.empty = asyncio.Event()

    async def purge_logs(self, chunk: int) -> int:
        if self.faults:
            self.faults -= 1
            raise StoreUnavailable(message="the store is unavailable: database is locked")
        self.sizes.append(chunk)
        deleted = min(chunk, self.lines)
        self.lines -= deleted
        if not self.lines:
            self.empty.set()
        return deleted


def test_purger_retries_after_storage_faults_and_shrinks_slow_chunks():
    async def main():
        # target < 0: every chunk counts as slow, so each is half the one before.
        store = _Store(60_000, faults=2)
        purger = LogPurger(store, retry_delay=0.001, max_pause=0, target=-1, min_chunk=2000)
        purger.start()
        await asyncio.wait_for(store.empty.wait(), 10)
        await purger.close()
        return store, purger

    store, purger = asyncio.run(main())
    assert purger.failures == 2 and purger.purged == 60_000
    assert store.sizes[:6] == [20_000, 10_000, 5000, 2500, 2000, 2000]


def test_purger_is_woken_by_deletes():
    async def main():
        store = _Store(0)
        purger = LogPurger(store, interval=3600)
        purger.start()
        while not store.sizes:  # its first look, at start: nothing queued
            await asyncio.sleep(0)
        store.lines = 10
        purger.on_event(ExecutionEvent("deleted", None))  # type: ignore[arg-type]
        await asyncio.wait_for(store.empty.wait(), 10)
        await purger.close()
        return store, purger

    store, purger = asyncio.run(main())
    assert purger.purged == 10
