"""The schema: models bound per database, frozen numbered migrations, upgrades from the
databases earlier releases wrote."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from pathlib import Path

import peewee as pw
import pytest

from server.domain import templates
from server.domain.errors import NotFound
from server.domain.metrics import ExecutionMetricsIn
from server.domain.models import (
    Artifact,
    ArtifactKind,
    Execution,
    Secret,
    Status,
)
from server.domain.paging import PageRequest
from server.store import migrations, tables
from server.store.db import SQLITE_PRAGMAS
from server.store.metrics import MetricStore
from server.store.migrations import KNOWN_VERSIONS, SCHEMA_VERSION, SchemaTooNew, migrate
from server.store.repository import Store
from tests.conftest import SAMPLES

# A database that the release before frozen migrations wrote (schema version 2), with
# rows in every table.
RELEASE_V2 = Path(__file__).parent / "data" / "schema_v2_release.sql"
# The tables each version added, in the order of the versions.
TABLES_OF_VERSION = {
    1: {
        "scenario",
        "executable",
        "artifact",
        "configuration",
        "execution",
        "execution_count",
        "transition",
        "log_line",
        "idempotency_key",
    },
    2: {"metric_owner", "metric_series", "metric_point", "metric_tag", "metric_custom_info"},
    3: set(),  # the lease columns of execution
    4: {"log_purge"},
    5: {"secret"},
    6: {"audit_event"},
    7: set(),  # the rerun_of column of execution
    8: {"page_token_key"},
    9: set(),  # the index of idempotency_key on created_us
    10: {"execution_event_counter", "execution_event"},
}

_SCHEMA_SQL = "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name"


def _sqlite(path: Path) -> pw.SqliteDatabase:
    return pw.SqliteDatabase(str(path), pragmas=SQLITE_PRAGMAS)


def _columns(con: sqlite3.Connection, table: str, schema: str = "main") -> list[str]:
    return [r[1] for r in con.execute(f'PRAGMA {schema}.table_info("{table}")')]


def _rows(
    con: sqlite3.Connection, table: str, schema: str = "main", columns: list[str] | None = None
) -> list[tuple]:
    """The rows of ``table`` (only ``columns``, by default all), in a stable order."""
    columns = columns or _columns(con, table, schema)
    listed = ", ".join(f'"{c}"' for c in columns)
    return con.execute(f'SELECT {listed} FROM {schema}."{table}" ORDER BY {listed}').fetchall()


def _load_release(path: Path) -> None:
    con = sqlite3.connect(path)
    con.executescript(RELEASE_V2.read_text())
    con.close()


def _versions(path: Path) -> list[tuple[int, int]]:
    con = sqlite3.connect(path)
    try:
        return con.execute("SELECT version, applied_us FROM schema_version ORDER BY 1").fetchall()
    finally:
        con.close()


def _seed(store: Store, artifact_id: str) -> None:
    exe = templates.parse_template_text((SAMPLES / "iris-train.yaml").read_text(), "g")[0]
    store.put_executable(exe)
    store.create_artifact(
        Artifact(artifact_id, "g", "iris", ArtifactKind.DATASET, "file:///iris.csv", "iris")
    )


# ------------------------------------------------------------------------- binding


def test_two_stores_in_one_process_write_their_own_files(tmp_path):
    a = Store(f"sqlite:///{tmp_path / 'a.db'}")
    b = Store(f"sqlite:///{tmp_path / 'b.db'}")
    try:
        _seed(a, "only-in-a")
        _seed(b, "only-in-b")
        a.create_artifact(
            Artifact("also-in-a", "g", "x", ArtifactKind.DATASET, "file:///x.csv", "iris")
        )
        assert a.get_artifact("g", "only-in-a").id == "only-in-a"
        with pytest.raises(NotFound):
            a.get_artifact("g", "only-in-b")
        with pytest.raises(NotFound):
            b.get_artifact("g", "also-in-a")
    finally:
        a.close()
        b.close()
    for name, expected in (("a.db", {"only-in-a", "also-in-a"}), ("b.db", {"only-in-b"})):
        con = sqlite3.connect(tmp_path / name)
        assert {r[0] for r in con.execute("SELECT artifact_id FROM artifact")} == expected
        assert con.execute("SELECT COUNT(*) FROM executable").fetchone()[0] == 1
        assert con.execute("SELECT COUNT(*) FROM scenario").fetchone()[0] == 1
        con.close()
    # The declared models stay unbound: nothing binds them process-wide.
    assert all(model._meta.database is None for model in tables.MODELS)


def test_bound_models_mirror_their_declarations():
    db = pw.SqliteDatabase(":memory:")
    bound = tables.bind(db)
    again = tables.bind(db)
    assert len(bound.models) == len(tables.MODELS)
    for declared, model in zip(tables.MODELS, bound.models, strict=True):
        assert getattr(bound, declared.__name__) is model
        assert issubclass(model, declared) and model is not getattr(again, declared.__name__)
        assert model._meta.database is db
        for option in ("table_name", "without_rowid", "indexes", "composite_key"):
            assert getattr(model._meta, option) == getattr(declared._meta, option), option
        assert [(f.name, f.column_name, type(f), f.null) for f in model._meta.sorted_fields] == [
            (f.name, f.column_name, type(f), f.null) for f in declared._meta.sorted_fields
        ]
        assert model._meta.get_primary_keys()[0].name == declared._meta.get_primary_keys()[0].name


# ---------------------------------------------------------- the models and the DDL


def _family(type_name: str) -> str:
    name = type_name.upper()
    if name in ("INTEGER", "BIGINT", "SMALLINT", "INT"):
        return "integer"
    if name in ("REAL", "DOUBLE PRECISION", "FLOAT", "DOUBLE"):
        return "real"
    if name == "TEXT":
        return "text"
    if name in ("BOOLEAN", "BOOL"):
        return "boolean"
    raise AssertionError(f"unexpected column type {type_name}")


def _field_family(field: pw.Field, backend: str) -> str:
    kind = field.field_type
    if kind in ("AUTO", "BIGAUTO", "INT", "BIGINT", "SMALLINT"):
        return "integer"
    if kind in ("FLOAT", "DOUBLE"):
        return "real"
    if kind == "TEXT":
        return "text"
    if kind == "BOOL":
        return "integer" if backend == "sqlite" else "boolean"
    raise AssertionError(f"no column type family for {field}")


def assert_models_match_schema(db: pw.Database, backend: str) -> None:
    """Every model's table, columns (type family, NULL or not), primary key and indexes
    are in the schema of ``db``, and every table there has a model."""
    bound = tables.bind(db)
    assert set(db.get_tables()) == {m._meta.table_name for m in bound.models}
    for model in bound.models:
        table = model._meta.table_name
        columns = {c.name: c for c in db.get_columns(table)}
        fields = {f.column_name: f for f in model._meta.sorted_fields}
        assert set(columns) == set(fields), table
        for name, field in fields.items():
            column = columns[name]
            assert _family(column.data_type) == _field_family(field, backend), (table, name)
            assert column.null == field.null, (table, name)
        keys = [f.column_name for f in model._meta.get_primary_keys()]
        assert db.get_primary_keys(table) == keys, table
        indexes = {(tuple(i.columns), i.unique) for i in db.get_indexes(table)}
        wanted = {(tuple(names), unique) for names, unique in model._meta.indexes}
        wanted |= {((f.column_name,), True) for f in fields.values() if f.unique}
        wanted |= {((f.column_name,), False) for f in fields.values() if f.index}
        assert wanted <= indexes, table


def test_models_match_the_migrated_schema():
    db = pw.SqliteDatabase(":memory:")
    migrate(db, "sqlite")
    assert_models_match_schema(db, "sqlite")


def test_migrations_are_numbered_in_order_for_both_backends():
    versions = [m.version for m in migrations.MIGRATIONS]
    assert versions == sorted(set(versions)) and versions[-1] == SCHEMA_VERSION
    assert set(TABLES_OF_VERSION) == set(KNOWN_VERSIONS)
    for m in migrations.MIGRATIONS:
        assert m.sqlite and len(m.postgresql) == len(m.sqlite), m.name
        assert not any("WITHOUT ROWID" in s for s in m.postgresql), m.name
        assert m.statements("postgresql") == m.postgresql and m.statements("sqlite") == m.sqlite


# SHA-256 of each version's statements (joined by newlines), per backend. A version's
# DDL is frozen once a release has built databases with it: a mismatch here means a
# released migration was edited, which databases already at that version never see.
# Write a new version instead.
FROZEN_DIGESTS = {
    (1, "sqlite"): "50689c5538cacd5b57cfb180620b1a8f79fa2b419b268d356523ee104291b010",
    (1, "postgresql"): "08b76f1a7f1bd436d5931081c3d3e296d34ad4d2d6bd01c6581235871f590ba3",
    (2, "sqlite"): "178971ccf6f3255316d6afff3612175db527f7d036b98b5834051d2c9a06bcdc",
    (2, "postgresql"): "6b0afbb7bb077886a153871fe429db0f2acb1ab47fb3a5770ecdc027f8887c49",
    (3, "sqlite"): "ced23bba6c9a63da728ad410b26f0521b6dcaf1c6b70ff3b0c8d721fdec060c6",
    (3, "postgresql"): "121e9266fc74d341bd7c716c9e14fb2f59d75b775f81027b051f6d27c3a62670",
    (4, "sqlite"): "a83a1439885caaa369a484c13b099a6ca03ca2a5b57d6c86be294d1ba0aaa7ab",
    (4, "postgresql"): "e95ff62f9c2db4e349f8939b12fd696ad6d625103d4f25eea84e90bcb03695f9",
    (5, "sqlite"): "2ce1aef4da51f51ba0b245c437f1d1c8c47e22ee69f838f28f89ef7ca91a3a79",
    (5, "postgresql"): "a6782e24111957856059478055538756f2b114980b6266fe4f4579fc40415e5b",
}


def test_released_migrations_are_unchanged():
    for (version, backend), digest in FROZEN_DIGESTS.items():
        [migration] = [m for m in migrations.MIGRATIONS if m.version == version]
        statements = migration.statements(backend)
        assert hashlib.sha256("\n".join(statements).encode()).hexdigest() == digest, (
            version,
            backend,
        )


def test_frozen_ddl_builds_the_schema_the_release_wrote(tmp_path):
    """Databases created before migrations were frozen are recognised as versions 1-2:
    the frozen DDL builds exactly the schema that release's models created."""
    _load_release(tmp_path / "release.db")
    db = _sqlite(tmp_path / "fresh.db")
    migrate(db, "sqlite", target=2)
    release = sqlite3.connect(tmp_path / "release.db")
    assert db.execute_sql(_SCHEMA_SQL).fetchall() == release.execute(_SCHEMA_SQL).fetchall()
    release.close()
    db.close()


# -------------------------------------------------------------------- the migrator


def test_migrate_twice_changes_nothing(tmp_path):
    db = _sqlite(tmp_path / "x.db")
    assert migrate(db, "sqlite") == SCHEMA_VERSION
    schema = db.execute_sql(_SCHEMA_SQL).fetchall()
    versions = _versions(tmp_path / "x.db")
    assert [v for v, _ in versions] == list(KNOWN_VERSIONS)
    assert migrate(db, "sqlite") == SCHEMA_VERSION
    assert migrate(db) == SCHEMA_VERSION  # the backend from the database's class
    assert db.execute_sql(_SCHEMA_SQL).fetchall() == schema
    assert _versions(tmp_path / "x.db") == versions
    db.close()


def test_database_newer_than_the_server_is_refused(tmp_path):
    path = tmp_path / "newer.db"
    db = _sqlite(path)
    migrate(db, "sqlite")
    db.execute_sql(
        "INSERT INTO schema_version (version, applied_us) VALUES (?, 0)", (SCHEMA_VERSION + 1,)
    )
    with pytest.raises(SchemaTooNew) as refused:
        migrate(db, "sqlite")
    assert refused.value.found == SCHEMA_VERSION + 1 and refused.value.known == SCHEMA_VERSION
    assert f"schema version {SCHEMA_VERSION + 1} is newer" in str(refused.value)
    db.close()
    with pytest.raises(SchemaTooNew):
        Store(f"sqlite:///{path}")


def test_failed_migration_leaves_the_version_before(tmp_path, monkeypatch):
    broken = migrations.Migration(
        2,
        "broken",
        ('CREATE TABLE "half_done" ("x" INTEGER)', "CREATE TABLE broken ("),
        ('CREATE TABLE "half_done" ("x" INTEGER)', "CREATE TABLE broken ("),
    )
    monkeypatch.setattr(migrations, "MIGRATIONS", (migrations.MIGRATIONS[0], broken))
    db = _sqlite(tmp_path / "x.db")
    with pytest.raises(pw.OperationalError):
        migrate(db, "sqlite", target=2)
    assert [v for v, _ in _versions(tmp_path / "x.db")] == [1]
    assert "half_done" not in db.get_tables() and "scenario" in db.get_tables()
    db.close()


def test_concurrent_starters_apply_each_version_once(tmp_path):
    path = tmp_path / "x.db"
    starters = 4
    barrier = threading.Barrier(starters)
    results: list[int] = []
    errors: list[BaseException] = []
    # The file exists in WAL mode before the starters race (as the server's first
    # connection makes it): switching a journal mode takes the file for itself, which
    # no busy timeout waits for, and is not what this test is about.
    first = _sqlite(path)
    first.connect()
    first.close()

    def start() -> None:
        db = _sqlite(path)
        try:
            barrier.wait(timeout=30)
            results.append(migrate(db, "sqlite"))
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            db.close()

    threads = [threading.Thread(target=start) for _ in range(starters)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors and results == [SCHEMA_VERSION] * starters
    assert [v for v, _ in _versions(path)] == list(KNOWN_VERSIONS)


def test_unknown_backend_and_version_are_refused():
    db = pw.SqliteDatabase(":memory:")
    with pytest.raises(ValueError):
        migrate(db, "oracle")
    with pytest.raises(ValueError):
        migrate(db, "sqlite", target=SCHEMA_VERSION + 1)


# ------------------------------------------------------------------------ upgrades


def _assert_release_data_found(store: Store, with_metrics: bool) -> None:
    """What the release fixture holds, read back through the store's own calls."""
    assert store.get_scenario("g", "iris").name == "Iris classification"
    exe = store.get_executable("g", "iris-train")
    assert exe.version == "1.0.0" and exe.parameters[0].name == "learning_rate"
    artifact = store.get_artifact("g", "a1")
    assert artifact.url == "file:///iris.csv" and artifact.labels == {"k": "v"}
    config = store.get_configuration("g", "c1")
    assert config.parameter_bindings == {"learning_rate": "0.1"}
    assert config.input_artifact_bindings == {"iris-data": "a1"}
    done = store.get_execution("g", "e0")
    assert done.status is Status.COMPLETED
    assert [t.to_status for t in done.history] == [
        Status.PENDING,
        Status.RUNNING,
        Status.COMPLETED,
    ]
    assert store.get_execution("g", "e1").status is Status.PENDING
    assert store.list_executions("g", PageRequest(10)).total_size == 2
    pending = store.list_executions("g", PageRequest(10), statuses=[Status.PENDING])
    assert pending.total_size == 1 and [e.id for e in pending.items] == ["e1"]
    assert [line.text for line in store.read_logs("e0")] == [
        "epoch 1",
        "warning: slow",
        "step train done",
    ]
    assert store.last_log_seq("e0") == 3
    # The idempotency key of the release's create call still answers its retry.
    retried = store.create_artifact(
        Artifact(
            "a1", "g", "iris", ArtifactKind.DATASET, "file:///iris.csv", "iris", labels={"k": "v"}
        ),
        "req-a1",
    )
    assert retried.id == "a1"
    metrics = MetricStore(store)
    if with_metrics:
        latest = metrics.latest_points("e0", [], None, 10)
        assert [(p.name, p.value) for p in latest] == [("accuracy", 0.9), ("loss", 0.25)]
        assert [p.value for p in metrics.series_points("e0", ["loss"], None, 10)] == [0.5, 0.25]
        assert metrics.tags(["e0"]) == {"e0": {"owner": "ada"}}
        assert [c.name for c in metrics.custom_info(["e0"])["e0"]] == ["notes"]
        assert metrics.summaries(["e0"])["e0"]["loss"][0] == 2
    else:
        assert metrics.latest_points("e0", [], None, 10) == []


def _assert_new_writes_work(store: Store) -> None:
    """Every version's tables take new rows after the upgrade."""
    store.create_execution(Execution("e2", "g", "c1", "iris-train", "iris"))
    store.transition("e2", Status.RUNNING, "step_started")
    store.append_logs([("e2", 1, 1, "train", 1, "hello")])
    MetricStore(store).write("g", [ExecutionMetricsIn("e2", points=[("loss", 1.0, 1, 5, None)])], 9)
    listed = store.list_executions("g", PageRequest(10))
    assert listed.total_size == 3 and listed.items[0].id == "e2"
    assert MetricStore(store).latest_points("e2", [], None, 10)[0].value == 1.0
    store.transition("e2", Status.COMPLETED, "step_finished")
    store.delete_execution("g", "e2")  # its line is queued for purging (version 4)
    assert store.read_logs("e2") == []
    assert store.purge_logs(10) == 1 and store.purge_logs(10) == 0
    # Version 5: a secret, its values sealed as the domain hands them over.
    store.create_secret(Secret("token", "g", keys=["value"], sealed="gAAAA-sealed"))
    assert store.get_secrets("g", ["token"])["token"].keys == ["value"]
    # Version 7: a re-run names the execution it re-runs, and is listed by it.
    store.create_execution(Execution("e3", "g", "c1", "iris-train", "iris", rerun_of="e0"))
    reruns = store.list_executions("g", PageRequest(10), rerun_of="e0")
    assert [e.id for e in reruns.items] == ["e3"] and reruns.total_size == 1
    assert store.get_execution("g", "e3").rerun_of == "e0"
    # Version 8: the page-token key, stored once.
    assert store.page_token_key("a" * 64) == "a" * 64
    assert store.page_token_key("b" * 64) == "a" * 64
    # Version 9: the retention purge of request ids finds the expired ones by index
    # (the release's three keys were recorded at ...884041, ...885524, ...886557).
    _assert_purge_uses_the_index(store)
    assert store.purge_idempotency_keys(1796186745885000) == 1
    assert store.purge_idempotency_keys(1796186745885000) == 0
    assert store.purge_idempotency_keys(1796186745886558) == 2
    assert store.integrity_check() == "ok"


def _assert_purge_uses_the_index(store: Store) -> None:
    plan = store.execute(
        "EXPLAIN QUERY PLAN DELETE FROM idempotency_key WHERE created_us < ?", (1,)
    ).fetchall()
    details = " ".join(str(row[-1]) for row in plan)
    assert "USING INDEX idempotency_key_created_us" in details, details


def test_idempotency_purge_reads_only_the_expired_keys(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        _assert_purge_uses_the_index(store)
    finally:
        store.close()


def test_release_database_opens_as_it_is(tmp_path):
    """A database file written by the release before frozen migrations: the server
    recognises its version (2), keeps its version rows, applies only the later
    versions and finds every row."""
    path = tmp_path / "release.db"
    _load_release(path)
    versions = _versions(path)
    store = Store(f"sqlite:///{path}")
    try:
        assert [v for v, _ in versions] == [1, 2]
        after = _versions(path)
        assert after[:2] == versions
        assert [v for v, _ in after] == list(KNOWN_VERSIONS)
        _assert_release_data_found(store, with_metrics=True)
        _assert_new_writes_work(store)
    finally:
        store.close()


@pytest.mark.parametrize("from_version", KNOWN_VERSIONS)
def test_upgrade_keeps_every_row(tmp_path, from_version):
    """A database at an earlier version, built with that version's frozen DDL, with the
    release's rows in every table it has: opened by this server, it is brought to
    SCHEMA_VERSION and every row is still there, readable, and the tables of the later
    versions take writes."""
    path = tmp_path / "old.db"
    old = _sqlite(path)
    assert migrate(old, "sqlite", target=from_version) == from_version
    old.close()
    _load_release(tmp_path / "release.db")
    present = set().union(*(TABLES_OF_VERSION[v] for v in KNOWN_VERSIONS if v <= from_version))
    con = sqlite3.connect(path)
    con.execute("ATTACH DATABASE ? AS release", (str(tmp_path / "release.db"),))
    released = {table: _columns(con, table, "release") for table in present}
    # Tables of versions after the release's (log_purge) have no rows of it to keep.
    released = {table: columns for table, columns in released.items() if columns}
    present = set(released)
    with con:
        for table in sorted(present):
            listed = ", ".join(f'"{c}"' for c in released[table])
            con.execute(
                f'INSERT INTO main."{table}" ({listed}) SELECT {listed} FROM release."{table}"'
            )
    expected = {table: _rows(con, table, "release") for table in present}
    con.close()

    store = Store(f"sqlite:///{path}")
    try:
        assert [v for v, _ in _versions(path)] == list(KNOWN_VERSIONS)
        con = sqlite3.connect(path)
        for table, rows in expected.items():
            assert rows and _rows(con, table, columns=released[table]) == rows, table
        con.close()
        _assert_release_data_found(store, with_metrics=from_version >= 2)
        _assert_new_writes_work(store)
    finally:
        store.close()


def test_a_missing_version_number_is_tolerated_and_filled_in_later(tmp_path, monkeypatch):
    """Versions are numbered per feature and may land out of order: with a number
    missing the known ones apply in order, and a version that becomes known later,
    below one already applied, is applied then (once)."""
    db = _sqlite(tmp_path / "gap.db")
    later = migrations.Migration(
        5,
        "later",
        ('CREATE TABLE "later_table" ("x" INTEGER)',),
        ('CREATE TABLE "later_table" ("x" INTEGER)',),
    )
    gap = (
        *migrations.MIGRATIONS[:4],
        migrations.Migration(
            6, "six", ('CREATE TABLE "six" ("x" INTEGER)',), ('CREATE TABLE "six" ("x" INTEGER)',)
        ),
    )
    monkeypatch.setattr(migrations, "MIGRATIONS", gap)
    monkeypatch.setattr(migrations, "SCHEMA_VERSION", 6)
    assert migrate(db, "sqlite", target=6) == 6
    assert [v for v, _ in _versions(tmp_path / "gap.db")] == [1, 2, 3, 4, 6]
    filled = (*gap[:4], later, gap[4])
    monkeypatch.setattr(migrations, "MIGRATIONS", filled)
    assert migrate(db, "sqlite", target=6) == 6
    assert [v for v, _ in _versions(tmp_path / "gap.db")] == [1, 2, 3, 4, 5, 6]
    assert "later_table" in db.get_tables() and "six" in db.get_tables()
    assert migrate(db, "sqlite", target=6) == 6
    db.close()
