"""The contract's details off the happy path: what errors echo and how large their
trailers get, ErrorInfo on over-size requests, one source of error reasons, enum and
YAML checks, the validation order of ListLogs and TailLogs, documented sizes."""

from __future__ import annotations

import re
from pathlib import Path

import grpc
import pytest

from server.api import logs as api_logs
from server.api.errors import MAX_STATUS_BYTES, receive_limit, to_status
from server.domain import logsink
from server.domain.errors import DomainError, InvalidArgument, Reason
from tests.conftest import ServerThread, make_settings, make_stubs
from tests.helpers import details, register_iris, rpc_error
from trainyard.v1 import configuration_pb2, error_reason_pb2
from trainyard.v1 import configuration_service_pb2 as cfg
from trainyard.v1 import executable_service_pb2 as exe
from trainyard.v1 import execution_service_pb2 as ex
from trainyard.v1 import log_service_pb2 as lpb

PROTOS = Path(__file__).resolve().parent.parent / "protos" / "trainyard" / "v1"
# gRPC's default limit of the metadata a client accepts (headers or trailers).
METADATA_LIMIT = 8 * 1024


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    server = ServerThread(
        make_settings(tmp_path_factory.mktemp("contract"), runtime="none")
    ).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def api(served):
    stubs = make_stubs(served.address)
    yield stubs
    stubs.channel.close()


def trailer_bytes(error: grpc.RpcError) -> int:
    """The size on the wire of an error's trailers: keys, values (binary ones in
    base64, grpc-message percent-encoded) and the 32 bytes HTTP/2 counts per entry."""
    import base64
    import urllib.parse

    size = 32 + len("grpc-message") + len(urllib.parse.quote(error.details() or "", safe=" "))
    for key, value in error.trailing_metadata() or ():
        raw = base64.b64encode(value) if isinstance(value, bytes) else value.encode()
        size += 32 + len(key) + len(raw)
    return size


# ------------------------------------------------------------------ error reasons


def test_reasons_mirror_the_error_reason_enum():
    """One source of truth: the domain's Reason holds exactly the enum's names."""
    names = {
        name.removeprefix("ERROR_REASON_")
        for name in error_reason_pb2.ErrorReason.keys()
        if name != "ERROR_REASON_UNSPECIFIED"
    }
    assert {str(r) for r in Reason} == names
    for reason in Reason:
        assert reason.value == reason.name


def test_a_reason_outside_the_enum_cannot_be_raised():
    with pytest.raises(ValueError):
        DomainError(message="x", reason="SOMETHING_MADE_UP")
    with pytest.raises(ValueError):
        InvalidArgument.of("f", "bad", reason="NOT_A_REASON")


def test_every_reason_written_in_the_server_is_in_the_enum():
    """Reasons are written as Reason members; no string literal names one."""
    root = Path(__file__).resolve().parent.parent / "server"
    literal = re.compile(r"""reason\s*=\s*f?["']""")
    offenders = [
        f"{path.relative_to(root)}:{n}"
        for path in root.rglob("*.py")
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if literal.search(line)
    ]
    assert not offenders, offenders


def test_an_invalid_transition_is_sent_with_its_enum_reason():
    """A refused transition reaches the client with INVALID_TRANSITION, a name the
    enum lists (it was a free string before)."""
    from server.domain.lifecycle import check_transition
    from server.domain.models import Status

    with pytest.raises(DomainError) as caught:
        check_transition("e1", Status.COMPLETED, Status.RUNNING)
    code, _, _ = to_status(caught.value, "r1")
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert f"ERROR_REASON_{caught.value.reason}" in error_reason_pb2.ErrorReason.keys()


# ------------------------------------------------------------- what errors echo


def test_a_huge_bad_parameter_value_gets_its_validation_error(api):
    """A 10 KiB bad value: INVALID_ARGUMENT naming the binding, with the value cut
    short, and trailers under gRPC's default metadata limit (it used to overflow them
    and reach the client as RESOURCE_EXHAUSTED)."""
    dataset = register_iris(api)
    value = "x" * (10 * 1024)
    error = rpc_error(
        api.configurations.CreateConfiguration,
        cfg.CreateConfigurationRequest(
            configuration=configuration_pb2.Configuration(
                name="c",
                executable_id="iris-train",
                scenario_id="iris",
                parameter_bindings=[
                    configuration_pb2.ParameterBinding(key="learning_rate", value=value)
                ],
                input_artifact_bindings=[
                    configuration_pb2.InputArtifactBinding(key="iris-data", artifact_id=dataset)
                ],
            )
        ),
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    got = details(error)
    assert got["reason"] == "CONFIGURATION_INVALID"
    assert any(f.startswith("configuration.parameter_bindings[0]") for f in got["fields"])
    assert trailer_bytes(error) < METADATA_LIMIT / 2
    assert len(error.details()) < 1024


def test_thousands_of_violations_stay_under_the_metadata_limit():
    many = InvalidArgument(
        message="bad " + "y" * 50_000,
        violations=[
            InvalidArgument.of(f"field_{i}" * 20, "z" * 5000).violations[0] for i in range(5000)
        ],
        metadata={"k": "v" * 50_000},
    )
    _, message, status = to_status(many, "r" * 10_000)
    assert len(status) <= MAX_STATUS_BYTES + 1024
    assert len(message.encode()) <= 400
    from google.rpc import error_details_pb2, status_pb2

    parsed = status_pb2.Status.FromString(status)
    bad = error_details_pb2.BadRequest()
    assert any(d.Unpack(bad) for d in parsed.details)
    assert 1 < len(bad.field_violations) < 5000
    assert bad.field_violations[-1].description.endswith("more, not listed")


# ----------------------------------------------------------- over-size messages


def test_a_request_over_the_message_limit_gets_limit_exceeded(api):
    """A 5 MiB id (over the 4 MiB limit, under gRPC's own receive limit): status
    RESOURCE_EXHAUSTED with the ErrorInfo error_reason.proto promises."""
    error = rpc_error(
        api.executions.GetExecution, ex.GetExecutionRequest(execution_id="e" * (5 * 1024 * 1024))
    )
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    got = details(error)
    assert got["reason"] == "LIMIT_EXCEEDED"
    assert got["metadata"]["limit"] == str(4 * 1024 * 1024)


def test_a_streaming_request_over_the_limit_gets_limit_exceeded(api):
    stream = api.logs.TailLogs(lpb.TailLogsRequest(execution_id="e" * (5 * 1024 * 1024)))
    error = rpc_error(list, stream)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert details(error)["reason"] == "LIMIT_EXCEEDED"


def test_the_receive_limit_leaves_room_for_the_check():
    assert receive_limit(4 * 1024 * 1024) > 10 * 1024 * 1024


# ------------------------------------------------------------------ field checks


def test_list_logs_checks_order(api):
    error = rpc_error(api.logs.ListLogs, lpb.ListLogsRequest(execution_id="nope", order=7))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "order" in details(error)["fields"]


def test_list_logs_page_size_and_its_deprecated_limit(api):
    both = rpc_error(
        api.logs.ListLogs, lpb.ListLogsRequest(execution_id="nope", page_size=5, limit=6)
    )
    assert both.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "page_size" in details(both)["fields"]
    big = rpc_error(api.logs.ListLogs, lpb.ListLogsRequest(execution_id="nope", page_size=10**6))
    assert "page_size" in details(big)["fields"]
    old = rpc_error(api.logs.ListLogs, lpb.ListLogsRequest(execution_id="nope", limit=10**6))
    assert "limit" in details(old)["fields"]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"after_sequence": -1}, "after_sequence"),
        ({"steps": [""]}, "steps[0]"),
        ({"steps": ["s"] * 101}, "steps"),
    ],
)
def test_list_logs_and_tail_logs_validate_in_the_same_order(api, fields, field):
    """Both check the fields before they look the execution up: a bad field of a
    missing execution is INVALID_ARGUMENT naming the field on either rpc."""
    listed = rpc_error(api.logs.ListLogs, lpb.ListLogsRequest(execution_id="missing", **fields))
    tailed = rpc_error(
        list, api.logs.TailLogs(lpb.TailLogsRequest(execution_id="missing", **fields))
    )
    for error in (listed, tailed):
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
        assert field in details(error)["fields"]


def test_a_yaml_syntax_error_names_definition_with_line_and_column(api):
    text = "apiVersion: argoproj.io/v1alpha1\nkind: WorkflowTemplate\nmetadata: {name: [x\n"
    error = rpc_error(
        api.executables.CreateExecutable, exe.CreateExecutableRequest(definition=text)
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    got = details(error)
    assert set(got["fields"]) == {"definition"}
    assert re.search(r"line \d+, column \d+", got["fields"]["definition"])
    assert got["metadata"]["line"] == "4" or got["metadata"]["line"] == "3"
    assert got["metadata"]["column"].isdigit()


def test_templates_use_the_c_yaml_loader():
    import yaml

    from server.domain import templates

    assert yaml.__with_libyaml__
    assert templates.YAML_LOADER is yaml.CSafeLoader


# --------------------------------------------------------------- documented sizes


def test_documented_sizes_match_the_code():
    service = (PROTOS / "log_service.proto").read_text()
    lines, mib = re.search(
        r"a message holds at most (\d+) lines and (\d+) MiB", service.replace("\n  //", "")
    ).groups()
    assert int(lines) == api_logs.MESSAGE_LINES
    assert int(mib) * 1024 * 1024 == api_logs.MESSAGE_BYTES
    line = (PROTOS / "log.proto").read_text()
    chars = re.search(r"at most (\d+) characters", line).group(1)
    assert int(chars) == logsink.MAX_LINE_CHARS


def test_request_metadata_is_documented_where_client_authors_look():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    for key in ("ai-resource-group", "x-request-id"):
        assert key in readme
        for proto in ("execution_service.proto", "meta_service.proto"):
            assert key in (PROTOS / proto).read_text(), (key, proto)
