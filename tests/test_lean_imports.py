"""A server on the embedded SQLite store that logs JSON does not load the optional
packages it never uses (psycopg, rich, cryptography until a secret is used); the same
packages still load where they are used."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from server.lean_imports import hidden, unused_packages
from tests.workflow_helpers import Runner, ServerProcess


def loaded(pid: int) -> str:
    """The files a process has mapped: its loaded extension modules among them."""
    return Path(f"/proc/{pid}/maps").read_text()


def test_an_optional_import_takes_its_fallback_while_hidden_and_works_after():
    name = "json"  # imported already: hiding leaves it alone
    with hidden([name, "trainyard_not_imported_yet"]):
        assert sys.modules[name] is not None
        with pytest.raises(ImportError):
            import trainyard_not_imported_yet  # noqa: F401
    assert "trainyard_not_imported_yet" not in sys.modules


def test_what_a_server_does_without():
    assert unused_packages("sqlite:///x.db", json_logs=True) == ["psycopg", "rich"]
    assert unused_packages("postgresql://u@127.0.0.1:5432/d", json_logs=False) == []


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux /proc")
def test_a_sqlite_server_loads_no_postgresql_driver_and_no_cipher_until_a_secret(tmp_path):
    server = ServerProcess(tmp_path).start()
    try:
        maps = loaded(server.process.pid)
        assert "psycopg" not in maps and "libpq" not in maps
        assert "cryptography" not in maps
        runner = Runner(server.address)
        try:
            runner.client.create_secret("api", {"token": "value-123"})  # sealed: loads it
            assert "cryptography" in loaded(server.process.pid)
            assert [s.name for s in runner.client.list_secrets()] == ["api"]
        finally:
            runner.close()
    finally:
        server.terminate()
