"""`trainyard-server copy-database --from URL --to URL`: copy every row of one database
into a new, empty one; how a team moves its metadata from the embedded SQLite file to
PostgreSQL (server/store/copy.py says what is copied and how)."""

from __future__ import annotations

import argparse
import sys
import time

from server.store.copy import CopyFailed, TargetNotEmpty, copy_database


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trainyard-server copy-database",
        description=(
            "Copy every row of a Trainyard database (executables, configurations, "
            "executions and their history, log lines, metrics, artifacts, secrets, "
            "audit events) into a new, empty one, in one transaction. Stop the servers "
            "on the source first: what they write after the copy began is not copied. "
            "Both databases are brought to this release's schema first, as a server "
            "starting on them would."
        ),
    )
    parser.add_argument(
        "--from",
        dest="source",
        required=True,
        metavar="URL",
        help="the database to copy: sqlite:///PATH (a server's is DATA_DIR/trainyard.db) "
        "or postgresql://USER@HOST:PORT/DB",
    )
    parser.add_argument(
        "--to",
        dest="target",
        required=True,
        metavar="URL",
        help="the database to copy into (made if missing for SQLite; it must hold no rows)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    began = time.monotonic()
    shown = [began]  # a line a second, once the copy has taken one

    def progress(table: str, rows: int) -> None:
        now = time.monotonic()
        if now - shown[0] >= 1.0:
            shown[0] = now
            print(f"  {table}: {rows:,} rows…", file=sys.stderr)

    try:
        report = copy_database(args.source, args.target, progress=progress)
    except (TargetNotEmpty, ValueError) as exc:
        print(f"trainyard-server copy-database: {exc}", file=sys.stderr)
        return 2
    except CopyFailed as exc:
        print(
            f"trainyard-server copy-database: not copied: {exc}; the target is left as "
            "it was",
            file=sys.stderr,
        )
        return 1
    for table, rows in report.rows.items():
        print(f"{table:26} {rows:>12,}")
    print(
        f"copied {report.total:,} rows in {time.monotonic() - began:.1f} s; secret values "
        "went across encrypted: start the servers on the target with the same "
        "--secrets-key-file"
    )
    return 0
