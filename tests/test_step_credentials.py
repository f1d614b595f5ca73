"""Steps get a token scoped to their own execution (revoked when it ends) and an
allow-listed environment, never the server's."""

from __future__ import annotations

import json

import grpc

from client.client import TrainyardClient, TrainyardError
from tests.authkit import GROUP, make_tokens
from tests.workflow_helpers import STATUS_NAME, Runner, container, workflow

# The step tries what its token allows and what it does not, and writes the outcomes.
STEP = r"""
import json, os, sys
from client.client import TrainyardClient, TrainyardError
out, other, other_config = sys.argv[1], sys.argv[2], sys.argv[3]
me = os.environ["TRAINYARD_EXECUTION_ID"]
result = {
    "server_secret_seen": "SERVER_ONLY_SECRET" in os.environ,
    "has_token": bool(os.environ.get("TRAINYARD_TOKEN")),
    "token": os.environ.get("TRAINYARD_TOKEN", ""),
    "env": sorted(os.environ),
}
def attempt(name, fn):
    try:
        fn()
        result[name] = "OK"
    except TrainyardError as error:
        result[name] = error.code.name
with TrainyardClient() as ty:
    attempt("own_metrics", lambda: ty.write_metrics(me, metrics=[("loss", 0.5, 1)]))
    attempt("other_metrics", lambda: ty.write_metrics(other, metrics=[("loss", 0.1, 1)]))
    attempt("own_execution", lambda: ty.get_execution(me))
    attempt("other_execution", lambda: ty.get_execution(other))
    attempt("own_configuration",
            lambda: ty.get_configuration(ty.get_execution(me).configuration_id))
    attempt("other_configuration", lambda: ty.get_configuration(other_config))
    attempt("list_executions", lambda: list(ty.list_executions()))
    attempt("stop_other", lambda: ty.stop_execution(other))
with TrainyardClient(resource_group="team-b") as ty:  # another group
    attempt("other_group", lambda: list(ty.list_executions()))
    attempt("other_group_metrics", lambda: ty.write_metrics(me, metrics=[("loss", 0.2, 1)]))
open(out, "w").write(json.dumps(result))
"""

PROBE = workflow(
    "credential-probe",
    [
        container(
            "main",
            "python3",
            "-c",
            STEP,
            "{{workflow.parameters.out}}",
            "{{workflow.parameters.other}}",
            "{{workflow.parameters.other_config}}",
        )
    ],
    parameters={"out": "", "other": "", "other_config": ""},
)
STEP_VARIABLES = {
    "TRAINYARD_ADDRESS",
    "TRAINYARD_API_URL",
    "TRAINYARD_EXECUTION_ID",
    "TRAINYARD_RESOURCE_GROUP",
    "TRAINYARD_STEP",
    "TRAINYARD_TOKEN",
}


def test_step_token_and_environment(server_factory, tmp_path, monkeypatch):
    monkeypatch.setenv("SERVER_ONLY_SECRET", "s3cr3t")
    tokens = make_tokens(tmp_path / "tokens.json")
    server = server_factory(auth_tokens=tokens.file, default_resource_group=GROUP)
    runner = Runner(server.address, GROUP)
    runner.client.close()
    runner.client = TrainyardClient(server.address, resource_group=GROUP, token=tokens.admin)
    try:
        executable = runner.register(PROBE)
        # Another execution of the group, stopped before it runs anything.
        other_config = runner.configure(executable, {"out": str(tmp_path / "none")})
        other = runner.start(other_config)
        runner.client.stop_execution(other)
        out = tmp_path / "result.json"
        config = runner.configure(
            executable, {"out": str(out), "other": other, "other_config": other_config}
        )
        execution = runner.start(config)
        done = runner.wait(execution)
        assert STATUS_NAME[done.status] == "COMPLETED", runner.logs(execution)
        result = json.loads(out.read_text())
    finally:
        runner.close()
    assert result["has_token"]
    assert not result["server_secret_seen"], result["env"]
    assert {n for n in result["env"] if n.startswith("TRAINYARD_")} == STEP_VARIABLES
    assert result["own_metrics"] == "OK"
    assert result["own_execution"] == "OK"
    assert result["own_configuration"] == "OK"
    # Another execution of the same group: as if it did not exist.
    assert result["other_metrics"] == "NOT_FOUND"
    assert result["other_execution"] == "NOT_FOUND"
    assert result["other_configuration"] == "NOT_FOUND"
    # Anything else the token was not made for.
    assert result["list_executions"] == "PERMISSION_DENIED"
    assert result["stop_other"] == "PERMISSION_DENIED"
    assert result["other_group"] == "PERMISSION_DENIED"
    assert result["other_group_metrics"] == "NOT_FOUND"
    # The metric the step wrote is there; the others were not written.
    with TrainyardClient(server.address, resource_group=GROUP, token=tokens.admin) as ty:
        (own,) = ty.list_metrics([execution])
        assert [m.name for m in own.metrics] == ["loss"]
        (theirs,) = ty.list_metrics([other])
        assert list(theirs.metrics) == []
    # The execution ended: its token is revoked.
    with TrainyardClient(server.address, resource_group=GROUP, token=result["token"]) as ty:
        try:
            ty.get_execution(execution)
        except TrainyardError as error:
            assert error.code == grpc.StatusCode.UNAUTHENTICATED
        else:
            raise AssertionError("the step's token outlived its execution")
    assert server.running.extra["step_tokens"].by_execution == {}
