"""Faults off the happy path: durable state files, jittered reconnects, stdlib logging
in the server's format, signal handling around recovery."""

from __future__ import annotations

import contextlib
import os
import random

from client.streams import Backoff
from server.runtime import processes


def test_state_file_is_flushed_with_its_directory(tmp_path, monkeypatch):
    """write_state fsyncs the new file before the rename and the directory after it."""
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    path = tmp_path / "state.json"
    processes.write_state(path, processes.encode_state({"steps": {"a": 1}}))
    assert synced == [str(tmp_path / "state.json.tmp"), str(tmp_path)]
    assert processes.read_state(path) == {"steps": {"a": 1}}
    assert not (tmp_path / "state.json.tmp").exists()


def test_reconnect_waits_are_jittered():
    """1,000 readers cut off at once do not come back in lock-step: their waits for
    the same failure count spread over half the base delay."""
    waits = [Backoff(rng=random.Random(i)).delay(3) for i in range(1000)]
    base = Backoff(jitter=0).delay(3)
    assert base == 0.4
    assert all(base * 0.5 <= w <= base for w in waits)
    assert len({round(w, 4) for w in waits}) > 500
    spread = sorted(waits)
    assert spread[900] - spread[100] > base * 0.3


def test_stdlib_logging_comes_out_in_the_servers_format(tmp_path):
    """grpc's and peewee's loggers (the standard library's) render as the server's own
    lines do: one JSON object per line, with level, time and the logger's name."""
    import json
    import subprocess
    import sys

    code = (
        "import logging, structlog\n"
        "from server.log_setup import configure_logging\n"
        "configure_logging('json', 'info')\n"
        "structlog.get_logger('trainyard').info('own line')\n"
        "logging.getLogger('grpc._server').warning('from grpc %s', 7)\n"
        "logging.getLogger('peewee').info('from peewee')\n"
        "logging.getLogger('peewee').debug('not at info')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.strip()]
    assert [line["event"] for line in lines] == ["own line", "from grpc 7", "from peewee"]
    for line in lines:
        assert line["level"] in ("info", "warning") and "timestamp" in line
    assert lines[1]["logger"] == "grpc._server" and lines[1]["level"] == "warning"


# ------------------------------------------------------------------------ signals


def _server_process(tmp_path, *options: str):
    import signal
    import subprocess
    import sys

    from tests.workflow_helpers import REPO_ROOT

    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "server",
                "--address",
                "127.0.0.1:0",
                "--port-file",
                str(tmp_path / "port"),
                "--data-dir",
                str(tmp_path / "data"),
                "--log-format",
                "json",
                "--no-console",
                *options,
            ],
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return process, log_path, signal


def _events(log_path) -> list[str]:
    import json

    events = []
    for line in log_path.read_text(errors="replace").splitlines():
        try:
            events.append(json.loads(line).get("event", ""))
        except ValueError:
            continue
    return events


def test_a_sigterm_during_start_up_lets_it_finish_then_stops(tmp_path):
    """The handlers are in place before recovery: a SIGTERM as soon as the server says
    it is starting ends in a whole start and a graceful stop (exit 0), not in a
    process killed half-way through reconciliation."""
    from tests.workflow_helpers import wait_for

    process, log_path, signal = _server_process(tmp_path)
    try:
        wait_for(lambda: "server starting" in _events(log_path), 60, "the start")
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0, log_path.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    events = _events(log_path)
    assert events.index("server started") < events.index("shutting down")
    assert events[-1] == "server stopped"


def test_a_second_sigterm_forces_the_exit_within_its_bound(tmp_path):
    """A shutdown held up by a step that ignores SIGTERM (stop grace 60 s): a second
    SIGTERM ends the process within FORCED_EXIT_SECONDS (and a little slack)."""
    import time

    from server.app import EXIT_FORCED, FORCED_EXIT_SECONDS
    from tests.workflow_helpers import Runner, python, wait_for, workflow

    process, log_path, signal = _server_process(tmp_path, "--stop-grace-seconds", "60")
    port_file = tmp_path / "port"
    pgid_file = tmp_path / "step.pgid"
    try:
        wait_for(lambda: port_file.exists() and port_file.read_text().strip(), 60, "the port")
        runner = Runner(f"127.0.0.1:{port_file.read_text().strip()}")
        stubborn = python(
            "main",
            "import os, signal, time\n"
            "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            f"open({str(pgid_file)!r}, 'w').write(str(os.getpgrp()))\n"
            "print('ready', flush=True)\n"
            "time.sleep(120)\n",
        )
        eid = runner.start(runner.configure(runner.register(workflow("stubborn", [stubborn]))))
        runner.wait_output(eid, "ready", timeout=60)
        runner.close()
        process.send_signal(signal.SIGTERM)
        wait_for(lambda: "shutting down" in _events(log_path), 30, "the shutdown")
        assert process.poll() is None  # held up by the step
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(FORCED_EXIT_SECONDS + 10) == EXIT_FORCED
        assert time.monotonic() - started < FORCED_EXIT_SECONDS + 10
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        # The stubborn step's process group, left on purpose by the forced exit.
        import os

        if pgid_file.exists():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(int(pgid_file.read_text()), signal.SIGKILL)
