"""The audit trail holds exactly the changes made, with their principals and request
ids, written with the changes (nothing from refused calls), on both backends; admins
read it paged and filtered; created resources name who created them."""

from __future__ import annotations

import grpc
import pytest

from server.domain.models import Status
from tests.authkit import GROUP, make_tokens
from tests.helpers import details, iris_configuration, register_iris, rpc_error
from tests.workflow_helpers import python, workflow
from trainyard.v1 import audit_service_pb2 as au
from trainyard.v1 import audit_service_pb2_grpc
from trainyard.v1 import executable_service_pb2 as exe
from trainyard.v1 import execution_service_pb2 as ex

pytestmark = [pytest.mark.backends("sqlite", "postgresql"), pytest.mark.driven]


def _md(tokens, token: str, request_id: str, group: str = GROUP):
    return (*tokens.md(token, group), ("x-request-id", request_id))


def _trail(audit, md, **filters) -> list[au.ListAuditEventsRequest]:
    """Every event, page by page (2 a page)."""
    events, token = [], ""
    while True:
        page = audit.ListAuditEvents(
            au.ListAuditEventsRequest(page_size=2, page_token=token, **filters), metadata=md
        )
        events.extend(page.events)
        token = page.next_page_token
        if not token:
            return events


def test_audit_trail_has_exactly_the_changes(server_factory, stubs_for, tmp_path):
    tokens = make_tokens(tmp_path / "tokens.json")
    server = server_factory(auth_tokens=tokens.file, default_resource_group=GROUP)
    stubs = stubs_for(server)
    audit = audit_service_pb2_grpc.AuditServiceStub(stubs.channel)
    op = tokens.operator

    # Changes that are made.
    stubs.executables.CreateExecutable(
        exe.CreateExecutableRequest(definition=workflow("audited", [python("main", "print(1)")])),
        metadata=_md(tokens, tokens.admin, "r-exe"),
    )
    dataset = register_iris(stubs, metadata=_md(tokens, op, "r-art"))
    configuration = iris_configuration(stubs, dataset, metadata=_md(tokens, op, "r-cfg"))
    create = ex.CreateExecutionRequest(configuration_id=configuration, request_id="once")
    first = stubs.executions.CreateExecution(create, metadata=_md(tokens, op, "r-ex1")).execution
    # The retry of an idempotent create changes nothing.
    again = stubs.executions.CreateExecution(create, metadata=_md(tokens, op, "r-ex1b"))
    assert again.execution.id == first.id
    second = stubs.executions.CreateExecution(
        ex.CreateExecutionRequest(configuration_id=configuration),
        metadata=_md(tokens, tokens.admin, "r-ex2"),
    ).execution
    stubs.executions.StopExecution(
        ex.StopExecutionRequest(execution_id=first.id), metadata=_md(tokens, op, "r-stop")
    )
    server.run_sync(server.plane.store.sync.force_status, first.id, Status.STOPPED)
    stubs.executions.DeleteExecution(
        ex.DeleteExecutionRequest(execution_id=first.id), metadata=_md(tokens, op, "r-del")
    )

    # Refused calls: none leaves a trace.
    refused = [
        # a viewer may not create
        (
            stubs.executions.CreateExecution,
            ex.CreateExecutionRequest(configuration_id=configuration),
            _md(tokens, tokens.viewer, "x1"),
        ),
        # no token
        (
            stubs.executions.CreateExecution,
            ex.CreateExecutionRequest(configuration_id=configuration),
            (("ai-resource-group", GROUP), ("x-request-id", "x2")),
        ),
        # an operator of another group
        (
            stubs.executions.StopExecution,
            ex.StopExecutionRequest(execution_id=second.id),
            _md(tokens, tokens.other_operator, "x3"),
        ),
        # the lifecycle refuses: PENDING cannot be deleted
        (
            stubs.executions.DeleteExecution,
            ex.DeleteExecutionRequest(execution_id=second.id),
            _md(tokens, op, "x4"),
        ),
        # already deleted
        (
            stubs.executions.StopExecution,
            ex.StopExecutionRequest(execution_id=first.id),
            _md(tokens, op, "x5"),
        ),
        # an unknown configuration
        (
            stubs.executions.CreateExecution,
            ex.CreateExecutionRequest(configuration_id="f" * 32),
            _md(tokens, op, "x6"),
        ),
        # an operator may not register executables
        (
            stubs.executables.CreateExecutable,
            exe.CreateExecutableRequest(definition=workflow("nope", [python("main", "1")])),
            _md(tokens, op, "x7"),
        ),
    ]
    for call, request, md in refused:
        rpc_error(call, request, metadata=md)

    admin_md = tokens.md(tokens.admin)
    events = _trail(audit, admin_md)
    assert [
        (e.principal, e.action, e.resource_type, e.resource_id, e.request_id, e.resource_group)
        for e in events
    ] == [
        ("otto", "delete", "execution", first.id, "r-del", GROUP),
        ("otto", "stop", "execution", first.id, "r-stop", GROUP),
        ("ada", "create", "execution", second.id, "r-ex2", GROUP),
        ("otto", "create", "execution", first.id, "r-ex1", GROUP),
        ("otto", "create", "configuration", configuration, "r-cfg", GROUP),
        ("otto", "create", "artifact", dataset, "r-art", GROUP),
        ("ada", "register", "executable", "audited@1.0.0", "r-exe", GROUP),
    ]
    assert all(e.outcome == "ok" and e.time.seconds > 0 for e in events)
    assert [e.id for e in events] == sorted((e.id for e in events), reverse=True)

    # Filters.
    by_ada = _trail(audit, admin_md, principal="ada")
    assert [e.request_id for e in by_ada] == ["r-ex2", "r-exe"]
    of_first = _trail(audit, admin_md, resource_id=first.id)
    assert [e.action for e in of_first] == ["delete", "stop", "create"]
    assert [e.request_id for e in _trail(audit, admin_md, action="stop")] == ["r-stop"]
    since = events[2].time
    after = _trail(audit, admin_md, start_time=since)
    assert [e.request_id for e in after][:3] == ["r-del", "r-stop", "r-ex2"]
    assert all(e.time.ToMicroseconds() >= since.ToMicroseconds() for e in after)
    before = _trail(audit, admin_md, end_time=since)
    assert before and all(e.time.ToMicroseconds() < since.ToMicroseconds() for e in before)
    assert len(after) + len(before) == len(events)

    # Who created what.
    got = stubs.executions.GetExecution(
        ex.GetExecutionRequest(execution_id=second.id), metadata=admin_md
    ).execution
    assert got.created_by == "ada"
    listed = stubs.executions.ListExecutions(ex.ListExecutionsRequest(), metadata=admin_md)
    assert [e.created_by for e in listed.executions] == ["ada"]
    config = stubs.configurations.GetConfiguration(
        __import__(
            "trainyard.v1.configuration_service_pb2", fromlist=["x"]
        ).GetConfigurationRequest(configuration_id=configuration),
        metadata=admin_md,
    ).configuration
    assert config.created_by == "otto"

    # Admins only; every group's trail only for an admin of '*'.
    for token in (tokens.viewer, tokens.operator):
        error = rpc_error(
            audit.ListAuditEvents, au.ListAuditEventsRequest(), metadata=tokens.md(token)
        )
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    error = rpc_error(
        audit.ListAuditEvents,
        au.ListAuditEventsRequest(all_resource_groups=True),
        metadata=admin_md,
    )
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert details(error)["reason"] == "PERMISSION_DENIED"
