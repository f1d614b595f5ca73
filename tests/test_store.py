"""The repository on its own, on an in-memory and on a file database."""

from __future__ import annotations

import pytest

from server.domain import templates
from server.domain.errors import AlreadyExists, FailedPrecondition, NotFound
from server.domain.models import Artifact, ArtifactKind, Configuration, Execution, Status
from server.domain.paging import PageRequest
from server.store import db as store_db
from server.store.repository import Store
from tests.conftest import SAMPLES


@pytest.fixture(params=["memory", "file"])
def store(request, tmp_path):
    url = "sqlite:///:memory:" if request.param == "memory" else f"sqlite:///{tmp_path / 'x.db'}"
    s = Store(url)
    yield s
    s.close()


def seed(store: Store, n: int = 3) -> list[str]:
    exe = templates.parse_template_text((SAMPLES / "iris-train.yaml").read_text(), "g")[0]
    store.put_executable(exe)
    store.create_artifact(
        Artifact("a1", "g", "iris", ArtifactKind.DATASET, "file:///iris.csv", "iris")
    )
    store.create_configuration(
        Configuration("c1", "g", "cfg", "iris-train", "iris", "1.0.0", {}, {"iris-data": "a1"})
    )
    ids = []
    for i in range(n):
        execution = Execution(f"e{i}", "g", "c1", "iris-train", "iris")
        ids.append(store.create_execution(execution)[0].id)
    return ids


def test_schema_version_is_recorded(store):
    assert store_db.migrate(store.db) == store_db.SCHEMA_VERSION
    assert store.integrity_check() == "ok"


def test_executable_versions(store):
    exe = templates.parse_template_text((SAMPLES / "iris-train.yaml").read_text(), "g")[0]
    stored, created = store.put_executable(exe)
    assert created and stored.parameters[0].name == "learning_rate"
    assert store.put_executable(exe)[1] is False
    exe.digest = "different"
    with pytest.raises(AlreadyExists):
        store.put_executable(exe)
    assert store.get_scenario("g", "iris").name
    with pytest.raises(NotFound):
        store.get_executable("other-group", "iris-train")


def test_transitions_keep_history_and_counts(store):
    ids = seed(store)
    store.transition(ids[0], Status.RUNNING, "step_started")
    store.transition(ids[0], Status.COMPLETED, "steps_succeeded")
    with pytest.raises(FailedPrecondition):
        store.transition(ids[0], Status.RUNNING, "again")
    with pytest.raises(FailedPrecondition):
        store.transition(ids[1], Status.COMPLETED, "skipped running", expected=[Status.RUNNING])
    execution = store.get_execution("g", ids[0])
    assert [t.to_status for t in execution.history] == [
        Status.PENDING,
        Status.RUNNING,
        Status.COMPLETED,
    ]
    assert execution.started_at and execution.completed_at
    page = store.list_executions("g", PageRequest(10), statuses=[Status.PENDING])
    assert page.total_size == 2 and {e.id for e in page.items} == {ids[1], ids[2]}
    assert store.list_executions("g", PageRequest(10)).total_size == 3


def test_delete_removes_history_logs_and_count(store):
    ids = seed(store, 2)
    store.append_logs([(ids[0], 1, 1, "s", 1, "hello"), (ids[0], 2, 2, "s", 2, "world")])
    with pytest.raises(FailedPrecondition):
        store.delete_execution("g", ids[0])
    store.force_status(ids[0], Status.DEAD)
    store.delete_execution("g", ids[0])
    assert store.read_logs(ids[0]) == []
    assert store.history(ids[0]) == []
    assert store.list_executions("g", PageRequest(10)).total_size == 1
    assert store.get_artifact("g", "a1").name == "iris"  # artifacts stay


def test_log_reads(store):
    ids = seed(store, 1)
    lines = [
        (ids[0], i, 1000 + i, "a" if i % 2 else "b", 1 + i % 3, f"line {i}") for i in range(1, 101)
    ]
    store.append_logs(lines)
    assert store.last_log_seq(ids[0]) == 100
    assert [x.seq for x in store.read_logs(ids[0], after_seq=95)] == [96, 97, 98, 99, 100]
    assert [x.seq for x in store.read_logs(ids[0], limit=3, descending=True)] == [100, 99, 98]
    assert all(x.step == "a" for x in store.read_logs(ids[0], steps=["a"]))
    assert store.first_log_seq_at(ids[0], 1050) == 49
