"""Property-based fuzzing of every request message of every trainyard.v1 rpc: random
strings, huge sizes, extreme numbers, unknown enum values, bad page tokens. Each answer
is a documented status code (never INTERNAL or UNKNOWN), and a refused call leaves the
database exactly as it was."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import descriptor as d
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import make_stubs
from tests.helpers import iris_configuration, register_iris
from trainyard.v1 import (  # noqa: F401 - imported to load every service descriptor
    artifact_service_pb2,
    configuration_service_pb2,
    executable_service_pb2,
    execution_service_pb2,
    log_service_pb2,
    meta_service_pb2,
    scenario_service_pb2,
)

pytestmark = pytest.mark.backends("sqlite", "postgresql")

ALLOWED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.DEADLINE_EXCEEDED,  # follow streams that are still open
}

TABLES = [
    "scenario",
    "executable",
    "artifact",
    "configuration",
    "execution",
    "execution_count",
    "transition",
    "log_line",
    "log_purge",
    "idempotency_key",
    "metric_owner",
    "metric_series",
    "metric_point",
    "metric_tag",
    "metric_custom_info",
]


def methods() -> list[d.MethodDescriptor]:
    """Every rpc of every service the trainyard.v1 package defines (each *_service_pb2
    module imported here, so none is missed for not being loaded yet); the server
    serves exactly these services."""
    import importlib
    import pkgutil

    import trainyard.v1
    from server.app import SERVICE_NAMES

    services = {}
    for module in pkgutil.iter_modules(trainyard.v1.__path__):
        if module.name.endswith("_service_pb2"):
            loaded = importlib.import_module(f"trainyard.v1.{module.name}")
            for service in loaded.DESCRIPTOR.services_by_name.values():
                services[service.full_name] = service
    missing = set(SERVICE_NAMES) - set(services)
    assert not missing, f"served but not fuzzed: {sorted(missing)}"
    return [m for name in sorted(services) for m in services[name].methods]


INT_RANGES = {
    d.FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    d.FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    d.FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    d.FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    d.FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    d.FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
}


def text(known: list[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.text(max_size=40),
        st.sampled_from(known) if known else st.just(""),
        st.just(""),
        st.just("x" * 5000),
        st.text(alphabet="abcdef0123456789", min_size=16, max_size=16),
        st.just("eyJhIjoxLCJmIjoieCJ9"),  # a well-formed token for another filter
    )


def field_value(field: d.FieldDescriptor, known: list[str], depth: int) -> st.SearchStrategy:
    t = field.type
    if t == d.FieldDescriptor.TYPE_STRING:
        return text(known)
    if t == d.FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=64)
    if t == d.FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if t in (d.FieldDescriptor.TYPE_DOUBLE, d.FieldDescriptor.TYPE_FLOAT):
        return st.floats(allow_nan=True, allow_infinity=True, width=32)
    if t == d.FieldDescriptor.TYPE_ENUM:
        return st.one_of(
            st.sampled_from([v.number for v in field.enum_type.values]), st.integers(-5, 99)
        )
    if t in INT_RANGES:
        lo, hi = INT_RANGES[t]
        return st.one_of(st.integers(lo, hi), st.integers(-2, 2000), st.sampled_from([lo, hi]))
    if t == d.FieldDescriptor.TYPE_MESSAGE:
        return message(field.message_type, known, depth + 1)
    return st.nothing()


@st.composite
def message(draw, descriptor: d.Descriptor, known: list[str], depth: int = 0):
    from google.protobuf import message_factory

    cls = message_factory.GetMessageClass(descriptor)
    msg = cls()
    if descriptor.full_name == "google.protobuf.Timestamp":
        msg.seconds = draw(st.integers(-62135596800, 253402300799))
        msg.nanos = draw(st.integers(0, 999_999_999))
        return msg
    if depth > 2:
        return msg
    for field in descriptor.fields:
        if not draw(st.booleans()):
            continue
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            key_f = field.message_type.fields_by_name["key"]
            value_f = field.message_type.fields_by_name["value"]
            entries = draw(
                st.dictionaries(
                    field_value(key_f, known, depth), field_value(value_f, known, depth), max_size=3
                )
            )
            target = getattr(msg, field.name)
            for k, v in entries.items():
                if value_f.message_type is not None:
                    target[k].CopyFrom(v)
                else:
                    target[k] = v
            continue
        if field.is_repeated:
            values = draw(st.lists(field_value(field, known, depth), max_size=3))
            target = getattr(msg, field.name)
            for v in values:
                if field.message_type is not None:
                    target.add().CopyFrom(v)
                else:
                    target.append(v)
            continue
        value = draw(field_value(field, known, depth))
        if field.message_type is not None:
            getattr(msg, field.name).CopyFrom(value)
        else:
            setattr(msg, field.name, value)
    return msg


def snapshot(server) -> tuple:
    """Row counts of every table, and every execution's status and last change."""

    def read():
        db = server.plane.store.sync.db
        counts = tuple(
            db.execute_sql(f"SELECT COUNT(*) FROM {table}").fetchone()[0] for table in TABLES
        )
        executions = db.execute_sql(
            "SELECT execution_id, status, target_status, modified_us FROM execution ORDER BY id"
        ).fetchall()
        return counts, tuple(executions)

    return server.run_sync(read)


@pytest.fixture
def world(server):
    assert server.plane.runtime is None  # none from the start (marker driven)
    stubs = make_stubs(server.address)
    dataset = register_iris(stubs)
    config = iris_configuration(stubs, dataset)
    execution = stubs.executions.CreateExecution(
        execution_service_pb2.CreateExecutionRequest(configuration_id=config)
    ).execution
    known = [dataset, config, execution.id, "iris", "iris-train", "iris-infer", "default"]
    yield server, stubs, known
    stubs.channel.close()


@pytest.mark.driven
@pytest.mark.parametrize("method", methods(), ids=lambda m: f"{m.containing_service.name}.{m.name}")
def test_fuzzed_requests_get_documented_codes(world, method):
    server, stubs, known = world
    channel = stubs.channel
    path = f"/{method.containing_service.full_name}/{method.name}"
    from google.protobuf import message_factory

    response_cls = message_factory.GetMessageClass(method.output_type)
    if method.server_streaming:
        call = channel.unary_stream(
            path,
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=response_cls.FromString,
        )
    else:
        call = channel.unary_unary(
            path,
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=response_cls.FromString,
        )

    @settings(
        max_examples=40,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(
        request=message(method.input_type, known),
        group=st.sampled_from(["default", "other", "bad group", ""]),
    )
    def check(request, group):
        metadata = (("ai-resource-group", group),) if group else ()
        before = snapshot(server)
        code = grpc.StatusCode.OK
        try:
            if method.server_streaming:
                for i, _ in enumerate(call(request, metadata=metadata, timeout=0.5)):
                    if i > 50:
                        break
            else:
                call(request, metadata=metadata, timeout=10)
        except grpc.RpcError as error:
            code = error.code()
            assert code in ALLOWED, (code, error.details(), request)
        if code != grpc.StatusCode.OK:
            assert snapshot(server) == before, (code, request)

    check()
