"""The log sink's writer thread: lines are stored off the event loop, in order, each
batch published only once it is stored; flush() means stored and published; a
database that fails for a while opens no gap; a slow one holds the writers back.
(Faults that last: tests/test_log_storage_faults.py.)"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time

from server.domain.logsink import LogSink, LogsNotStored
from server.domain.models import LogStream
from server.store.repository import Store


class RecordingStore:
    """A store (file-backed, as far as the sink can tell) that records which thread
    stored which rows, and can be made to fail or to be slow."""

    url = "sqlite:///recording.db"

    def __init__(self) -> None:
        self.rows: list[tuple] = []
        self.threads: set[str] = set()
        self.failures = 0
        self.delay = 0.0
        self.lock = threading.Lock()

    def append_logs(self, rows) -> None:
        if self.delay:
            time.sleep(self.delay)
        with self.lock:
            if self.failures:
                self.failures -= 1
                raise sqlite3.OperationalError("database is locked")
            self.rows.extend(rows)
            self.threads.add(threading.current_thread().name)

    def last_log_seq(self, execution_id: str) -> int:
        with self.lock:
            return max((r[1] for r in self.rows if r[0] == execution_id), default=0)

    def close(self) -> None:
        pass


def published_after_stored(sink: LogSink, store: RecordingStore) -> list[tuple]:
    """Subscribe; every published row must already be stored when it is published."""
    seen: list[tuple] = []

    def subscriber(execution_id: str, rows: list[tuple]) -> None:
        with store.lock:
            stored = set(store.rows)
        assert all(row in stored for row in rows)
        seen.extend(rows)

    sink.row_subscribers.append(subscriber)
    return seen


def test_lines_are_stored_on_the_writer_thread_and_published_after_they_are_stored():
    async def main():
        store = RecordingStore()
        sink = LogSink(store)
        seen = published_after_stored(sink, store)
        for i in range(12_345):
            sink.write("e1", "train", LogStream.STDOUT, f"line {i}")
            if i % 1000 == 0:
                await asyncio.sleep(0)
        deadline = time.monotonic() + 10
        while len(seen) < 12_345 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)  # no flush: the timer and the writer do it
        await sink.close()
        return store, seen

    store, seen = asyncio.run(main())
    assert [r[1] for r in store.rows] == list(range(1, 12_346))
    assert seen == store.rows
    assert store.threads == {"trainyard-log-writer"}


def test_flush_returns_once_every_line_is_stored_and_published():
    async def main():
        store = RecordingStore()
        store.delay = 0.05  # a slow transaction
        sink = LogSink(store)
        seen = published_after_stored(sink, store)
        for i in range(100):
            sink.write("e1", "train", LogStream.STDOUT, f"line {i}")
        sink.system("e1", "execution completed")
        await sink.flush()
        result = [r[1] for r in seen]
        await sink.close()
        return result

    assert asyncio.run(main()) == list(range(1, 102))


def test_a_database_locked_for_a_while_opens_no_gap_and_flush_waits_for_it():
    async def main():
        store = RecordingStore()
        store.failures = 3
        sink = LogSink(store, retry_delay=0.001)
        seen = published_after_stored(sink, store)
        for i in range(10):
            sink.write("e1", "train", LogStream.STDOUT, f"a {i}")
        await sink.flush()  # the first tries fail; it returns once they are stored
        assert len(store.rows) == len(seen) == 10
        for i in range(10):
            sink.write("e1", "train", LogStream.STDOUT, f"b {i}")
        await sink.flush()
        await sink.close()
        return store, seen

    store, seen = asyncio.run(main())
    assert [r[1] for r in store.rows] == list(range(1, 21))
    assert [r[5] for r in store.rows] == [f"a {i}" for i in range(10)] + [
        f"b {i}" for i in range(10)
    ]
    assert seen == store.rows


def test_a_slow_database_holds_writers_back_instead_of_queueing_without_bound():
    async def main():
        store = RecordingStore()
        store.delay = 0.02
        sink = LogSink(store, max_batch=100, max_queued_lines=1000)
        peak = 0
        for i in range(5000):
            sink.write("e1", "train", LogStream.STDOUT, f"line {i}")
            peak = max(peak, sink.queued("e1"))
            await sink.wait_for_room("e1")
        await sink.close()
        return store, peak

    store, peak = asyncio.run(main())
    assert peak <= 1000 + 100
    assert [r[1] for r in store.rows] == list(range(1, 5001))


class ThreadsOf:
    """A store that records the threads its lines are stored on."""

    def __init__(self, store: Store):
        self.store = store
        self.url = store.url
        self.threads: set[str] = set()

    def append_logs(self, rows) -> None:
        self.threads.add(threading.current_thread().name)
        self.store.append_logs(rows)

    def last_log_seq(self, execution_id: str) -> int:
        return self.store.last_log_seq(execution_id)

    def close(self) -> None:
        pass


def test_an_in_memory_database_is_written_on_the_loop(tmp_path):
    async def main():
        store = Store("sqlite:///:memory:")
        recording = ThreadsOf(store)
        sink = LogSink(recording)
        for i in range(10):
            sink.write("e1", "train", LogStream.STDOUT, f"line {i}")
        await sink.flush()
        stored = store.read_log_rows("e1", limit=100)
        await sink.close()
        store.close()
        return stored, recording.threads

    stored, threads = asyncio.run(main())
    assert [r[1] for r in stored] == list(range(1, 11))
    assert threads == {threading.current_thread().name}


def test_lines_written_on_the_writer_thread_are_in_the_database(tmp_path):
    async def main():
        store = Store(f"sqlite:///{tmp_path / 'logs.db'}")
        sink = LogSink(store)
        for i in range(3000):
            sink.write("e1", "train", LogStream.STDOUT, f"line {i}")
        await sink.flush()
        stored = store.read_log_rows("e1", limit=10_000)
        await sink.close()
        store.close()
        return stored

    stored = asyncio.run(main())
    assert [r[1] for r in stored] == list(range(1, 3001))
    assert stored[-1][5] == "line 2999"


def test_lines_written_many_at_a_time_are_numbered_on_with_single_ones():
    async def main():
        store = RecordingStore()
        sink = LogSink(store)
        seen = published_after_stored(sink, store)
        sink.write("e1", "train", LogStream.STDOUT, "first")
        sink.write_lines("e1", "train", LogStream.STDOUT, [f"read {i}" for i in range(3000)])
        sink.write_lines("e1", "train", LogStream.STDERR, [])
        sink.write_lines("e1", "eval", LogStream.STDERR, ["short", "y" * 70_000, "after"])
        sink.write_lines("e2", "train", LogStream.STDOUT, ["other execution"])
        await sink.flush()
        await sink.close()
        return store, seen

    store, seen = asyncio.run(main())
    e1 = [r for r in store.rows if r[0] == "e1"]
    assert [r[1] for r in e1] == list(range(1, len(e1) + 1))
    assert [r[5] for r in e1[:3]] == ["first", "read 0", "read 1"]
    assert e1[3000][1:] == (3001, e1[3000][2], "train", 1, "read 2999")
    # An over-long line is cut as ``write`` cuts it, and numbering goes on after it.
    assert [(r[3], r[4], len(r[5])) for r in e1[3002:]] == [
        ("eval", 2, 65_536),
        ("eval", 2, 70_000 - 65_536),
        ("eval", 2, 5),
    ]
    assert [r[1:2] + r[5:] for r in store.rows if r[0] == "e2"] == [(1, "other execution")]
    assert seen == store.rows


class FailingThreadsOf(ThreadsOf):
    """ThreadsOf whose next calls raise the errors of ``errors``, in turn."""

    def __init__(self, store: Store, errors: list[Exception]):
        super().__init__(store)
        self.errors = errors

    def append_logs(self, rows) -> None:
        if self.errors:
            raise self.errors.pop(0)
        super().append_logs(rows)


def test_an_in_memory_database_is_retried_and_given_up_on_like_a_file():
    async def main():
        store = Store("sqlite:///:memory:")
        locked = [sqlite3.OperationalError("database is locked")] * 3
        failing = FailingThreadsOf(store, locked)
        sink = LogSink(failing, retry_delay=0.001)
        for i in range(10):
            sink.write("e1", "train", LogStream.STDOUT, f"line {i}")
        await sink.flush("e1")  # through three failures
        stored = store.read_log_rows("e1", limit=100)
        failing.errors = [sqlite3.IntegrityError("bad row")]
        sink.write("e2", "train", LogStream.STDOUT, "lost")
        try:
            await sink.flush("e2")
        except LogsNotStored as exc:
            error = str(exc)
        await sink.close()
        store.close()
        return stored, error, failing.threads

    stored, error, threads = asyncio.run(main())
    assert [r[1] for r in stored] == list(range(1, 11))
    assert error == "logs could not be stored: bad row (1 lines lost)"
    assert threads == {threading.current_thread().name}


def test_an_opened_execution_is_numbered_on_without_reading_the_store_on_the_loop(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'x.db'}")
    store.append_logs([("e1", 1, 1, "", 3, "before"), ("e1", 2, 1, "", 3, "before")])
    sink = LogSink(store)
    loop_thread = threading.get_ident()
    reads: list[int] = []
    real = store.last_log_seq

    def traced(execution_id):
        reads.append(threading.get_ident())
        return real(execution_id)

    store.last_log_seq = traced

    async def scenario():
        await sink.open("e1")
        sink.system("e1", "after")
        await sink.flush("e1")
        await sink.close()

    asyncio.run(scenario())
    assert reads and loop_thread not in reads
    assert [r[1] for r in store.read_log_rows("e1")] == [1, 2, 3]
    store.close()
