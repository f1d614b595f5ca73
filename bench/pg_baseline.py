"""Bare PostgreSQL baselines through psycopg 3: single-row insert+commit, executemany,
COPY and NOTIFY round trips, on a throwaway cluster of this run.

    python -m bench.pg_baseline [--seconds 2.5] [--rows 200000] [--batch 5000] [--runs 3]
                                [--connections 64]

These are the bare figures the PostgreSQL store is measured against (the performance
budget's ratios): nothing of Trainyard runs. The cluster is the tests' own
(tests/services/postgres.py): a fresh initdb in a temporary folder, a postmaster on
127.0.0.1 and a free port, PostgreSQL's default durability (fsync and
synchronous_commit on), removed at the end. Each figure is from one connection of this
process over loopback TCP:

* insert+commit: one row (an id, a time, 100 bytes) per transaction, for ``--seconds``;
  BEGIN, INSERT, COMMIT as a store's write does, and also as one autocommit INSERT;
  then on ``--connections`` connections at once (threads of this process), as many
  concurrent creates would write without grouping;
* executemany: log-line rows (execution_id text, seq bigint, at_us bigint, step text,
  stream smallint, text text of 100 bytes; primary key (execution_id, seq)) in
  transactions of ``--batch`` rows, ``--rows`` rows a run, median of ``--runs``;
* COPY: the same rows by COPY FROM STDIN, text and binary, one COPY and commit a batch;
* NOTIFY: LISTEN on one connection, ``pg_notify`` from another, one at a time: the time
  from the notifying call to the listener holding the notification, p50 and p99.

Where PostgreSQL is not installed it says so and exits 0.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from collections.abc import Callable

import psycopg

from bench.common import cpu_since, tree_cpu
from tests.services.postgres import PostgresCluster, PostgresNotFound, PostgresStartError

LOG_COLUMNS = "execution_id, seq, at_us, step, stream, text"
LOG_TABLE = (
    "CREATE TABLE log_line (execution_id text NOT NULL, seq bigint NOT NULL, "
    "at_us bigint NOT NULL, step text NOT NULL, stream smallint NOT NULL, "
    "text text NOT NULL, PRIMARY KEY (execution_id, seq))"
)
ROW_TABLE = (
    "CREATE TABLE one_row (id text PRIMARY KEY, created_us bigint NOT NULL, body text NOT NULL)"
)
MAX_SINGLE_ROWS = 2_000_000  # the bound of the insert+commit loop, whatever --seconds
NOTIFY_CHANNEL = "bench_events"


def single_row_rate(conn: psycopg.Connection, seconds: float, autocommit: bool) -> tuple:
    """Rows/s of one row per transaction for ``seconds``: (rate, rows, elapsed)."""
    conn.autocommit = autocommit
    conn.execute("DROP TABLE IF EXISTS one_row")
    conn.execute(ROW_TABLE)
    if not autocommit:
        conn.commit()
    body = "x" * 100
    insert = "INSERT INTO one_row (id, created_us, body) VALUES (%s, %s, %s)"
    for n in range(20):  # warm: connection, plan, pages
        conn.execute(insert, (f"warm{n}", n, body), prepare=True)
        if not autocommit:
            conn.commit()
    rows = 0
    start = time.perf_counter()
    deadline = start + seconds
    while rows < MAX_SINGLE_ROWS:
        conn.execute(insert, (f"e{rows:012d}", time.time_ns() // 1000, body), prepare=True)
        if not autocommit:
            conn.commit()
        rows += 1
        if time.perf_counter() >= deadline:
            break
    elapsed = time.perf_counter() - start
    conn.autocommit = False
    return rows / elapsed, rows, elapsed


def serial_single_row_rate(url: str, seconds: float, postmaster_pid: int | None = None) -> dict:
    """The bare single-row insert + commit rate: one connection, one row per
    transaction (BEGIN, INSERT, COMMIT), back to back for ``seconds`` on a fresh
    ``one_row`` table (:func:`single_row_rate`). Returns rate, rows, seconds, this
    process's CPU and the cluster's (``postmaster_pid``'s and its children's), of a
    core, as :func:`concurrent_single_row_rate` does."""
    with psycopg.connect(url) as conn:
        cpu = time.process_time()
        database = tree_cpu(postmaster_pid)
        rate, rows, elapsed = single_row_rate(conn, seconds, autocommit=False)
        cpu = (time.process_time() - cpu) / elapsed
        database_cpu = cpu_since(postmaster_pid, database) / elapsed
    return {
        "rate": rate,
        "rows": rows,
        "seconds": elapsed,
        "cpu": cpu,
        "database_cpu": database_cpu,
    }


def concurrent_single_row_rate(
    url: str, connections: int, seconds: float, postmaster_pid: int | None = None
) -> dict:
    """One row per transaction (BEGIN, INSERT, COMMIT) on ``connections`` connections
    at once, each in a thread of this process, for ``seconds``: the bare rate of
    concurrent single-row writes (PostgreSQL flushes the WAL of commits that wait
    together at once). A fresh ``one_row`` table; returns rate, rows, seconds, this
    process's CPU and the cluster's (``postmaster_pid``'s and its children's), of a
    core."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS one_row")
        conn.execute(ROW_TABLE)
    body = "x" * 100
    insert = "INSERT INTO one_row (id, created_us, body) VALUES (%s, %s, %s)"
    opened = [psycopg.connect(url) for _ in range(connections)]
    counts = [0] * connections
    errors: list[BaseException] = []
    start_line = threading.Barrier(connections + 1)
    bound = max(1, MAX_SINGLE_ROWS // connections)

    def write(n: int) -> None:
        conn = opened[n]
        try:
            for warm in range(5):  # plan, pages
                conn.execute(insert, (f"w{n}-{warm}", warm, body), prepare=True)
                conn.commit()
            start_line.wait(30)
            deadline = time.perf_counter() + seconds
            rows = 0
            while rows < bound and time.perf_counter() < deadline:
                conn.execute(insert, (f"c{n}-{rows}", time.time_ns() // 1000, body), prepare=True)
                conn.commit()
                rows += 1
            counts[n] = rows
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
            start_line.abort()

    threads = [threading.Thread(target=write, args=(n,), daemon=True) for n in range(connections)]
    try:
        for thread in threads:
            thread.start()
        try:
            start_line.wait(30)
        except threading.BrokenBarrierError:
            pass  # a writer failed: reported below
        start, cpu = time.perf_counter(), time.process_time()
        database = tree_cpu(postmaster_pid)
        for thread in threads:
            thread.join(seconds + 30)
        elapsed = time.perf_counter() - start
        cpu = (time.process_time() - cpu) / elapsed
        database_cpu = cpu_since(postmaster_pid, database) / elapsed
    finally:
        for conn in opened:
            conn.close()
    if errors:
        raise RuntimeError(f"bare insert+commit failed: {errors[0]!r}")
    return {
        "rate": sum(counts) / elapsed,
        "rows": sum(counts),
        "seconds": elapsed,
        "cpu": cpu,
        "database_cpu": database_cpu,
    }


def copy_rate(url: str, rows: list[tuple], batch: int) -> float:
    """Rows/s of COPY (text) of ``rows`` into an empty log_line table of ``url``'s
    database (created when absent), one COPY and commit a batch."""
    with psycopg.connect(url) as conn:
        conn.execute(LOG_TABLE.replace("CREATE TABLE", "CREATE TABLE IF NOT EXISTS"))
        conn.commit()
        return batched_rate(conn, rows, batch, write_copy_text)


def describe(url: str) -> str:
    """The server's version and durability settings, for a benchmark's set-up line."""
    with psycopg.connect(url, autocommit=True) as conn:
        version = conn.info.parameter_status("server_version")
        fsync = conn.execute("SHOW fsync").fetchone()[0]
        sync_commit = conn.execute("SHOW synchronous_commit").fetchone()[0]
    return (
        f"PostgreSQL {version}, throwaway cluster on 127.0.0.1 (fsync {fsync}, "
        f"synchronous_commit {sync_commit}), psycopg {psycopg.__version__}"
    )


def log_rows(run: int, rows: int) -> list[tuple]:
    pad = "x" * 90
    now = time.time_ns() // 1000
    execution = f"019a{run:016x}"
    return [(execution, i + 1, now + i, "main", 1, f"{i:09d} {pad}") for i in range(rows)]


def batched_rate(
    conn: psycopg.Connection,
    rows: list[tuple],
    batch: int,
    write: Callable[[psycopg.Cursor, list[tuple]], None],
) -> float:
    """Rows/s of ``write`` into an empty log_line table, one transaction a batch."""
    conn.execute("TRUNCATE log_line")
    conn.commit()
    start = time.perf_counter()
    with conn.cursor() as cur:
        for first in range(0, len(rows), batch):
            write(cur, rows[first : first + batch])
            conn.commit()
    elapsed = time.perf_counter() - start
    (stored,) = conn.execute("SELECT count(*) FROM log_line").fetchone()
    conn.commit()
    if stored != len(rows):
        raise RuntimeError(f"{stored} rows stored of {len(rows)}")
    return len(rows) / elapsed


def write_executemany(cur: psycopg.Cursor, rows: list[tuple]) -> None:
    cur.executemany(f"INSERT INTO log_line ({LOG_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s)", rows)


def write_copy_text(cur: psycopg.Cursor, rows: list[tuple]) -> None:
    with cur.copy(f"COPY log_line ({LOG_COLUMNS}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def write_copy_binary(cur: psycopg.Cursor, rows: list[tuple]) -> None:
    with cur.copy(f"COPY log_line ({LOG_COLUMNS}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(["text", "int8", "int8", "text", "int2", "text"])
        for row in rows:
            copy.write_row(row)


def notify_latencies(url: str, count: int, seconds: float) -> list[float]:
    """Seconds from each pg_notify call to the listener holding it, one at a time, at
    most ``count`` of them or for ``seconds``."""
    received: dict[int, float] = {}
    ready = threading.Event()
    stop = threading.Event()
    arrived = threading.Condition()
    errors: list[BaseException] = []

    def listen() -> None:
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                ready.set()
                while not stop.is_set():
                    for note in conn.notifies(timeout=0.5):
                        at = time.perf_counter()
                        with arrived:
                            received[int(note.payload)] = at
                            arrived.notify()
                        if stop.is_set():
                            break
        except BaseException as exc:  # noqa: BLE001 - reported by the sender
            errors.append(exc)
            ready.set()

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    if not ready.wait(30) or errors:
        raise RuntimeError(f"listener did not start: {errors}")
    latencies: list[float] = []
    with psycopg.connect(url, autocommit=True) as conn:
        deadline = time.monotonic() + seconds
        for n in range(count + 50):  # the first 50 warm up and are not counted
            sent = time.perf_counter()
            conn.execute("SELECT pg_notify(%s, %s)", (NOTIFY_CHANNEL, str(n)), prepare=True)
            with arrived:
                if not arrived.wait_for(lambda n=n: n in received, timeout=10):
                    raise RuntimeError(f"notification {n} not received within 10 s")
                at = received.pop(n)
            if n >= 50:
                latencies.append(at - sent)
                if time.monotonic() > deadline:
                    break
    stop.set()
    listener.join(5)
    if errors:
        raise RuntimeError(f"listener failed: {errors[0]!r}")
    return latencies


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def spread(rates: list[float]) -> str:
    return f"median of {len(rates)}: " + ", ".join(f"{r:,.0f}" for r in rates)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.pg_baseline", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--seconds", type=float, default=2.5, help="insert+commit loop (2.5)")
    parser.add_argument("--rows", type=int, default=200_000, help="log rows per run (200000)")
    parser.add_argument("--batch", type=int, default=5000, help="rows per transaction (5000)")
    parser.add_argument("--runs", type=int, default=3, help="runs; the median is reported (3)")
    parser.add_argument("--connections", type=int, default=64,
                        help="connections of the concurrent insert+commit (64)")
    parser.add_argument("--notifies", type=int, default=2000, help="NOTIFY round trips (2000)")
    args = parser.parse_args(argv)

    try:
        cluster = PostgresCluster()
    except PostgresNotFound as exc:
        print(f"skipped: PostgreSQL not installed (no initdb): {exc}")
        return 0
    try:
        cluster.start()
    except PostgresStartError as exc:
        print(f"PostgreSQL did not start: {exc}", file=sys.stderr)
        return 1
    try:
        url = cluster.create_database("bench")
        with psycopg.connect(url) as conn:
            version = conn.info.parameter_status("server_version")
            fsync = conn.execute("SHOW fsync").fetchone()[0]
            sync_commit = conn.execute("SHOW synchronous_commit").fetchone()[0]
            conn.commit()
            tx_rate, tx_rows, tx_seconds = single_row_rate(conn, args.seconds, False)
            auto_rate, _, _ = single_row_rate(conn, args.seconds, True)
        concurrent = concurrent_single_row_rate(url, args.connections, args.seconds, cluster.pid)
        with psycopg.connect(url) as conn:
            conn.execute(LOG_TABLE)
            conn.commit()
            writers = {
                "executemany": write_executemany,
                "COPY text": write_copy_text,
                "COPY binary": write_copy_binary,
            }
            rates: dict[str, list[float]] = {name: [] for name in writers}
            for run in range(args.runs):  # the three take turns, run by run
                rows = log_rows(run, args.rows)
                for name, write in writers.items():
                    rates[name].append(batched_rate(conn, rows, args.batch, write))
        latencies = notify_latencies(url, args.notifies, seconds=max(args.seconds, 5.0))
    finally:
        cluster.stop()

    print(
        f"PostgreSQL {version}, throwaway cluster on 127.0.0.1 (fsync {fsync}, "
        f"synchronous_commit {sync_commit}), psycopg {psycopg.__version__}, one connection "
        "unless said"
    )
    print(
        f"bare insert+commit     {tx_rate:10,.0f} rows/s   one row per transaction "
        f"(BEGIN, INSERT, COMMIT), {tx_rows:,} rows in {tx_seconds:.1f}s, "
        f"{1e6 / tx_rate:,.0f} us each"
    )
    print(f"  autocommit INSERT    {auto_rate:10,.0f} rows/s   (one round trip a row)")
    print(
        f"  {args.connections} connections     {concurrent['rate']:10,.0f} rows/s   "
        f"(the same on {args.connections} connections at once, threads of this process; "
        f"CPU: this process {concurrent['cpu']:.0%} of a core, PostgreSQL "
        f"{concurrent['database_cpu']:.0%})"
    )
    for name, runs in rates.items():
        print(
            f"{name + ' log rows':<22} {statistics.median(runs):10,.0f} rows/s   "
            f"{args.batch:,} per transaction, {args.rows:,} a run ({spread(runs)})"
        )
    print(
        f"NOTIFY round trip      p50 {percentile(latencies, 0.5) * 1e6:,.0f} us, "
        f"p99 {percentile(latencies, 0.99) * 1e6:,.0f} us, "
        f"max {max(latencies) * 1e6:,.0f} us   "
        f"(pg_notify on one connection to LISTEN on another, {len(latencies):,} one at a time)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
