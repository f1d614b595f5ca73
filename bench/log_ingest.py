"""Log lines stored per second from one step that prints as fast as it can, beside a
raw sqlite3 executemany into the same table measured in the same run.

    python -m bench.log_ingest [--lines 1000000] [--runs 3]

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
  server's pragmas, one transaction per 5,000 rows as the log sink writes them.

Target (the benchmarks issue): 200,000 lines/s stored.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time

from bench.common import executemany_rate, median, trainyard_server, verdict
from client.client import TrainyardClient
from trainyard.v1 import execution_pb2, log_pb2

TARGET = 200_000
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
    pad = "x" * 90
    now = time.time_ns() // 1000
    rows = [("e-bench", i + 1, now + i, "main", 1, f"{i:09d} {pad}") for i in range(lines)]
    return executemany_rate(
        "CREATE TABLE log_line (execution_id TEXT NOT NULL, seq INTEGER NOT NULL, "
        "at_us INTEGER NOT NULL, step TEXT NOT NULL, stream INTEGER NOT NULL, "
        "text TEXT NOT NULL, PRIMARY KEY (execution_id, seq)) WITHOUT ROWID",
        "INSERT INTO log_line VALUES (?, ?, ?, ?, ?, ?)",
        [rows[first : first + SINK_BATCH] for first in range(0, lines, SINK_BATCH)],
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.log_ingest", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--lines", type=int, default=1_000_000, help="lines per run (1000000)")
    parser.add_argument("--runs", type=int, default=3, help="runs; the median is reported (3)")
    args = parser.parse_args(argv)

    rates: list[float] = []
    with trainyard_server() as (address, _process):
        with TrainyardClient(address, timeout=60) as client:
            client.create_executable(json.dumps(printer_executable()))
            configuration = client.create_configuration(
                "printer", "bench-printer", "bench", parameters={"lines": args.lines}
            )
            for _ in range(args.runs):
                rates.append(one_run(client, configuration.id, args.lines))
    alone = statistics.median(asyncio.run(step_alone(args.lines)) for _ in range(args.runs))
    raw = statistics.median(raw_sqlite_rate(args.lines) for _ in range(args.runs))

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
        f"{SINK_BATCH} rows per transaction): {raw:,.0f} rows/s; the server reaches "
        f"{rate / raw:.0%} of it"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
