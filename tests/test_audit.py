"""The audit trail holds exactly the changes made, with their principals and request
ids, written with the changes (nothing from refused calls), on both backends; admins
read it paged and filtered; created resources name who created them."""

from __future__ import annotations

import grpc
import pytest

from server.domain.models import Status
from server.security.tokens import TokenFile
from tests.authkit import GROUP, make_tokens
from tests.helpers import details, iris_configuration, register_iris, rpc_error, wait_for
from tests.workflow_helpers import python, workflow
from trainyard.v1 import audit_service_pb2 as au
from trainyard.v1 import audit_service_pb2_grpc, secret_service_pb2_grpc
from trainyard.v1 import configuration_service_pb2 as cf
from trainyard.v1 import executable_service_pb2 as exe
from trainyard.v1 import execution_service_pb2 as ex
from trainyard.v1 import secret_service_pb2 as sec

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
        cf.GetConfigurationRequest(configuration_id=configuration), metadata=admin_md
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


def test_secret_and_token_changes_are_recorded(server_factory, stubs_for, tmp_path):
    tokens = make_tokens(tmp_path / "tokens.json")
    server = server_factory(
        auth_tokens=tokens.file, default_resource_group=GROUP, auth_reload_seconds=0.1
    )
    stubs = stubs_for(server)
    audit = audit_service_pb2_grpc.AuditServiceStub(stubs.channel)
    secrets = secret_service_pb2_grpc.SecretServiceStub(stubs.channel)
    admin = tokens.admin
    secrets.CreateSecret(
        sec.CreateSecretRequest(name="registry", data={"user": "u", "password": "hunter2"}),
        metadata=_md(tokens, admin, "s-create"),
    )
    secrets.UpdateSecret(
        sec.UpdateSecretRequest(name="registry", data={"token": "t0k"}),
        metadata=_md(tokens, admin, "s-update"),
    )
    # Refused: an operator may not touch secrets; a delete of a secret that is not there.
    rpc_error(
        secrets.CreateSecret,
        sec.CreateSecretRequest(name="mine", data={"k": "v"}),
        metadata=_md(tokens, tokens.operator, "s-refused"),
    )
    rpc_error(
        secrets.DeleteSecret,
        sec.DeleteSecretRequest(name="nowhere"),
        metadata=_md(tokens, admin, "s-missing"),
    )
    secrets.DeleteSecret(
        sec.DeleteSecretRequest(name="registry"), metadata=_md(tokens, admin, "s-delete")
    )
    events = _trail(audit, tokens.md(admin))
    assert [(e.principal, e.action, e.resource_id, e.request_id) for e in events] == [
        ("ada", "secret.delete", "registry", "s-delete"),
        ("ada", "secret.update", "registry", "s-update"),
        ("ada", "secret.create", "registry", "s-create"),
    ]
    # Key names, never values.
    assert events[2].detail == "keys: password, user"
    assert all("hunter2" not in e.detail and "t0k" not in e.detail for e in events)

    # Token file changes: recorded by the server when it notices them. Tokens belong
    # to no group: an admin of every group reads them.
    file = TokenFile(tokens.file)
    root_id, root = file.add("root", {"*": "admin"}, 3600.0)

    def token_events():
        try:
            listed = audit.ListAuditEvents(
                au.ListAuditEventsRequest(all_resource_groups=True, resource_type="token"),
                metadata=tokens.md(root),
            )
        except grpc.RpcError:
            return []  # the server has not read the new file yet
        return [(e.principal, e.action, e.resource_id, e.resource_group) for e in listed.events]

    wait_for(lambda: token_events(), timeout=20)
    ident, _ = file.add("newbie", {GROUP: "viewer"}, 3600.0)
    wait_for(lambda: ("token-file", "token.add", ident, "") in token_events(), timeout=20)
    file.revoke(ident)
    wait_for(lambda: ("token-file", "token.revoke", ident, "") in token_events(), timeout=20)
    assert token_events() == [
        ("token-file", "token.revoke", ident, ""),
        ("token-file", "token.add", ident, ""),
        ("token-file", "token.add", root_id, ""),
    ]
