"""Shared benchmark plumbing: free loopback ports, a server subprocess, medians."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from itertools import chain
from pathlib import Path

import grpc
import psutil
from grpc_health.v1 import health_pb2, health_pb2_grpc

from server.store.db import SQLITE_PRAGMAS
from server.store.logs import LOG_INSERT_ROWS

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(address: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                status = stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server at {address} did not become healthy")
            time.sleep(0.05)


@contextlib.contextmanager
def trainyard_server(
    *extra: str,
    data_dir: Path | None = None,
    log_level: str = "warning",
    log_to_file: bool = False,
) -> Iterator[tuple[str, subprocess.Popen]]:
    """A real server process on a fresh temporary data directory (or ``data_dir``).
    Its log goes to /dev/null, or with ``log_to_file`` to a file in the temporary
    directory, as a deployed server's log goes to a file or a journal."""
    with tempfile.TemporaryDirectory(prefix="trainyard-bench-") as tmp:
        log_file = open(Path(tmp) / "server.log", "wb") if log_to_file else None
        port = free_port()
        address = f"127.0.0.1:{port}"
        process = subprocess.Popen(
            [
                PYTHON,
                "-m",
                "server",
                "--address",
                address,
                "--data-dir",
                str(data_dir or tmp),
                "--executables-dir",
                str(ROOT / "samples" / "executables"),
                "--log-format",
                "json",
                "--log-level",
                log_level,
                *extra,
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=log_file or subprocess.DEVNULL,
        )
        try:
            wait_healthy(address)
            yield address, process
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if log_file is not None:
                log_file.close()


def rss_mb(pid: int | str = "self") -> float:
    """Resident set size of a process (this one by default) in MiB (Linux /proc)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


@contextlib.contextmanager
def raw_database() -> Iterator[sqlite3.Connection]:
    """A bare sqlite3 connection (autocommit) to a fresh temporary database with the
    server's pragmas: where the write and read baselines run."""
    with tempfile.TemporaryDirectory(prefix="trainyard-bench-") as tmp:
        connection = sqlite3.connect(Path(tmp) / "raw.db", isolation_level=None)
        try:
            for name, value in SQLITE_PRAGMAS.items():
                connection.execute(f"PRAGMA {name}={value}")
            yield connection
        finally:
            connection.close()


def executemany_rate(create_sql: str, insert_sql: str, batches: list[list[tuple]]) -> float:
    """Rows/s of raw sqlite3 ``executemany`` into a fresh table (``create_sql``) of a
    temporary database with the server's pragmas, one transaction per batch: the bare
    baseline of the write benchmarks."""
    with raw_database() as connection:
        connection.execute(create_sql)
        start = time.perf_counter()
        for rows in batches:
            connection.execute("BEGIN")
            connection.executemany(insert_sql, rows)
            connection.execute("COMMIT")
        elapsed = time.perf_counter() - start
    return sum(map(len, batches)) / elapsed


# The server's log table, for the raw baselines of the log benchmarks.
LOG_TABLE_SQL = (
    "CREATE TABLE log_line (execution_id TEXT NOT NULL, seq INTEGER NOT NULL, "
    "at_us INTEGER NOT NULL, step TEXT NOT NULL, stream INTEGER NOT NULL, "
    "text TEXT NOT NULL, PRIMARY KEY (execution_id, seq)) WITHOUT ROWID"
)
LOG_INSERT_SQL = "INSERT INTO log_line VALUES (?, ?, ?, ?, ?, ?)"


def log_rows(lines: int, text: str | None = None) -> list[tuple]:
    """``lines`` stored log rows of one execution, numbered from 1: ``text`` each, or
    100 characters that differ from line to line."""
    now = time.time_ns() // 1000
    pad = "x" * 90
    return [
        ("e-bench", i + 1, now + i, "main", 1, text if text is not None else f"{i:09d} {pad}")
        for i in range(lines)
    ]


def raw_log_rates(rows: list[tuple], batch: int, chunk: int) -> tuple[float, float]:
    """The storage alone, in rows/s: raw sqlite3 writing ``rows`` into the log table,
    ``batch`` a transaction, in multi-row INSERTs of up to LOG_INSERT_ROWS rows (the
    rest in halving sizes) as the store writes them, then reading them back in order
    ``chunk`` a query, as a tailer reads the store (no gRPC, no encoding)."""
    with raw_database() as connection:
        connection.execute(LOG_TABLE_SQL)
        start = time.perf_counter()
        for first in range(0, len(rows), batch):
            rest = rows[first : first + batch]
            connection.execute("BEGIN")
            while rest:
                size = LOG_INSERT_ROWS
                while size > len(rest):
                    size //= 2
                connection.execute(
                    "INSERT INTO log_line VALUES " + ", ".join(["(?, ?, ?, ?, ?, ?)"] * size),
                    list(chain.from_iterable(rest[:size])),
                )
                rest = rest[size:]
            connection.execute("COMMIT")
        written = time.perf_counter() - start
        start = time.perf_counter()
        cursor = count = 0
        while True:
            got = connection.execute(
                "SELECT execution_id, seq, at_us, step, stream, text FROM log_line "
                "WHERE execution_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                (rows[0][0], cursor, chunk),
            ).fetchall()
            if not got:
                break
            count += len(got)
            cursor = got[-1][1]
        read = time.perf_counter() - start
    assert count == len(rows), (count, len(rows))
    return len(rows) / written, len(rows) / read


def median(values: list[float]) -> float:
    return statistics.median(values)


def verdict(ok: bool) -> str:
    return "meets target" if ok else "BELOW TARGET"


def env_with_root() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def tree_cpu(pid: int | None) -> dict[int, float]:
    """CPU seconds of a process and of each of its children, by process id."""
    if pid is None:
        return {}
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return {}
    seconds = {}
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        seconds[process.pid] = times.user + times.system
    return seconds


def cpu_since(pid: int | None, before: dict[int, float]) -> float:
    """CPU seconds a process and its children used since ``before`` (tree_cpu's); a
    child that started meanwhile counts whole, one that ended meanwhile is missed."""
    return sum(
        seconds - before.get(child, 0.0) for child, seconds in tree_cpu(pid).items()
    )
