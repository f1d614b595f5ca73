"""Authentication and authorization on a server with a token file: every rpc of the
role table (server/api/roles.py) x every kind of caller, generated from the table."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
import time

import grpc
import pytest
from google.protobuf import descriptor_pool, message_factory

import trainyard.v1
from client.cli import main as cli_main
from client.client import TrainyardClient, TrainyardError
from server.api.roles import OPEN, RULES
from server.domain.principal import RANK
from server.security.tokens import TokenFile
from tests.authkit import GROUP, make_tokens, retry_delay
from tests.conftest import ROOT, ServerThread, make_settings, make_stubs
from tests.helpers import details, iris_configuration, register_iris, rpc_error, wait_for
from trainyard.v1 import execution_service_pb2 as ex
from trainyard.v1 import log_service_pb2 as lg
from trainyard.v1 import meta_service_pb2 as meta

for _mod in pkgutil.iter_modules(trainyard.v1.__path__):
    if _mod.name.endswith("_pb2"):
        importlib.import_module(f"trainyard.v1.{_mod.name}")

MISSING = "f" * 32  # an id that exists nowhere
CALLERS = ["none", "bad", "expired", "viewer", "operator", "admin", "other_operator"]


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    root = tmp_path_factory.mktemp("auth")
    tokens = make_tokens(root / "tokens.json")
    settings = make_settings(
        root,
        auth_tokens=tokens.file,
        default_resource_group=GROUP,
        runtime="none",
        auth_reload_seconds=0.2,
        max_requests_per_second=0,
    )
    server = ServerThread(settings).start()
    stubs = make_stubs(server.address)
    md = tokens.md(tokens.admin)
    dataset = register_iris(stubs, metadata=md)
    configuration = iris_configuration(stubs, dataset, metadata=md)
    execution = stubs.executions.CreateExecution(
        ex.CreateExecutionRequest(configuration_id=configuration), metadata=md
    ).execution.id
    ids = {
        "execution": execution,
        "configuration": configuration,
        "artifact": dataset,
        "executable": "iris-train",
        "scenario": "iris",
    }
    yield server, stubs, tokens, ids
    stubs.channel.close()
    server.stop()


def _method(full: str):
    service, name = full.strip("/").split("/")
    return descriptor_pool.Default().FindMethodByName(f"{service}.{name}")


def _request(full: str, ids: dict[str, str]):
    """A request of the rpc naming the seeded resources; ids of changes (operator
    and admin rpcs) exist nowhere, so that allowed calls change nothing."""
    desc = _method(full)
    message = message_factory.GetMessageClass(desc.input_type)()
    rule = RULES[full]
    harmless = RANK.get(rule.role, 0) >= RANK["operator"]
    for field in desc.input_type.fields:
        kind = field.name.removesuffix("_ids").removesuffix("_id")
        if field.name.endswith("_id") and kind in ids:
            setattr(message, field.name, MISSING if harmless else ids[kind])
        elif field.name.endswith("_ids") and kind in ids:
            getattr(message, field.name).append(MISSING if harmless else ids[kind])
    return message


def _call(channel: grpc.Channel, full: str, request, metadata) -> grpc.StatusCode:
    desc = _method(full)
    response_class = message_factory.GetMessageClass(desc.output_type)
    kind = channel.unary_stream if desc.server_streaming else channel.unary_unary
    call = kind(
        full,
        request_serializer=type(request).SerializeToString,
        response_deserializer=response_class.FromString,
    )
    try:
        if desc.server_streaming:
            stream = call(request, metadata=metadata, timeout=10)
            try:
                next(stream)
            except StopIteration:
                pass
            finally:
                stream.cancel()
        else:
            call(request, metadata=metadata, timeout=10)
    except grpc.RpcError as error:
        return error
    return None


def _metadata(tokens, caller: str):
    if caller == "none":
        return (("ai-resource-group", GROUP),)
    if caller == "bad":
        return tokens.md("ty_" + "x" * 43)
    return tokens.md(getattr(tokens, caller))


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize("rpc", sorted(RULES))
def test_role_table(secured, rpc: str, caller: str):
    server, stubs, tokens, ids = secured
    rule = RULES[rpc]
    error = _call(stubs.channel, rpc, _request(rpc, ids), _metadata(tokens, caller))
    code = None if error is None else error.code()
    if rule.role == OPEN:
        assert error is None, error
        return
    if caller in ("none", "bad", "expired"):
        assert code == grpc.StatusCode.UNAUTHENTICATED, (code, error)
        reason = "TOKEN_EXPIRED" if caller == "expired" else "UNAUTHENTICATED"
        assert details(error)["reason"] == reason
        return
    if caller == "other_operator":
        request = _request(rpc, ids)
        if rule.id_field and getattr(request, rule.id_field):
            assert code == grpc.StatusCode.NOT_FOUND, (code, error)
            assert details(error)["reason"] == f"{rule.kind.upper()}_NOT_FOUND"
        else:
            assert code == grpc.StatusCode.PERMISSION_DENIED, (code, error)
        return
    if RANK[caller] >= RANK[rule.role]:
        assert code not in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED), (
            code,
            error,
        )
    else:
        assert code == grpc.StatusCode.PERMISSION_DENIED, (code, error)
        assert details(error)["reason"] == "PERMISSION_DENIED"


def test_every_served_rpc_is_in_the_table(secured):
    served = set()
    for mod in pkgutil.iter_modules(trainyard.v1.__path__):
        if not mod.name.endswith("_service_pb2"):
            continue
        module = importlib.import_module(f"trainyard.v1.{mod.name}")
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                served.add(f"/{service.full_name}/{method.name}")
    assert served == set(RULES), served ^ set(RULES)


def test_hidden_group_answers_like_nowhere(secured):
    """Another group's operator asking for a real execution gets exactly what anyone
    gets for an id that exists nowhere."""
    server, stubs, tokens, ids = secured
    hidden = rpc_error(
        stubs.executions.GetExecution,
        ex.GetExecutionRequest(execution_id=ids["execution"]),
        metadata=tokens.md(tokens.other_operator, GROUP),
    )
    missing = rpc_error(
        stubs.executions.GetExecution,
        ex.GetExecutionRequest(execution_id=MISSING),
        metadata=tokens.md(tokens.operator, GROUP),
    )
    for error in (hidden, missing):
        assert error.code() == grpc.StatusCode.NOT_FOUND
        assert details(error)["reason"] == "EXECUTION_NOT_FOUND"
    assert hidden.details().replace(ids["execution"], "ID") == missing.details().replace(
        MISSING, "ID"
    )


def test_meta_open_and_says_auth_is_on(secured):
    server, stubs, tokens, ids = secured
    answer = stubs.meta.GetMeta(meta.GetMetaRequest())
    assert answer.auth_enabled and not answer.tls_enabled


def test_token_revoked_during_live_tail_ends_it(secured):
    server, stubs, tokens, ids = secured
    extra = TokenFile(tokens.file).add("tailer", {GROUP: "viewer"}, 3600.0)
    auth = server.running.extra["auth"]
    wait_for(lambda: "tailer" in {p.name for p in auth.index.by_hash.values()}, timeout=10)
    stream = stubs.logs.TailLogs(
        lg.TailLogsRequest(execution_id=ids["execution"], follow=True),
        metadata=tokens.md(extra[1]),
        timeout=30,
    )
    # The stream is open (the server counts it) before the token goes.
    wait_for(lambda: any(s.principal.name == "tailer" for s in auth.streams), timeout=10)
    started = time.monotonic()
    TokenFile(tokens.file).revoke(extra[0])
    with pytest.raises(grpc.RpcError) as caught:
        for _ in stream:
            pass
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert time.monotonic() - started < 5
    # And the token no longer opens anything.
    with pytest.raises(grpc.RpcError) as again:
        stubs.executions.GetExecution(
            ex.GetExecutionRequest(execution_id=ids["execution"]), metadata=tokens.md(extra[1])
        )
    assert again.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_rate_and_stream_limits_per_principal(tmp_path):
    tokens = make_tokens(tmp_path / "tokens.json")
    settings = make_settings(
        tmp_path,
        auth_tokens=tokens.file,
        default_resource_group=GROUP,
        runtime="none",
        max_requests_per_second=5,
        max_streams_per_principal=1,
    )
    server = ServerThread(settings).start()
    stubs = make_stubs(server.address)
    try:
        md = tokens.md(tokens.viewer)
        request = ex.ListExecutionsRequest()
        with pytest.raises(grpc.RpcError) as caught:
            for _ in range(50):
                stubs.executions.ListExecutions(request, metadata=md)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert details(caught.value)["reason"] == "RATE_LIMITED"
        assert retry_delay(caught.value) > 0
        # Another principal is not limited by the first one's calls.
        stubs.executions.ListExecutions(request, metadata=tokens.md(tokens.operator))
        # One stream at a time per principal.
        md = tokens.md(tokens.admin)
        first = stubs.executions.WatchExecutions(
            ex.WatchExecutionsRequest(), metadata=md, timeout=30
        )
        auth = server.running.extra["auth"]
        wait_for(lambda: auth.limits.streams.get("ada") == 1, timeout=10)
        with pytest.raises(grpc.RpcError) as second:
            next(
                iter(
                    stubs.executions.WatchExecutions(
                        ex.WatchExecutionsRequest(), metadata=md, timeout=30
                    )
                )
            )
        assert second.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert details(second.value)["reason"] == "TOO_MANY_STREAMS"
        first.cancel()
    finally:
        stubs.channel.close()
        server.stop()


def _tokens_command(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "server", "tokens", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_tokens_command_and_clients(secured, capsys, monkeypatch):
    """`trainyard-server tokens add` prints a token once (the file keeps its hash);
    the Python client and the CLI use it (--token, TRAINYARD_TOKEN, a credentials
    file); `tokens revoke` takes it away from the running server."""
    server, stubs, tokens, ids = secured
    made = _tokens_command(
        "add",
        "--file",
        str(tokens.file),
        "--principal",
        "carol",
        "--role",
        "operator",
        "--group",
        GROUP,
        "--group",
        "team-c",
        "--expires",
        "30d",
    )
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert token.startswith("ty_") and token not in tokens.file.read_text()
    listed = _tokens_command("list", "--file", str(tokens.file))
    assert "carol" in listed.stdout and token not in listed.stdout
    assert f"{GROUP}=operator" in listed.stdout and "team-c=operator" in listed.stdout
    auth = server.running.extra["auth"]
    wait_for(lambda: "carol" in {p.name for p in auth.index.by_hash.values()}, timeout=10)

    with TrainyardClient(server.address, resource_group=GROUP, token=token) as client:
        assert client.get_execution(ids["execution"]).id == ids["execution"]
    monkeypatch.setenv("TRAINYARD_TOKEN", token)
    with TrainyardClient(server.address, resource_group=GROUP) as client:
        assert client.get_execution(ids["execution"]).id == ids["execution"]
    monkeypatch.delenv("TRAINYARD_TOKEN")
    credentials = tokens.file.parent / "credentials"
    credentials.write_text(token + "\n")
    assert (
        cli_main(
            [
                "--address",
                server.address,
                "-g",
                GROUP,
                "--credentials",
                str(credentials),
                "executions",
                "get",
                ids["execution"],
            ]
        )
        == 0
    )
    assert ids["execution"] in capsys.readouterr().out
    assert (
        cli_main(
            [
                "--address",
                server.address,
                "-g",
                GROUP,
                "--token",
                token,
                "executions",
                "get",
                ids["execution"],
            ]
        )
        == 0
    )
    assert (
        cli_main(["--address", server.address, "-g", GROUP, "executions", "get", ids["execution"]])
        != 0
    )
    assert "UNAUTHENTICATED" in capsys.readouterr().err

    revoked = _tokens_command("revoke", "--file", str(tokens.file), "carol")
    assert revoked.returncode == 0 and "revoked tok_" in revoked.stdout
    wait_for(lambda: "carol" not in {p.name for p in auth.index.by_hash.values()}, timeout=10)
    with TrainyardClient(server.address, resource_group=GROUP, token=token) as client:
        with pytest.raises(TrainyardError) as caught:
            client.get_execution(ids["execution"])
        assert caught.value.code == grpc.StatusCode.UNAUTHENTICATED


def test_stream_ends_when_its_token_expires(secured):
    server, stubs, tokens, ids = secured
    auth = server.running.extra["auth"]
    ident, token = TokenFile(tokens.file).add("brief", {GROUP: "viewer"}, 3.0)
    wait_for(lambda: "brief" in {p.name for p in auth.index.by_hash.values()}, timeout=10)
    stream = stubs.executions.WatchExecutions(
        ex.WatchExecutionsRequest(), metadata=tokens.md(token), timeout=30
    )
    wait_for(lambda: any(s.principal.name == "brief" for s in auth.streams), timeout=10)
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as caught:
        for _ in stream:
            pass
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # Within a few seconds of the expiry (3 s after the token was made).
    assert time.monotonic() - started < 8
    TokenFile(tokens.file).revoke(ident)
