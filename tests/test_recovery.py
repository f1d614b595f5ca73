"""Crash recovery: a server that dies (kill -9) or shuts down mid-run, and the next start
on the same database reconciling what it left. Real server processes, real steps."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
from workflow_helpers import (
    PHASE_NAME,
    STATUS_NAME,
    Runner,
    ServerProcess,
    inputs,
    live_members,
    python,
    steps,
    wait_for,
    workflow,
)

from server.domain.models import Status

pytestmark = pytest.mark.backends("sqlite", "postgresql")

ROOT = Path(__file__).resolve().parent.parent

# Writes its process group id to DIR/<execution id>, says ready, then sleeps.
WORK = python(
    "work",
    "import os, pathlib, signal, time\n"
    "pathlib.Path('{{inputs.parameters.dir}}', '{{workflow.name}}')"
    ".write_text(str(os.getpgid(0)))\n"
    "if '{{inputs.parameters.stubborn}}' == 'yes':\n"
    "    signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('ready', flush=True)\n"
    "time.sleep(float('{{inputs.parameters.seconds}}'))\n",
    inputs=inputs("dir", "stubborn", "seconds"),
)


def restartable(pgid_dir: Path) -> str:
    return workflow(
        "restartable",
        [WORK],
        entrypoint="work",
        parameters={"dir": str(pgid_dir), "stubborn": "no", "seconds": "120"},
    )


def pgid_of(directory: Path, execution_id: str) -> int:
    path = directory / execution_id
    return wait_for(
        lambda: path.exists() and path.read_text().isdigit() and int(path.read_text()),
        30,
        f"the process group of {execution_id}",
    )


def snapshot(runner: Runner, ids: list[str]) -> dict[str, tuple]:
    result = {}
    for execution_id in ids:
        execution = runner.get(execution_id)
        result[execution_id] = (
            STATUS_NAME[execution.status],
            execution.status_message,
            runner.history(execution_id),
            [(s.name, PHASE_NAME[s.phase], s.message) for s in execution.step_details],
        )
    return result


def test_kill_9_during_a_run_then_restarts_reconcile_once(tmp_path, database_url):
    pgids = tmp_path / "pgids"
    pgids.mkdir()
    server = ServerProcess(tmp_path)
    store = ("--database-url", database_url) if database_url else ()
    groups: list[int] = []
    try:
        server.start("--max-concurrent-executions", "3", "--stop-grace-seconds", "30", *store)
        runner = Runner(server.address)
        runner.register(restartable(pgids))
        long = runner.configure("restartable")
        stubborn = runner.configure("restartable", {"stubborn": "yes"})
        quick = runner.configure("restartable", {"seconds": "0"})

        interrupted, lost_state, stopping = (runner.start(c) for c in (long, long, stubborn))
        for execution_id in (interrupted, lost_state, stopping):
            runner.wait_output(execution_id, "ready")
            groups.append(pgid_of(pgids, execution_id))
        queued = runner.start(quick)
        assert runner.status(queued) == "PENDING"
        runner.client.stop_execution(stopping)  # it ignores SIGTERM: it stays STOPPING
        assert runner.status(stopping) == "STOPPING"
        runner.close()

        server.kill()
        assert all(live_members(g) for g in groups), "steps outlive a killed server"
        (server.data_dir / "executions" / lost_state / "state.json").unlink()

        server.start("--max-concurrent-executions", "3", "--stop-grace-seconds", "1", *store)
        runner = Runner(server.address)
        for execution_id in (interrupted, lost_state, stopping):
            assert runner.history(execution_id)[-1][1] == "server_restart"
        dead = runner.get(interrupted)
        assert STATUS_NAME[dead.status] == "DEAD"
        assert dead.status_message == "server restarted while running; step work was interrupted"
        assert [(s.name, PHASE_NAME[s.phase]) for s in dead.step_details] == [("work", "FAILED")]
        assert any("still has processes" in text for _, _, text in runner.logs(interrupted))
        unknown = runner.get(lost_state)
        assert STATUS_NAME[unknown.status] == "UNKNOWN"
        assert "runtime state of the execution was lost" in unknown.status_message
        assert runner.status(stopping) == "STOPPED"
        # The queued one queued again, and ran once the others had ended.
        assert STATUS_NAME[runner.wait(queued).status] == "COMPLETED"
        for g in groups:
            assert live_members(g) == [], f"process group {g} survived the restart"

        before = snapshot(runner, [interrupted, lost_state, stopping, queued])
        runner.close()
        server.terminate()
        server.start("--max-concurrent-executions", "3", "--stop-grace-seconds", "1", *store)
        runner = Runner(server.address)
        assert snapshot(runner, [interrupted, lost_state, stopping, queued]) == before
        runner.close()
        server.terminate()
    finally:
        if server.process is not None and server.process.poll() is None:
            server.process.kill()
        for g in groups:
            try:
                os.killpg(g, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_shutdown_stops_every_step_and_the_next_start_says_why_it_ended(server_factory, tmp_path):
    pgids = tmp_path / "pgids"
    pgids.mkdir()
    first = server_factory()
    runner = Runner(first.address)
    runner.register(restartable(pgids))
    execution_id = runner.start(runner.configure("restartable"))
    runner.wait_output(execution_id, "ready")
    pgid = pgid_of(pgids, execution_id)
    runner.close()

    first.stop()
    with pytest.raises(ProcessLookupError):
        os.killpg(pgid, 0)

    second = server_factory()  # same data directory
    runner = Runner(second.address)
    execution = runner.get(execution_id)
    assert STATUS_NAME[execution.status] == "DEAD"
    assert execution.status_message == "server restarted while running; step work was interrupted"
    assert runner.history(execution_id)[-1][:2] == ("DEAD", "server_restart")
    runner.close()


def test_restart_ends_running_executions_as_their_recorded_state_tells(server_factory):
    """The state file is ahead of the database when the server died between a step's
    end and its report: the restart completes, fails or interrupts accordingly."""
    first = server_factory(runtime="none")  # executions stay as the test puts them
    runner = Runner(first.address)
    runner.register(
        workflow(
            "two",
            [
                steps("main", [("first", "first")], [("second", "second")]),
                python("first", "print(1)"),
                python(
                    "second",
                    "print(2)",
                    outputs={
                        "artifacts": [
                            {"name": "result", "globalName": "result", "path": "/out/result.txt"}
                        ]
                    },
                ),
            ],
            annotations={"artifacts.ai.sap.com/result.kind": "model"},
        )
    )
    configuration = runner.configure("two")
    done, failed, cut = (runner.start(configuration) for _ in range(3))
    work_dir = first.running.settings.work_dir
    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid with no process behind it

    def record(phase=None, exit_code=None, **extra):
        return {
            "pid": gone.pid,
            "pgid": gone.pid,
            "create_time": 1.0,
            "exit_code": exit_code,
            **({"phase": phase} if phase else {}),
            **extra,
        }

    states = {
        done: {"first": record("SUCCEEDED", 0), "second": record("SUCCEEDED", 0)},
        failed: {"first": record("FAILED", 2, failure="step first exited with code 2")},
        cut: {"first": record("SUCCEEDED", 0), "second": record()},
    }
    for execution_id, records in states.items():
        first.run_sync(first.plane.store.force_status, execution_id, Status.RUNNING)
        (work_dir / execution_id).mkdir(parents=True)
        (work_dir / execution_id / "state.json").write_text(
            json.dumps({"execution_id": execution_id, "steps": records})
        )
    output = work_dir / done / "steps" / "second" / "out" / "result.txt"
    output.parent.mkdir(parents=True)
    output.write_text("weights")
    runner.close()
    first.stop()

    second = server_factory()
    runner = Runner(second.address)
    completed = runner.get(done)
    assert STATUS_NAME[completed.status] == "COMPLETED", completed.status_message
    [artifact] = completed.output_artifacts
    assert artifact.name == "result" and artifact.execution_id == done
    assert Path(artifact.url.removeprefix("file://")).read_text() == "weights"
    dead = runner.get(failed)
    assert (STATUS_NAME[dead.status], dead.status_message) == (
        "DEAD",
        "step first exited with code 2",
    )
    assert [(s.name, PHASE_NAME[s.phase]) for s in dead.step_details] == [
        ("first", "FAILED"),
        ("second", "SKIPPED"),
    ]
    interrupted = runner.get(cut)
    assert (STATUS_NAME[interrupted.status], interrupted.status_message) == (
        "DEAD",
        "server restarted while running; step second was interrupted",
    )
    assert [(s.name, PHASE_NAME[s.phase]) for s in interrupted.step_details] == [
        ("first", "SUCCEEDED"),
        ("second", "FAILED"),
    ]
    for execution_id in (done, failed, cut):
        assert runner.history(execution_id)[-1][1] == "server_restart"
    runner.close()
