"""Unary call rates: GetExecution against a bare grpc.aio echo server, CreateExecution
against the single-row SQLite insert + commit rate, and the server's idle memory.

    python -m bench.unary [--seconds 3] [--runs 3] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import tempfile
import time
from pathlib import Path

from bench.common import PYTHON, ROOT, free_port, median, rss_mb, trainyard_server, verdict
from client.client import TrainyardClient


def load(address: str, kind: str, seconds: float, concurrency: int, arg: str = "") -> dict:
    out = subprocess.run(
        [PYTHON, "-m", "bench.load", address, kind, str(seconds), str(concurrency), arg],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def echo_baseline(seconds: float, runs: int, concurrency: int, payload: int) -> float:
    port = free_port()
    server = subprocess.Popen(
        [PYTHON, "-m", "bench.echo_server", str(port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        rates = [
            load(f"127.0.0.1:{port}", "echo", seconds, concurrency, str(payload))["calls_per_s"]
            for _ in range(runs)
        ]
    finally:
        server.kill()
        server.wait()
    return median(rates)


def sqlite_commit_rate(rows: int = 5000) -> float:
    """Single-row insert + commit per row, WAL, synchronous=NORMAL."""
    with tempfile.TemporaryDirectory() as tmp:
        db = sqlite3.connect(Path(tmp) / "b.db", isolation_level=None)
        db.execute("PRAGMA journal_mode=wal")
        db.execute("PRAGMA synchronous=1")
        db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT, b TEXT, c INTEGER)")
        start = time.perf_counter()
        for i in range(rows):
            db.execute("BEGIN")
            db.execute("INSERT INTO t (a, b, c) VALUES (?, ?, ?)", (f"e{i}", "PENDING", i))
            db.execute("COMMIT")
        elapsed = time.perf_counter() - start
        db.close()
    return rows / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()

    with trainyard_server("--max-concurrent-executions", "1") as (address, process):
        time.sleep(0.5)
        idle_rss = rss_mb(process.pid)
        with TrainyardClient(address) as ty:
            dataset = ty.create_artifact("iris", (ROOT / "samples/data/iris.csv").as_uri(), "iris")
            config = ty.create_configuration(
                "bench", "iris-train", "iris", {"epochs": 1}, {"iris-data": dataset.id}
            )
            execution = ty.create_execution(config.id)
            ty.stop_execution(execution.id)
            size = len(ty.get_execution(execution.id).SerializeToString())
        get_rates = [
            load(address, "get", args.seconds, args.concurrency, execution.id)["calls_per_s"]
            for _ in range(args.runs)
        ]
        create_runs = [
            load(address, "create", args.seconds, args.concurrency, config.id)
            for _ in range(args.runs)
        ]
    echo_rate = echo_baseline(args.seconds, args.runs, args.concurrency, size)
    get_rate = median(get_rates)
    create_rate = median([r["calls_per_s"] for r in create_runs])
    sqlite_rate = sqlite_commit_rate()

    ratio = get_rate / echo_rate
    print(f"GetExecution      {get_rate:10.0f} calls/s  ({args.concurrency} in flight)")
    print(f"bare aio echo     {echo_rate:10.0f} calls/s  (same client, {size}-byte payload)")
    print(f"  ratio           {ratio:10.2f}   target >= 0.60: {verdict(ratio >= 0.6)}")
    print(f"CreateExecution   {create_rate:10.0f} calls/s  (validated, committed, history row)")
    print(
        f"  p50 / p99       {median([r['p50_ms'] for r in create_runs]):8.2f} / "
        f"{median([r['p99_ms'] for r in create_runs]):.2f} ms"
    )
    print(f"sqlite insert+commit {sqlite_rate:7.0f} rows/s (baseline)")
    print(
        f"  ratio           {create_rate / sqlite_rate:10.2f}   target >= 2000/s: "
        f"{verdict(create_rate >= 2000)}"
    )
    print(f"idle server RSS   {idle_rss:10.1f} MB   target < 80 MB: {verdict(idle_rss < 80)}")


if __name__ == "__main__":
    main()
