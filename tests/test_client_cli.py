"""The Python client and the `trainyard` command line against a real server."""

from __future__ import annotations

import json

import grpc
import pytest

from client.cli import main
from client.client import TrainyardClient, TrainyardError
from tests.conftest import ROOT


@pytest.fixture
def idle_server(server):
    server.detach_runtime()
    return server


@pytest.fixture
def cli(idle_server, capsys):
    def run(*args: str, expect: int = 0) -> str:
        code = main(["--address", idle_server.address, *args])
        out = capsys.readouterr()
        assert code == expect, out.err
        return out.out if expect == 0 else out.out + out.err

    return run


def test_client_pages_through_lists_and_raises_rich_errors(idle_server):
    with TrainyardClient(idle_server.address, resource_group="team-x") as ty:
        executable = ty.create_executable(
            (ROOT / "samples/executables/iris-train.yaml").read_text()
        )
        dataset = ty.create_artifact("iris", (ROOT / "samples/data/iris.csv").as_uri(), "iris")
        config = ty.create_configuration(
            "c", executable.id, "iris", {"epochs": 3}, {"iris-data": dataset.id}
        )
        created = [ty.create_execution(config.id).id for _ in range(7)]
        listed = [e.id for e in ty.list_executions(page_size=2)]
        assert listed == list(reversed(created))
        with pytest.raises(TrainyardError) as caught:
            ty.create_configuration(
                "c", executable.id, "iris", {"epochs": "x"}, {"iris-data": dataset.id}
            )
        assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert caught.value.reason == "CONFIGURATION_INVALID"
        assert caught.value.violations[0].field == "configuration.parameter_bindings[0]"
    with TrainyardClient(idle_server.address, resource_group="team-y") as other:
        with pytest.raises(TrainyardError) as caught:
            other.get_execution(created[0])
        assert caught.value.code == grpc.StatusCode.NOT_FOUND


def test_first_session_through_the_cli(cli):
    listing = cli("executables", "list")
    assert "iris-train" in listing and "learning_rate:float=0.1" in listing
    dataset = cli(
        "artifacts",
        "create",
        str(ROOT / "samples/data/iris.csv"),
        "--name",
        "iris",
        "--scenario",
        "iris",
    ).strip()
    config = cli(
        "configurations",
        "create",
        "--name",
        "lr01",
        "--executable",
        "iris-train",
        "-p",
        "learning_rate=0.1",
        "-p",
        "epochs=20",
        "-a",
        f"iris-data={dataset}",
    ).strip()
    execution = cli("executions", "create", config).strip()
    assert execution in cli("executions", "list")
    detail = cli("executions", "get", execution)
    assert "PENDING" in detail and "Timeline" in detail and "created" in detail
    as_json = json.loads(cli("executions", "get", execution, "--json"))
    assert as_json["id"] == execution and as_json["status"] == "EXECUTION_STATUS_PENDING"
    err = cli(
        "configurations",
        "create",
        "--name",
        "bad",
        "--executable",
        "iris-train",
        "-p",
        "learning_rat=0.1",
        "-a",
        f"iris-data={dataset}",
        expect=1,
    )
    assert "configuration.parameter_bindings[0]" in err and "learning_rat" in err
    stopped = cli("executions", "stop", execution)
    assert "STOPPING" in stopped
    err = cli("executions", "delete", execution, expect=1)
    assert "FAILED_PRECONDITION" in err and "EXECUTION_NOT_DELETABLE" in err
    bulk = cli("executions", "stop", execution, "0000000000000000", expect=1)
    assert "EXECUTION_NOT_STOPPABLE" in bulk or "refused" in bulk
    history = cli("executions", "history", execution)
    assert "stop_requested" in history
