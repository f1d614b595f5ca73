"""Storage faults against real servers on a file database: another process holding
SQLite's write lock, an I/O error of the store, and a plain bug.

While another process holds the write lock, what needs no write keeps answering
(health, meta, a cached GetExecution, a tail of stored lines, an open live tail);
writes wait the busy timeout, then answer UNAVAILABLE (STORE_UNAVAILABLE) with a retry
delay and leave nothing written; once the lock is released the same writes succeed.
An execution's end meanwhile (its last lines stored, its final status recorded) holds
up nothing else. A storage fault is never INTERNAL, and a bug is never UNAVAILABLE."""

from __future__ import annotations

import gc
import queue
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from streamkit import Driver, wait_for

from server.domain.models import Status, TargetStatus
from server.process_tuning import tune_process
from tests.helpers import iris_configuration, register_iris
from trainyard.v1 import artifact_pb2, execution_pb2
from trainyard.v1 import artifact_service_pb2 as art
from trainyard.v1 import execution_service_pb2 as ex
from trainyard.v1 import log_service_pb2 as lg
from trainyard.v1 import meta_service_pb2 as meta

pytestmark = pytest.mark.driven

# The scenario: another process holds the write lock this long.
HOLD_SECONDS = 3.0
# The server's busy timeout in the lock test: three writes, one after the other (the
# server has one writer), each waiting this long, end well within the hold.
BUSY_TIMEOUT = 0.5
# What a call that needs no write may take while the lock is held.
LATENCY_BUDGET = 0.100
# A write refused for the lock answers within the busy timeout and this much more.
WRITE_SLACK = 1.0
# Between two rounds of probes: a stall of the event loop cannot fall between them,
# and the probes do not load the machine they measure.
PROBE_PAUSE = 0.010

# Takes the write lock (BEGIN IMMEDIATE: in WAL mode readers go on reading), says so,
# holds it, commits (nothing) and says so.
LOCK_HOLDER = """
import sqlite3, sys, time
connection = sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None)
connection.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
connection.execute("COMMIT")
connection.close()
print("released", flush=True)
"""


@pytest.fixture
def tuned_process():
    """The process tuned as ``python -m server`` tunes it (server/process_tuning.py),
    for the test's length: the cyclic collector kept off the event loop's path, the GIL
    handed over every millisecond. A test's server shares pytest's process, whose heap a
    full collection with the default settings walks for tens of milliseconds; the
    latencies measured here are those of the server as it runs."""
    threshold, interval = gc.get_threshold(), sys.getswitchinterval()
    tune_process()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
        sys.setswitchinterval(interval)


class LockHolder:
    """The separate process holding the database's write lock; its lines on a queue."""

    def __init__(self, database: Path, seconds: float):
        self.process = subprocess.Popen(
            [sys.executable, "-c", LOCK_HOLDER, str(database), str(seconds)],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line.strip())
        self.lines.put("<exited>")

    def expect(self, word: str, timeout: float) -> float:
        """Wait for the holder to print ``word``; when it did (monotonic time)."""
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(
                f"the lock holder did not print {word!r} in {timeout} s"
            ) from None
        assert line == word, f"the lock holder printed {line!r}, not {word!r}"
        return time.monotonic()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()  # by its pid
        self.process.wait(10)
        if self.process.stdout is not None:
            self.process.stdout.close()


def store_error(error: grpc.RpcError) -> tuple[error_details_pb2.ErrorInfo | None, float | None]:
    """The ErrorInfo and the RetryInfo delay (seconds) of a failed call, None if absent."""
    status = rpc_status.from_call(error)
    info = delay = None
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            delay = retry.retry_delay.ToNanoseconds() / 1e9
    return info, delay


def refused(call, *args, **kwargs) -> tuple[grpc.RpcError, float]:
    """Make the call, which must fail; its error and how long it took."""
    start = time.perf_counter()
    try:
        call(*args, **kwargs)
    except grpc.RpcError as error:
        return error, time.perf_counter() - start
    raise AssertionError(f"{call} succeeded; it should have been refused")


def assert_store_unavailable(error: grpc.RpcError) -> None:
    assert error.code() == grpc.StatusCode.UNAVAILABLE, (error.code(), error.details())
    info, delay = store_error(error)
    assert info is not None and info.reason == "STORE_UNAVAILABLE", info
    assert delay is not None and delay > 0, delay
    assert "Traceback" not in error.details() and 'File "' not in error.details()


def dataset(name: str) -> art.CreateArtifactRequest:
    return art.CreateArtifactRequest(
        artifact=artifact_pb2.Artifact(
            name=name,
            kind=artifact_pb2.ARTIFACT_KIND_DATASET,
            url=f"file:///datasets/{name}.csv",
            scenario_id="iris",
        ),
        request_id=f"artifact-{name}",
    )


class Prober:
    """Calls that need no write, round and round on a thread of their own, each timed."""

    def __init__(self, calls: dict[str, Callable[[], object]]):
        self.calls = calls
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.errors: list[str] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def round(self) -> None:
        for name, call in self.calls.items():
            start = time.perf_counter()
            try:
                call()
            except Exception as exc:  # noqa: BLE001 - reported by the test
                self.errors.append(f"{name}: {exc!r}")
            self.latencies[name].append(time.perf_counter() - start)

    def _run(self) -> None:
        while not self.stopping.wait(PROBE_PAUSE):
            self.round()

    def start(self) -> None:
        self.latencies.clear()
        self.thread.start()

    def stop(self) -> dict[str, list[float]]:
        self.stopping.set()
        self.thread.join(30)
        assert not self.thread.is_alive(), "a probe call hung"
        return dict(self.latencies)


def test_a_process_holding_the_write_lock_delays_only_writes(
    server_factory, stubs_for, tuned_process
):
    server = server_factory(database_busy_timeout=BUSY_TIMEOUT)
    database = Path(server.settings.database_url.removeprefix("sqlite:///"))
    assert database.is_file()
    stubs = stubs_for(server)  # the writes, and the checks before and after
    probes = stubs_for(server)  # the calls timed while the lock is held
    tail_stubs = stubs_for(server)  # the open live tail
    health = health_pb2_grpc.HealthStub(probes.channel)

    configuration_id = iris_configuration(stubs, register_iris(stubs))
    watched = stubs.executions.CreateExecution(
        ex.CreateExecutionRequest(configuration_id=configuration_id)
    ).execution.id
    to_stop = stubs.executions.CreateExecution(
        ex.CreateExecutionRequest(configuration_id=configuration_id)
    ).execution.id
    driver = Driver(server, watched)
    driver.transition(Status.RUNNING)
    driver.write(5)

    # A live tail of the watched execution, open and receiving.
    received: list[tuple[int, str]] = []
    tail_outcome: dict[str, object] = {}
    follow = tail_stubs.logs.TailLogs(lg.TailLogsRequest(execution_id=watched, follow=True),
                                      timeout=60)

    def read_tail() -> None:
        try:
            for message in follow:
                received.extend((line.sequence, line.text) for line in message.lines)
            tail_outcome["end"] = "ended"
        except grpc.RpcError as error:
            tail_outcome["end"] = error.code().name

    tail_thread = threading.Thread(target=read_tail, daemon=True)
    tail_thread.start()
    wait_for(lambda: len(received) >= 5, what="the live tail to receive the first lines")
    history = [(i, f"line {i}") for i in range(1, 6)]
    assert received == history

    # The watched execution, read once: its response is kept.
    cached = stubs.executions.GetExecution(ex.GetExecutionRequest(execution_id=watched))
    responses = server.running.extra["execution_responses"]
    assert server.run_sync(lambda: watched in responses.items)
    stop_target = stubs.executions.GetExecution(ex.GetExecutionRequest(execution_id=to_stop))
    stop_history = stubs.executions.ListExecutionHistory(
        ex.ListExecutionHistoryRequest(execution_id=to_stop)
    ).transitions
    artifacts_before = stubs.artifacts.ListArtifacts(art.ListArtifactsRequest()).total_size
    executions_before = stubs.executions.ListExecutions(ex.ListExecutionsRequest()).total_size

    def check_health() -> None:
        response = health.Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert response.status == health_pb2.HealthCheckResponse.SERVING

    def get_meta() -> None:
        assert probes.meta.GetMeta(meta.GetMetaRequest(), timeout=5).store == "sqlite"

    def get_cached() -> None:
        got = probes.executions.GetExecution(ex.GetExecutionRequest(execution_id=watched),
                                             timeout=5)
        assert got == cached

    def tail_stored() -> None:
        messages = probes.logs.TailLogs(lg.TailLogsRequest(execution_id=watched), timeout=5)
        assert [(line.sequence, line.text) for m in messages for line in m.lines] == history

    prober = Prober(
        {"Health": check_health, "GetMeta": get_meta, "GetExecution (cached)": get_cached,
         "TailLogs (stored)": tail_stored}
    )
    for _ in range(3):  # warm: connections made, code paths run once
        prober.round()
    assert not prober.errors, prober.errors

    holder = LockHolder(database, HOLD_SECONDS)
    try:
        locked_at = holder.expect("locked", timeout=30)
        prober.start()
        # Lines the step prints meanwhile: the sink cannot store them yet.
        driver.write(5, flush=False)
        writes: dict[str, tuple[grpc.RpcError, float]] = {
            "CreateArtifact": refused(stubs.artifacts.CreateArtifact, dataset("during"),
                                      timeout=30),
            "CreateExecution": refused(
                stubs.executions.CreateExecution,
                ex.CreateExecutionRequest(configuration_id=configuration_id,
                                          request_id="execution-during"),
                timeout=30,
            ),
            "StopExecution": refused(
                stubs.executions.StopExecution, ex.StopExecutionRequest(execution_id=to_stop),
                timeout=30,
            ),
        }
        refused_at = time.monotonic()
        # A few more rounds, with the writer idle again and the lock still held.
        rounds = len(prober.latencies["Health"])
        wait_for(lambda: len(prober.latencies["Health"]) >= rounds + 3, what="more probes")
        still_held = time.monotonic() < locked_at + HOLD_SECONDS and holder.lines.empty()
        latencies = prober.stop()
        # Nothing published that is not stored: the live tail got no line meanwhile.
        lines_during_lock = list(received)
        assert still_held, (
            f"the lock was released before the checks ended ({refused_at - locked_at:.2f} s"
            f" of {HOLD_SECONDS} s went to the writes): the machine is too slow for the test"
        )

        holder.expect("released", timeout=HOLD_SECONDS + 30)
        assert holder.process.wait(10) == 0
    finally:
        holder.kill()

    worst = {name: max(values) for name, values in latencies.items()}
    print("max latency while the lock was held (ms):",
          {name: round(value * 1000, 1) for name, value in worst.items()},
          "calls:", {name: len(values) for name, values in latencies.items()},
          "writes (s):", {name: round(took, 3) for name, (_, took) in writes.items()})
    assert not prober.errors, prober.errors
    for name, values in latencies.items():
        assert worst[name] < LATENCY_BUDGET, (
            f"{name} took {worst[name] * 1000:.0f} ms while the lock was held"
        )
        assert len(values) >= 5, (name, len(values))
    for name, (error, took) in writes.items():
        assert_store_unavailable(error)
        # It waited the busy timeout (the setting holds), and not much more.
        assert BUSY_TIMEOUT * 0.9 <= took < BUSY_TIMEOUT + WRITE_SLACK, (name, took)
    assert lines_during_lock == history

    # The open tail was not broken: it gets the lines stored once the lock is gone.
    wait_for(lambda: len(received) >= 10, what="the lines written during the lock")
    assert received == [(i, f"line {i}") for i in range(1, 11)]
    assert tail_thread.is_alive() and "end" not in tail_outcome, tail_outcome

    # Nothing of the refused writes was written.
    assert stubs.artifacts.ListArtifacts(art.ListArtifactsRequest()).total_size == artifacts_before
    assert (
        stubs.executions.ListExecutions(ex.ListExecutionsRequest()).total_size
        == executions_before
    )
    # (read from the store: the refused stop never reached the kept responses)
    stored = server.run_sync(server.plane.store.get_execution, "default", to_stop)
    assert (stored.status, stored.target_status) == (Status.PENDING, TargetStatus.COMPLETED)
    assert stubs.executions.ListExecutionHistory(
        ex.ListExecutionHistoryRequest(execution_id=to_stop)
    ).transitions == stop_history
    assert stubs.executions.GetExecution(ex.GetExecutionRequest(execution_id=watched)) == cached

    # The same writes succeed now, once each.
    artifact = stubs.artifacts.CreateArtifact(dataset("during"), timeout=10).artifact
    assert stubs.artifacts.CreateArtifact(dataset("during"), timeout=10).artifact.id == artifact.id
    created = stubs.executions.CreateExecution(
        ex.CreateExecutionRequest(configuration_id=configuration_id,
                                  request_id="execution-during"),
        timeout=10,
    ).execution
    assert created.configuration_id == configuration_id
    stopped = stubs.executions.StopExecution(
        ex.StopExecutionRequest(execution_id=to_stop), timeout=10
    ).execution
    assert stop_target.execution.status == execution_pb2.EXECUTION_STATUS_PENDING
    assert stopped.status == execution_pb2.EXECUTION_STATUS_STOPPING
    assert (
        stubs.artifacts.ListArtifacts(art.ListArtifactsRequest()).total_size
        == artifacts_before + 1
    )
    assert (
        stubs.executions.ListExecutions(ex.ListExecutionsRequest()).total_size
        == executions_before + 1
    )

    driver.finish()
    tail_thread.join(10)
    assert tail_outcome == {"end": "ended"}
    assert received == [(i, f"line {i}") for i in range(1, 11)]


def test_an_execution_ending_while_the_lock_is_held_holds_up_nothing_else(
    server_factory, stubs_for, tuned_process
):
    """What the runtime does at an execution's end, while another process holds the
    lock: store its last lines, then record its final status. The flush waits until
    the lines are stored (the log writer's thread retries while the lock is held, the
    event loop does not wait), so the end waits for the lock; every other call goes on
    meanwhile, and once the lock is gone the lines and then the final status land."""
    server = server_factory(database_busy_timeout=BUSY_TIMEOUT)
    database = Path(server.settings.database_url.removeprefix("sqlite:///"))
    stubs = stubs_for(server)
    probes = stubs_for(server)
    tail_stubs = stubs_for(server)
    health = health_pb2_grpc.HealthStub(probes.channel)
    execution_id = stubs.executions.CreateExecution(
        ex.CreateExecutionRequest(configuration_id=iris_configuration(stubs, register_iris(stubs)))
    ).execution.id
    driver = Driver(server, execution_id)
    driver.transition(Status.RUNNING)
    driver.write(3)
    before = stubs.executions.GetExecution(ex.GetExecutionRequest(execution_id=execution_id))

    received: list[int] = []
    follow = tail_stubs.logs.TailLogs(
        lg.TailLogsRequest(execution_id=execution_id, follow=True), timeout=60
    )
    tail_thread = threading.Thread(
        target=lambda: received.extend(line.sequence for m in follow for line in m.lines),
        daemon=True,
    )
    tail_thread.start()
    wait_for(lambda: received == [1, 2, 3], what="the live tail to receive the first lines")

    def tail_stored() -> None:
        messages = probes.logs.TailLogs(lg.TailLogsRequest(execution_id=execution_id),
                                        timeout=5)
        assert [line.sequence for m in messages for line in m.lines] == [1, 2, 3]

    prober = Prober(
        {
            "Health": lambda: health.Check(health_pb2.HealthCheckRequest(), timeout=5),
            "GetMeta": lambda: probes.meta.GetMeta(meta.GetMetaRequest(), timeout=5),
            "TailLogs (stored)": tail_stored,
        }
    )
    for _ in range(3):
        prober.round()
    assert not prober.errors, prober.errors

    holder = LockHolder(database, HOLD_SECONDS)
    try:
        locked_at = holder.expect("locked", timeout=30)
        prober.start()
        driver.write(2, flush=False)  # the step's last lines
        finishing = threading.Thread(target=driver.finish, daemon=True)  # flush, then status
        finishing.start()
        rounds = len(prober.latencies["Health"])
        wait_for(lambda: len(prober.latencies["Health"]) >= rounds + 5, what="more probes")
        still_held = time.monotonic() < locked_at + HOLD_SECONDS and holder.lines.empty()
        latencies = prober.stop()
        assert still_held, "the lock was released before the checks ended: too slow a machine"
        assert finishing.is_alive()  # the end waits for its last lines to be stored
        holder.expect("released", timeout=HOLD_SECONDS + 30)
        assert holder.process.wait(10) == 0
        finishing.join(30)
        assert not finishing.is_alive()
    finally:
        holder.kill()

    worst = {name: max(values) for name, values in latencies.items()}
    print("max latency while an execution ended under the lock (ms):",
          {name: round(value * 1000, 1) for name, value in worst.items()})
    assert not prober.errors, prober.errors
    for name, values in latencies.items():
        assert worst[name] < LATENCY_BUDGET, (
            f"{name} took {worst[name] * 1000:.0f} ms while the lock was held"
        )
        assert len(values) >= 5, (name, len(values))
    # Every line is stored, then the final status: the tail ends after the fifth line.
    wait_for(lambda: received == [1, 2, 3, 4, 5], what="the lines written during the lock")
    after = stubs.executions.GetExecution(ex.GetExecutionRequest(execution_id=execution_id))
    assert before.execution.status == execution_pb2.EXECUTION_STATUS_RUNNING
    assert after.execution.status == execution_pb2.EXECUTION_STATUS_COMPLETED
    tail_thread.join(10)
    assert not tail_thread.is_alive()
    assert received == [1, 2, 3, 4, 5]
    assert stubs.executions.GetExecution(
        ex.GetExecutionRequest(execution_id=execution_id)
    ).execution.status == execution_pb2.EXECUTION_STATUS_COMPLETED


def test_an_io_error_of_the_store_is_unavailable_and_the_server_serves_on(
    server, stubs, monkeypatch
):
    sync = server.plane.store.sync
    calls = []

    def broken(*args, **kwargs):
        calls.append(threading.current_thread().name)
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(sync, "create_artifact", broken)
    error, _ = refused(stubs.artifacts.CreateArtifact, dataset("broken"), timeout=10)
    assert calls, "the fault was not reached"
    assert_store_unavailable(error)
    assert "disk I/O error" in error.details()
    monkeypatch.undo()

    assert stubs.meta.GetMeta(meta.GetMetaRequest(), timeout=5).store == "sqlite"
    health = health_pb2_grpc.HealthStub(stubs.channel)
    assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == (
        health_pb2.HealthCheckResponse.SERVING
    )
    artifact = stubs.artifacts.CreateArtifact(dataset("broken"), timeout=10).artifact
    assert stubs.artifacts.GetArtifact(art.GetArtifactRequest(artifact_id=artifact.id)) \
        .artifact.name == "broken"
    assert stubs.artifacts.ListArtifacts(art.ListArtifactsRequest()).total_size == 1


def test_a_bug_in_the_store_is_internal_with_a_request_id_not_unavailable(
    server, stubs, monkeypatch
):
    def buggy(*args, **kwargs):
        raise ValueError("a bug, with secret details")

    monkeypatch.setattr(server.plane.store.sync, "create_artifact", buggy)
    request_id = uuid.uuid4().hex
    error, _ = refused(
        stubs.artifacts.CreateArtifact, dataset("bug"), timeout=10,
        metadata=(("x-request-id", request_id),),
    )
    assert error.code() == grpc.StatusCode.INTERNAL, (error.code(), error.details())
    info, delay = store_error(error)
    assert info is not None and info.reason == "INTERNAL_ERROR", info
    assert info.metadata["request_id"] == request_id
    assert request_id in error.details()
    assert delay is None
    assert "secret" not in error.details() and "Traceback" not in error.details()
    monkeypatch.undo()
    assert stubs.artifacts.CreateArtifact(dataset("bug"), timeout=10).artifact.name == "bug"
