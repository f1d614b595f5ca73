"""The trainyard.v1 services over the Connect protocol, on the console's HTTP port:
the same servicers, errors and streams as over gRPC (generated Connect clients)."""

from __future__ import annotations

import json
import ssl
import urllib.request

import pytest
from connectrpc.code import Code
from connectrpc.errors import ConnectError
from google.rpc import error_details_pb2

from tests.authkit import GROUP, make_tokens
from tests.certs import CA
from tests.conftest import ServerThread, make_settings
from tests.helpers import iris_configuration, register_iris
from trainyard.v1 import configuration_pb2, execution_pb2
from trainyard.v1 import configuration_service_connect as cfg_connect
from trainyard.v1 import configuration_service_pb2 as cfg
from trainyard.v1 import execution_service_connect as ex_connect
from trainyard.v1 import execution_service_pb2 as ex
from trainyard.v1 import log_service_connect as log_connect
from trainyard.v1 import log_service_pb2 as logs
from trainyard.v1 import meta_service_connect as meta_connect
from trainyard.v1 import meta_service_pb2 as meta


@pytest.fixture
def console(server_factory):
    return server_factory(console_address="127.0.0.1:0")


def url(server) -> str:
    return f"http://{server.running.extra['console'].address}"


def test_meta_over_connect_names_the_console(console, stubs_for):
    client = meta_connect.MetaServiceClientSync(url(console))
    answer = client.get_meta(meta.GetMetaRequest())
    assert answer.console_address == console.running.extra["console"].address
    assert answer.capabilities.status_watch
    # Over gRPC too.
    assert stubs_for(console).meta.GetMeta(meta.GetMetaRequest()).console_address


def test_no_console_unless_asked(server, stubs):
    assert server.running.extra["console"] is None
    assert stubs.meta.GetMeta(meta.GetMetaRequest()).console_address == ""


def test_errors_carry_the_grpc_details(console, stubs_for):
    stubs = stubs_for(console)
    dataset = register_iris(stubs)
    client = cfg_connect.ConfigurationServiceClientSync(url(console))
    request = cfg.CreateConfigurationRequest(
        configuration=configuration_pb2.Configuration(
            name="typo",
            executable_id="iris-train",
            scenario_id="iris",
            parameter_bindings=[configuration_pb2.ParameterBinding(key="learning_rat", value="1")],
            input_artifact_bindings=[
                configuration_pb2.InputArtifactBinding(key="iris-data", artifact_id=dataset)
            ],
        )
    )
    with pytest.raises(ConnectError) as raised:
        client.create_configuration(request)
    assert raised.value.code == Code.INVALID_ARGUMENT
    found = {}
    for detail in raised.value.details:
        for kind in (error_details_pb2.ErrorInfo, error_details_pb2.BadRequest):
            if detail.Is(kind.DESCRIPTOR):
                message = kind()
                detail.Unpack(message)
                found[kind.__name__] = message
    assert found["ErrorInfo"].reason
    violations = found["BadRequest"].field_violations
    assert violations[0].field == "configuration.parameter_bindings[0]"
    assert "unknown parameter" in violations[0].description


def test_resource_groups_apply(console, stubs_for):
    stubs = stubs_for(console)
    configuration = iris_configuration(stubs, register_iris(stubs))
    client = ex_connect.ExecutionServiceClientSync(url(console))
    created = client.create_execution(ex.CreateExecutionRequest(configuration_id=configuration))
    assert created.execution.allowed_operations
    with pytest.raises(ConnectError) as raised:
        client.get_execution(
            ex.GetExecutionRequest(execution_id=created.execution.id),
            headers={"ai-resource-group": "other-team"},
        )
    assert raised.value.code == Code.NOT_FOUND
    with pytest.raises(ConnectError) as raised:
        client.list_executions(ex.ListExecutionsRequest(), headers={"ai-resource-group": "a b"})
    assert raised.value.code == Code.INVALID_ARGUMENT


def test_watch_and_tail_stream_a_run_to_its_end(console, stubs_for):
    stubs = stubs_for(console)
    configuration = iris_configuration(stubs, register_iris(stubs), epochs=3)
    executions = ex_connect.ExecutionServiceClientSync(url(console))
    created = executions.create_execution(
        ex.CreateExecutionRequest(configuration_id=configuration)
    ).execution
    statuses = []
    watch = executions.watch_executions(
        ex.WatchExecutionsRequest(execution_id=created.id, keep_watching=True),
        timeout_ms=60_000,
    )
    for event in watch:
        statuses.append(event.execution.status)
        if event.execution.status == execution_pb2.EXECUTION_STATUS_COMPLETED:
            break
    watch.close()
    assert statuses[-1] == execution_pb2.EXECUTION_STATUS_COMPLETED
    assert list(
        executions.get_execution(
            ex.GetExecutionRequest(execution_id=created.id)
        ).execution.allowed_operations
    ) == [execution_pb2.EXECUTION_OPERATION_DELETE, execution_pb2.EXECUTION_OPERATION_RERUN]
    tail = log_connect.LogServiceClientSync(url(console)).tail_logs(
        logs.TailLogsRequest(execution_id=created.id, follow=True), timeout_ms=60_000
    )
    over_connect = [line.sequence for message in tail for line in message.lines]
    listed = stubs.logs.ListLogs(logs.ListLogsRequest(execution_id=created.id, limit=1000))
    assert over_connect == [line.sequence for line in listed.lines]
    assert over_connect == list(range(1, len(over_connect) + 1))


def test_authentication_applies_over_connect(server_factory, tmp_path):
    """The console's port is no way around the token check: the same role table."""
    tokens = make_tokens(tmp_path / "tokens.json")
    secured = server_factory(
        console_address="127.0.0.1:0",
        auth_tokens=tokens.file,
        default_resource_group=GROUP,
        runtime="none",
    )
    client = ex_connect.ExecutionServiceClientSync(url(secured))
    with pytest.raises(ConnectError) as raised:
        client.list_executions(ex.ListExecutionsRequest(), headers={"ai-resource-group": GROUP})
    assert raised.value.code == Code.UNAUTHENTICATED
    viewer = dict(tokens.md(tokens.viewer))
    assert client.list_executions(ex.ListExecutionsRequest(), headers=viewer).total_size == 0
    with pytest.raises(ConnectError) as raised:
        client.stop_execution(ex.StopExecutionRequest(execution_id="f" * 32), headers=viewer)
    assert raised.value.code == Code.PERMISSION_DENIED
    answer = meta_connect.MetaServiceClientSync(url(secured)).get_meta(meta.GetMetaRequest())
    assert answer.auth_enabled


def test_console_beyond_loopback_needs_tls_and_tokens(tmp_path):
    settings = make_settings(tmp_path, console_address="0.0.0.0:0", runtime="none")
    thread = ServerThread(settings)
    with pytest.raises(ValueError, match="non-loopback console address"):
        thread.start()
    thread.stop()


def test_console_serves_https_with_the_servers_certificate(server_factory, tmp_path):
    ca = CA(tmp_path / "pki")
    issued = ca.issue("server", server=True)
    secured = server_factory(
        console_address="127.0.0.1:0", tls_cert=issued.cert, tls_key=issued.key, runtime="none"
    )
    address = secured.running.extra["console"].address
    request = urllib.request.Request(
        f"https://{address}/trainyard.v1.MetaService/GetMeta",
        data=b"{}",
        headers={"content-type": "application/json"},
    )
    context = ssl.create_default_context(cafile=str(ca.pem))
    context.check_hostname = False
    with urllib.request.urlopen(request, context=context, timeout=10) as answer:
        body = json.loads(answer.read())
    assert body["consoleAddress"] == address
    assert body["tlsEnabled"] is True
