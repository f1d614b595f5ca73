"""Several server replicas on one PostgreSQL database act as one service: each
execution is claimed and run by one replica once, in creation order; a replica that
dies has its executions taken over once its lease lapses; a replica that lost its
lease writes nothing over its successor. Real server processes, real steps, a real
PostgreSQL cluster on loopback."""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import threading
import time
from pathlib import Path

import psycopg
import pytest
from workflow_helpers import (
    STATUS_NAME,
    Runner,
    ServerProcess,
    container,
    inputs,
    live_members,
    python,
    replica_process,
    wait_for,
    workflow,
)

from client.streams import follow_logs, watch

LEASE_SECONDS = 2.0

# Prints numbered lines until it is stopped.
CHATTY = workflow(
    "chatty",
    [
        python(
            "main",
            "import itertools, time\n"
            "for i in itertools.count(1):\n"
            "    print(f'line {i}', flush=True)\n"
            "    time.sleep(0.002)\n",
        )
    ],
    entrypoint="main",
)

QUICK = workflow("quick", [container("main", "sh", "-c", "echo ran once")], entrypoint="main")

# Writes its process group id to DIR/<execution id>, says ready, then sleeps.
LONG = workflow(
    "long",
    [
        python(
            "main",
            "import os, pathlib, time\n"
            "path = pathlib.Path('{{inputs.parameters.dir}}', '{{workflow.name}}')\n"
            "assert not path.exists(), 'started twice'\n"
            "path.write_text(str(os.getpgid(0)))\n"
            "print('ready', flush=True)\n"
            "time.sleep(120)\n",
            inputs=inputs("dir"),
        )
    ],
    entrypoint="main",
    parameters={"dir": "."},
)


def start_replica(server: ServerProcess, url: str, *options: str) -> ServerProcess:
    return server.start(
        "--database-url",
        url,
        "--replica-id",
        server.tmp_path.name,
        "--lease-seconds",
        str(LEASE_SECONDS),
        "--stop-grace-seconds",
        "1",
        *options,
    )


@pytest.fixture
def replicas(tmp_path, postgres_url):
    """A factory of replica server processes on one database; all stopped at the end."""
    started: list[ServerProcess] = []

    def make(name: str, *options: str) -> ServerProcess:
        server = start_replica(replica_process(tmp_path, name), postgres_url, *options)
        started.append(server)
        return server

    yield make
    for server in started:
        if server.process is not None and server.process.poll() is None:
            server.process.kill()
            server.process.wait(10)


def start_long(replicas, marks: Path) -> tuple[ServerProcess, Runner, str, int]:
    """Replica a running one long step: (a, a client, the execution id, its group)."""
    marks.mkdir()
    a = replicas("a")
    runner = Runner(a.address)
    runner.register(LONG)
    execution_id = runner.start(runner.configure("long", {"dir": str(marks)}))
    runner.wait_output(execution_id, "ready")
    return a, runner, execution_id, int((marks / execution_id).read_text())


def kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def owners(url: str) -> list[tuple[str, str, int | None]]:
    """(execution id, owner, submitted time) of every execution, in creation order."""
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT execution_id, owner, submitted_us FROM execution ORDER BY id"
        ).fetchall()


def test_a_burst_over_three_replicas_runs_each_execution_once_in_order(
    replicas, postgres_url
):
    servers = [replicas(name, "--max-concurrent-executions", "3") for name in "abc"]
    runners = [Runner(s.address) for s in servers]
    try:
        runners[0].register(QUICK)
        config = runners[0].configure("quick")
        def create(i: int) -> tuple[str, float, float]:
            sent = time.monotonic()
            execution_id = runners[i % 3].start(config)
            return execution_id, sent, time.monotonic()

        with concurrent.futures.ThreadPoolExecutor(12) as pool:
            calls = list(pool.map(create, range(200)))
        created = [execution_id for execution_id, _, _ in calls]
        assert len(set(created)) == 200
        for execution_id in created:
            execution = runners[0].wait(execution_id, timeout=120)
            assert STATUS_NAME[execution.status] == "COMPLETED", execution.status_message
        for execution_id in created:
            history = runners[1].history(execution_id)
            assert [h[1] for h in history].count("step_started") == 1, history
            starts = [t for s, _, t in runners[2].logs(execution_id) if t.startswith("starting")]
            assert len(starts) == 1 and runners[2].output(execution_id) == ["ran once"]
        rows = owners(postgres_url)
        assert {owner for _, owner, _ in rows} <= {"a", "b", "c"}
        assert len({owner for _, owner, _ in rows}) >= 2  # the work was shared
        # Each replica claims the oldest PENDING executions it can see. Creates sent at
        # once on different replicas may commit in another order than their ids' (a
        # replica can claim a newer one before an older one is committed), so the
        # order holds between two executions when the older one's create had returned
        # (committed) before the newer one's was sent: then whichever replica claimed
        # the newer one could see the older one too, and took it first if it was free.
        claims = {execution_id: (owner, submitted) for execution_id, owner, submitted in rows}
        pairs = 0
        for older, _, returned in calls:
            for newer, sent, _ in calls:
                if older < newer and returned < sent and claims[older][0] == claims[newer][0]:
                    pairs += 1
                    assert claims[older][1] <= claims[newer][1], (older, newer, claims[older])
        assert pairs > 1000  # most pairs were created one after the other
    finally:
        for runner in runners:
            runner.close()


def test_create_on_one_replica_tail_and_watch_on_another_stop_on_a_third(replicas):
    a, b, c = (replicas(name) for name in "abc")
    runner_a, runner_b, runner_c = Runner(a.address), Runner(b.address), Runner(c.address)
    try:
        runner_a.register(CHATTY)
        execution_id = runner_a.start(runner_a.configure("chatty"))
        lines: list[tuple[int, str]] = []
        events: list[str] = []
        tail = threading.Thread(
            target=lambda: lines.extend(
                (line.sequence, line.text) for line in follow_logs(runner_b.client, execution_id)
            ),
            daemon=True,
        )
        watcher = threading.Thread(
            target=lambda: events.extend(
                STATUS_NAME[e.execution.status] for e in watch(runner_b.client, execution_id)
            ),
            daemon=True,
        )
        tail.start()
        watcher.start()
        wait_for(lambda: len(lines) >= 500, 30, "500 lines on replica b")
        runner_c.client.stop_execution(execution_id)
        stopped = runner_c.wait(execution_id, "STOPPED", timeout=15)
        tail.join(15)
        watcher.join(15)
        assert not tail.is_alive() and not watcher.is_alive(), "b's streams end by themselves"

        stored = [(line.sequence, line.text) for line in runner_a.client.list_logs(execution_id)]
        assert lines == stored  # every line once, in order, none missing
        assert [seq for seq, _ in lines] == list(range(1, len(lines) + 1))
        printed = [text for _, text in lines if text.startswith("line ")]
        assert printed == [f"line {i}" for i in range(1, len(printed) + 1)]
        # Statuses as b's watch saw them change (step events repeat the status): from
        # the state at the watch's start, then each transition once, in order.
        seen = [status for i, status in enumerate(events) if i == 0 or events[i - 1] != status]
        assert seen in (
            ["PENDING", "RUNNING", "STOPPING", "STOPPED"],
            ["RUNNING", "STOPPING", "STOPPED"],
        ), events
        assert [h[0] for h in runner_b.history(execution_id)] == [
            "PENDING", "RUNNING", "STOPPING", "STOPPED"
        ]
        assert stopped.status_message.startswith("stopped")
    finally:
        for runner in (runner_a, runner_b, runner_c):
            runner.close()


def test_kill_9_of_the_owner_has_another_replica_reconcile_it_once(
    replicas, postgres_url, tmp_path
):
    a, runner_a, execution_id, pgid = start_long(replicas, tmp_path / "marks")
    runner_a.close()
    assert owners(postgres_url)[0][1] == "a"
    group_killed = False
    try:
        b = replicas("b")
        runner_b = Runner(b.address)
        assert runner_b.status(execution_id) == "RUNNING"  # a's lease is alive: b leaves it

        a.kill()
        assert live_members(pgid), "the step outlives its killed replica"
        ended = runner_b.wait(execution_id, timeout=LEASE_SECONDS + 5)
        assert STATUS_NAME[ended.status] in ("UNKNOWN", "DEAD")
        history = runner_b.history(execution_id)
        assert history[-1][1] == "replica_lost", history
        assert "replica a was lost" in ended.status_message
        wait_for(lambda: live_members(pgid) == [], 10, "the lost replica's step to be gone")
        group_killed = True
        assert [t for t in runner_b.output(execution_id) if t == "ready"] == ["ready"]
        runner_b.close()
    finally:
        if not group_killed:
            kill_group(pgid)


def test_a_replica_stopped_gracefully_hands_its_executions_over_before_the_lease_ends(
    replicas, postgres_url, tmp_path
):
    """SIGTERM (a deploy): the replica stops its steps (local processes die with it)
    and, as its last write, ends its leases. The other replica reconciles the execution
    at its next round, a third of the lease, instead of once the lease would have run
    out: cause replica_shutdown."""
    lease = "30"
    marks = tmp_path / "marks"
    marks.mkdir()
    a = replicas("a", "--lease-seconds", lease)
    runner_a = Runner(a.address)
    runner_a.register(LONG)
    execution_id = runner_a.start(runner_a.configure("long", {"dir": str(marks)}))
    runner_a.wait_output(execution_id, "ready")
    runner_a.close()
    b = replicas("b", "--lease-seconds", lease)
    runner_b = Runner(b.address)
    try:
        assert runner_b.status(execution_id) == "RUNNING"
        a.terminate()
        # Well before the 30 s lease would have run out.
        ended = runner_b.wait(execution_id, timeout=20)
        assert STATUS_NAME[ended.status] in ("UNKNOWN", "DEAD")  # as after a kill -9
        assert runner_b.history(execution_id)[-1][1] == "replica_shutdown"
        assert ended.status_message.startswith("replica a shut down while running")
        assert owners(postgres_url)[0][1] == "b"
    finally:
        runner_b.close()


def test_a_replica_that_stalled_past_its_lease_writes_nothing_over_its_successor(
    replicas, postgres_url, tmp_path
):
    a, runner_a, execution_id, pgid = start_long(replicas, tmp_path / "marks")
    b = replicas("b")
    runner_b = Runner(b.address)
    try:
        a.process.send_signal(signal.SIGSTOP)  # a stalls: no renewals, no writes
        ended = runner_b.wait(execution_id, timeout=LEASE_SECONDS + 5)
        assert runner_b.history(execution_id)[-1][1] == "replica_lost"
        wait_for(lambda: live_members(pgid) == [], 10, "the stalled replica's step to be gone")
        before = runner_b.history(execution_id)
        a.process.send_signal(signal.SIGCONT)
        # a wakes up: its step died under it. Either its renewal finds the lease gone
        # first (then it writes nothing more), or it tries to record the step's end
        # and the write is refused: the successor's record stands either way.
        wait_for(
            lambda: "no longer run by a" in a.log() or "lease lost" in a.log(),
            LEASE_SECONDS + 10,
            "a to find out that it lost the execution",
        )
        assert runner_a.history(execution_id) == before
        assert runner_a.get(execution_id).status == ended.status
        assert runner_b.history(execution_id) == before
    finally:
        if a.process.poll() is None:
            a.process.send_signal(signal.SIGCONT)
        runner_a.close()
        runner_b.close()
        kill_group(pgid)


def test_a_take_over_after_every_step_succeeded_completes_with_cause_replica_lost(
    replicas, postgres_url, tmp_path
):
    """The owner died after its last step succeeded and before it completed the
    execution (the state file, on the replicas' shared artifact root, records the step's
    success): the replica that takes over registers the outputs and completes it, saying
    that the replica was lost, not that a server restarted."""
    shared = ("--artifact-root", str(tmp_path / "shared"))
    marks = tmp_path / "marks"
    marks.mkdir()
    a = replicas("a", *shared)
    runner = Runner(a.address)
    execution_id = ""
    try:
        runner.register(LONG)
        execution_id = runner.start(runner.configure("long", {"dir": str(marks)}))
        runner.wait_output(execution_id, "ready")
        pgid = int((marks / execution_id).read_text())
        a.kill()
        kill_group(pgid)
        wait_for(lambda: live_members(pgid) == [], 10, "the step to be gone")
        state_file = tmp_path / "shared" / "executions" / execution_id / "state.json"
        state = json.loads(state_file.read_text())
        state["steps"]["main"].update(exit_code=0, phase="SUCCEEDED")  # as it had ended
        state_file.write_text(json.dumps(state))
    finally:
        runner.close()

    b = replicas("b", *shared)
    runner = Runner(b.address)
    try:
        done = runner.wait(execution_id, timeout=LEASE_SECONDS + 10)
        assert STATUS_NAME[done.status] == "COMPLETED", done.status_message
        assert runner.history(execution_id)[-1][1:] == (
            "replica_lost", "replica a was lost after every step succeeded; outputs registered"
        )
    finally:
        runner.close()
