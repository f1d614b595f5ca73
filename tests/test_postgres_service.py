"""The throwaway PostgreSQL service of the tests (tests/services/postgres.py), through
psycopg 3: fresh databases per test, independent of each other, served on loopback only,
and stopped without touching any other cluster."""

from __future__ import annotations

import socket
from pathlib import Path
from urllib.parse import urlparse

import psycopg
import pytest

from tests.services import REQUIRE_ENV
from tests.services.postgres import PG_BIN_ENV, PostgresCluster, start_postgres_or_skip


def table_names(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchall()
    return {name for (name,) in rows}


def test_fresh_database_create_insert_select(postgres_url: str):
    parsed = urlparse(postgres_url)
    assert parsed.scheme == "postgresql" and parsed.hostname == "127.0.0.1"
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == (parsed.path[1:],)
        assert table_names(postgres_url) == set()
        conn.execute("CREATE TABLE item (id bigint PRIMARY KEY, name text NOT NULL)")
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO item (id, name) VALUES (%s, %s)", [(1, "one"), (2, "two")])
        conn.commit()
    # A second connection sees the committed rows.
    with psycopg.connect(postgres_url) as conn:
        rows = conn.execute("SELECT id, name FROM item ORDER BY id").fetchall()
    assert rows == [(1, "one"), (2, "two")]


def test_two_databases_are_independent(postgres_url: str, postgres_databases):
    other = postgres_databases()
    assert other != postgres_url
    with psycopg.connect(postgres_url) as conn:
        conn.execute("CREATE TABLE only_here (x int)")
        conn.execute("INSERT INTO only_here VALUES (1)")
    with psycopg.connect(other) as conn:
        conn.execute("CREATE TABLE only_there (y int)")
    assert table_names(postgres_url) == {"only_here"}
    assert table_names(other) == {"only_there"}


@pytest.mark.parametrize("round_", [1, 2])
def test_each_test_gets_an_empty_database(postgres_url: str, round_: int):
    # The same table in both rounds: the second would fail if it saw the first's database.
    assert table_names(postgres_url) == set()
    with psycopg.connect(postgres_url) as conn:
        conn.execute("CREATE TABLE seen (round int)")
        conn.execute("INSERT INTO seen VALUES (%s)", (round_,))


def test_databases_are_dropped_even_with_sessions_left_open(
    postgres_cluster: PostgresCluster, postgres_databases
):
    url = postgres_databases()
    name = urlparse(url).path[1:]
    forgotten = psycopg.connect(url)  # a test that forgets to close its connection
    try:
        postgres_cluster.drop_database(name)
        with psycopg.connect(postgres_cluster.url(), autocommit=True) as conn:
            found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            assert found.fetchone() is None
        with pytest.raises(psycopg.OperationalError):
            forgotten.execute("SELECT 1")
    finally:
        forgotten.close()


def test_listens_on_loopback_only(postgres_cluster: PostgresCluster, postgres_url: str):
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SHOW listen_addresses").fetchone() == ("127.0.0.1",)
        assert conn.execute("SELECT inet_server_addr()::text").fetchone() == ("127.0.0.1/32",)
        assert conn.execute("SHOW port").fetchone() == (str(postgres_cluster.port),)
        (sockets,) = conn.execute("SHOW unix_socket_directories").fetchone()
    assert Path(sockets).is_relative_to(postgres_cluster.base_dir)
    # Nothing answers on the cluster's port at the machine's other addresses.
    for address in other_local_addresses():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(2)
            assert s.connect_ex((address, postgres_cluster.port)) != 0, address


def other_local_addresses() -> list[str]:
    """IPv4 addresses of this machine other than 127.0.0.1 (none in a bare sandbox)."""
    addresses = {"127.0.0.2"}  # the rest of 127/8: a wildcard listener would answer here
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET):
            addresses.add(info[4][0])
    except OSError:
        pass
    return sorted(addresses - {"127.0.0.1"})


def test_stopping_a_cluster_stops_it_alone(postgres_cluster: PostgresCluster):
    other = PostgresCluster().start()
    base, port = other.base_dir, other.port
    assert base is not None and base.is_dir() and port != postgres_cluster.port
    with psycopg.connect(other.url(), autocommit=True) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    other.stop()
    other.stop()  # idempotent
    assert not base.exists()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(f"postgresql://trainyard@127.0.0.1:{port}/postgres", connect_timeout=2)
    # The session's cluster still serves.
    with psycopg.connect(postgres_cluster.url(), autocommit=True) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_missing_postgres_skips_or_fails_when_required(tmp_path: Path, monkeypatch):
    monkeypatch.setenv(PG_BIN_ENV, str(tmp_path))  # a folder with no initdb
    monkeypatch.delenv(REQUIRE_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"PostgreSQL not installed \(no initdb\)"):
        start_postgres_or_skip()
    monkeypatch.setenv(REQUIRE_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match=r"PostgreSQL not installed \(no initdb\)"):
        start_postgres_or_skip()


def test_a_cluster_that_does_not_start_is_skipped_saying_why(
    postgres_cluster: PostgresCluster, monkeypatch
):
    # (postgres_cluster: only where PostgreSQL is installed.) Failing instead under
    # TRAINYARD_REQUIRE_SERVICES=1 is the same decision as for a missing initdb, above.
    monkeypatch.delenv(REQUIRE_ENV, raising=False)
    bad = {"shared_buffers": "lots"}  # refused by the postmaster at start-up
    with pytest.raises(pytest.skip.Exception) as refused:
        start_postgres_or_skip(settings=bad)
    message = str(refused.value)
    assert message.startswith("PostgreSQL did not start: postgres exited with 1: ")
    assert 'invalid value for parameter "shared_buffers"' in message
    assert "\n" not in message
