"""The foundation through the API: validation with field details, resource-group
isolation, pagination, idempotent creates, executables, health, reflection."""

from __future__ import annotations

import asyncio
import contextlib
import threading

import grpc
import pytest
import structlog
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from server.api import context as call_context
from server.app import SERVICE_NAMES
from server.domain.errors import FailedPrecondition, NotFound
from tests.conftest import group
from tests.helpers import details, iris_configuration, register_iris, rpc_error
from trainyard.v1 import artifact_pb2, configuration_pb2, executable_pb2
from trainyard.v1 import artifact_service_pb2 as art
from trainyard.v1 import configuration_service_pb2 as cfg
from trainyard.v1 import executable_service_pb2 as exe
from trainyard.v1 import execution_service_pb2 as ex
from trainyard.v1 import meta_service_pb2 as meta
from trainyard.v1 import scenario_service_pb2 as scn

pytestmark = pytest.mark.backends("sqlite", "postgresql")


def configuration_request(dataset_id: str, params: dict[str, str], artifacts=None, **fields):
    return cfg.CreateConfigurationRequest(
        configuration=configuration_pb2.Configuration(
            name=fields.get("name", "c"),
            executable_id=fields.get("executable_id", "iris-train"),
            scenario_id=fields.get("scenario_id", "iris"),
            parameter_bindings=[
                configuration_pb2.ParameterBinding(key=k, value=v) for k, v in params.items()
            ],
            input_artifact_bindings=[
                configuration_pb2.InputArtifactBinding(key=k, artifact_id=v)
                for k, v in (
                    artifacts if artifacts is not None else {"iris-data": dataset_id}
                ).items()
            ],
        ),
        request_id=fields.get("request_id", ""),
    )


def count_configurations(stubs, metadata=()) -> int:
    return stubs.configurations.ListConfigurations(
        cfg.ListConfigurationsRequest(), metadata=metadata
    ).total_size


def test_samples_are_loaded_with_typed_parameters(stubs):
    response = stubs.executables.ListExecutables(exe.ListExecutablesRequest())
    by_id = {e.id: e for e in response.executables}
    assert set(by_id) == {"iris-train", "iris-infer"}
    params = {p.name: p for p in by_id["iris-train"].parameters}
    assert params["learning_rate"].type == executable_pb2.PARAMETER_TYPE_FLOAT
    assert params["learning_rate"].default_value == "0.1"
    assert params["epochs"].type == executable_pb2.PARAMETER_TYPE_INT
    assert by_id["iris-train"].input_artifacts[0].kind == artifact_pb2.ARTIFACT_KIND_DATASET
    assert by_id["iris-train"].output_artifacts[0].kind == artifact_pb2.ARTIFACT_KIND_MODEL
    assert not by_id["iris-train"].deployable
    scenario = stubs.scenarios.GetScenario(scn.GetScenarioRequest(scenario_id="iris")).scenario
    assert scenario.executable_count == 2


@pytest.mark.parametrize(
    "params,artifacts,field,text",
    [
        ({"learning_rat": "0.1"}, None, "configuration.parameter_bindings[0]", "unknown parameter"),
        ({"learning_rate": "fast"}, None, "configuration.parameter_bindings[0]", "float"),
        ({"learning_rate": "nan"}, None, "configuration.parameter_bindings[0]", "float"),
        ({"epochs": "2.5"}, None, "configuration.parameter_bindings[0]", "int"),
        ({}, {}, "configuration.input_artifact_bindings", "must be bound"),
        (
            {},
            {"iris-data": "0000000000000000"},
            "configuration.input_artifact_bindings[0].artifact_id",
            "not found",
        ),
        (
            {},
            {"nope": "0000000000000000"},
            "configuration.input_artifact_bindings[0]",
            "unknown input artifact",
        ),
    ],
)
def test_configuration_is_checked_against_its_executable(stubs, params, artifacts, field, text):
    dataset = register_iris(stubs)
    before = count_configurations(stubs)
    error = rpc_error(
        stubs.configurations.CreateConfiguration, configuration_request(dataset, params, artifacts)
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    info = details(error)
    assert info["reason"] == "CONFIGURATION_INVALID"
    assert field in info["fields"], info["fields"]
    assert text in info["fields"][field]
    assert count_configurations(stubs) == before  # nothing half-written


ENUM_TEMPLATE = """
apiVersion: argoproj.io/v1alpha1
kind: WorkflowTemplate
metadata:
  name: enum-demo
  labels: {scenarios.ai.sap.com/id: enum-demo, ai.sap.com/version: "1"}
spec:
  entrypoint: main
  arguments:
    parameters:
      - {name: mode, enum: [fast, thorough], default: fast}
      - {name: depth, type: int, enum: [2, 4, 8]}
  templates:
    - {name: main, container: {image: busybox, command: ["true"]}}
"""


def test_a_parameter_enum_is_shown_and_enforced(stubs):
    registered = stubs.executables.CreateExecutable(
        exe.CreateExecutableRequest(definition=ENUM_TEMPLATE)
    ).executable
    values = {p.name: list(p.enum_values) for p in registered.parameters}
    assert values == {"mode": ["fast", "thorough"], "depth": ["2", "4", "8"]}
    got = stubs.executables.GetExecutable(exe.GetExecutableRequest(executable_id="enum-demo"))
    assert [list(p.enum_values) for p in got.executable.parameters] == list(values.values())

    request = configuration_request(
        "", {"mode": "quick", "depth": "4"}, {}, executable_id="enum-demo",
        scenario_id="enum-demo",
    )
    info = details(rpc_error(stubs.configurations.CreateConfiguration, request))
    assert info["fields"] == {
        "configuration.parameter_bindings[0]":
            "parameter 'mode' must be one of 'fast', 'thorough', not 'quick'"
    }
    request = configuration_request(
        "", {"depth": "8"}, {}, executable_id="enum-demo", scenario_id="enum-demo"
    )
    stubs.configurations.CreateConfiguration(request)  # mode takes its default


def test_an_enum_the_default_or_type_does_not_fit_is_refused_at_registration(stubs):
    text = ENUM_TEMPLATE.replace("default: fast", "default: slow").replace(
        "enum: [2, 4, 8]", "enum: [2, four]"
    )
    info = details(rpc_error(
        stubs.executables.CreateExecutable, exe.CreateExecutableRequest(definition=text)
    ))
    assert "not one of the enum values" in info["fields"]["spec.arguments.parameters[0].default"]
    assert "int" in info["fields"]["spec.arguments.parameters[1].enum[1]"]


def test_wrong_kind_artifact_is_refused(stubs):
    model = stubs.artifacts.CreateArtifact(
        art.CreateArtifactRequest(
            artifact=artifact_pb2.Artifact(
                name="m",
                kind=artifact_pb2.ARTIFACT_KIND_MODEL,
                url="file:///tmp/m",
                scenario_id="iris",
            )
        )
    ).artifact
    error = rpc_error(
        stubs.configurations.CreateConfiguration,
        configuration_request("", {}, {"iris-data": model.id}),
    )
    info = details(error)
    assert (
        "needs a dataset artifact"
        in info["fields"]["configuration.input_artifact_bindings[0].artifact_id"]
    )


def test_configuration_fills_defaults_and_is_valid(stubs):
    dataset = register_iris(stubs)
    created = stubs.configurations.CreateConfiguration(
        configuration_request(dataset, {"epochs": "7"})
    ).configuration
    bound = {b.key: b.value for b in created.parameter_bindings}
    assert bound == {"learning_rate": "0.1", "epochs": "7", "seed": "0"}
    assert created.executable_version == "1.0.0"


def test_unknown_executable_is_not_found(stubs):
    error = rpc_error(
        stubs.configurations.CreateConfiguration,
        configuration_request("", {}, {}, executable_id="no-such-exe"),
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert details(error)["reason"] == "EXECUTABLE_NOT_FOUND"


@pytest.mark.parametrize(
    "artifact,field",
    [
        (dict(name="", url="file:///x", scenario_id="iris", kind=1), "artifact.name"),
        (dict(name="x" * 300, url="file:///x", scenario_id="iris", kind=1), "artifact.name"),
        (dict(name="d", url="", scenario_id="iris", kind=1), "artifact.url"),
        (dict(name="d", url="not a url", scenario_id="iris", kind=1), "artifact.url"),
        (dict(name="d", url="file:///x", scenario_id="iris", kind=0), "artifact.kind"),
        (dict(name="d", url="file:///x", scenario_id="", kind=1), "artifact.scenario_id"),
        (
            dict(name="d", url="file:///x", scenario_id="iris", kind=1, description="x" * 6000),
            "artifact.description",
        ),
        (dict(name="d", url="file:///x", scenario_id="iris", kind=77), "artifact.kind"),
    ],
)
def test_artifact_validation_names_the_field(stubs, artifact, field):
    error = rpc_error(
        stubs.artifacts.CreateArtifact,
        art.CreateArtifactRequest(artifact=artifact_pb2.Artifact(**artifact)),
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in details(error)["fields"]


def test_artifact_for_unknown_scenario_is_not_found(stubs):
    error = rpc_error(
        stubs.artifacts.CreateArtifact,
        art.CreateArtifactRequest(
            artifact=artifact_pb2.Artifact(name="d", url="file:///x", scenario_id="nope", kind=1)
        ),
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND


def test_bad_page_tokens_and_sizes(stubs):
    for request, field in (
        (ex.ListExecutionsRequest(page_size=-1), "page_size"),
        (ex.ListExecutionsRequest(page_size=5000), "page_size"),
        (ex.ListExecutionsRequest(page_token="garbage!"), "page_token"),
        (ex.ListExecutionsRequest(page_token="eyJhIjoieCIsImYiOiJ5In0"), "page_token"),
    ):
        error = rpc_error(stubs.executions.ListExecutions, request)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field in details(error)["fields"]


def test_unknown_ids_are_not_found(stubs):
    for call, request in (
        (stubs.executions.GetExecution, ex.GetExecutionRequest(execution_id="ffff")),
        (stubs.executions.StopExecution, ex.StopExecutionRequest(execution_id="ffff")),
        (stubs.executions.DeleteExecution, ex.DeleteExecutionRequest(execution_id="ffff")),
        (stubs.artifacts.GetArtifact, art.GetArtifactRequest(artifact_id="ffff")),
        (
            stubs.configurations.GetConfiguration,
            cfg.GetConfigurationRequest(configuration_id="ffff"),
        ),
        (stubs.executions.CreateExecution, ex.CreateExecutionRequest(configuration_id="ffff")),
        (stubs.scenarios.GetScenario, scn.GetScenarioRequest(scenario_id="ffff")),
    ):
        error = rpc_error(call, request)
        assert error.code() == grpc.StatusCode.NOT_FOUND, call
        assert details(error)["reason"].endswith("_NOT_FOUND")


def test_empty_and_malformed_ids_are_invalid(stubs):
    for call, request, field in (
        (stubs.executions.GetExecution, ex.GetExecutionRequest(), "execution_id"),
        (
            stubs.executions.GetExecution,
            ex.GetExecutionRequest(execution_id="../x"),
            "execution_id",
        ),
        (
            stubs.executions.CreateExecution,
            ex.CreateExecutionRequest(configuration_id="c", request_id="x" * 200),
            "request_id",
        ),
    ):
        error = rpc_error(call, request)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field in details(error)["fields"]


@pytest.mark.driven  # no runtime from the start: executions stay as created
def test_resource_groups_are_isolated_both_ways(stubs, server):
    assert server.plane.runtime is None
    a, b = group("team-a"), group("team-b")
    for g in (a, b):
        stubs.executables.CreateExecutable(
            exe.CreateExecutableRequest(definition=(SAMPLE_TRAIN)), metadata=g
        )
    dataset_a = register_iris(stubs, a)
    config_a = iris_configuration(stubs, dataset_a, a)
    execution_a = stubs.executions.CreateExecution(
        ex.CreateExecutionRequest(configuration_id=config_a), metadata=a
    ).execution
    dataset_b = register_iris(stubs, b)
    config_b = iris_configuration(stubs, dataset_b, b)
    execution_b = stubs.executions.CreateExecution(
        ex.CreateExecutionRequest(configuration_id=config_b), metadata=b
    ).execution

    for mine, theirs, eid, cid, did in (
        (a, b, execution_a.id, config_a, dataset_a),
        (b, a, execution_b.id, config_b, dataset_b),
    ):
        for call, request in (
            (stubs.executions.GetExecution, ex.GetExecutionRequest(execution_id=eid)),
            (stubs.executions.StopExecution, ex.StopExecutionRequest(execution_id=eid)),
            (stubs.executions.DeleteExecution, ex.DeleteExecutionRequest(execution_id=eid)),
            (
                stubs.executions.ListExecutionHistory,
                ex.ListExecutionHistoryRequest(execution_id=eid),
            ),
            (
                stubs.configurations.GetConfiguration,
                cfg.GetConfigurationRequest(configuration_id=cid),
            ),
            (stubs.artifacts.GetArtifact, art.GetArtifactRequest(artifact_id=did)),
            (stubs.executions.CreateExecution, ex.CreateExecutionRequest(configuration_id=cid)),
        ):
            assert rpc_error(call, request, metadata=theirs).code() == grpc.StatusCode.NOT_FOUND
        # another group's artifact cannot be bound either
        error = rpc_error(
            stubs.configurations.CreateConfiguration,
            configuration_request(did, {}),
            metadata=theirs,
        )
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        outcome = stubs.executions.BatchStopExecutions(
            ex.BatchStopExecutionsRequest(execution_ids=[eid]), metadata=theirs
        ).outcomes[0]
        assert not outcome.ok and outcome.reason == "EXECUTION_NOT_FOUND"
        listed = stubs.executions.ListExecutions(ex.ListExecutionsRequest(), metadata=theirs)
        assert eid not in {e.id for e in listed.executions}
        assert listed.total_size == 1
        assert (
            stubs.executions.GetExecution(
                ex.GetExecutionRequest(execution_id=eid), metadata=mine
            ).execution.id
            == eid
        )
    # the default group sees neither
    default = stubs.executions.ListExecutions(ex.ListExecutionsRequest())
    assert default.total_size == 0


@pytest.mark.driven  # no runtime from the start: executions stay as created
def test_pagination_has_no_duplicates_or_gaps(stubs, server):
    assert server.plane.runtime is None
    dataset = register_iris(stubs)
    config = iris_configuration(stubs, dataset)
    created = [
        stubs.executions.CreateExecution(
            ex.CreateExecutionRequest(configuration_id=config)
        ).execution.id
        for _ in range(57)
    ]
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = stubs.executions.ListExecutions(
            ex.ListExecutionsRequest(page_size=10, page_token=token)
        )
        assert page.total_size == 57
        assert len(page.executions) == 10 or not page.next_page_token  # no short page with a token
        seen += [e.id for e in page.executions]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert pages == 6
    assert seen == list(reversed(created))  # newest first, each exactly once
    # a token is bound to its filter
    first = stubs.executions.ListExecutions(ex.ListExecutionsRequest(page_size=10))
    error = rpc_error(
        stubs.executions.ListExecutions,
        ex.ListExecutionsRequest(
            page_size=10, page_token=first.next_page_token, scenario_id="iris"
        ),
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(error)["reason"] == "INVALID_PAGE_TOKEN"
    # filters and totals
    pending = stubs.executions.ListExecutions(
        ex.ListExecutionsRequest(statuses=[1], configuration_id=config, page_size=1)
    )
    assert pending.total_size == 57 and len(pending.executions) == 1


@pytest.mark.driven  # no runtime from the start: executions stay as created
def test_creates_written_together_each_get_their_own_outcome(stubs, server):
    assert server.plane.runtime is None
    dataset = register_iris(stubs)
    config = stubs.configurations.CreateConfiguration(
        configuration_request(dataset, {})
    ).configuration.id
    other = stubs.configurations.CreateConfiguration(
        configuration_request(dataset, {"epochs": "3"})
    ).configuration.id
    plane = server.plane

    async def together():
        create = plane.create_execution_grouped
        gone = asyncio.ensure_future(create("default", config, "req-gone"))
        calls = [
            create("default", config, ""),
            create("default", config, "req-1"),
            create("default", config, "req-1"),
            create("default", other, "req-1"),
            create("default", "no-such-config", ""),
        ]
        await asyncio.sleep(0)  # the first create is waiting for its write
        gone.cancel()
        return await asyncio.gather(*calls, return_exceptions=True)

    plain, first, again, reused, missing = server.call(together())
    assert plain.id != first.id and again.id == first.id
    assert isinstance(reused, FailedPrecondition) and reused.reason == "REQUEST_ID_REUSED"
    assert isinstance(missing, NotFound)
    listed = stubs.executions.ListExecutions(ex.ListExecutionsRequest())
    assert {e.id for e in listed.executions} == {plain.id, first.id} and listed.total_size == 2
    for execution in listed.executions:
        read = stubs.executions.GetExecution(ex.GetExecutionRequest(execution_id=execution.id))
        assert [t.to_status for t in read.execution.history] == [1]  # PENDING


@pytest.mark.driven  # no runtime from the start: executions stay as created
def test_creates_that_arrive_during_a_write_share_the_next_commit(stubs, server):
    assert server.plane.runtime is None
    config = stubs.configurations.CreateConfiguration(
        configuration_request(register_iris(stubs), {})
    ).configuration.id
    store = server.plane.store
    sizes: list[int] = []
    real = store.sync.create_executions

    def counting(items, *rest, **kwargs):
        sizes.append(len(items))
        return real(items, *rest, **kwargs)

    store.sync.create_executions = counting
    busy, release = threading.Event(), threading.Event()

    def hold_the_writer(_sync):
        busy.set()
        release.wait(10)

    async def scenario():
        create = server.plane.create_execution_grouped
        holder = asyncio.ensure_future(store.run_write(hold_the_writer))
        await asyncio.to_thread(busy.wait, 10)
        first = asyncio.ensure_future(create("default", config))
        while not sizes and server.plane._writing is None:
            await asyncio.sleep(0.001)
        rest = [asyncio.ensure_future(create("default", config)) for _ in range(9)]
        while len(server.plane._creates) < 9:
            await asyncio.sleep(0.001)
        release.set()
        await holder
        return await asyncio.gather(first, *rest)

    try:
        created = server.call(scenario(), timeout=20)
    finally:
        release.set()
        store.sync.create_executions = real
    assert len({e.id for e in created}) == 10
    assert sizes == [1, 9]  # the first alone, the nine that queued behind it in one commit


@pytest.mark.driven  # no runtime from the start: executions stay as created
def test_idempotent_creates_return_the_first_result(stubs, server):
    assert server.plane.runtime is None
    dataset = register_iris(stubs)
    again = stubs.artifacts.CreateArtifact(
        art.CreateArtifactRequest(
            artifact=artifact_pb2.Artifact(
                name="d", kind=1, url="file:///data/d.csv", scenario_id="iris"
            ),
            request_id="req-art-1",
        )
    ).artifact
    twice = stubs.artifacts.CreateArtifact(
        art.CreateArtifactRequest(
            artifact=artifact_pb2.Artifact(
                name="d", kind=1, url="file:///data/d.csv", scenario_id="iris"
            ),
            request_id="req-art-1",
        )
    ).artifact
    assert again.id == twice.id
    first = stubs.configurations.CreateConfiguration(
        configuration_request(dataset, {}, request_id="req-cfg-1")
    ).configuration
    second = stubs.configurations.CreateConfiguration(
        configuration_request(dataset, {}, request_id="req-cfg-1")
    ).configuration
    assert first.id == second.id
    e1 = stubs.executions.CreateExecution(
        ex.CreateExecutionRequest(configuration_id=first.id, request_id="req-ex-1")
    ).execution
    e2 = stubs.executions.CreateExecution(
        ex.CreateExecutionRequest(configuration_id=first.id, request_id="req-ex-1")
    ).execution
    assert e1.id == e2.id
    assert stubs.executions.ListExecutions(ex.ListExecutionsRequest()).total_size == 1
    # the same id with a different request is refused, not silently merged
    error = rpc_error(
        stubs.configurations.CreateConfiguration,
        configuration_request(dataset, {"epochs": "3"}, request_id="req-cfg-1"),
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert details(error)["reason"] == "REQUEST_ID_REUSED"
    # the executables directory serves every resource group: another group registering
    # the same definition finds it there
    other = stubs.executables.CreateExecutable(
        exe.CreateExecutableRequest(definition=SAMPLE_TRAIN), metadata=group("other")
    )
    assert not other.created and other.executable.version == "1.0.0"


SAMPLE_TRAIN = (
    __import__("pathlib").Path(__file__).resolve().parent.parent
    / "samples"
    / "executables"
    / "iris-train.yaml"
).read_text()


def test_executable_registration_and_versions(stubs):
    same = stubs.executables.CreateExecutable(exe.CreateExecutableRequest(definition=SAMPLE_TRAIN))
    assert not same.created and same.executable.id == "iris-train"
    changed = (
        SAMPLE_TRAIN.replace('default: "20"', 'default: "21"')
        .replace("default: '20'", "default: '21'")
        .replace("default: 20", "default: 21")
    )
    assert changed != SAMPLE_TRAIN
    error = rpc_error(
        stubs.executables.CreateExecutable, exe.CreateExecutableRequest(definition=changed)
    )
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    bumped = (
        changed.replace('ai.sap.com/version: "1.0.0"', 'ai.sap.com/version: "1.1.0"')
        .replace("ai.sap.com/version: '1.0.0'", "ai.sap.com/version: '1.1.0'")
        .replace("ai.sap.com/version: 1.0.0", "ai.sap.com/version: 1.1.0")
    )
    created = stubs.executables.CreateExecutable(exe.CreateExecutableRequest(definition=bumped))
    assert created.created and created.executable.version == "1.1.0"
    newest = stubs.executables.GetExecutable(exe.GetExecutableRequest(executable_id="iris-train"))
    assert newest.executable.version == "1.1.0"
    listed = stubs.executables.ListExecutables(exe.ListExecutablesRequest(all_versions=True))
    assert [(e.id, e.version) for e in listed.executables] == [
        ("iris-infer", "1.0.0"),
        ("iris-train", "1.0.0"),
        ("iris-train", "1.1.0"),
    ]
    bad = rpc_error(
        stubs.executables.CreateExecutable,
        exe.CreateExecutableRequest(definition="kind: Deployment\nmetadata: {name: x}\n"),
    )
    assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(bad)["fields"]


def test_health_reflection_and_meta(stubs, server, backend):
    health = health_pb2_grpc.HealthStub(stubs.channel)
    assert (
        health.Check(health_pb2.HealthCheckRequest()).status
        == health_pb2.HealthCheckResponse.SERVING
    )
    assert (
        health.Check(health_pb2.HealthCheckRequest(service="trainyard.v1.ExecutionService")).status
        == health_pb2.HealthCheckResponse.SERVING
    )
    reflect = reflection_pb2_grpc.ServerReflectionStub(stubs.channel)
    responses = reflect.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    names = {s.name for r in responses for s in r.list_services_response.service}
    assert "trainyard.v1.ExecutionService" in names and "grpc.health.v1.Health" in names
    info = stubs.meta.GetMeta(meta.GetMetaRequest())
    assert info.api_version == "v1" and info.capabilities.bulk_updates
    assert info.store == backend


def test_no_traceback_reaches_the_client(stubs, server):
    def broken(*args, **kwargs):
        raise RuntimeError("secret internal detail")

    server.run_sync(setattr, server.plane, "get_execution_with_context", broken)
    error = rpc_error(stubs.executions.GetExecution, ex.GetExecutionRequest(execution_id="abc"))
    assert error.code() == grpc.StatusCode.INTERNAL
    assert "secret" not in error.details() and "Traceback" not in error.details()
    info = details(error)
    assert info["reason"] == "INTERNAL_ERROR" and info["metadata"]["request_id"]


def test_log_lines_of_a_call_carry_its_request_id_rpc_and_group(stubs, server):
    seen = {}

    def spy(resource_group, execution_id):
        seen.update(call_context.add_call_context(None, "info", {"event": "x"}))
        raise NotFound.of("execution", execution_id)

    server.run_sync(setattr, server.plane, "get_execution_with_context", spy)
    error = rpc_error(
        stubs.executions.GetExecution,
        ex.GetExecutionRequest(execution_id="abc"),
        metadata=(("x-request-id", "req-42"), ("ai-resource-group", "g1")),
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert seen == {
        "event": "x",
        "request_id": "req-42",
        "rpc": "/trainyard.v1.ExecutionService/GetExecution",
        "resource_group": "g1",
    }
    # outside a call nothing is added; configure_logging() puts the processor in place
    assert call_context.add_call_context(None, "info", {"event": "y"}) == {"event": "y"}
    assert call_context.add_call_context in structlog.get_config()["processors"]


def test_restart_on_the_same_database_keeps_everything(server_factory, tmp_path):
    from tests.conftest import make_stubs

    first = server_factory(runtime="none")
    stubs = make_stubs(first.address)
    dataset = register_iris(stubs)
    config = iris_configuration(stubs, dataset)
    execution = stubs.executions.CreateExecution(
        ex.CreateExecutionRequest(configuration_id=config)
    ).execution
    first.run_sync(
        first.plane.store.force_status,
        execution.id,
        __import__("server.domain.models", fromlist=["Status"]).Status.DEAD,
    )
    stubs.channel.close()
    first.stop()

    second = server_factory()
    stubs = make_stubs(second.address)
    try:
        got = stubs.executions.GetExecution(
            ex.GetExecutionRequest(execution_id=execution.id)
        ).execution
        assert got.status == 4  # DEAD
        assert [t.cause for t in got.history] == ["created", "forced"]
        assert (
            stubs.artifacts.GetArtifact(art.GetArtifactRequest(artifact_id=dataset)).artifact.name
            == "iris"
        )
        assert (
            stubs.configurations.GetConfiguration(
                cfg.GetConfigurationRequest(configuration_id=config)
            ).configuration.name
            == "iris-config"
        )
        assert stubs.executions.ListExecutions(ex.ListExecutionsRequest()).total_size == 1
        assert len(stubs.executables.ListExecutables(exe.ListExecutablesRequest()).executables) == 2
    finally:
        stubs.channel.close()


@pytest.mark.parametrize("field", ["scenario_id", "executable_id", "configuration_id"])
def test_a_list_filter_with_a_nul_character_is_the_callers_error(stubs, field):
    """PostgreSQL refuses text holding NUL: such a filter is INVALID_ARGUMENT naming its
    field on every backend, never INTERNAL."""
    error = rpc_error(
        stubs.executions.ListExecutions, ex.ListExecutionsRequest(**{field: "a\x00b"})
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert "NUL" in details(error)["fields"][field]


def test_every_method_is_served_from_one_table_none_as_a_registered_method(
    server_factory, monkeypatch
):
    """A grpc.aio server waits, for each call it accepts, on one pending request per
    registered method (server/api/methods.py), so none is registered; every method of
    every service still answers."""
    registered: list[str] = []
    make = grpc.aio.server

    def recording(*args, **kwargs):
        made = make(*args, **kwargs)
        made.add_registered_method_handlers = lambda name, handlers: registered.append(name)
        return made

    monkeypatch.setattr(grpc.aio, "server", recording)
    server = server_factory()
    assert registered == []
    channel = grpc.insecure_channel(server.address)
    try:
        for service in SERVICE_NAMES:
            descriptor = descriptor_pool.Default().FindServiceByName(service)
            for method in descriptor.methods:
                path = f"/{service}/{method.name}"
                if method.server_streaming:
                    call = channel.unary_stream(path)(b"", timeout=1)
                    with contextlib.suppress(grpc.RpcError):
                        for _ in call:
                            break
                    call.cancel()
                    code = call.code()
                else:
                    try:
                        channel.unary_unary(path)(b"", timeout=10)
                        code = grpc.StatusCode.OK
                    except grpc.RpcError as error:
                        code = error.code()
                assert code != grpc.StatusCode.UNIMPLEMENTED, path
        health = health_pb2_grpc.HealthStub(channel)
        assert health.Check(health_pb2.HealthCheckRequest()).status == (
            health_pb2.HealthCheckResponse.SERVING
        )
    finally:
        channel.close()
