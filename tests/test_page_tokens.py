"""Page tokens are signed and checked: a crafted or altered token is INVALID_ARGUMENT
(INVALID_PAGE_TOKEN), never INTERNAL. Without a key file the key is the database's,
made by the first server to start on it: replicas of one database (and a restart)
accept each other's tokens. An explicit key file wins over it: servers sharing one
accept each other's tokens, others refuse them."""

from __future__ import annotations

import base64
import json

import grpc
import pytest

from server.domain.paging import PageTokens, _filter_digest
from server.page_key import load_page_tokens
from server.store.repository import Store
from tests.conftest import ServerThread, make_settings, make_stubs
from tests.helpers import details, rpc_error
from trainyard.v1 import executable_service_pb2 as exe
from trainyard.v1 import execution_service_pb2 as ex


def _unsigned(after, filters) -> str:
    raw = json.dumps({"a": after, "f": _filter_digest(filters)}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _first_page_token(stubs) -> str:
    page = stubs.executables.ListExecutables(exe.ListExecutablesRequest(page_size=1))
    assert page.next_page_token, "the samples hold more than one executable"
    return page.next_page_token


def test_crafted_tokens_are_invalid_argument(server_factory):
    stubs = make_stubs(server_factory(runtime="none").address)
    crafted = [
        _unsigned([["x"] * 3, 1], {}),  # the right filter, a key of the wrong shape
        _unsigned([2**80, "1"], {}),
        _unsigned(["\x00", "1"], {}),
        "not base64 at all!",
        "e30.AAAA",
    ]
    token = _first_page_token(stubs)
    body, mac = token.split(".")
    crafted.append(body[:-2] + ("A" if body[-2] != "A" else "B") + body[-1] + "." + mac)
    for bad in crafted:
        error = rpc_error(
            stubs.executables.ListExecutables, exe.ListExecutablesRequest(page_token=bad)
        )
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (bad, error.details())
        got = details(error)
        assert got["reason"] == "INVALID_PAGE_TOKEN" and "page_token" in got["fields"]
    error = rpc_error(
        stubs.executions.ListExecutions,
        ex.ListExecutionsRequest(page_token=_unsigned(2**80, {})),
    )
    assert details(error)["reason"] == "INVALID_PAGE_TOKEN"
    stubs.channel.close()


def test_a_restart_on_the_same_data_dir_accepts_its_tokens(tmp_path):
    settings = make_settings(tmp_path, runtime="none")
    first = ServerThread(settings).start()
    stubs = make_stubs(first.address)
    token = _first_page_token(stubs)
    stubs.channel.close()
    first.stop()
    # The key is the database's: no key file is made.
    assert not (settings.data_dir / "page-token.key").exists()
    again = ServerThread(make_settings(tmp_path, runtime="none")).start()
    try:
        stubs = make_stubs(again.address)
        page = stubs.executables.ListExecutables(
            exe.ListExecutablesRequest(page_size=1, page_token=token)
        )
        assert len(page.executables) == 1
        stubs.channel.close()
    finally:
        again.stop()


@pytest.mark.backends("postgresql")
def test_replicas_without_a_key_file_accept_each_others_tokens(server_factory, tmp_path, backend):
    """Replicas of one PostgreSQL database started with no key file: B accepts A's
    token (the key is the database's), and still refuses crafted ones."""
    a = server_factory(data_dir=tmp_path / "a", runtime="none")
    b = server_factory(data_dir=tmp_path / "b", runtime="none")
    sa, sb = make_stubs(a.address), make_stubs(b.address)
    token = _first_page_token(sa)
    page = sb.executables.ListExecutables(exe.ListExecutablesRequest(page_size=1, page_token=token))
    assert len(page.executables) == 1
    body, _ = token.split(".")
    crafted = (
        PageTokens().sign(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))),
        _unsigned(json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))["a"], {}),
        body + "." + base64.urlsafe_b64encode(b"\0" * 32).decode().rstrip("="),
    )
    for bad in crafted:
        assert bad != token
        refused = rpc_error(
            sb.executables.ListExecutables, exe.ListExecutablesRequest(page_token=bad)
        )
        assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT, (bad, refused.details())
        assert details(refused)["reason"] == "INVALID_PAGE_TOKEN"
    for s in (sa, sb):
        s.channel.close()


@pytest.mark.backends("sqlite", "postgresql")
def test_the_first_key_stored_is_every_stores_key(tmp_path, backend, database_url):
    """The insert that does nothing on conflict: the first candidate is kept, and every
    store on the database reads it back."""
    url = database_url or f"sqlite:///{tmp_path / 'keys.db'}"
    one, two = Store(url), Store(url)
    try:
        assert one.page_token_key("a" * 64) == "a" * 64
        assert two.page_token_key("b" * 64) == "a" * 64
        assert one.page_token_key("c" * 64) == "a" * 64
        assert one.execute('SELECT COUNT(*) FROM "page_token_key"').fetchone()[0] == 1
    finally:
        one.close()
        two.close()


@pytest.mark.backends("postgresql")
def test_replicas_with_one_key_file_accept_each_others_tokens(server_factory, tmp_path, backend):
    """An explicit key file wins over the database's key."""
    shared = tmp_path / "shared.key"
    a = server_factory(data_dir=tmp_path / "a", page_token_key_file=shared, runtime="none")
    b = server_factory(data_dir=tmp_path / "b", page_token_key_file=shared, runtime="none")
    assert shared.stat().st_mode & 0o777 == 0o600
    other = server_factory(data_dir=tmp_path / "c", runtime="none")
    sa, sb, sc = make_stubs(a.address), make_stubs(b.address), make_stubs(other.address)
    token = _first_page_token(sa)
    page = sb.executables.ListExecutables(exe.ListExecutablesRequest(page_size=1, page_token=token))
    assert len(page.executables) == 1
    refused = rpc_error(
        sc.executables.ListExecutables, exe.ListExecutablesRequest(page_token=token)
    )
    assert details(refused)["reason"] == "INVALID_PAGE_TOKEN"
    for s in (sa, sb, sc):
        s.channel.close()


def test_a_short_key_file_is_refused(tmp_path):
    path = tmp_path / "k"
    path.write_text("short\n")
    with pytest.raises(ValueError, match="at least"):
        load_page_tokens(path)


def test_tokens_of_another_key_do_not_open():
    one, two = PageTokens(), PageTokens()
    token = one.sign(b"payload")
    assert one.open(token) == b"payload"
    assert two.open(token) is None
