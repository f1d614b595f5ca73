"""Unary call rates: GetExecution against a bare grpc.aio echo server measured in the
same run with the same clients, CreateExecution (validated, committed, history row,
queued in the runtime), and the server's idle memory.

    python -m bench.unary [--seconds 3] [--runs 5] [--concurrency 64]
                          [--client-processes 1] [--log-level info]
                          [--backend all|sqlite|postgresql]

The set-up, printed with the figures:
- The server runs at its default log level (info: one JSON line per call), written to
  a file as a deployed server's log is.
- The creates queue: the server runs one execution at a time (--max-concurrent-executions
  1) and that one is a step that sleeps, so every created execution waits in the queue,
  as they would for a user creating thousands per second. The queue's length at the
  start of each run is printed beside its rate: a create must not cost more as the
  queue grows. A second line runs the creates with iris-train (epochs=1) executions
  running back to back instead: training processes then share the two cores with the
  server and the clients, so that figure says what a busy machine leaves, not what a
  create costs.
- GetExecution reads one execution over and over, as dashboards poll it: after the
  first call the server answers from the responses it keeps (dropped whenever the
  execution is written). A second line reads more executions in turn than it keeps,
  so that every call reads the store and builds the message.
- GetExecution and echo runs alternate, both servers up, and the ratio is the median of
  the pairs': the rate of either moves by 10-20 % with the state of a shared machine
  from one run to the next, and a ratio of runs minutes apart moved with it. The
  CreateExecution runs alternate with echo runs of their own in the same way (budget:
  0.5 x the echo).
- The load comes from separate client processes (``--client-processes``, 64 calls in
  flight in all), the same for the echo baseline. CPU use is printed for the server
  (and its event loop thread), the clients and the rest of the machine. One client
  process is not the limit (it stays well under a core); on a 2-core machine more
  client processes only take CPU from the server (measured: the echo and GetExecution
  rates fell with 2 and 3). When other work used more than a fifth of a core during a
  run, the figures are flagged.

PostgreSQL (``--backend postgresql``, and after the SQLite figures by default where
PostgreSQL is installed; one line says it was skipped where it is not): the same queued
CreateExecution runs with the store on a throwaway cluster of this run
(tests/services/postgres.py: its own initdb, 127.0.0.1, fsync on), each run followed by
the budget's baseline on the same cluster: a bare single-row insert + commit, one row
per transaction (BEGIN, INSERT, COMMIT) on one connection, back to back
(bench/pg_baseline.py's single_row_rate), and by a bare echo run with the same clients.
The ratio is the median of the create/insert pairs'; the budget is 1.0. For information
only, each run also measures the same insert + commit on as many connections at once as
there are calls in flight (threads of this process, so PostgreSQL flushes the WAL of
commits that wait together at once): printed beside it, labelled, not the budget's
baseline. The creates of concurrent calls are committed together
(ControlPlane.create_execution_grouped), so their rate is not bound by PostgreSQL's
commit latency; the echo shows what gRPC's own per-call work leaves. PostgreSQL's CPU
(its postmaster and backends) is printed apart from other work.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil

from bench.common import (
    PYTHON,
    ROOT,
    cpu_since,
    free_port,
    median,
    rss_mb,
    trainyard_server,
    tree_cpu,
    verdict,
)
from client.client import TrainyardClient
from server.api.executions import RESPONSE_CACHE_SIZE
from trainyard.v1 import execution_pb2
from trainyard.v1 import execution_service_pb2 as ex

SLEEPER = {
    "apiVersion": "argoproj.io/v1alpha1",
    "kind": "WorkflowTemplate",
    "metadata": {
        "name": "bench-sleeper",
        "labels": {"scenarios.ai.sap.com/id": "bench", "ai.sap.com/version": "1.0.0"},
    },
    "spec": {
        "entrypoint": "main",
        "templates": [
            {"name": "main", "container": {"image": "busybox", "command": ["sleep", "3600"]}}
        ],
    },
}
# Executions the uncached GetExecution runs read in turn: more than the server keeps
# responses of.
MISS_EXECUTIONS = RESPONSE_CACHE_SIZE + 1000
OTHER_WORK_LIMIT = 0.2  # of a core: more than this, and a run's figures are flagged


def load(
    address: str, kind: str, seconds: float, concurrency: int, processes: int, arg: str,
    server_pid: int, database_pid: int | None = None,
) -> dict:
    """``processes`` client processes with ``concurrency`` calls in flight in all: the
    summed rate, latency percentiles (median p50, worst p99 of the processes) and the
    CPU used by the server, the clients, the database server (``database_pid``: a
    PostgreSQL postmaster, whose backends are its children) and everything else on
    the machine."""
    server = psutil.Process(server_pid)
    database = tree_cpu(database_pid)
    times = server.cpu_times()
    server_cpu = times.user + times.system
    children_cpu = times.children_user + times.children_system
    loop_cpu = _main_thread_cpu(server)
    machine = psutil.cpu_times()
    began = time.monotonic()
    clients = [
        subprocess.Popen(
            [PYTHON, "-m", "bench.load", address, kind, str(seconds),
             str(concurrency // processes), arg],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    results = []
    for client in clients:
        out, _ = client.communicate()
        if client.returncode != 0:
            raise RuntimeError(f"bench.load exited with {client.returncode}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    elapsed = time.monotonic() - began
    times = server.cpu_times()
    server_cpu = (times.user + times.system - server_cpu) / elapsed
    loop_cpu = (_main_thread_cpu(server) - loop_cpu) / elapsed
    # The execution processes the server ran (and reaped) meanwhile.
    children_cpu = (times.children_user + times.children_system - children_cpu) / elapsed
    after = psutil.cpu_times()
    busy = (sum(after) - sum(machine)) - (after.idle - machine.idle)
    busy -= after.iowait - machine.iowait
    client_cpu = sum(r["cpu_s"] for r in results) / elapsed
    database_cpu = cpu_since(database_pid, database) / elapsed
    return {
        "rate": sum(r["calls_per_s"] for r in results),
        "errors": sum(r["errors"] for r in results),
        "p50_ms": median([r["p50_ms"] for r in results]),
        "p99_ms": max(r["p99_ms"] for r in results),
        "server_cpu": server_cpu,
        "loop_cpu": loop_cpu,
        "client_cpu": client_cpu,
        "executions_cpu": children_cpu,
        "database_cpu": database_cpu,
        # Client start-up falls outside the clients' own timed CPU: not counted as other.
        "other_cpu": max(
            0.0,
            busy / elapsed - server_cpu - children_cpu - client_cpu - database_cpu
            - 0.1 * processes,
        ),
    }


def _main_thread_cpu(process: psutil.Process) -> float:
    """CPU seconds of the process's main thread: the asyncio event loop of both servers
    (gRPC's poller runs in another thread)."""
    for thread in process.threads():
        if thread.id == process.pid:
            return thread.user_time + thread.system_time
    return 0.0


def cpu_line(runs: list[dict]) -> str:
    other = median([r["other_cpu"] for r in runs])
    executions = median([r["executions_cpu"] for r in runs])
    text = (
        f"CPU: server {median([r['server_cpu'] for r in runs]):.0%} of a core (event loop "
        f"thread {median([r['loop_cpu'] for r in runs]):.0%}), clients "
        f"{median([r['client_cpu'] for r in runs]):.0%}"
    )
    if executions > 0.01:
        text += f", execution processes {executions:.0%}"
    database = median([r.get("database_cpu", 0.0) for r in runs])
    if database > 0.005:
        text += f", PostgreSQL {database:.0%}"
    text += f", other work {other:.0%}"
    if other > OTHER_WORK_LIMIT:
        text += "  (OTHER WORK RAN ON THE MACHINE: figures low)"
    return text


@contextlib.contextmanager
def echo_server() -> Iterator[tuple[str, int]]:
    """The bare grpc.aio echo server, in its own process: (address, pid)."""
    port = free_port()
    server = subprocess.Popen(
        [PYTHON, "-m", "bench.echo_server", str(port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        yield f"127.0.0.1:{port}", server.pid
    finally:
        server.kill()
        server.wait()


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


def wait_status(ty: TrainyardClient, execution_id: str, status: int, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while ty.get_execution(execution_id).status != status:
        if time.monotonic() > deadline:
            name = execution_pb2.ExecutionStatus.Name(status)
            raise RuntimeError(f"execution {execution_id} did not become {name}")
        time.sleep(0.02)


def wait_count(
    ty: TrainyardClient, configuration_id: str, status: int, count: int, timeout: float = 60.0
) -> None:
    request = ex.ListExecutionsRequest(
        statuses=[status], configuration_id=configuration_id, page_size=1
    )
    deadline = time.monotonic() + timeout
    while ty.executions.ListExecutions(request).total_size < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"fewer than {count} executions became {status}")
        time.sleep(0.05)


def queued(ty: TrainyardClient, configuration_id: str) -> int:
    request = ex.ListExecutionsRequest(
        statuses=[execution_pb2.EXECUTION_STATUS_PENDING],
        configuration_id=configuration_id,
        page_size=1,
    )
    return ty.executions.ListExecutions(request).total_size


def iris_configuration(ty: TrainyardClient) -> str:
    dataset = ty.create_artifact("iris", (ROOT / "samples/data/iris.csv").as_uri(), "iris")
    return ty.create_configuration(
        "bench", "iris-train", "iris", {"epochs": 1}, {"iris-data": dataset.id}
    ).id


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--client-processes", type=int, default=1,
                        help="spread the calls in flight over this many client processes")
    parser.add_argument("--log-level", default="info",
                        help="the server's log level (its default: info)")
    parser.add_argument(
        "--backend", choices=("all", "sqlite", "postgresql"), default="all",
        help="the store: sqlite (every figure), postgresql (CreateExecution on a throwaway "
        "cluster, beside a bare psycopg insert+commit on it), or all: both, PostgreSQL "
        "skipped with one line where it is not installed (all)",
    )
    args = parser.parse_args()
    code = 0
    if args.backend in ("all", "sqlite"):
        sqlite_figures(args)
    if args.backend in ("all", "postgresql"):
        code = postgres_figures(args)
    return code


def sqlite_figures(args: argparse.Namespace) -> None:
    server_args = ("--max-concurrent-executions", "1")
    common = (args.seconds, args.concurrency, args.client_processes)

    with trainyard_server(*server_args, log_level=args.log_level, log_to_file=True) as (
        address,
        process,
    ):
        time.sleep(0.5)
        idle_rss = rss_mb(process.pid)
        with TrainyardClient(address) as ty:
            # GetExecution reads a finished execution with a full history: PENDING,
            # RUNNING, STOPPING, STOPPED, and its step details.
            iris = iris_configuration(ty)
            execution = ty.create_execution(iris)
            wait_status(ty, execution.id, execution_pb2.EXECUTION_STATUS_RUNNING)
            ty.stop_execution(execution.id)
            wait_status(ty, execution.id, execution_pb2.EXECUTION_STATUS_STOPPED)
            size = len(ty.get_execution(execution.id).SerializeToString())
            ty.create_executable(json.dumps(SLEEPER))
            sleeper = ty.create_configuration("bench", "bench-sleeper", "bench").id
            running = ty.create_execution(sleeper).id
            wait_status(ty, running, execution_pb2.EXECUTION_STATUS_RUNNING)
            # GetExecution and echo runs alternate, so that both see the machine in
            # the same state: the ratio is the median of each pair's.
            get_runs, echo_runs = [], []
            with echo_server() as (echo_address, echo_pid):
                for _ in range(args.runs):
                    get_runs.append(load(address, "get", *common, execution.id, process.pid))
                    echo_runs.append(
                        load(echo_address, "echo", *common, str(size), echo_pid)
                    )
            # The same calls on MISS_EXECUTIONS executions in turn: more than the server
            # keeps responses of, so that every call reads the store and builds the
            # message (what polling many different executions costs).
            each_runs = []
            ids = [ty.create_execution(sleeper).id for _ in range(MISS_EXECUTIONS)]
            for start in range(0, len(ids), 100):
                ty.batch_stop(ids[start : start + 100])
            wait_count(ty, sleeper, execution_pb2.EXECUTION_STATUS_STOPPED, len(ids))
            each_echo_runs = []
            with tempfile.NamedTemporaryFile("w", suffix=".ids") as id_file, echo_server() as (
                echo_address,
                echo_pid,
            ):
                id_file.write("\n".join(ids))
                id_file.flush()
                for _ in range(args.runs):
                    each_runs.append(load(address, "get-each", *common, id_file.name, process.pid))
                    each_echo_runs.append(load(echo_address, "echo", *common, str(size), echo_pid))
            # Creates, alternating with echo runs (a created execution's size) as the
            # GetExecution runs do: the ratio is the median of the pairs'.
            create_runs, create_echo_runs, queue_lengths = [], [], []
            create_size = len(ty.get_execution(running).SerializeToString())
            with echo_server() as (echo_address, echo_pid):
                for _ in range(args.runs):
                    queue_lengths.append(queued(ty, sleeper))
                    create_runs.append(load(address, "create", *common, sleeper, process.pid))
                    create_echo_runs.append(
                        load(echo_address, "echo", *common, str(create_size), echo_pid)
                    )
            final_queue = queued(ty, sleeper)
    with trainyard_server(*server_args, log_level=args.log_level, log_to_file=True) as (
        address,
        process,
    ):
        with TrainyardClient(address) as ty:
            iris = iris_configuration(ty)
        busy_runs = [
            load(address, "create", *common, iris, process.pid) for _ in range(args.runs)
        ]
    sqlite_rate = sqlite_commit_rate()

    get_rate = median([r["rate"] for r in get_runs])
    echo_rate = median([r["rate"] for r in echo_runs])
    create_rate = median([r["rate"] for r in create_runs])
    busy_rate = median([r["rate"] for r in busy_runs])
    errors = sum(
        r["errors"]
        for r in get_runs + each_runs + create_runs + busy_runs + echo_runs
        + each_echo_runs + create_echo_runs
    )
    ratios = [g["rate"] / e["rate"] for g, e in zip(get_runs, echo_runs, strict=True)]
    ratio = median(ratios)
    print(
        f"set-up: {args.client_processes} client process(es), {args.concurrency} calls in "
        f"flight, {args.seconds:g} s x {args.runs} runs (medians); server log level "
        f"{args.log_level}, to a file; default asyncio event loop"
    )
    print(f"GetExecution      {get_rate:10.0f} calls/s   {cpu_line(get_runs)}")
    print(f"bare aio echo     {echo_rate:10.0f} calls/s   {cpu_line(echo_runs)}")
    print(f"  (same clients, {size}-byte payload, runs alternating with GetExecution's)")
    print(
        f"  ratio           {ratio:10.3f}   (median of the pairs; {min(ratios):.3f} to "
        f"{max(ratios):.3f})   target >= 0.60: {verdict(ratio >= 0.6)}"
    )
    each_rate = median([r["rate"] for r in each_runs])
    each_ratios = [g["rate"] / e["rate"] for g, e in zip(each_runs, each_echo_runs, strict=True)]
    each_ratio = median(each_ratios)
    print(
        f"GetExecution      {each_rate:10.0f} calls/s   of {MISS_EXECUTIONS} executions in "
        f"turn, none of them cached   {cpu_line(each_runs)}"
    )
    print(
        f"  ratio           {each_ratio:10.3f}   x the bare echo "
        f"({median([r['rate'] for r in each_echo_runs]):.0f} calls/s, runs alternating; median "
        f"of the pairs, {min(each_ratios):.3f} to {max(each_ratios):.3f})   budget >= 0.60: "
        f"{verdict(each_ratio >= 0.6)}"
    )
    print(
        f"CreateExecution   {create_rate:10.0f} calls/s   (validated, committed, history row, "
        f"queued)   {cpu_line(create_runs)}"
    )
    print(
        f"  p50 / p99       {median([r['p50_ms'] for r in create_runs]):8.2f} / "
        f"{median([r['p99_ms'] for r in create_runs]):.2f} ms"
    )
    per_run = ", ".join(
        f"{r['rate']:.0f}/s from {n}" for r, n in zip(create_runs, queue_lengths, strict=True)
    )
    print(f"  per run, from queue length: {per_run}; queue at the end {final_queue}")
    create_ratios = [
        c["rate"] / e["rate"] for c, e in zip(create_runs, create_echo_runs, strict=True)
    ]
    create_ratio = median(create_ratios)
    print(
        f"  ratio           {create_ratio:10.3f}   x the bare echo ({create_size}-byte payload, "
        f"{median([r['rate'] for r in create_echo_runs]):.0f} calls/s, runs alternating; median "
        f"of the pairs, {min(create_ratios):.3f} to {max(create_ratios):.3f})   budget >= 0.5: "
        f"{verdict(create_ratio >= 0.5)}; target >= 2000/s: {verdict(create_rate >= 2000)}"
    )
    print(
        f"CreateExecution   {busy_rate:10.0f} calls/s   with iris-train runs back to back on "
        f"the same cores   {cpu_line(busy_runs)}"
    )
    per_call = {
        name: median([r["loop_cpu"] / r["rate"] * 1e6 for r in runs if r["rate"]])
        for name, runs in (("echo", echo_runs), ("get", get_runs), ("create", create_runs))
    }
    print(
        f"event loop CPU per call: bare echo {per_call['echo']:.0f} us, GetExecution "
        f"{per_call['get']:.0f} us, CreateExecution {per_call['create']:.0f} us"
    )
    if ratio < 0.6 or create_rate < 2000:
        total = {
            name: median([r["server_cpu"] + r["client_cpu"] for r in runs])
            for name, runs in (("echo", echo_runs), ("get", get_runs), ("create", create_runs))
        }
        print(
            "  what bounds them: the two cores. Server and clients use "
            f"{total['echo']:.0%} (echo), {total['get']:.0%} (GetExecution), "
            f"{total['create']:.0%} (CreateExecution) of the machine's 200 %,\n"
            "  in four busy threads (each side's event loop and gRPC poller). gRPC's own work "
            f"per call, the bare echo's, takes {per_call['echo']:.0f} us of the server's loop "
            "and as much again elsewhere; every call pays it."
        )
    print(f"sqlite insert+commit {sqlite_rate:7.0f} rows/s (one row per transaction)")
    print(f"idle server RSS   {idle_rss:10.1f} MB   target < 80 MB: {verdict(idle_rss < 80)}")
    if errors:
        print(f"ERRORS: {errors} calls failed")


PG_CREATE_TARGET = 1.0  # x the bare single-row insert+commit on one connection


def postgres_figures(args: argparse.Namespace) -> int:
    """CreateExecution on PostgreSQL: the same queued creates as on SQLite, against a
    throwaway cluster of this run, runs alternating with the budget's baseline (a bare
    psycopg single-row insert+commit on one connection) and, for information, the same
    on as many connections as there are calls in flight, on the same cluster. Returns
    the exit code."""
    from bench.pg_baseline import (
        concurrent_single_row_rate,
        describe,
        serial_single_row_rate,
    )
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
    common = (args.seconds, args.concurrency, args.client_processes)
    try:
        url = cluster.create_database("trainyard_bench")
        baseline_url = cluster.create_database("bench_baseline")
        setup = describe(url)
        server_args = ("--max-concurrent-executions", "1", "--database-url", url)
        create_runs, bare_runs, wide_runs, echo_runs, queue_lengths = [], [], [], [], []
        with trainyard_server(*server_args, log_level=args.log_level, log_to_file=True) as (
            address,
            process,
        ):
            with TrainyardClient(address) as ty:
                ty.create_executable(json.dumps(SLEEPER))
                sleeper = ty.create_configuration("bench", "bench-sleeper", "bench").id
                running = ty.create_execution(sleeper).id
                wait_status(ty, running, execution_pb2.EXECUTION_STATUS_RUNNING)
                size = len(ty.get_execution(running).SerializeToString())
                with echo_server() as (echo_address, echo_pid):
                    for _ in range(args.runs):
                        queue_lengths.append(queued(ty, sleeper))
                        create_runs.append(
                            load(address, "create", *common, sleeper, process.pid, cluster.pid)
                        )
                        bare_runs.append(
                            serial_single_row_rate(baseline_url, args.seconds, cluster.pid)
                        )
                        wide_runs.append(
                            concurrent_single_row_rate(
                                baseline_url, args.concurrency, args.seconds, cluster.pid
                            )
                        )
                        echo_runs.append(
                            load(echo_address, "echo", *common, str(size), echo_pid)
                        )
                final_queue = queued(ty, sleeper)
    finally:
        cluster.stop()

    create_rate = median([r["rate"] for r in create_runs])
    bare_rate = median([r["rate"] for r in bare_runs])
    wide_rate = median([r["rate"] for r in wide_runs])
    ratios = [c["rate"] / b["rate"] for c, b in zip(create_runs, bare_runs, strict=True)]
    ratio = median(ratios)
    wide_ratios = [c["rate"] / b["rate"] for c, b in zip(create_runs, wide_runs, strict=True)]
    errors = sum(r["errors"] for r in create_runs)
    print(
        f"PostgreSQL: {setup}; {args.client_processes} client process(es), "
        f"{args.concurrency} calls in flight, {args.seconds:g} s x {args.runs} runs (medians)"
    )
    print(
        f"CreateExecution   {create_rate:10.0f} calls/s   (validated, committed, history row, "
        f"queued)   {cpu_line(create_runs)}"
    )
    print(
        f"  p50 / p99       {median([r['p50_ms'] for r in create_runs]):8.2f} / "
        f"{median([r['p99_ms'] for r in create_runs]):.2f} ms"
    )
    per_run = ", ".join(
        f"{r['rate']:.0f}/s from {n}" for r, n in zip(create_runs, queue_lengths, strict=True)
    )
    print(f"  per run, from queue length: {per_run}; queue at the end {final_queue}")

    def bare_cpu(runs: list[dict]) -> str:
        return (
            f"CPU: this process {median([r['cpu'] for r in runs]):.0%} of a core, "
            f"PostgreSQL {median([r['database_cpu'] for r in runs]):.0%}"
        )

    print(
        f"bare insert+commit {bare_rate:9.0f} rows/s   the budget's baseline: psycopg, one row "
        f"per transaction (BEGIN, INSERT, COMMIT), one connection, back to back; runs "
        f"alternating with CreateExecution's   {bare_cpu(bare_runs)}"
    )
    print(
        f"  ratio           {ratio:10.3f}   CreateExecution / bare insert+commit (median of "
        f"the pairs; {min(ratios):.3f} to {max(ratios):.3f})   target >= "
        f"{PG_CREATE_TARGET:.1f}: {verdict(ratio >= PG_CREATE_TARGET)}"
    )
    print(
        f"  (information, not the budget) {args.concurrency} connections at once: "
        f"{wide_rate:.0f} rows/s (commits that wait together share a WAL flush); "
        f"CreateExecution {median(wide_ratios):.2f} x it (pairs {min(wide_ratios):.2f} to "
        f"{max(wide_ratios):.2f})   {bare_cpu(wide_runs)}"
    )
    echo_rate = median([r["rate"] for r in echo_runs])
    print(
        f"bare aio echo     {echo_rate:10.0f} calls/s   (same clients, {size}-byte payload, "
        f"runs alternating with the others; CreateExecution {create_rate / echo_rate:.2f} x "
        f"it)   {cpu_line(echo_runs)}"
    )
    if ratio < PG_CREATE_TARGET and echo_rate < bare_rate * PG_CREATE_TARGET:
        print(
            f"  what bounds it: gRPC itself. A bare grpc.aio server that stores nothing "
            f"answers {echo_rate / bare_rate:.2f} x the bare insert+commit rate with these "
            f"clients; every create pays that call's work and its own."
        )
    if errors:
        print(f"ERRORS: {errors} calls failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
