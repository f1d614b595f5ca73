"""`trainyard-server copy-database`: a team's metadata moved from the embedded SQLite file
to PostgreSQL (and back) with every row, through the command a user runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from server.domain.audit import AuditEvent, AuditFilter
from server.domain.metrics import ExecutionMetricsIn
from server.domain.models import Artifact, ArtifactKind, Execution, Status
from server.domain.paging import PageRequest
from server.store import copy as copying
from server.store.dialects import open_database
from server.store.metrics import MetricStore
from server.store.repository import Store
from server.store.tables import bind
from tests.test_schema import _assert_new_writes_work, _load_release

ROOT = Path(__file__).resolve().parent.parent


def copy_database(source: str, target: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "server", "copy-database", "--from", source, "--to", target],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _source(tmp_path: Path) -> str:
    """A SQLite database with rows in every table: the release's, then a row of each
    table the later versions added."""
    path = tmp_path / "trainyard.db"
    _load_release(path)
    url = f"sqlite:///{path}"
    store = Store(url)
    try:
        _assert_new_writes_work(store)  # secrets, re-runs, page-token key, ...
        store.create_execution(
            Execution("e4", "g", "c1", "iris-train", "iris"),
            "req-e4",
            audit=AuditEvent("ada", "create", "execution", "e4", "g", request_id="req-e4"),
        )
        # A deleted execution whose lines are still queued for purging.
        store.create_execution(Execution("e6", "g", "c1", "iris-train", "iris"))
        store.append_logs([("e6", 1, 1, "train", 1, "gone")])
        store.transition("e6", Status.RUNNING, "step_started")
        store.transition("e6", Status.COMPLETED, "step_finished")
        store.delete_execution("g", "e6")
    finally:
        store.close()
    return url


def _tables(url: str) -> dict[str, list[tuple]]:
    """Every table's rows, as comparable values (a boolean as 0 or 1), in a stable
    order; the schema versions left out (each database records its own)."""
    db, dialect = open_database(url)
    try:
        found = {}
        for model in bind(db).models:
            table = model._meta.table_name
            if table == "schema_version":
                continue
            columns = sorted(f.column_name for f in model._meta.sorted_fields)
            listed = ", ".join(f'"{c}"' for c in columns)
            rows = db.execute_sql(f'SELECT {listed} FROM "{table}"').fetchall()
            found[table] = sorted(
                (tuple(int(v) if isinstance(v, bool) else v for v in row) for row in rows),
                key=repr,
            )
        return found
    finally:
        db.close()


def test_a_sqlite_database_moves_to_postgresql_with_every_row(tmp_path, postgres_url):
    source = _source(tmp_path)
    rows = _tables(source)
    assert [t for t, r in rows.items() if not r] == []  # every table has rows to copy

    done = copy_database(source, postgres_url)
    assert done.returncode == 0, done.stderr
    assert "execution " in done.stdout and "log_line " in done.stdout
    assert f"copied {sum(len(r) for r in rows.values()):,} rows" in done.stdout
    assert _tables(postgres_url) == rows

    store = Store(postgres_url)
    try:
        # Read back through the store's own calls, as a server on the target reads them.
        assert store.get_scenario("g", "iris").name == "Iris classification"
        assert store.get_executable("g", "iris-train").parameters[0].name == "learning_rate"
        assert store.get_artifact("g", "a1").labels == {"k": "v"}
        config = store.get_configuration("g", "c1")
        assert config.parameter_bindings == {"learning_rate": "0.1"}
        assert config.input_artifact_bindings == {"iris-data": "a1"}
        done = store.get_execution("g", "e0")
        assert [t.to_status for t in done.history] == [
            Status.PENDING, Status.RUNNING, Status.COMPLETED
        ]
        assert [line.text for line in store.read_logs("e0")] == [
            "epoch 1", "warning: slow", "step train done"
        ]
        assert store.last_log_seq("e0") == 3
        latest = MetricStore(store).latest_points("e0", [], None, 10)
        assert [(p.name, p.value) for p in latest] == [("accuracy", 0.9), ("loss", 0.25)]
        assert store.get_secrets("g", ["token"])["token"].sealed == "gAAAA-sealed"
        audit = store.list_audit_events(AuditFilter(resource_group="g"), PageRequest(10))
        assert [(e.principal, e.resource_id) for e in audit.items] == [("ada", "e4")]
        assert store.page_token_key("c" * 64) == "a" * 64  # page tokens stay valid
        assert store.get_execution("g", "e3").rerun_of == "e0"
        # Its retry still answers with the execution the SQLite server created.
        again, created = store.create_execution(
            Execution("e9", "g", "c1", "iris-train", "iris"), "req-e4"
        )
        assert (again.id, created) == ("e4", False)
        # New rows get keys after the copied ones (no clash with a copied row's id).
        store.create_execution(Execution("e5", "g", "c1", "iris-train", "iris"))
        store.transition("e5", Status.RUNNING, "step_started")
        store.create_artifact(
            Artifact("a9", "g", "model", ArtifactKind.MODEL, "file:///m", "iris")
        )
        listed = store.list_executions("g", PageRequest(10))
        assert listed.items[0].id == "e5"
        # A new series is numbered after the copied ones.
        metrics = MetricStore(store)
        metrics.write("g", [ExecutionMetricsIn("e5", points=[("recall", 0.5, 1, 7, None)])], 9)
        assert [(p.name, p.value) for p in metrics.latest_points("e5", [], None, 10)] == [
            ("recall", 0.5)
        ]
        assert [p.value for p in metrics.series_points("e0", ["loss"], None, 10)] == [0.5, 0.25]
        assert {e.id for e in listed.items} >= {"e0", "e1", "e3", "e4", "e5"}
    finally:
        store.close()


def test_postgresql_copies_back_to_sqlite_as_it_was(tmp_path, postgres_url):
    source = _source(tmp_path)
    assert copy_database(source, postgres_url).returncode == 0
    back = f"sqlite:///{tmp_path / 'back' / 'trainyard.db'}"
    done = copy_database(postgres_url, back)
    assert done.returncode == 0, done.stderr
    assert _tables(back) == _tables(source)


def test_a_target_with_rows_is_refused_and_left_as_it_was(tmp_path, postgres_url):
    source = _source(tmp_path)
    assert copy_database(source, postgres_url).returncode == 0
    before = _tables(postgres_url)
    again = copy_database(source, postgres_url)
    assert again.returncode == 2
    assert "already holds rows" in again.stderr and "execution" in again.stderr
    assert "Traceback" not in again.stderr
    assert _tables(postgres_url) == before


def test_a_copy_that_fails_half_way_leaves_the_target_empty(tmp_path, postgres_url):
    """PostgreSQL's text cannot hold NUL: a status message with one, copied late (after
    the catalog, before the logs), fails the copy; nothing of it stays."""
    source = _source(tmp_path)
    db, _ = open_database(source)
    try:
        db.execute_sql(
            "UPDATE execution SET status_message = ? WHERE execution_id = 'e0'", ("a \x00",)
        )
    finally:
        db.close()
    failed = copy_database(source, postgres_url)
    assert failed.returncode == 1
    assert failed.stderr.splitlines()[-1] == (
        "trainyard-server copy-database: not copied: table execution: PostgreSQL text"
        " fields cannot contain NUL (0x00) bytes; the target is left as it was"
    )
    assert "Traceback" not in failed.stderr
    assert all(rows == [] for rows in _tables(postgres_url).values())


def test_a_database_that_cannot_be_opened_is_said_in_one_line(tmp_path):
    source = _source(tmp_path)
    done = copy_database(source, "postgresql://trainyard:pw-9d1c@127.0.0.1:1/none")
    assert done.returncode == 1
    [line] = done.stderr.splitlines()
    assert line.startswith(
        "trainyard-server copy-database: not copied: cannot open the target database: "
    )
    assert "pw-9d1c" not in line  # the URL's password is not repeated
    unknown = copy_database(source, "mysql://x@127.0.0.1/db")
    assert unknown.returncode == 2 and "unsupported database URL scheme" in unknown.stderr


def test_one_database_given_twice_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path / 'trainyard.db'}"
    done = copy_database(url, url)
    assert done.returncode == 2 and "same database" in done.stderr


def test_the_copy_reads_one_snapshot_of_a_postgresql_source(postgres_url, tmp_path):
    """A row committed on the source while the copy runs is not copied: the copy reads
    one snapshot (a repeatable-read transaction), taken before its first table."""
    source = _source(tmp_path)
    assert copy_database(source, postgres_url).returncode == 0
    db, _ = open_database(postgres_url)
    written: list[str] = []

    def write_meanwhile(table: str, rows: int) -> None:
        if not written:  # after the first batch: a history entry, committed
            with db.atomic():
                db.execute_sql(
                    "INSERT INTO transition (execution_id, seq, from_status, to_status,"
                    " at_us, cause, message) VALUES ('e0', 99, NULL, 'RUNNING', 1, 'x', '')"
                )
            written.append(table)

    try:
        report = copying.copy_database(
            postgres_url, f"sqlite:///{tmp_path / 'snapshot.db'}", progress=write_meanwhile
        )
    finally:
        db.close()
    assert written == ["scenario"]
    assert report.rows["transition"] == len(_tables(source)["transition"])
    assert len(_tables(postgres_url)["transition"]) == report.rows["transition"] + 1
