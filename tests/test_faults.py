"""Faults: kill -9 of the server while a tailer follows a steady stream of numbered
lines; delete racing watchers; per-connection stream limits; deadlines that cancel the
server's work."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from workflow_helpers import STATUS_NAME, Runner, ServerProcess, python, wait_for, workflow

from tests.helpers import details, iris_configuration, register_iris
from trainyard.v1 import execution_service_pb2 as ex
from trainyard.v1 import execution_service_pb2_grpc, log_service_pb2_grpc
from trainyard.v1 import log_service_pb2 as lg

# Prints numbered lines steadily, for far longer than the test lets it.
COUNTER = workflow(
    "counter",
    [
        python(
            "main",
            "import time\n"
            "for i in range(1, 10_000_000):\n"
            "    print(f'line {i}', flush=True)\n"
            "    if i % 100 == 0:\n"
            "        time.sleep(0.002)\n",
        )
    ],
)


def follow(address: str, execution_id: str, after: int, received: list, stop_at: int = 0):
    """Follow the log into ``received`` as (sequence, text) until the stream ends or
    fails; returns the error code (None when it ended cleanly)."""
    with grpc.insecure_channel(address) as channel:
        stub = log_service_pb2_grpc.LogServiceStub(channel)
        request = lg.TailLogsRequest(execution_id=execution_id, follow=True, after_sequence=after)
        try:
            for message in stub.TailLogs(request, timeout=120):
                received.extend((line.sequence, line.text) for line in message.lines)
                if stop_at and len(received) >= stop_at:
                    return "STOPPED_BY_TEST"
        except grpc.RpcError as error:
            return error.code().name
    return None


def test_kill_9_while_tailing_loses_no_acknowledged_line(tmp_path):
    server = ServerProcess(tmp_path)
    try:
        server.start("--max-concurrent-executions", "2")
        runner = Runner(server.address)
        execution_id = runner.start(runner.configure(runner.register(COUNTER)))
        received: list[tuple[int, str]] = []
        outcome: dict[str, str | None] = {}
        tailer = threading.Thread(
            target=lambda: outcome.setdefault(
                "code", follow(server.address, execution_id, 0, received)
            )
        )
        tailer.start()
        wait_for(lambda: len(received) >= 5000, 60, "the tailer to receive 5,000 lines")
        runner.close()
        server.kill()
        tailer.join(30)
        assert not tailer.is_alive()
        assert outcome["code"] == "UNAVAILABLE"
        got = list(received)

        server.start("--max-concurrent-executions", "2")
        runner = Runner(server.address)
        final = runner.wait(execution_id, timeout=60)
        assert STATUS_NAME[final.status] == "DEAD"
        assert final.history[-1].cause == "server_restart"
        stored = [(line.sequence, line.text) for line in runner.client.list_logs(execution_id)]
        # the store has every line a tailer was given, and no gap anywhere
        assert [seq for seq, _ in stored] == list(range(1, len(stored) + 1))
        assert stored[: len(got)] == got
        # a tailer resuming from its cursor continues exactly where it stopped
        cursor = got[-1][0]
        resumed: list[tuple[int, str]] = []
        assert follow(server.address, execution_id, cursor, resumed) is None
        assert got + resumed == stored
        # the step's numbered lines have no gap either up to the crash
        numbers = [int(text.split()[1]) for _, text in stored if text.startswith("line ")]
        assert numbers == list(range(1, len(numbers) + 1))
        runner.close()
        server.terminate()
    finally:
        if server.process is not None and server.process.poll() is None:
            server.process.kill()


def watch_until_end(address: str, execution_id: str, started: threading.Barrier) -> list:
    with grpc.insecure_channel(address) as channel:
        stub = execution_service_pb2_grpc.ExecutionServiceStub(channel)
        events = []
        try:
            started.wait(10)
            request = ex.WatchExecutionsRequest(execution_id=execution_id, keep_watching=True)
            for event in stub.WatchExecutions(request, timeout=30):
                events.append(ex.WatchEventType.Name(event.type))
        except grpc.RpcError as error:
            events.append(error.code().name)
        return events


def test_delete_racing_watchers_gives_one_consistent_outcome(server):
    runner = Runner(server.address)
    quick = workflow("quick", [python("main", "print('done')")])
    execution_id = runner.start(runner.configure(runner.register(quick)))
    runner.wait(execution_id, "COMPLETED")
    barrier = threading.Barrier(9)
    with ThreadPoolExecutor(8) as pool:
        futures = [
            pool.submit(watch_until_end, server.address, execution_id, barrier) for _ in range(8)
        ]
        barrier.wait(10)
        runner.client.delete_execution(execution_id)
        results = [f.result(timeout=60) for f in futures]
    for events in results:
        assert "INTERNAL" not in events and "UNKNOWN" not in events
        # either the watch began before the delete (snapshot, then the deletion) or after
        assert events in (
            ["WATCH_EVENT_TYPE_SNAPSHOT", "WATCH_EVENT_TYPE_DELETED"],
            ["NOT_FOUND"],
        ), events
    assert server.run_sync(lambda: server.running.extra["broker"].stats().event_subscriptions) == 0
    runner.close()


@pytest.mark.driven
def test_too_many_streams_on_one_connection_is_resource_exhausted(server_factory, stubs_for):
    server = server_factory(max_streams_per_client=3)
    stubs = stubs_for(server)
    execution_id = stubs.executions.CreateExecution(
        ex.CreateExecutionRequest(configuration_id=iris_configuration(stubs, register_iris(stubs)))
    ).execution.id
    request = lg.TailLogsRequest(execution_id=execution_id, follow=True)
    calls = [stubs.logs.TailLogs(request) for _ in range(3)]
    stats = server.running.extra["broker"].stats
    wait_for(lambda: server.run_sync(stats).log_subscriptions == 3, 10, "three tailers")
    with pytest.raises(grpc.RpcError) as caught:
        next(stubs.logs.TailLogs(request, timeout=10))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert details(caught.value)["reason"] == "LIMIT_EXCEEDED"
    # another connection is not affected
    with grpc.insecure_channel(
        server.address, options=[("grpc.use_local_subchannel_pool", 1)]
    ) as other:
        extra = log_service_pb2_grpc.LogServiceStub(other).TailLogs(request)
        wait_for(lambda: server.run_sync(stats).log_subscriptions == 4, 10, "a fourth tailer")
        extra.cancel()
    calls[0].cancel()
    wait_for(lambda: server.run_sync(stats).log_subscriptions == 2, 10, "a tailer to go")
    again = stubs.logs.TailLogs(request)
    wait_for(lambda: server.run_sync(stats).log_subscriptions == 3, 10, "the new tailer")
    for call in (again, *calls[1:]):
        call.cancel()


@pytest.mark.driven
def test_deadline_cancels_the_servers_work(server_factory, stubs_for):
    server = server_factory()
    stubs = stubs_for(server)
    execution_id = stubs.executions.CreateExecution(
        ex.CreateExecutionRequest(configuration_id=iris_configuration(stubs, register_iris(stubs)))
    ).execution.id
    stats = server.running.extra["broker"].stats
    with pytest.raises(grpc.RpcError) as caught:
        for _ in stubs.logs.TailLogs(
            lg.TailLogsRequest(execution_id=execution_id, follow=True), timeout=0.3
        ):
            pass
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    with pytest.raises(grpc.RpcError) as caught:
        for _ in stubs.executions.WatchExecutions(
            ex.WatchExecutionsRequest(execution_id=execution_id), timeout=0.3
        ):
            pass
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # the subscriptions the calls held are released, nothing keeps running for them
    wait_for(
        lambda: (lambda s: s.log_subscriptions == 0 and s.event_subscriptions == 0)(
            server.run_sync(stats)
        ),
        10,
        "the streams' subscriptions to be released",
    )
    assert server.run_sync(lambda: dict(server.running.extra["interceptor"].open_streams)) == {}
