"""Metrics benchmark: points written per second, and the time of one comparison.

    python -m bench.metrics [--points 500000] [--batch 10000] [--executions 1000]

1. Prepares a fresh database in a temporary directory: the iris-train executable,
   ``--configurations`` configurations and ``--executions`` COMPLETED executions.
2. Starts the server on it (``python -m server --runtime none``, a loopback port, its own
   process).
3. Write rate: another process sends WriteMetrics calls of ``--batch`` points (built
   before the clock starts, two calls in flight) until ``--points`` are stored.
   Target: at least 100,000 points/s.
4. Compare: writes 5 metrics per execution (a 20-point loss series and 4 single values),
   then times CompareExecutions over all executions of the executable, 5 metrics, ordered
   by accuracy, one page of 1000, ``--repeat`` times. Target: under 50 ms.
5. Baseline: raw sqlite3 ``executemany`` into the same point table in this process, with
   the server's pragmas, in transactions of ``--batch`` rows.

Everything is bounded by timeouts; the server and the temporary directory are removed at
the end.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.common import executemany_rate, trainyard_server, verdict

ROOT = Path(__file__).resolve().parent.parent
WRITE_TARGET = 100_000  # points/s
COMPARE_TARGET_MS = 50.0
METRIC_NAMES = ["accuracy", "loss", "f1", "precision", "recall"]


# ----------------------------------------------------------------- preparation


def prepare(data_dir: Path, configurations: int, executions: int) -> list[str]:
    """A database with ``executions`` COMPLETED executions of iris-train."""
    return asyncio.run(_prepare(data_dir, configurations, executions))


async def _prepare(data_dir: Path, configurations: int, executions: int) -> list[str]:
    from server.domain.models import ArtifactKind, Status
    from server.domain.service import ControlPlane
    from server.store.async_store import AsyncStore

    store = await asyncio.to_thread(AsyncStore, f"sqlite:///{data_dir / 'trainyard.db'}")
    try:
        plane = ControlPlane(store=store)
        await plane.load_executables(ROOT / "samples" / "executables", "default")
        dataset = await plane.create_artifact(
            "default",
            name="iris",
            kind=ArtifactKind.DATASET,
            url="file:///data/iris.csv",
            scenario_id="iris",
        )
        config_ids = []
        for i in range(configurations):
            lr = round(0.01 + i * 0.99 / max(configurations - 1, 1), 4)
            config = await plane.create_configuration(
                "default",
                name=f"lr-{lr}",
                executable_id="iris-train",
                scenario_id="iris",
                parameters=[("learning_rate", str(lr)), ("epochs", "20")],
                artifact_bindings=[("iris-data", dataset.id)],
            )
            config_ids.append(config.id)
        ids = []
        for i in range(executions):
            execution = await plane.create_execution("default", config_ids[i % len(config_ids)])
            await store.force_status(execution.id, Status.RUNNING)
            await store.force_status(execution.id, Status.COMPLETED)
            ids.append(execution.id)
        return ids
    finally:
        await asyncio.to_thread(store.close)


# ---------------------------------------------------------------------- writes


def build_requests(execution_ids: list[str], points: int, batch: int) -> list:
    from google.protobuf.timestamp_pb2 import Timestamp

    from trainyard.v1 import metric_pb2, metric_service_pb2

    rng = random.Random(7)
    now = time.time_ns()
    requests = []
    step = 0
    for n in range(points // batch):
        eid = execution_ids[n % len(execution_ids)]
        metrics = []
        for i in range(batch):
            t = now + (step + i) * 1000
            metrics.append(
                metric_pb2.Metric(
                    name=METRIC_NAMES[i % 5] if i % 5 else "bench/loss",
                    value=rng.random(),
                    step=step + i,
                    time=Timestamp(seconds=t // 1_000_000_000, nanos=t % 1_000_000_000),
                )
            )
        step += batch
        requests.append(
            metric_service_pb2.WriteMetricsRequest(
                executions=[metric_pb2.ExecutionMetrics(execution_id=eid, metrics=metrics)]
            )
        )
    return requests


def writer(address: str, execution_ids: list[str], points: int, batch: int, inflight: int):
    """Runs in its own process: send the batches, return (seconds, points stored)."""
    import grpc

    from trainyard.v1 import metric_service_pb2_grpc

    requests = build_requests(execution_ids, points + batch, batch)
    channel = grpc.insecure_channel(
        address, options=[("grpc.max_send_message_length", 64 * 1024 * 1024)]
    )
    stub = metric_service_pb2_grpc.MetricServiceStub(channel)
    stub.WriteMetrics(requests.pop(), timeout=60)  # warm-up, not counted
    written = 0
    pending = []
    start = time.perf_counter()
    for request in requests:
        if len(pending) >= inflight:
            written += pending.pop(0).result(timeout=60).metrics_written
        pending.append(stub.WriteMetrics.future(request, timeout=60))
    for future in pending:
        written += future.result(timeout=60).metrics_written
    elapsed = time.perf_counter() - start
    channel.close()
    return elapsed, written


def helper_writer(address: str, execution_id: str, points: int):
    """Runs in its own process: log_metric() as a training loop calls it; returns
    (seconds, points stored). Batches of 1000 go synchronously, as in a step."""
    from client.metrics import MetricsLogger

    logger = MetricsLogger(execution_id, address, "default", flush_interval=3600)
    start = time.perf_counter()
    for i in range(points):
        logger.log_metric("loss", 1.0 / (i + 1), step=i)
    logger.flush()
    elapsed = time.perf_counter() - start
    logger.close()
    return elapsed, logger.sent


def in_process(function, *args):
    """Run ``function(*args)`` in a fresh process (the client is never the server)."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        return pool.apply_async(function, args).get(timeout=600)


# ---------------------------------------------------------------------- compare


def fill_compare_metrics(client, ids: list[str]) -> None:
    from trainyard.v1 import metric_pb2

    rng = random.Random(11)
    entries = []
    for eid in ids:
        metrics = [
            metric_pb2.Metric(name="loss", value=1.0 / (1 + rng.random() * epoch), step=epoch)
            for epoch in range(1, 21)
        ]
        metrics += [
            metric_pb2.Metric(name=name, value=round(rng.uniform(0.6, 1.0), 4))
            for name in ("accuracy", "f1", "precision", "recall")
        ]
        entries.append(metric_pb2.ExecutionMetrics(execution_id=eid, metrics=metrics))
        if len(entries) == 100:
            client.write_metrics_batch(entries)
            entries = []
    if entries:
        client.write_metrics_batch(entries)


def measure_compare(client, executions: int, repeat: int) -> list[float]:
    from trainyard.v1 import metric_pb2, metric_service_pb2

    request = metric_service_pb2.CompareExecutionsRequest(
        executable_id="iris-train",
        metrics=[
            metric_pb2.MetricSelector(name="accuracy"),
            metric_pb2.MetricSelector(name="loss", aggregation=metric_pb2.METRIC_AGGREGATION_MIN),
            metric_pb2.MetricSelector(name="f1"),
            metric_pb2.MetricSelector(
                name="precision", aggregation=metric_pb2.METRIC_AGGREGATION_MAX
            ),
            metric_pb2.MetricSelector(name="recall"),
        ],
        order_by=metric_pb2.MetricSelector(name="accuracy"),
        page_size=1000,
    )
    stub = client.metric_service
    times = []
    for i in range(repeat + 1):
        start = time.perf_counter()
        response = stub.CompareExecutions(request, timeout=30)
        elapsed = time.perf_counter() - start
        if i:  # the first call warms caches up
            times.append(elapsed * 1000)
        assert response.total_size == executions, response.total_size
        assert len(response.executions) == min(executions, 1000)
        assert response.executions[0].best
        assert all(len(r.metrics) == 5 for r in response.executions)
    return times


# --------------------------------------------------------------------- baseline


def raw_sqlite_rate(points: int, batch: int) -> float:
    """Rows/s of raw executemany into the point table, with the server's pragmas."""
    rng = random.Random(3)
    now = time.time_ns() // 1000
    batches = [
        [
            (1 + i % 5, b * batch + i, rng.random(), b * batch + i, now + i, None)
            for i in range(batch)
        ]
        for b in range(points // batch)
    ]
    return executemany_rate(
        "CREATE TABLE metric_point (series_id INTEGER NOT NULL, seq INTEGER NOT NULL, "
        "value REAL NOT NULL, step INTEGER, at_us INTEGER NOT NULL, labels TEXT, "
        "PRIMARY KEY (series_id, seq)) WITHOUT ROWID",
        "INSERT INTO metric_point VALUES (?, ?, ?, ?, ?, ?)",
        batches,
    )


# ------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.metrics", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--points", type=int, default=500_000, help="points to write (500000)")
    parser.add_argument("--batch", type=int, default=10_000, help="points per call (10000)")
    parser.add_argument("--inflight", type=int, default=2, help="calls in flight (2)")
    parser.add_argument("--executions", type=int, default=1000, help="executions (1000)")
    parser.add_argument("--configurations", type=int, default=100, help="configurations (100)")
    parser.add_argument("--repeat", type=int, default=20, help="compare calls timed (20)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="trainyard-bench-") as tmp:
        directory = Path(tmp)
        t0 = time.perf_counter()
        ids = prepare(directory, args.configurations, args.executions)
        print(f"prepared {len(ids)} COMPLETED executions in {time.perf_counter() - t0:.1f}s")
        # No runtime: the executions are final already; nothing else competes.
        with trainyard_server("--runtime", "none", data_dir=directory) as (address, _):
            return run(address, directory, ids, args)


def run(address: str, directory: Path, ids: list[str], args: argparse.Namespace) -> int:
    from client.client import TrainyardClient

    seconds, written = in_process(writer, address, ids[:10], args.points, args.batch, args.inflight)
    one_seconds, one_written = in_process(
        writer, address, ids[10:20], args.points // 2, args.batch, 1
    )
    helper_seconds, helper_written = in_process(
        helper_writer, address, ids[20], min(args.points, 200_000)
    )
    write_rate = written / seconds
    raw_rate = raw_sqlite_rate(args.points, args.batch)

    with TrainyardClient(address, timeout=60) as client:
        fill_compare_metrics(client, ids)
        times = measure_compare(client, args.executions, args.repeat)

    p50 = statistics.median(times)
    p90 = sorted(times)[max(0, int(len(times) * 0.9) - 1)]
    ok_write = write_rate >= WRITE_TARGET
    ok_compare = p50 < COMPARE_TARGET_MS
    print(
        f"metric points written: {written} in {seconds:.2f}s = {write_rate:,.0f} points/s "
        f"(batches of {args.batch}, {args.inflight} in flight, separate client process; "
        f"target >= {WRITE_TARGET:,}): {verdict(ok_write)}"
    )
    print(
        f"  one call at a time: {one_written / one_seconds:,.0f} points/s; "
        f"through the step helper (log_metric, batches of 1000): "
        f"{helper_written / helper_seconds:,.0f} points/s"
    )
    print(
        f"raw sqlite3 executemany baseline (this process, same table and pragmas): "
        f"{raw_rate:,.0f} rows/s; server reaches {write_rate / raw_rate:.0%} of it"
    )
    print(
        f"compare {args.executions} executions x 5 metrics, ordered by accuracy: "
        f"p50 {p50:.1f} ms, p90 {p90:.1f} ms, min {min(times):.1f} ms over {len(times)} "
        f"calls (target < {COMPARE_TARGET_MS:.0f} ms): {verdict(ok_compare)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
