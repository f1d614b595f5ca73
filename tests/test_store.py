"""The repository on its own: on an in-memory and a file SQLite database, and on
PostgreSQL."""

from __future__ import annotations

import threading
import time

import pytest

from server.domain import templates
from server.domain.audit import AuditEvent, AuditFilter
from server.domain.errors import AlreadyExists, FailedPrecondition, NotFound
from server.domain.models import (
    Artifact,
    ArtifactKind,
    Configuration,
    Execution,
    Lease,
    Status,
)
from server.domain.paging import PageRequest
from server.store import db as store_db
from server.store.catalog import IDEMPOTENCY_CHUNK
from server.store.repository import Store
from tests.conftest import SAMPLES


@pytest.fixture(params=["memory", "file", "postgresql"])
def store(request, tmp_path):
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres_url")
    elif request.param == "memory":
        url = "sqlite:///:memory:"
    else:
        url = f"sqlite:///{tmp_path / 'x.db'}"
    s = Store(url)
    yield s
    s.close()


@pytest.fixture(params=["file", "postgresql"])
def shared_store(request, tmp_path):
    """A store whose database other connections can open too."""
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres_url")
    else:
        url = f"sqlite:///{tmp_path / 'x.db'}"
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


def test_every_change_is_recorded_numbered_in_its_resource_group(store):
    ids = seed(store, 2)
    store.transition(ids[0], Status.RUNNING, "step_started")
    store.update_execution(ids[0], status_message="no event")  # not a watched change
    store.update_execution(ids[0], changed_step="train")
    store.transition(ids[0], Status.COMPLETED, "steps_succeeded")
    store.delete_execution("g", ids[0])
    store.create_execution(Execution("other", "h", "c1", "iris-train", "iris"))
    last, events, executions = store.read_events("g", 0, 100)
    assert last == 6 and store.last_event_number("g") == 6
    assert [(e.number, e.execution_id, e.kind, e.seq) for e in events] == [
        (1, ids[0], "created", 1),
        (2, ids[1], "created", 1),
        (3, ids[0], "transition", 2),
        (4, ids[0], "step", 0),
        (5, ids[0], "transition", 3),
        (6, ids[0], "deleted", 0),
    ]
    assert events[3].detail == "train"
    assert events[5].detail == "COMPLETED,iris,c1,iris-train"
    # The executions that still exist, with their history; none of another group.
    assert set(executions) == {ids[1]} and len(executions[ids[1]].history) == 1
    assert [e.number for e in store.read_events("g", 4, 1)[1]] == [5]
    assert store.read_events("h", 0, 10)[0] == 1  # each group counts from 1
    assert store.purge_events(2**62) == 7 and store.read_events("g", 0, 10)[:2] == (6, [])


def test_change_numbers_follow_the_commit_order_of_concurrent_writers(shared_store):
    """Writers on connections of their own (threads, as replicas are): a reader that
    reads the changes after the last number it saw always finds the next numbers,
    never a later one before an earlier one has committed (which would make a cursor
    skip it)."""
    ids = seed(shared_store, 8)
    errors: list[BaseException] = []
    done = threading.Event()
    gaps: list[tuple[int, list[int]]] = []

    def write(execution_id: str) -> None:
        try:
            for status in (Status.RUNNING, Status.COMPLETED):
                shared_store.transition(execution_id, status, "test")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def read() -> None:
        after = 0
        deadline = time.monotonic() + 60
        while after < 24 and time.monotonic() < deadline:
            _, events, _ = shared_store.read_events("g", after, 100)
            numbers = [e.number for e in events]
            if numbers != list(range(after + 1, after + 1 + len(numbers))):
                gaps.append((after, numbers))
                return
            after = numbers[-1] if numbers else after
        done.set()

    reader = threading.Thread(target=read)
    writers = [threading.Thread(target=write, args=(eid,)) for eid in ids]
    reader.start()
    for thread in writers:
        thread.start()
    for thread in [*writers, reader]:
        thread.join(60)
    assert not errors and not gaps and done.is_set()


def test_grouped_create_writes_each_and_refuses_alone(store):
    seed(store, 0)
    first = store.create_execution(Execution("e0", "g", "c1", "iris-train", "iris"), "r0")[0]
    results = store.create_executions(
        [
            (Execution("e1", "g", "c1", "iris-train", "iris"), ""),
            (Execution("e2", "g", "c1", "iris-train", "iris"), "r2"),
            (Execution("e3", "g", "c1", "iris-train", "iris"), "r2"),  # same request: e2
            (Execution("e4", "g", "c9", "iris-train", "iris"), "r2"),  # another request
            (Execution("e5", "g", "c1", "iris-train", "iris"), "r0"),  # stored earlier: e0
            (Execution("e6", "g", "c9", "iris-train", "iris"), "r0"),  # another request
        ]
    )
    created = [(r[0].id, r[1]) if isinstance(r, tuple) else r.reason for r in results]
    assert created == [
        ("e1", True),
        ("e2", True),
        ("e2", False),
        "REQUEST_ID_REUSED",
        (first.id, False),
        "REQUEST_ID_REUSED",
    ]
    assert results[1][0].history[0].to_status == Status.PENDING
    for eid in ("e1", "e2"):
        stored = store.get_execution("g", eid)
        assert stored.status == Status.PENDING and len(stored.history) == 1
    for eid in ("e3", "e4", "e5", "e6"):
        with pytest.raises(NotFound):
            store.get_execution("g", eid)
    assert store.list_executions("g", PageRequest(10)).total_size == 3
    again = store.create_execution(Execution("e7", "g", "c1", "iris-train", "iris"), "r2")
    assert again[0].id == "e2" and again[1] is False


def test_grouped_create_looks_up_only_the_request_ids_stored_before(store, monkeypatch):
    """More request ids than one statement records, in two resource groups, some stored
    before and some new: each stored one returns its first execution (looked up alone),
    each new one is created and recorded with no lookup."""
    seed(store, 0)
    n = IDEMPOTENCY_CHUNK + 40
    first = {}
    for group in ("g", "h"):
        for i in range(0, n, 3):  # every third request id is stored already
            execution = Execution(f"{group}-old{i}", group, "c1", "iris-train", "iris")
            first[(group, f"r{i}")] = store.create_execution(execution, f"r{i}")[0].id
    statements = []
    execute = store.execute

    def counting(sql, args=()):
        if "idempotency_key" in sql:
            statements.append(sql.split()[0])
        return execute(sql, args)

    monkeypatch.setattr(store, "execute", counting)
    items = [
        (Execution(f"{group}-new{i}", group, "c1", "iris-train", "iris"), f"r{i}")
        for group in ("g", "h")
        for i in range(n)
    ]
    items.append((Execution("g-again", "g", "c1", "iris-train", "iris"), "r1"))  # new, twice
    results = store.create_executions(items)
    assert statements.count("SELECT") == len(first)
    assert statements.count("INSERT") <= 2 + (2 * n).bit_length()
    for (execution, request_id), (stored, created) in zip(items[:-1], results, strict=False):
        key = (execution.resource_group, request_id)
        if key in first:
            assert (stored.id, created) == (first[key], False)
        else:
            assert (stored.id, created) == (execution.id, True)
            assert store.get_execution(execution.resource_group, execution.id).id == stored.id
    assert (results[-1][0].id, results[-1][1]) == ("g-new1", False)
    total = sum(store.list_executions(g, PageRequest(10)).total_size for g in ("g", "h"))
    assert total == 2 * n
    monkeypatch.undo()
    again = store.create_executions([(Execution("x", "h", "c1", "iris-train", "iris"), "r5")])
    assert (again[0][0].id, again[0][1]) == ("h-new5", False)


def test_grouped_create_keeps_every_character_of_what_it_writes(store):
    """The rows of a group of creates (executions, history entries, change events,
    audit events: COPY on PostgreSQL) read back exactly as written, awkward text and
    NULLs included."""
    awkward = "|".join(AWKWARD_TEXTS[:-1])  # the log tests' texts (below), in one
    seed(store, 0)
    items = []
    for i in range(3):
        execution = Execution(f"w{i}", "g", "c1", "iris-train", "iris")
        execution.created_by = f"{awkward} {i}"
        items.append((execution, f"{awkward} r{i}"))
    audit = [
        AuditEvent(f"{awkward} {i}", "create", "execution", f"w{i}", "g", detail=awkward)
        for i in range(3)
    ]
    results = store.create_executions(items, audit)
    assert [created for _, created in results] == [True] * 3
    for i in range(3):
        stored = store.get_execution("g", f"w{i}")
        assert stored.created_by == f"{awkward} {i}"
        assert stored.rerun_of == ""
        assert [(t.seq, t.from_status, t.to_status) for t in stored.history] == [
            (1, None, Status.PENDING)
        ]
    # The same request id again returns the execution it created.
    again = store.create_execution(Execution("w9", "g", "c1", "iris-train", "iris"),
                                   f"{awkward} r1")
    assert (again[0].id, again[1]) == ("w1", False)
    events = store.list_audit_events(AuditFilter(resource_group="g"), PageRequest(10)).items
    assert sorted((e.principal, e.resource_id, e.detail) for e in events) == [
        (f"{awkward} {i}", f"w{i}", awkward) for i in range(3)
    ]
    _, changes, _ = store.read_events("g", 0, 100)
    assert [(c.execution_id, c.kind) for c in changes][-3:] == [
        (f"w{i}", "created") for i in range(3)
    ]


def test_grouped_create_rolls_back_as_a_whole_on_a_store_error(store):
    ids = seed(store, 1)
    with pytest.raises(Exception, match="(?i)unique"):
        store.create_executions(
            [
                (Execution("e9", "g", "c1", "iris-train", "iris"), "r9"),
                (Execution(ids[0], "g", "c1", "iris-train", "iris"), ""),  # id taken
            ]
        )
    with pytest.raises(NotFound):
        store.get_execution("g", "e9")
    assert store.list_executions("g", PageRequest(10)).total_size == 1
    assert store.create_execution(Execution("e9", "g", "c1", "iris-train", "iris"), "r9")[1]


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
    # The lines are queued for the purger, then gone.
    assert store.purge_logs(100) == 2 and store.purge_logs(100) == 0
    assert _stored_lines(store) == {}


def _stored_lines(store: Store) -> dict[str, int]:
    """Log lines in the table (hidden or not), per execution, and the queue."""
    rows = store.execute(
        "SELECT execution_id, COUNT(*) FROM log_line GROUP BY execution_id"
    ).fetchall()
    found = {eid: n for eid, n in rows}
    for (eid,) in store.execute("SELECT execution_id FROM log_purge").fetchall():
        found[f"queued:{eid}"] = 1
    return found


def test_deleted_lines_are_hidden_at_once_and_purged_in_chunks(store):
    ids = seed(store, 3)
    for eid, count in zip(ids, (25, 0, 7), strict=True):
        store.append_logs([(eid, i, 1000 + i, "s", 1, f"{eid} {i}") for i in range(1, count + 1)])
        store.force_status(eid, Status.COMPLETED)
    store.append_logs([("kept", i, 1000 + i, "s", 1, "x") for i in range(1, 4)])
    assert store.purge_logs(10) == 0  # nothing queued
    for eid in ids:
        store.delete_execution("g", eid)
    assert _stored_lines(store) == {
        ids[0]: 25, ids[2]: 7, "kept": 3, **{f"queued:{e}": 1 for e in ids}
    }
    # Every read of a deleted execution's lines finds none, while they are stored.
    for eid in (ids[0], ids[2]):
        assert store.read_logs(eid) == [] and store.read_log_rows(eid, descending=True) == []
        assert store.last_log_seq(eid) == 0 and store.first_log_seq_at(eid, 0) == 0
        assert store.read_log_rows_to_end(eid, after_seq=0, limit=10) == (0, [])
    # Up to a chunk per call, the oldest queued execution first, by key range; an
    # execution without lines leaves the queue on the way.
    assert [store.purge_logs(10) for _ in range(5)] == [10, 10, 5, 7, 0]
    assert _stored_lines(store) == {"kept": 3}
    assert len(store.read_logs("kept")) == 3


def test_two_replicas_purging_at_once_delete_every_line_once(shared_store):
    store = shared_store
    ids = seed(store, 6)
    for eid in ids:
        store.append_logs([(eid, i, i, "s", 1, f"{eid} {i}") for i in range(1, 3001)])
        store.force_status(eid, Status.COMPLETED)
        store.delete_execution("g", eid)
    deleted: list[int] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def purge(replica: Store) -> None:
        try:
            barrier.wait(timeout=30)
            while n := replica.purge_logs(500):
                deleted.append(n)
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            replica.close()

    replicas = [Store(store.url), Store(store.url)]
    threads = [threading.Thread(target=purge, args=(r,)) for r in replicas]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors and sum(deleted) == 6 * 3000
    assert _stored_lines(store) == {}


def test_purge_of_an_execution_another_purge_emptied_deletes_nothing_twice(store):
    ids = seed(store, 1)
    store.append_logs([(ids[0], i, i, "s", 1, "x") for i in range(1, 21)])
    store.force_status(ids[0], Status.COMPLETED)
    store.delete_execution("g", ids[0])
    # Another replica deleted the lower lines meanwhile: this one deletes the rest.
    store.execute("DELETE FROM log_line WHERE seq <= 15")
    assert store.purge_logs(10) == 5 and store.purge_logs(10) == 0
    assert _stored_lines(store) == {}


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


# ------------------------------------------------------------------ claims and leases


def test_pending_executions_are_claimed_once_in_creation_order(store):
    ids = seed(store, 5)
    first = store.claim_pending("a", 2, lease_until_us=10**18)
    second = store.claim_pending("b", 10, lease_until_us=10**18)
    assert [e.id for e, _ in first] == ids[:2]
    assert [e.id for e, _ in second] == ids[2:]
    assert store.claim_pending("c", 10, lease_until_us=10**18) == []
    assert {lease.owner for _, lease in first} == {"a"}
    assert store.get_execution("g", ids[0]).owner == "a"
    assert store.queue_position(ids[0]) is None


def taken_over_by_b(store: Store) -> tuple[list[str], Lease, tuple]:
    """One execution replica a runs, then stops renewing: b finds its lease lapsed and
    takes it over. (ids, a's lease, b's claim: execution, lease, previous, released)"""
    ids = seed(store, 1)
    [(_, lease_a)] = store.claim_pending("a", 1, lease_until_us=1_000)
    store.transition(ids[0], Status.RUNNING, "step_started", lease=lease_a)
    [claim] = store.claim_for_recovery(
        "b", now_us=2_000, lease_until_us=10**18, include_own=False
    )
    return ids, lease_a, claim


def test_a_write_under_a_lease_another_replica_took_over_is_refused(store):
    ids, lease_a, (taken, lease_b, previous, released) = taken_over_by_b(store)
    assert (taken.id, previous, lease_b.token) == (ids[0], "a", lease_a.token + 1)
    assert not released
    with pytest.raises(FailedPrecondition) as late:
        store.update_execution(ids[0], status_message="a is still here", lease=lease_a)
    assert late.value.reason == "LEASE_LOST"
    with pytest.raises(FailedPrecondition) as late:
        store.transition(ids[0], Status.COMPLETED, "steps_succeeded", lease=lease_a)
    assert late.value.reason == "LEASE_LOST"
    assert store.renew_leases("a", 10**18, [ids[0]]) == {}
    store.transition(ids[0], Status.DEAD, "replica_lost", lease=lease_b)
    execution = store.get_execution("g", ids[0])
    assert execution.status == Status.DEAD and execution.status_message == ""
    assert [t.cause for t in execution.history] == ["created", "step_started", "replica_lost"]


def test_a_take_over_that_goes_on_is_a_history_entry_that_keeps_the_status(store):
    ids, lease_a, (_, lease_b, _, _) = taken_over_by_b(store)
    with pytest.raises(FailedPrecondition) as late:
        store.record_unchanged(ids[0], "replica_lost", "x", expected=[Status.RUNNING],
                               lease=lease_a)
    assert late.value.reason == "LEASE_LOST"
    with pytest.raises(FailedPrecondition) as wrong:
        store.record_unchanged(ids[0], "replica_lost", "x", expected=[Status.STOPPING],
                               lease=lease_b)
    assert wrong.value.reason == "INVALID_TRANSITION"
    before = store.last_event_number("g")
    taken = store.record_unchanged(
        ids[0], "replica_lost", "replica a was lost; b goes on", expected=[Status.RUNNING],
        lease=lease_b,
    )
    assert taken.status == Status.RUNNING and taken.owner == "b"
    last = taken.history[-1]
    assert (last.seq, last.from_status, last.to_status, last.cause, last.message) == (
        3, Status.RUNNING, Status.RUNNING, "replica_lost", "replica a was lost; b goes on"
    )
    _, events, _ = store.read_events("g", before, 10)
    assert [(e.kind, e.seq) for e in events] == [("transition", 3)]
    # The status counts did not move, and the lifecycle goes on from where it was.
    running = store.list_executions("g", PageRequest(10), statuses=[Status.RUNNING])
    assert running.total_size == 1
    store.transition(ids[0], Status.COMPLETED, "steps_succeeded", lease=lease_b)
    assert [t.cause for t in store.get_execution("g", ids[0]).history] == [
        "created", "step_started", "replica_lost", "steps_succeeded"
    ]


def test_a_live_lease_is_not_taken_over_and_a_restart_reclaims_its_own(store):
    ids = seed(store, 3)
    store.claim_pending("a", 3, lease_until_us=5_000)
    assert store.claim_for_recovery("b", now_us=4_000, lease_until_us=10**18) == []
    store.transition(ids[2], Status.RUNNING, "step_started")
    store.transition(ids[2], Status.COMPLETED, "steps_succeeded")
    # Renewal: the ended execution is still a's (not taken over), with its token.
    assert store.renew_leases("a", 9_000, ids) == {ids[0]: 1, ids[1]: 1, ids[2]: 1}
    # A restart of replica a reconciles its own executions, whatever their leases.
    mine = store.claim_for_recovery("a", now_us=4_000, lease_until_us=10**18)
    assert [(e.id, previous) for e, _, previous, _ in mine] == [(ids[0], "a"), (ids[1], "a")]
    assert store.release_claim(ids[0], mine[0][1])
    assert store.queue_position(ids[0]) == 0
    assert [e.id for e, _ in store.claim_pending("b", 5, 10**18)] == [ids[0]]


def test_leases_released_at_a_shutdown_are_taken_over_before_they_run_out(store):
    ids = seed(store, 3)
    [(_, lease_a), _] = store.claim_pending("a", 2, lease_until_us=10**17)
    store.transition(ids[0], Status.RUNNING, "step_started", lease=lease_a)
    store.claim_pending("c", 1, lease_until_us=10**17)
    assert store.claim_for_recovery("b", 1_000, 10**18, include_own=False) == []
    # Replica a shuts down: its two leases end; c's stays.
    assert store.release_leases("a") == 2
    taken = store.claim_for_recovery("b", 1_000, 10**18, include_own=False)
    assert [(e.id, e.owner, previous, released) for e, _, previous, released in taken] == [
        (ids[0], "b", "a", True), (ids[1], "b", "a", True)
    ]
    assert store.release_leases("a") == 0  # none left to a
    # A restart of a, instead, would have reclaimed them as its own.
    store.release_leases("b")
    again = store.claim_for_recovery("b", 1_000, 10**18)
    assert [(previous, released) for _, _, previous, released in again] == [
        ("b", True), ("b", True)
    ]


def test_concurrent_claimers_each_take_different_executions(shared_store):
    store = shared_store
    order = seed(store, 60)
    ids = set(order)
    stores = [Store(store.url) for _ in range(4)]
    claimed: list[list[str]] = [[] for _ in stores]
    errors: list[BaseException] = []

    def claim(i: int) -> None:
        try:
            while True:
                got = stores[i].claim_pending(f"r{i}", 3, lease_until_us=10**18)
                if not got:
                    return
                claimed[i].extend(e.id for e, _ in got)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(len(stores))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for other in stores:
        other.close()
    assert not errors, errors
    every = [eid for part in claimed for eid in part]
    assert sorted(every) == sorted(ids) and len(every) == len(set(every))
    for part in claimed:  # each claimer took its share in creation order
        assert part == sorted(part, key=order.index)


# ------------------------------------------------------------------ log storage

AWKWARD_TEXTS = [
    "",
    " ",
    "plain line",
    "tab\there",
    "back\\slash and \\N and \\.",
    "\\.",
    "\\N",
    "carriage\rreturn",
    "new\nline",
    "form\ffeed, vertical\vtab, bell\a, escape\x1b[31m",
    "quotes ' \" ` and , ; | separators",
    "unicode: é ß 漢字 🚀 \u2028 \ufeff",
    "x" * (64 * 1024),
]


def log_rows_of(execution_id: str) -> list[tuple]:
    steps = ["train", "step with spaces", "étape"]
    return [
        (execution_id, seq, 2**62 + seq, steps[seq % 3], 1 + seq % 3, text)
        for seq, text in enumerate(AWKWARD_TEXTS, start=1)
    ]


def stored_log_rows(store: Store, execution_id: str) -> list[tuple]:
    return [tuple(row[1:]) for row in store.read_log_rows(execution_id, limit=10_000)]


def test_postgres_copy_stores_what_insert_stores(postgres_url, monkeypatch):
    """On PostgreSQL append_logs goes through COPY; the multi-row INSERT path (SQLite's)
    stores the very same rows, and both give back exactly what was written."""
    store = Store(postgres_url)
    try:
        copies = []
        copy_rows = store.dialect.copy_rows

        def counting(*args):
            copies.append(args[1])
            return copy_rows(*args)

        monkeypatch.setattr(store.dialect, "copy_rows", counting)
        store.append_logs(log_rows_of("e-copy"))
        assert copies == ["log_line"]
        monkeypatch.setattr(store.dialect, "copy_rows", lambda *args: False)
        store.append_logs(log_rows_of("e-insert"))
        written = [tuple(row[1:]) for row in log_rows_of("any")]
        assert stored_log_rows(store, "e-copy") == written
        assert stored_log_rows(store, "e-insert") == written
        assert store.last_log_seq("e-copy") == len(AWKWARD_TEXTS)
    finally:
        store.close()


@pytest.mark.parametrize("path", ["copy", "insert"])
def test_postgres_log_batches_fail_whole_alike(postgres_url, monkeypatch, path):
    """A batch with a line already stored fails with the same driver error on either
    path and stores none of its lines."""
    store = Store(postgres_url)
    try:
        if path == "insert":
            monkeypatch.setattr(store.dialect, "copy_rows", lambda *args: False)
        store.append_logs([("e1", 1, 1, "s", 1, "first")])
        with pytest.raises(Exception) as duplicate:
            store.append_logs([("e1", 2, 2, "s", 1, "second"), ("e1", 1, 3, "s", 1, "again")])
        assert type(duplicate.value).__name__ == "UniqueViolation"
        assert stored_log_rows(store, "e1") == [(1, 1, "s", 1, "first")]
        store.append_logs([("e1", 2, 5, "s", 2, "after the failures")])
        assert [row[0] for row in stored_log_rows(store, "e1")] == [1, 2]
    finally:
        store.close()


def test_postgres_stores_a_nul_character_as_the_replacement_character(postgres_url):
    """PostgreSQL's text cannot hold NUL: the line is kept, with U+FFFD in its place."""
    store = Store(postgres_url)
    try:
        store.append_logs([("e1", 1, 1, "s", 1, "a\x00b"), ("e1", 2, 2, "s", 1, "fine")])
        assert [row[-1] for row in stored_log_rows(store, "e1")] == ["a\ufffdb", "fine"]
    finally:
        store.close()


def test_cached_catalog_reads_skip_the_reader_threads(tmp_path, monkeypatch):
    """The async store answers a configuration or an exact executable version that the
    store has cached on the event loop, with no hand-off to a reader thread, and so an
    execution's context when it needs nothing else; a cold one, or one whose cache
    another thread holds at that moment (the loop never waits on a lock), is read on a
    reader."""
    import asyncio

    from server.store.async_store import AsyncStore

    store = AsyncStore(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        seed(store.sync, 0)
        version = store.sync.get_executable("g", "iris-train").version
        handed_off = []
        read = store.workers.read

        async def counting(fn, *args, **kwargs):
            handed_off.append(fn.__name__)
            return await read(fn, *args, **kwargs)

        monkeypatch.setattr(store.workers, "read", counting)
        store.sync._configurations.items.clear()
        store.sync._executables.items.clear()

        async def reads():
            for _ in range(3):
                configuration = await store.get_configuration("g", "c1")
                executable = await store.get_executable("g", "iris-train", version)
                assert (configuration.id, executable.version) == ("c1", version)
            held = threading.Event()

            def hold() -> None:  # another thread in the cache's map for a moment
                with store.sync._configurations.lock:
                    held.set()
                    time.sleep(0.2)

            holder = threading.Thread(target=hold)
            holder.start()
            held.wait(10)
            assert store.sync.cached_configuration("g", "c1") is None
            assert (await store.get_configuration("g", "c1")).id == "c1"
            holder.join(10)
            await store.get_executable("g", "iris-train")  # the newest: always read
            # What an execution's message shows beside it: from the cache when it has
            # no output artifacts and its configuration is cached, else read.
            plain = Execution("e1", "g", "c1", "iris-train", "iris")
            assert await store.execution_context("g", [plain]) == ({}, {"c1": "cfg"})
            with_output = Execution("e2", "g", "c1", "iris-train", "iris")
            with_output.output_artifact_ids = ["a1"]
            artifacts, names = await store.execution_context("g", [plain, with_output])
            assert (list(artifacts), names) == (["a1"], {"c1": "cfg"})
            store.sync._configurations.items.clear()
            assert await store.execution_context("g", [plain]) == ({}, {"c1": "cfg"})

        asyncio.run(reads())
        assert handed_off == [
            "get_configuration",
            "get_executable",
            "get_configuration",
            "get_executable",
            "execution_context",
            "execution_context",
        ]
        assert store.sync.cached_configuration("g", "c1").id == "c1"
        with pytest.raises(NotFound):
            asyncio.run(store.get_configuration("g", "c-missing"))
    finally:
        store.close()


def test_postgres_one_request_id_on_two_replicas_at_once_creates_one(postgres_url):
    """Two replicas' stores create with the same request id at the same moment, each
    holding its transaction open until the other has sent its insert: one execution
    is created and both answers name it; neither fails on the unique key."""
    first, second = Store(postgres_url), Store(postgres_url)
    try:
        seed(first, 0)
        barrier = threading.Barrier(2, timeout=30)
        claims = first._idempotent_claims

        def racing(kind, wanted, at):  # both transactions have begun before either claims
            barrier.wait()
            return claims(kind, wanted, at)

        first._idempotent_claims = racing
        second._idempotent_claims = lambda kind, wanted, at: (
            barrier.wait(), Store._idempotent_claims(second, kind, wanted, at)
        )[1]
        results = {}

        def create(store: Store, execution_id: str) -> None:
            execution = Execution(execution_id, "g", "c1", "iris-train", "iris")
            results[execution_id] = store.create_executions([(execution, "same")])[0]

        threads = [
            threading.Thread(target=create, args=(s, i))
            for s, i in ((first, "ea"), (second, "eb"))
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        outcomes = {i: (r[0].id, r[1]) for i, r in results.items()}
        winner = next(i for i, (_, created) in outcomes.items() if created)
        assert sorted(outcomes.values()) == sorted([(winner, True), (winner, False)])
        assert first.list_executions("g", PageRequest(10)).total_size == 1
    finally:
        first.close()
        second.close()


@pytest.mark.parametrize("read", ["get_execution", "executions_with_context", "read_events"])
def test_an_execution_read_while_it_moves_has_the_history_of_its_status(
    shared_store, monkeypatch, read
):
    """The row and the history are two statements: a transition committed between them
    must not give a status with a history that runs past it (a watcher resuming from
    that history would wait for the end it already skipped)."""
    (execution_id,) = seed(shared_store, 1)
    other = Store(shared_store.url)
    moved = []

    def moving(real):
        def read_history(*args, **kwargs):
            if not moved:  # between the row and its history, once
                other.transition(execution_id, Status.RUNNING, "test")
                moved.append(True)
            return real(*args, **kwargs)

        return read_history

    monkeypatch.setattr(shared_store, "history", moving(shared_store.history))
    monkeypatch.setattr(shared_store, "_histories", moving(shared_store._histories))
    try:
        if read == "get_execution":
            execution = shared_store.get_execution("g", execution_id)
        elif read == "executions_with_context":
            ((execution, _, _),) = shared_store.executions_with_context([("g", execution_id)])
        else:
            _, _, executions = shared_store.read_events("g", 0, 100)
            execution = executions[execution_id]
    finally:
        other.close()
    assert moved
    assert execution.status == Status.PENDING  # the row was read before the move ...
    assert [t.to_status for t in execution.history] == [Status.PENDING]  # ... its history too
