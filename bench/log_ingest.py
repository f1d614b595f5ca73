"""Log lines stored per second from one step that prints as fast as it can, beside a
raw sqlite3 executemany into the same table measured in the same run.

    python -m bench.log_ingest [--lines 1000000] [--runs 3] [--backend all|sqlite|postgresql]

A real server (its local runtime, its log sink and writer thread) runs an executable
whose one step prints ``--lines`` numbered lines of 100 bytes as fast as Python can
write them. The figure is the lines of the run divided by the time from RUNNING to
COMPLETED in the execution's history: the runtime flushes every line to the store
before it completes an execution, so this is reading the pipe, splitting, numbering,
storing, committing and publishing, end to end. Each run is checked: its last stdout
line is stored with the number the step gave it.

Printed beside it, from the same run:

* the step alone: the same program read from a pipe by this process and split into
  lines, with nothing stored (what the step and the pipe can give);
* raw sqlite3 ``executemany`` of the same rows into the server's log table, with the
  server's pragmas, one transaction per 5,000 rows as the log sink writes them; one
  such run after each of the server's, and the ratio is the median of the pairs'.

Target (the benchmarks issue): 200,000 lines/s stored; budget (DESIGN.md): 0.9 x the raw
executemany.

With PostgreSQL installed (or ``--backend postgresql``), the same runs follow with the
store on a throwaway cluster of this run (tests/services/postgres.py: its own initdb on
127.0.0.1, fsync on), each run followed by a bare psycopg COPY (text format) of the same
rows, 5,000 per COPY and commit, into a log_line table of another database of the same
cluster; the ratio is the median of the pairs'. Budget: 0.5 x the COPY. Where PostgreSQL
is not installed, one line says so. ``--backend sqlite`` runs the SQLite figures only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time

from bench.common import (
    LOG_INSERT_SQL,
    LOG_TABLE_SQL,
    executemany_rate,
    log_rows,
    median,
    trainyard_server,
    verdict,
)
from client.client import TrainyardClient
from trainyard.v1 import execution_pb2, log_pb2

TARGET = 200_000
SQLITE_RATIO = 0.9  # x raw executemany (DESIGN.md's budget)
TEXT_BYTES = 100
SINK_BATCH = 5000  # LogSink.max_batch

# The step: numbered lines of TEXT_BYTES bytes (newline included), written in blocks.
PRINTER = r"""
import sys
n = int(sys.argv[1])
pad = "x" * 90
write = sys.stdout.write
block = 10_000
for start in range(0, n, block):
    write("".join([f"{i:09d} {pad}\n" for i in range(start, min(n, start + block))]))
sys.stdout.flush()
"""


def printer_executable() -> dict:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "WorkflowTemplate",
        "metadata": {
            "name": "bench-printer",
            "labels": {"scenarios.ai.sap.com/id": "bench", "ai.sap.com/version": "1.0.0"},
        },
        "spec": {
            "entrypoint": "main",
            "arguments": {"parameters": [{"name": "lines", "type": "int", "default": "1000"}]},
            "templates": [
                {
                    "name": "main",
                    "inputs": {"parameters": [{"name": "lines"}]},
                    "container": {
                        "image": "python:3",
                        "command": [sys.executable, "-c", PRINTER],
                        "args": ["{{inputs.parameters.lines}}"],
                    },
                }
            ],
        },
    }


FINAL = {
    execution_pb2.EXECUTION_STATUS_COMPLETED,
    execution_pb2.EXECUTION_STATUS_DEAD,
    execution_pb2.EXECUTION_STATUS_STOPPED,
    execution_pb2.EXECUTION_STATUS_UNKNOWN,
}


def one_run(client: TrainyardClient, configuration_id: str, lines: int) -> float:
    """Lines/s of one execution, from its RUNNING and COMPLETED transition times."""
    execution = client.create_execution(configuration_id)
    deadline = time.monotonic() + 600
    while execution.status not in FINAL:
        if time.monotonic() > deadline:
            raise RuntimeError(f"execution {execution.id} did not finish")
        time.sleep(0.05)
        execution = client.get_execution(execution.id)
    if execution.status != execution_pb2.EXECUTION_STATUS_COMPLETED:
        raise RuntimeError(f"execution {execution.id}: {execution.status_message}")
    times = {t.to_status: t.time.ToNanoseconds() for t in execution.history}
    seconds = (
        times[execution_pb2.EXECUTION_STATUS_COMPLETED]
        - times[execution_pb2.EXECUTION_STATUS_RUNNING]
    ) / 1e9
    last = next(
        client.list_logs(
            execution.id, limit=1, streams=[log_pb2.LOG_STREAM_STDOUT], descending=True
        )
    )
    if int(last.text.split()[0]) != lines - 1:
        raise RuntimeError(f"last stored line is {last.text[:20]!r}, not line {lines - 1}")
    client.delete_execution(execution.id)
    return lines / seconds


async def step_alone(lines: int) -> float:
    """Lines/s of the step read from a pipe and split here, nothing stored."""
    from server.runtime.processes import read_lines

    count = 0

    def emit(lines: list[str]) -> None:
        nonlocal count
        count += len(lines)

    start = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PRINTER, str(lines), stdout=asyncio.subprocess.PIPE
    )
    await read_lines(process.stdout, emit)
    await process.wait()
    elapsed = time.perf_counter() - start
    assert count == lines, (count, lines)
    return lines / elapsed


def raw_sqlite_rate(lines: int) -> float:
    """Rows/s of raw executemany into a fresh log table, with the server's pragmas."""
    rows = log_rows(lines)
    return executemany_rate(
        LOG_TABLE_SQL,
        LOG_INSERT_SQL,
        [rows[first : first + SINK_BATCH] for first in range(0, lines, SINK_BATCH)],
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.log_ingest", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--lines", type=int, default=1_000_000, help="lines per run (1000000)")
    parser.add_argument("--runs", type=int, default=3, help="runs; the median is reported (3)")
    parser.add_argument(
        "--backend", choices=("all", "sqlite", "postgresql"), default="all",
        help="the store: sqlite, postgresql (a throwaway cluster, beside a bare COPY on "
        "it), or all: both, PostgreSQL skipped with one line where it is not installed",
    )
    args = parser.parse_args(argv)
    code = 0
    if args.backend in ("all", "sqlite"):
        sqlite_figures(args)
    if args.backend in ("all", "postgresql"):
        code = postgres_figures(args)
    return code


def server_rates(args: argparse.Namespace, *server_args: str, between=None) -> list[float]:
    """Lines/s of ``--runs`` executions on one server; ``between()`` after each."""
    rates: list[float] = []
    with trainyard_server(*server_args) as (address, _process):
        with TrainyardClient(address, timeout=60) as client:
            client.create_executable(json.dumps(printer_executable()))
            configuration = client.create_configuration(
                "printer", "bench-printer", "bench", parameters={"lines": args.lines}
            )
            for _ in range(args.runs):
                rates.append(one_run(client, configuration.id, args.lines))
                if between is not None:
                    between()
    return rates


def sqlite_figures(args: argparse.Namespace) -> None:
    raws: list[float] = []
    rates = server_rates(args, between=lambda: raws.append(raw_sqlite_rate(args.lines)))
    alone = statistics.median(asyncio.run(step_alone(args.lines)) for _ in range(args.runs))
    raw = median(raws)
    ratio = median([r / w for r, w in zip(rates, raws, strict=True)])

    rate = median(rates)
    runs = ", ".join(f"{r:,.0f}" for r in rates)
    ok = rate >= TARGET
    print(
        f"log lines stored from one step: {rate:,.0f} lines/s median of {args.runs} runs "
        f"of {args.lines:,} lines ({runs}) (target >= {TARGET:,}): {verdict(ok)}"
    )
    print(f"  the step alone, read from a pipe, nothing stored: {alone:,.0f} lines/s")
    print(
        f"raw sqlite3 executemany baseline (this process, same table and pragmas, "
        f"{SINK_BATCH} rows per transaction, runs alternating with the server's): "
        f"{raw:,.0f} rows/s ({', '.join(f'{w:,.0f}' for w in raws)})"
    )
    print(
        f"  ratio {ratio:.2f} (median of the pairs)   budget >= {SQLITE_RATIO}: "
        f"{verdict(ratio >= SQLITE_RATIO)}"
    )


PG_TARGET = 0.5  # x a bare COPY of the same rows


def postgres_figures(args: argparse.Namespace) -> int:
    """The same runs with the store on a throwaway PostgreSQL cluster of this run, each
    followed by a bare COPY (text, psycopg, one COPY and commit per SINK_BATCH rows)
    of the same rows into a log_line table of another database of the cluster."""
    from bench.pg_baseline import copy_rate, describe, log_rows
    from tests.services.postgres import PostgresCluster, PostgresNotFound, PostgresStartError

    try:
        cluster = PostgresCluster()
    except PostgresNotFound:
        print("PostgreSQL: skipped (not installed: no initdb)")
        return 0
    try:
        cluster.start()
    except PostgresStartError as exc:
        print(f"PostgreSQL did not start: {exc}", file=sys.stderr)
        return 1
    copies: list[float] = []
    try:
        url = cluster.create_database("trainyard_bench")
        baseline_url = cluster.create_database("bench_baseline")
        setup = describe(url)

        def copy_run() -> None:
            copies.append(copy_rate(baseline_url, log_rows(len(copies), args.lines), SINK_BATCH))

        rates = server_rates(args, "--database-url", url, between=copy_run)
    finally:
        cluster.stop()
    rate, copy = median(rates), median(copies)
    ratios = [r / c for r, c in zip(rates, copies, strict=True)]
    ratio = median(ratios)
    print(f"PostgreSQL: {setup}")
    print(
        f"log lines stored from one step: {rate:,.0f} lines/s median of {args.runs} runs "
        f"of {args.lines:,} lines ({', '.join(f'{r:,.0f}' for r in rates)})"
    )
    print(
        f"bare COPY baseline (psycopg, text format, same rows, {SINK_BATCH} per COPY and "
        f"commit, runs alternating with the server's): {copy:,.0f} rows/s "
        f"({', '.join(f'{c:,.0f}' for c in copies)})"
    )
    print(
        f"  ratio {ratio:.2f} (median of the pairs; {min(ratios):.2f} to {max(ratios):.2f})"
        f"   target >= {PG_TARGET}: {verdict(ratio >= PG_TARGET)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
