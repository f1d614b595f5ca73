"""The Python client's follow_logs / watch helpers (reconnect and resume) and the
`trainyard logs` / `trainyard watch` commands."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import grpc
import pytest
from streamkit import Driver, make_execution, wait_for

from client.cli import main as cli
from client.client import TrainyardClient
from client.commands.streams import parse_since
from client.streams import Backoff, follow_logs, watch
from server.domain.models import LogStream, Status
from trainyard.v1 import execution_pb2 as xpb

pytestmark = pytest.mark.driven

NO_WAIT = Backoff(initial=0.01, maximum=0.2, attempts=200)


def halt(server) -> None:
    """Stop the gRPC server and close its store (the fixture ends its thread later)."""
    server.call(server.running.stop(0.5))
    server.running = None


def test_follow_logs_resumes_after_a_server_restart_with_no_gap(server_factory, stubs_for):
    first = server_factory()
    port = first.running.port
    stubs = stubs_for(first)
    execution_id = make_execution(stubs)
    driver = Driver(first, execution_id)
    driver.transition(Status.RUNNING)
    driver.write(100)
    client = TrainyardClient(first.address)
    received: list[int] = []
    reconnects: list[str] = []
    got_100 = threading.Event()

    def consume():
        for line in follow_logs(
            client,
            execution_id,
            backoff=NO_WAIT,
            on_reconnect=lambda error, cursor: reconnects.append(error.code.name),
        ):
            received.append(line.sequence)
            if line.sequence == 100:
                got_100.set()

    reader = threading.Thread(target=consume)
    reader.start()
    assert got_100.wait(10)
    data_dir = first.settings.data_dir
    halt(first)
    # The same database and port: the reader reconnects and resumes after line 100.
    second = server_factory(address=f"127.0.0.1:{port}", data_dir=data_dir)
    driver = Driver(second, execution_id)
    driver.write(50)
    driver.finish()
    reader.join(30)
    client.close()
    assert not reader.is_alive()
    assert received == list(range(1, 151))
    assert "UNAVAILABLE" in reconnects


def test_follow_logs_resumes_after_being_cut_off_as_too_slow(server, stubs):
    limits = server.running.extra["tails"].limits
    limits.buffer_lines = 100
    limits.chunk_lines = 100
    limits.max_lag_lines = 500
    execution_id = make_execution(stubs)
    driver = Driver(server, execution_id)
    driver.transition(Status.RUNNING)
    driver.write(1)
    written = threading.Event()
    reasons: list[str] = []
    received: list[int] = []

    def consume():
        with TrainyardClient(server.address) as client:
            for line in follow_logs(
                client,
                execution_id,
                backoff=NO_WAIT,
                on_reconnect=lambda error, cursor: reasons.append(error.reason),
            ):
                received.append(line.sequence)
                if line.sequence == 1:
                    written.wait(30)  # the reader stalls while 20,000 lines are written

    reader = threading.Thread(target=consume)
    reader.start()
    wait_for(lambda: received, what="first line")
    for _ in range(20):
        driver.write(1000, text=lambda i: f"{i} " + "p" * 500)
    written.set()
    wait_for(lambda: reasons, what="a cut-off")
    driver.finish()
    reader.join(30)
    assert reasons[0] == "TAILER_TOO_SLOW"
    assert received == list(range(1, 20_002))


def test_watch_helper_resumes_by_cursor_after_a_server_restart(server_factory, stubs_for):
    first = server_factory()
    port = first.running.port
    stubs = stubs_for(first)
    execution_id = make_execution(stubs)
    client = TrainyardClient(first.address)
    events = []
    snapshot_seen = threading.Event()

    def consume():
        for event in watch(client, execution_id, backoff=NO_WAIT):
            events.append(event)
            snapshot_seen.set()

    reader = threading.Thread(target=consume)
    reader.start()
    assert snapshot_seen.wait(10)
    data_dir = first.settings.data_dir
    halt(first)
    second = server_factory(address=f"127.0.0.1:{port}", data_dir=data_dir)
    driver = Driver(second, execution_id)
    driver.transition(Status.RUNNING)
    driver.transition(Status.COMPLETED)
    reader.join(30)
    client.close()
    assert [e.type for e in events] == [1, 2, 2]
    assert [e.transition.to_status for e in events[1:]] == [
        xpb.EXECUTION_STATUS_RUNNING,
        xpb.EXECUTION_STATUS_COMPLETED,
    ]


def test_logs_command_prints_lines_and_filters(server, stubs, capsys):
    execution_id = make_execution(stubs)
    driver = Driver(server, execution_id)
    driver.write(3, text=lambda i: f"epoch {i}")
    driver.write(2, stream=LogStream.STDERR, text=lambda i: f"warning {i}")
    assert cli(["--address", server.address, "logs", execution_id]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "epoch 0",
        "epoch 1",
        "epoch 2",
        "warning 3",
        "warning 4",
    ]
    assert cli(["--address", server.address, "logs", execution_id, "--tail", "2"]) == 0
    assert capsys.readouterr().out.splitlines() == ["warning 3", "warning 4"]
    assert cli(["--address", server.address, "logs", execution_id, "--stream", "stderr", "-t"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and out[0].split()[0] == "4" and "train stderr warning 3" in out[0]


def test_logs_follow_command_ends_when_the_execution_ends(server, stubs, capsys):
    execution_id = make_execution(stubs)
    driver = Driver(server, execution_id)
    driver.transition(Status.RUNNING)
    driver.write(2)
    done = threading.Event()
    codes: list[int] = []

    def run():
        codes.append(cli(["--address", server.address, "logs", "-f", execution_id]))
        done.set()

    thread = threading.Thread(target=run)
    thread.start()
    wait_for(lambda: server.running.extra["broker"].stats().log_subscriptions, what="tailer")
    driver.write(2)
    driver.finish()
    assert done.wait(30)
    assert codes == [0]
    assert capsys.readouterr().out.splitlines() == ["line 1", "line 2", "line 3", "line 4"]


def test_watch_command_prints_the_timeline(server, stubs, capsys):
    execution_id = make_execution(stubs)
    driver = Driver(server, execution_id)
    driver.transition(Status.RUNNING, "step_started")
    driver.transition(Status.COMPLETED, "steps_succeeded")
    assert cli(["--address", server.address, "watch", execution_id]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and "SNAPSHOT" in out[0] and "COMPLETED" in out[0]


def test_logs_command_reports_a_missing_execution(server, capsys):
    assert cli(["--address", server.address, "logs", "0123456789abcdef"]) == 1
    assert "NOT_FOUND" in capsys.readouterr().err


def test_parse_since_accepts_durations_and_times():
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    assert parse_since("10m", now) == datetime(2026, 1, 1, 11, 50, tzinfo=UTC)
    assert parse_since("2h", now) == datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
    assert parse_since("2026-01-01T08:00:00Z") == datetime(2026, 1, 1, 8, 0, tzinfo=UTC)
    with pytest.raises(Exception, match="neither"):
        parse_since("yesterday")


def test_unresumable_errors_are_raised(server):
    with TrainyardClient(server.address) as client:
        with pytest.raises(Exception) as caught:
            list(follow_logs(client, "0123456789abcdef", backoff=NO_WAIT))
    assert caught.value.code == grpc.StatusCode.NOT_FOUND
