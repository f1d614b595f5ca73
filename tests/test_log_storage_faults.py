"""Log storage that fails or lags behind: flush never reports lines stored that are
not; one execution's failing lines neither hold back another's nor are retried
forever, and the execution's status message says they were lost; a step that outruns
the store is held back by its pipe, never by the event loop; the final status lands
in spite of a flaky store.

The store is a real SQLite store behind a wrapper that fails, or holds its writes, on
demand. Tests wait on events and states, never on fixed sleeps.
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest
from workflow_helpers import STATUS_NAME, Runner, python, workflow

from server.domain.errors import FailedPrecondition, Unavailable
from server.domain.logsink import LogSink, LogsNotStored
from server.domain.models import LogStream, Status
from server.domain.retry import is_transient, until_stored
from server.domain.service import ControlPlane
from server.runtime import processes as procs
from server.store.repository import Store

OUT = LogStream.STDOUT


class FaultyStore:
    """A real SQLite store whose ``append_logs`` fails or waits when told to."""

    def __init__(self, path: Path):
        self.store = Store(f"sqlite:///{path}")
        self.url = self.store.url
        self.lock = threading.Lock()
        self.errors: list[Exception] = []  # the next calls raise these, in turn
        # Called with the rows of each call: an error to raise, or None.
        self.fail_when: Callable[[list[tuple]], Exception | None] | None = None
        self.calls: list[list[str]] = []  # the executions of each call's rows
        self.gate = threading.Event()  # cleared: calls wait for it
        self.gate.set()
        self.waiting = threading.Event()  # set once a call waits at the gate

    def append_logs(self, rows) -> None:
        rows = list(rows)
        if not self.gate.is_set():
            self.waiting.set()
            self.gate.wait(30)
        with self.lock:
            self.calls.append(sorted({r[0] for r in rows}))
            error = self.errors.pop(0) if self.errors else None
            if error is None and self.fail_when is not None:
                error = self.fail_when(rows)
        if error is not None:
            raise error
        self.store.append_logs(rows)

    def last_log_seq(self, execution_id: str) -> int:
        return self.store.last_log_seq(execution_id)

    def rows(self, execution_id: str) -> list[tuple]:
        return self.store.read_log_rows(execution_id, limit=1_000_000)

    def close(self) -> None:  # the writer thread's connection
        self.store.close()


def published(sink: LogSink) -> dict[str, list[tuple]]:
    seen: dict[str, list[tuple]] = {}
    sink.row_subscribers.append(lambda eid, rows: seen.setdefault(eid, []).extend(rows))
    return seen


def losses(sink: LogSink) -> list[tuple[str, str]]:
    reported: list[tuple[str, str]] = []
    sink.loss_listeners.append(lambda eid, message: reported.append((eid, message)))
    return reported


def seqs(rows: list[tuple]) -> list[int]:
    return [r[1] for r in rows]


def texts(rows: list[tuple]) -> list[str]:
    return [r[5] for r in rows]


class Ticker:
    """A task that ticks every millisecond or two and records the gaps between ticks:
    a loop that blocks shows as a long gap."""

    def __init__(self) -> None:
        self.gaps: list[float] = []
        self.wanted = 0
        self.reached = asyncio.Event()
        self.task = asyncio.create_task(self._run())

    async def ticks(self, count: int) -> list[float]:
        """Wait for ``count`` more ticks; their gaps."""
        start = len(self.gaps)
        self.wanted = start + count
        self.reached.clear()
        await asyncio.wait_for(self.reached.wait(), 30)
        return self.gaps[start : start + count]

    async def _run(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.001)
            now = time.monotonic()
            self.gaps.append(now - last)
            last = now
            if self.wanted and len(self.gaps) >= self.wanted:
                self.reached.set()


def opened_later(gate: threading.Event, seconds: float) -> threading.Timer:
    """Opens the gate after ``seconds`` in any case: a sink that blocked the loop
    would otherwise hang the test instead of failing it."""
    timer = threading.Timer(seconds, gate.set)
    timer.daemon = True
    timer.start()
    return timer


# --------------------------------------------------------------- flush tells


def test_flush_with_a_failing_store_reports_the_failure_instead_of_success(tmp_path):
    async def main():
        store = FaultyStore(tmp_path / "logs.db")
        store.fail_when = lambda rows: sqlite3.OperationalError("database or disk is full")
        sink = LogSink(store, max_attempts=4, retry_delay=0.001)
        seen, lost = published(sink), losses(sink)
        for i in range(100):
            sink.write("e1", "train", OUT, f"line {i}")
        with pytest.raises(LogsNotStored) as one:
            await sink.flush("e1")
        with pytest.raises(LogsNotStored) as every:
            await sink.flush()
        calls = len(store.calls)
        await sink.close()  # reports it in the server log; does not raise
        rows = store.rows("e1")
        store.store.close()
        return one.value, every.value, calls, seen, lost, rows

    one, every, calls, seen, lost, rows = asyncio.run(main())
    message = "logs could not be stored: database or disk is full (100 lines lost)"
    assert str(one) == message and one.failures == {"e1": message}
    assert every.failures == {"e1": message}
    assert calls == 4  # tried max_attempts times, then given up on
    assert lost == [("e1", "logs could not be stored: database or disk is full")]
    assert seen == {} and rows == []


def test_a_writer_against_a_full_disk_stays_within_its_bound(tmp_path):
    async def main():
        store = FaultyStore(tmp_path / "logs.db")
        store.fail_when = lambda rows: sqlite3.OperationalError("database or disk is full")
        sink = LogSink(store, max_batch=100, max_queued_lines=1000, max_attempts=2,
                       retry_delay=0.001)
        lost = losses(sink)
        peak = 0
        for k in range(300):
            sink.write_lines("e1", "train", OUT, [f"{k}.{j}" for j in range(100)])
            peak = max(peak, sink.queued("e1"))
            await sink.wait_for_room("e1")
        with pytest.raises(LogsNotStored) as caught:
            await sink.flush("e1")
        await sink.close()
        store.store.close()
        return peak, caught.value, lost

    peak, error, lost = asyncio.run(main())
    assert peak <= 1000 + 100
    assert str(error).endswith("(30000 lines lost)")
    assert len(lost) == 1  # reported once, not per batch


# ---------------------------------------------------------- one bad execution


def test_a_batch_that_fails_permanently_is_dropped_and_reported_and_others_go_on(tmp_path):
    async def main():
        store = FaultyStore(tmp_path / "logs.db")
        sink = LogSink(store)
        seen, lost = published(sink), losses(sink)
        # Hold the writer in a transaction, so that what comes next is queued together.
        store.gate.clear()
        sink.write("w", "train", OUT, "first")
        first = asyncio.create_task(sink.flush("w"))
        assert await asyncio.to_thread(store.waiting.wait, 30)

        sink.write("a", "train", OUT, "a 1")  # numbered 1
        store.store.append_logs([("a", 3, 0, "train", 1, "stored by someone else")])
        for i in range(2, 6):  # numbered 2..5: 3 is taken, an IntegrityError
            sink.write("a", "train", OUT, f"a {i}")
        for i in range(50):
            sink.write("b", "train", OUT, f"b {i}")
        flush_a = asyncio.create_task(sink.flush("a"))
        flush_b = asyncio.create_task(sink.flush("b"))
        await asyncio.sleep(0)  # both flushes hand their lines over
        store.gate.set()

        await first
        await asyncio.wait_for(flush_b, 30)  # b's lines are stored, a's in spite
        with pytest.raises(LogsNotStored) as caught:
            await asyncio.wait_for(flush_a, 30)
        # a's next lines are numbered on (a gap where the lost ones were) and stored.
        sink.write("a", "train", OUT, "a 6")
        with pytest.raises(LogsNotStored):
            await sink.flush("a")  # still: some of a's lines are lost
        result = (caught.value, store.rows("a"), store.rows("b"), list(store.calls), seen, lost)
        await sink.close()
        store.store.close()
        return result

    error, rows_a, rows_b, calls, seen, lost = asyncio.run(main())
    assert str(error).startswith("logs could not be stored: UNIQUE constraint failed")
    assert str(error).endswith("(5 lines lost)")
    assert [(e, m.split(":")[0]) for e, m in lost] == [("a", "logs could not be stored")]
    assert texts(rows_b) == [f"b {i}" for i in range(50)]
    assert seqs(rows_b) == list(range(1, 51))
    assert [(r[1], r[5]) for r in rows_a] == [(3, "stored by someone else"), (6, "a 6")]
    # One transaction for both, then each execution alone: b is not held back by a.
    assert calls[1:] == [["a", "b"], ["a"], ["b"], ["a"]]
    assert seen["b"] == rows_b
    assert [(r[1], r[5]) for r in seen["a"]] == [(6, "a 6")]


def test_an_execution_whose_lines_keep_failing_does_not_hold_back_another(tmp_path):
    async def main():
        store = FaultyStore(tmp_path / "logs.db")
        healed = threading.Event()

        def a_fails(rows):
            if not healed.is_set() and any(r[0] == "a" for r in rows):
                return sqlite3.OperationalError("disk I/O error")
            return None

        store.fail_when = a_fails
        sink = LogSink(store, max_attempts=10_000, retry_delay=0.001, max_retry_delay=0.005)
        seen, lost = published(sink), losses(sink)
        for i in range(20):
            sink.write("a", "train", OUT, f"a {i}")
            sink.write("b", "train", OUT, f"b {i}")
        flush_a = asyncio.create_task(sink.flush("a"))
        await asyncio.wait_for(sink.flush("b"), 30)
        b_first = store.rows("b")
        a_waited = not flush_a.done()
        for i in range(20, 40):  # more of both while a's keep failing
            sink.write("a", "train", OUT, f"a {i}")
            sink.write("b", "train", OUT, f"b {i}")
        await asyncio.wait_for(sink.flush("b"), 30)
        a_waited = a_waited and not flush_a.done() and store.rows("a") == []
        healed.set()
        await asyncio.wait_for(flush_a, 30)
        await sink.flush()
        result = (a_waited, b_first, store.rows("a"), store.rows("b"), seen, lost)
        await sink.close()
        store.store.close()
        return result

    a_waited, b_first, rows_a, rows_b, seen, lost = asyncio.run(main())
    assert a_waited  # a's flush waited for its lines...
    assert texts(b_first) == [f"b {i}" for i in range(20)]  # ...b's did not
    assert texts(rows_a) == [f"a {i}" for i in range(40)]
    assert seqs(rows_a) == list(range(1, 41))
    assert texts(rows_b) == [f"b {i}" for i in range(40)]
    assert seen == {"a": rows_a, "b": rows_b}
    assert lost == []


def test_a_transient_failure_then_recovery_stores_every_line_once_in_order(tmp_path):
    async def main():
        store = FaultyStore(tmp_path / "logs.db")
        store.errors = [
            sqlite3.OperationalError("database is locked"),
            sqlite3.OperationalError("database is locked"),
            sqlite3.OperationalError("disk I/O error"),
            sqlite3.OperationalError("database is busy"),
        ]
        sink = LogSink(store, max_batch=100, retry_delay=0.001)
        seen, lost = published(sink), losses(sink)
        stored_at_flush = []
        for k in range(50):
            sink.write_lines("e1", "train", OUT, [f"{k}.{j}" for j in range(37)])
            await sink.wait_for_room("e1")
            if k == 10:
                await sink.flush("e1")  # through the failures: returns once stored
                stored_at_flush.append(len(store.rows("e1")))
        sink.system("e1", "execution completed")
        await sink.flush("e1")
        result = (stored_at_flush, store.rows("e1"), seen, lost, store.errors)
        await sink.close()
        store.store.close()
        return result

    stored_at_flush, rows, seen, lost, errors_left = asyncio.run(main())
    assert errors_left == []  # every failure happened
    assert stored_at_flush == [11 * 37]
    assert seqs(rows) == list(range(1, 50 * 37 + 2))
    assert texts(rows) == [f"{k}.{j}" for k in range(50) for j in range(37)] + [
        "execution completed"
    ]
    assert seen == {"e1": rows}
    assert lost == []


# ---------------------------------------------------------------- back-pressure


def test_a_flooding_writer_is_held_back_per_execution_without_blocking_the_loop(tmp_path):
    async def main():
        store = FaultyStore(tmp_path / "logs.db")
        sink = LogSink(store, max_batch=500, max_queued_lines=2000)
        store.gate.clear()  # the store does not move
        safety = opened_later(store.gate, 10)
        ticker = Ticker()
        held = asyncio.Event()
        peak = 0

        async def flood():
            nonlocal peak
            for k in range(40):
                sink.write_lines("a", "train", OUT, [f"{k}.{j}" for j in range(250)])
                peak = max(peak, sink.queued("a"))
                if sink.queued("a") >= 2000:
                    held.set()
                await sink.wait_for_room("a")

        flooding = asyncio.create_task(flood())
        await asyncio.wait_for(held.wait(), 30)
        gaps = await ticker.ticks(50)  # the loop runs on while a is held back
        a_held = not flooding.done() and sink.queued("a") <= 2000 + 250
        # Another execution has room: a's flood is a's alone.
        sink.write("b", "train", OUT, "b 1")
        await asyncio.wait_for(sink.wait_for_room("b"), 1)
        store.gate.set()
        safety.cancel()
        await asyncio.wait_for(flooding, 30)
        await sink.flush()
        ticker.task.cancel()
        result = (gaps, a_held, peak, store.rows("a"), store.rows("b"))
        await sink.close()
        store.store.close()
        return result

    gaps, a_held, peak, rows_a, rows_b = asyncio.run(main())
    assert max(gaps) < 0.5, max(gaps)
    assert a_held
    assert peak <= 2000 + 250
    assert texts(rows_a) == [f"{k}.{j}" for k in range(40) for j in range(250)]
    assert seqs(rows_a) == list(range(1, 10_001))
    assert texts(rows_b) == ["b 1"]


FLOOD = "import sys\nfor i in range(200_000):\n    sys.stdout.write(f'line {i}\\n')\n"


def wchan(path: str) -> str:
    """Where the task sleeps in the kernel ("0" while it runs; "" when unknown)."""
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def blocked_in_pipe_write(pid: int) -> bool:
    return "pipe" in wchan(f"/proc/{pid}/wchan")


def kernel_says_where_tasks_sleep() -> bool:
    """Whether wchan names where a sleeping thread sleeps (some kernels hide it)."""
    done = threading.Event()
    sleeper = threading.Thread(target=done.wait, daemon=True)
    sleeper.start()
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if wchan(f"/proc/self/task/{sleeper.native_id}/wchan") not in ("", "0"):
                return True
            time.sleep(0.01)  # until the thread is asleep
        return False
    finally:
        done.set()
        sleeper.join()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_step_that_outruns_storage_is_slowed_by_its_pipe(tmp_path):
    async def main():
        store = FaultyStore(tmp_path / "logs.db")
        sink = LogSink(store, max_queued_lines=5000)
        store.gate.clear()
        safety = opened_later(store.gate, 20)
        ticker = Ticker()
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", FLOOD, stdout=asyncio.subprocess.PIPE
        )
        reader = asyncio.create_task(
            procs.read_lines(
                process.stdout,
                partial(sink.write_lines, "a", "main", OUT),
                partial(sink.wait_for_room, "a"),
            )
        )
        # The step ends up asleep in a write to its pipe (bounded wait on its state).
        deadline = time.monotonic() + 30
        state = blocked_in_pipe_write(process.pid)
        while not state and time.monotonic() < deadline:
            await ticker.ticks(5)
            state = blocked_in_pipe_write(process.pid)
        gaps = await ticker.ticks(50)
        queued = sink.queued("a")
        running = process.returncode is None
        store.gate.set()
        safety.cancel()
        await asyncio.wait_for(reader, 60)
        await process.wait()
        await sink.flush("a")
        ticker.task.cancel()
        result = (state, gaps, queued, running, store.rows("a"))
        await sink.close()
        store.store.close()
        return result

    if not kernel_says_where_tasks_sleep():
        pytest.skip("the kernel does not say where a task sleeps")
    state, gaps, queued, running, rows = asyncio.run(main())
    assert state, "the step never blocked in a pipe write"
    assert running
    assert max(gaps) < 0.5, max(gaps)
    # The bound, and at most one read of the pipe more (64 KiB of 'line N\n').
    assert queued <= 5000 + procs.READ_CHUNK // 7
    assert texts(rows) == [f"line {i}" for i in range(200_000)]


# ------------------------------------------------------ the runtime, end to end


@pytest.fixture
def runner(server):
    r = Runner(server.address)
    yield r
    r.close()


def test_an_execution_whose_logs_cannot_be_stored_says_so_and_others_keep_theirs(
    server, runner, monkeypatch
):
    original = Store.append_logs

    def poisoned(self, rows):
        if any("POISON" in r[5] for r in rows):
            raise sqlite3.IntegrityError("CHECK constraint failed: poison")
        return original(self, rows)

    monkeypatch.setattr(Store, "append_logs", poisoned)
    code = (
        "print('before', flush=True)\n"
        "{poison}"
        "for i in range(2000):\n"
        "    print(f'after {{i}}', flush=True)\n"
    )
    poison = "print('POISON', flush=True)\n"
    runner.register(workflow("poisoned", [python("main", code.format(poison=poison))]))
    runner.register(workflow("healthy", [python("main", code.format(poison=""))]))
    sick = runner.start(runner.configure("poisoned"))
    well = runner.start(runner.configure("healthy"))

    ended = runner.wait(sick, timeout=60)
    assert STATUS_NAME[ended.status] == "COMPLETED"
    assert ended.status_message.startswith(
        "every step succeeded; logs could not be stored: CHECK constraint failed: poison ("
    ), ended.status_message
    assert "POISON" not in runner.output(sick)

    healthy = runner.wait(well, timeout=60)
    assert STATUS_NAME[healthy.status] == "COMPLETED"
    assert healthy.status_message == "every step succeeded"
    assert runner.output(well) == ["before"] + [f"after {i}" for i in range(2000)]


def test_the_final_status_is_retried_until_it_lands(server, runner, monkeypatch):
    original = ControlPlane.transition
    faults = [
        Unavailable("the store is busy"),
        sqlite3.OperationalError("database is locked"),
        sqlite3.OperationalError("disk I/O error"),
    ]

    def flaky(self, execution_id, to_status, *args, **kwargs):
        if to_status in (Status.COMPLETED, Status.DEAD) and faults:
            raise faults.pop(0)
        return original(self, execution_id, to_status, *args, **kwargs)

    monkeypatch.setattr(ControlPlane, "transition", flaky)
    runner.register(workflow("quick", [python("main", "print('done')")]))
    execution_id = runner.start(runner.configure("quick"))

    ended = runner.wait(execution_id, timeout=30)
    assert STATUS_NAME[ended.status] == "COMPLETED", ended.status_message
    assert faults == []
    assert [h[:2] for h in runner.history(execution_id)] == [
        ("PENDING", "created"), ("RUNNING", "step_started"), ("COMPLETED", "steps_succeeded")
    ]


def test_until_stored_retries_storage_faults_only():
    calls = []

    async def main():
        def busy_twice():
            calls.append(1)
            if len(calls) < 3:
                raise sqlite3.OperationalError("database is locked")
            return "stored"

        async def refused():
            raise FailedPrecondition("no")

        first = await until_stored(busy_twice)
        with pytest.raises(FailedPrecondition):
            await until_stored(refused)
        return first

    assert asyncio.run(main()) == "stored"
    assert len(calls) == 3
    assert is_transient(Unavailable("busy")) and is_transient(OSError("disk"))
    assert not is_transient(sqlite3.IntegrityError("duplicate"))
    assert not is_transient(ValueError("bug"))
