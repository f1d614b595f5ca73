"""ListExecutions page latency at 1,000 and at 1,000,000 executions: the first page and
page 5,000 (keyset paging should make them equally fast).

    python -m bench.list_scale [--rows 1000000] [--calls 200]
"""

from __future__ import annotations

import argparse
import secrets
import sqlite3
import tempfile
import time
from pathlib import Path

from bench.common import median, trainyard_server, verdict
from client.client import TrainyardClient
from server.store.repository import Store
from trainyard.v1 import execution_service_pb2 as ex

STATUSES = ["COMPLETED", "DEAD", "STOPPED", "COMPLETED", "COMPLETED"]


def seed(data_dir: Path, rows: int) -> None:
    """Fill a fresh database with ``rows`` final executions of one configuration, in
    bulk (raw executemany), with their history rows and the per-status counts."""
    Store(f"sqlite:///{data_dir / 'trainyard.db'}").close()  # create the schema
    db = sqlite3.connect(data_dir / "trainyard.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=wal")
    db.execute("PRAGMA synchronous=1")
    now = time.time_ns() // 1000
    counts: dict[str, int] = {}
    batch = 50_000
    db.execute("BEGIN")
    for start in range(0, rows, batch):
        executions = []
        transitions = []
        for i in range(start, min(rows, start + batch)):
            execution_id = secrets.token_hex(8)
            status = STATUSES[i % len(STATUSES)]
            counts[status] = counts.get(status, 0) + 1
            at = now - (rows - i) * 1000
            executions.append(
                (
                    "default",
                    execution_id,
                    "cfg0000000000000",
                    "iris-train",
                    "iris",
                    status,
                    "COMPLETED",
                    "",
                    "[]",
                    "[]",
                    at,
                    at,
                    at + 10,
                    at + 500,
                    at + 500,
                    2,
                )
            )
            transitions.append((execution_id, 1, None, "PENDING", at, "created", ""))
            transitions.append((execution_id, 2, "PENDING", status, at + 500, "seeded", ""))
        db.executemany(
            "INSERT INTO execution (resource_group, execution_id, configuration_id,"
            " executable_id, scenario_id, status, target_status, status_message, step_details,"
            " output_artifact_ids, created_us, submitted_us, started_us, completed_us,"
            " modified_us, history_len) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            executions,
        )
        db.executemany(
            "INSERT INTO transition (execution_id, seq, from_status, to_status, at_us, cause,"
            " message) VALUES (?,?,?,?,?,?,?)",
            transitions,
        )
    db.executemany(
        "INSERT INTO execution_count (resource_group, status, scenario_id, executable_id,"
        " configuration_id, n) VALUES ('default', ?, 'iris', 'iris-train', 'cfg0000000000000', ?)",
        list(counts.items()),
    )
    db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.execute("ANALYZE")
    db.close()


def page_latency(ty: TrainyardClient, token: str, calls: int) -> float:
    request = ex.ListExecutionsRequest(page_size=50, page_token=token)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        ty.call(ty.executions.ListExecutions, request)
        times.append(time.perf_counter() - start)
    return median(times) * 1000


def measure(rows: int, calls: int) -> tuple[float, float | None, int]:
    with tempfile.TemporaryDirectory(prefix="trainyard-list-") as tmp:
        began = time.perf_counter()
        seed(Path(tmp), rows)
        seeded = time.perf_counter() - began
        with trainyard_server(data_dir=Path(tmp)) as (address, _process):
            with TrainyardClient(address) as ty:
                first = page_latency(ty, "", calls)
                token = ""
                request = ex.ListExecutionsRequest(page_size=50)
                pages = 0
                deep = None
                while pages < 4999:
                    response = ty.call(ty.executions.ListExecutions, request)
                    pages += 1
                    token = response.next_page_token
                    if not token:
                        break
                    request.page_token = token
                if token and pages == 4999:
                    deep = page_latency(ty, token, calls)
                total = ty.call(ty.executions.ListExecutions, ex.ListExecutionsRequest()).total_size
        print(f"  seeded {rows:,} executions in {seeded:.1f}s; total_size reported {total:,}")
        return first, deep, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    small_first, _, _ = measure(1_000, args.calls)
    big_first, big_deep, _ = measure(args.rows, args.calls)
    print(f"first page, 1,000 rows          p50 {small_first:7.2f} ms")
    print(
        f"first page, {args.rows:,} rows   p50 {big_first:7.2f} ms  "
        f"ratio {big_first / small_first:.2f}  target < 10 ms and <= 1.5x: "
        f"{verdict(big_first < 10 and big_first <= 1.5 * small_first)}"
    )
    if big_deep is not None:
        print(
            f"page 5,000, {args.rows:,} rows   p50 {big_deep:7.2f} ms  "
            f"ratio {big_deep / small_first:.2f}  target < 10 ms and <= 1.5x: "
            f"{verdict(big_deep < 10 and big_deep <= 1.5 * small_first)}"
        )
    else:
        print("page 5,000: fewer than 5,000 pages at this size")


if __name__ == "__main__":
    main()
