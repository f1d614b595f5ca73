"""Re-runs: a new execution of an ended one's configuration, linked both ways
(Execution.rerun_of, ListExecutions rerun_of), through the API and the CLI, on both
store backends."""

from __future__ import annotations

import grpc
import pytest

from client.cli import main
from client.client import TrainyardClient, TrainyardError
from tests.workflow_helpers import STATUS_NAME, Runner, container, python, workflow
from trainyard.v1 import execution_pb2
from trainyard.v1 import execution_service_pb2 as epb

pytestmark = pytest.mark.backends("sqlite", "postgresql")


@pytest.fixture
def runner(server):
    r = Runner(server.address)
    yield r
    r.close()


def test_a_rerun_runs_the_same_configuration_and_is_linked_both_ways(server, runner, capsys):
    runner.register(workflow("once", [python("main", "print('ran')")]))
    config = runner.configure("once")
    first = runner.wait(runner.start(config))
    assert STATUS_NAME[first.status] == "COMPLETED" and first.rerun_of == ""

    again = runner.client.rerun_execution(first.id, request_id="rerun-1")
    assert again.id != first.id
    assert (again.configuration_id, again.rerun_of) == (config, first.id)
    assert runner.client.rerun_execution(first.id, request_id="rerun-1").id == again.id
    done = runner.wait(again.id)
    assert STATUS_NAME[done.status] == "COMPLETED" and done.rerun_of == first.id
    assert runner.output(again.id) == ["ran"]
    listed = list(runner.client.list_executions(rerun_of=first.id))
    assert [e.id for e in listed] == [again.id]
    assert list(runner.client.list_executions(rerun_of=again.id)) == []
    assert execution_pb2.EXECUTION_OPERATION_RERUN in first.allowed_operations

    # Through the CLI: the re-run of the re-run, waited for; get shows both links.
    assert main(["executions", "rerun", again.id, "--wait", "--address", server.address]) == 0
    third = capsys.readouterr().out.splitlines()[0].strip()
    assert runner.get(third).rerun_of == again.id
    assert main(["executions", "get", again.id, "--address", server.address]) == 0
    detail = capsys.readouterr().out
    assert f"Re-run of     {first.id}" in detail
    assert detail.split("\nRe-runs\n", 1)[1].split("\n")[0].strip() == third
    assert main(["executions", "list", "--rerun-of", first.id, "-q",
                 "--address", server.address]) == 0
    assert capsys.readouterr().out.split() == [again.id]


def test_only_an_ended_execution_is_rerun(server, runner, capsys):
    runner.register(workflow("hog", [container("main", "sleep", "60")]))
    config = runner.configure("hog")
    running = runner.start(config)
    runner.wait(running, "RUNNING")
    with pytest.raises(TrainyardError) as refused:
        runner.client.rerun_execution(running)
    assert refused.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert refused.value.reason == "EXECUTION_NOT_RERUNNABLE"
    assert refused.value.metadata["status"] == "RUNNING"
    assert main(["executions", "rerun", running, "--address", server.address]) == 1
    assert "EXECUTION_NOT_RERUNNABLE" in capsys.readouterr().err

    with pytest.raises(TrainyardError) as missing:
        runner.client.rerun_execution("0000000000000000")
    assert missing.value.code == grpc.StatusCode.NOT_FOUND
    runner.client.stop_execution(running)
    runner.wait(running, "STOPPED")
    other = runner.configure("hog")
    with pytest.raises(TrainyardError) as mismatch:
        runner.client.call(
            runner.client.executions.CreateExecution,
            epb.CreateExecutionRequest(rerun_of=running, configuration_id=other),
        )
    assert mismatch.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert mismatch.value.violations[0].field == "configuration_id"
    # Another resource group cannot see it, so cannot re-run it either.
    with TrainyardClient(server.address, resource_group="team-b") as other_team:
        with pytest.raises(TrainyardError) as hidden:
            other_team.rerun_execution(running)
        assert hidden.value.code == grpc.StatusCode.NOT_FOUND
    rerun = runner.client.rerun_execution(running)
    assert rerun.rerun_of == running
    runner.client.stop_execution(rerun.id)
