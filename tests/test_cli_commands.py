"""`trainyard executions create --wait/--follow` and stop / delete by filter, against a
real server that runs the steps."""

from __future__ import annotations

import argparse
import io
import json

import pytest

from client.cli import main
from client.commands.executions import parse_age
from tests.workflow_helpers import STATUS_NAME, Runner, container, python, workflow


@pytest.fixture
def runner(server):
    r = Runner(server.address)
    yield r
    r.close()


def _run(server, capsys, *args: str) -> tuple[int, str, str]:
    code = main([*args, "--address", server.address])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_create_wait_returns_when_the_execution_ends(server, runner, capsys):
    runner.register(workflow("quick", [python("main", "print('hello from the step')")]))
    config = runner.configure("quick")
    code, out, _ = _run(server, capsys, "executions", "create", config, "--wait")
    assert code == 0
    execution_id, final = out.splitlines()
    assert final.split()[:2] == [execution_id, "COMPLETED"]
    assert STATUS_NAME[runner.get(execution_id).status] == "COMPLETED"


def test_create_follow_prints_the_log_and_fails_with_the_execution(server, runner, capsys):
    runner.register(
        workflow("noisy", [python("main", "print('line one'); print('line two'); exit(4)")])
    )
    code, out, err = _run(server, capsys, "executions", "create", runner.configure("noisy"),
                          "--follow")
    assert code == 1
    assert "line one\nline two\n" in out
    execution_id = err.split()[0]
    assert f"{execution_id} DEAD" in err and "exited with code 4" in err
    code, out, _ = _run(server, capsys, "executions", "create", runner.configure("noisy"),
                        "--wait", "--json")
    assert code == 1 and json.loads(out)["status"] == "EXECUTION_STATUS_DEAD"


def test_ages():
    assert parse_age("7d").total_seconds() == 7 * 86400
    assert parse_age("90m").total_seconds() == 5400
    with pytest.raises(argparse.ArgumentTypeError):
        parse_age("seven days")


def test_stop_and_delete_by_filter_ask_first(server_factory, capsys, monkeypatch):
    server = server_factory(max_concurrent_executions=1)
    runner = Runner(server.address)
    try:
        runner.register(workflow("hog", [container("main", "sleep", "60")]))
        config = runner.configure("hog")
        hog = runner.start(config)
        runner.wait(hog, "RUNNING")
        queued = [runner.start(config) for _ in range(3)]

        # Declined (and no answer at all, as in a script): nothing happens.
        for answer in ("n\n", ""):
            monkeypatch.setattr("sys.stdin", io.StringIO(answer))
            code, out, err = _run(server, capsys, "executions", "stop", "--status", "pending")
            assert code == 0 and "nothing stopped" in err
            assert all(id_ in err for id_ in queued) and "[y/N]" in err
            assert all(runner.status(q) == "PENDING" for q in queued)
        # --older-than leaves out what is younger.
        code, out, err = _run(server, capsys, "executions", "stop", "--status", "pending",
                              "--older-than", "1d", "--yes")
        assert code == 0 and "no execution matches" in err
        # Confirmed: the pending ones stop, the running one is untouched.
        monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))
        code, out, err = _run(server, capsys, "executions", "stop", "--status", "pending")
        assert code == 0, err
        rows = {line.split()[0]: line.split()[1:3] for line in out.splitlines()[1:]}
        assert rows == {q: ["stopped", "STOPPED"] for q in queued}
        assert runner.status(hog) == "RUNNING"

        # Deleting by filter: only the stopped ones, without a prompt under --yes.
        code, out, err = _run(server, capsys, "executions", "delete", "--status", "stopped",
                              "--executable", "hog", "-y")
        assert code == 0, err
        assert {line.split()[0] for line in out.splitlines()[1:]} == set(queued)
        remaining = [e.id for e in runner.client.list_executions()]
        assert remaining == [hog]

        for wrong in ([hog, "--status", "dead"], []):
            with pytest.raises(SystemExit) as exited:
                _run(server, capsys, "executions", "delete", *wrong)
            assert exited.value.code == 2 and "error:" in capsys.readouterr().err
    finally:
        runner.close()
