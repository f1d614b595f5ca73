"""Limits and contention: oversized messages, SQLite writer contention."""

from __future__ import annotations

import sqlite3
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from tests.conftest import make_stubs
from tests.helpers import iris_configuration, register_iris, rpc_error, wait_for
from trainyard.v1 import executable_service_pb2 as exe
from trainyard.v1 import execution_service_pb2 as ex


def test_oversized_message_is_resource_exhausted(stubs):
    error = rpc_error(
        stubs.executables.CreateExecutable,
        exe.CreateExecutableRequest(definition="x" * (5 * 1024 * 1024)),
    )
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_definition_over_one_mebibyte_is_invalid(stubs):
    error = rpc_error(
        stubs.executables.CreateExecutable,
        exe.CreateExecutableRequest(definition="# " + "x" * (1024 * 1024 + 10)),
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.driven
def test_writer_contention_surfaces_no_locked_error(server, stubs):
    """Another process holds SQLite's write lock, and a long read runs, while 16 clients
    create executions: every create waits its turn and succeeds."""
    assert server.plane.runtime is None  # none from the start (marker driven)
    dataset = register_iris(stubs)
    config = iris_configuration(stubs, dataset)
    path = server.settings.data_dir / "trainyard.db"

    reader = sqlite3.connect(path, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT COUNT(*) FROM execution").fetchone()  # a read transaction stays open
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")  # the write lock, held by someone else
    interceptor = server.running.extra["interceptor"]
    method = "/trainyard.v1.ExecutionService/CreateExecution"

    def create(i: int) -> str:
        s = make_stubs(server.address)
        try:
            return s.executions.CreateExecution(
                ex.CreateExecutionRequest(configuration_id=config, request_id=f"contention-{i}"),
                timeout=30,
            ).execution.id
        finally:
            s.channel.close()

    with ThreadPoolExecutor(16) as pool:
        futures = [pool.submit(create, i) for i in range(16)]
        # Every call is at the server (not merely about to be sent) and none could end:
        # the lock is released only then.
        wait_for(lambda: interceptor.in_flight.get(method, 0) == 16, timeout=30)
        assert not any(f.done() for f in futures)
        holder.execute("COMMIT")
        ids = [f.result(timeout=60) for f in futures]
    reader.execute("COMMIT")
    reader.close()
    holder.close()
    assert len(set(ids)) == 16
    assert stubs.executions.ListExecutions(ex.ListExecutionsRequest()).total_size == 16
