"""How fast `trainyard-server copy-database` moves a SQLite database to PostgreSQL,
beside a bare copy of the same log lines measured in the same run.

    python -m bench.copy_database [--lines 500000] [--executions 20] [--runs 3]

The source is a SQLite file written through the store: ``--executions`` executions,
each with its history and an equal share of ``--lines`` log lines of 100 bytes (log
lines are nearly all of a real database's rows). Each run copies it into a new, empty
database of a throwaway PostgreSQL cluster of this run (tests/services/postgres.py),
then, alternating, a bare copy moves the same log lines: one sqlite3 read of the table
and one psycopg COPY (text) of its rows into an empty table of the same columns, in
one transaction. The ratio is the median of the pairs': what the copy's checks,
snapshot, batching and every other table cost over moving the rows alone. No budget
names it; the figure says how long a move of a large database takes.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import psycopg

from bench.common import median
from server.domain.models import Execution, Status
from server.store.copy import copy_database
from server.store.repository import Store

BARE_TABLE = (
    'CREATE TABLE "log_line" ("execution_id" TEXT NOT NULL, "seq" BIGINT NOT NULL,'
    ' "at_us" BIGINT NOT NULL, "step" TEXT NOT NULL, "stream" SMALLINT NOT NULL,'
    ' "text" TEXT NOT NULL, PRIMARY KEY ("execution_id", "seq"))'
)
COLUMNS = ("execution_id", "seq", "at_us", "step", "stream", "text")


def make_source(path: Path, lines: int, executions: int) -> str:
    url = f"sqlite:///{path}"
    store = Store(url)
    try:
        each = max(1, lines // executions)
        pad = "x" * 90
        for e in range(executions):
            execution_id = f"bench{e:04d}"
            store.create_execution(Execution(execution_id, "g", "c1", "x", "s"))
            store.transition(execution_id, Status.RUNNING, "step_started")
            for start in range(0, each, 10_000):
                store.append_logs(
                    [
                        (execution_id, seq, 1_700_000_000_000_000 + seq, "main", 1,
                         f"{seq:09d} {pad}")
                        for seq in range(start + 1, min(each, start + 10_000) + 1)
                    ]
                )
            store.transition(execution_id, Status.COMPLETED, "step_finished")
    finally:
        store.close()
    return url


def bare_copy(source: Path, url: str) -> float:
    """Seconds to read every log line from the SQLite file and COPY them into an empty
    table of ``url``'s database, in one transaction."""
    began = time.perf_counter()
    read = sqlite3.connect(source)
    try:
        rows = read.execute(f"SELECT {', '.join(COLUMNS)} FROM log_line")
        with psycopg.connect(url) as conn:
            conn.execute(BARE_TABLE)
            with conn.cursor().copy(f"COPY log_line ({', '.join(COLUMNS)}) FROM STDIN") as copy:
                while batch := rows.fetchmany(5_000):
                    for row in batch:
                        copy.write_row(row)
            conn.commit()
    finally:
        read.close()
    return time.perf_counter() - began


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.copy_database")
    parser.add_argument("--lines", type=int, default=500_000)
    parser.add_argument("--executions", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)

    from tests.services.postgres import PostgresCluster, PostgresNotFound, PostgresStartError

    try:
        cluster = PostgresCluster()
    except PostgresNotFound:
        print("skipped: PostgreSQL is not installed (no initdb)")
        return 0
    with tempfile.TemporaryDirectory(prefix="trainyard-bench-") as tmp:
        source_path = Path(tmp) / "trainyard.db"
        source = make_source(source_path, args.lines, args.executions)
        try:
            cluster.start()
        except PostgresStartError as exc:
            print(f"PostgreSQL did not start: {exc}", file=sys.stderr)
            return 1
        copies, bares, rows = [], [], 0
        try:
            for run in range(args.runs):
                target = cluster.create_database(f"copy_{run}")
                began = time.perf_counter()
                report = copy_database(source, target)
                copies.append(time.perf_counter() - began)
                rows = report.total
                bares.append(bare_copy(source_path, cluster.create_database(f"bare_{run}")))
        finally:
            cluster.stop()
    lines = args.lines // args.executions * args.executions
    ratios = [(rows / c) / (lines / b) for c, b in zip(copies, bares, strict=True)]
    copy_s, bare_s = median(copies), median(bares)
    print(
        f"source: SQLite, {args.executions} executions, {lines:,} log lines of 100 bytes, "
        f"{rows:,} rows in all; target: a new database of a throwaway PostgreSQL cluster"
    )
    print(
        f"copy-database       {copy_s:7.2f} s   {rows / copy_s:10,.0f} rows/s   "
        f"(runs: {', '.join(f'{c:.2f}' for c in copies)} s)"
    )
    print(
        f"bare read + COPY    {bare_s:7.2f} s   {lines / bare_s:10,.0f} rows/s   "
        f"(the log lines alone; runs alternating: {', '.join(f'{b:.2f}' for b in bares)} s)"
    )
    print(
        f"  ratio {median(ratios):.2f} x the bare rate (median of the pairs; "
        f"{min(ratios):.2f} to {max(ratios):.2f}); no budget"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
