"""The `trainyard` command line as a new user meets it: serve and make run take the
server's flags and variables, global options anywhere, readable output, one error
message, hints, versions, ids-only output and colour."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from client.cli import main
from client.client import TrainyardClient, TrainyardError
from client.commands.streams import _log_notice, _watch_notice
from client.output import shorten
from server.config import add_arguments
from tests.conftest import ROOT
from tests.workflow_helpers import Runner, container, wait_for, workflow


@pytest.fixture
def idle(server_factory):
    """A server that runs nothing: executions stay PENDING."""
    return server_factory(runtime="none")


@pytest.fixture
def cli(idle, capsys):
    def run(*args: str, expect: int = 0) -> str:
        code = main([*args, "--address", idle.address])
        out = capsys.readouterr()
        assert code == expect, out.err
        return out.out if expect == 0 else out.out + out.err

    run.server = idle
    return run


def _first_session(cli) -> tuple[str, str]:
    dataset = cli(
        "artifacts", "create", str(ROOT / "samples/data/iris.csv"),
        "--name", "iris", "--scenario", "iris",
    ).strip()
    config = cli(
        "configurations", "create", "--name", "lr01", "--executable", "iris-train",
        "-p", "learning_rate=0.1", "-a", f"iris-data={dataset}",
    ).strip()
    return dataset, config


def _wait_port(port_file: Path, process: subprocess.Popen, timeout: float = 60) -> int:
    def ready():
        assert process.poll() is None, f"the server exited with {process.returncode}"
        text = port_file.read_text().strip() if port_file.exists() else ""
        return int(text) if text else 0

    return wait_for(ready, timeout, "the server's port file")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


def _server_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAINYARD_")}
    # No browser console: its default port is a fixed one.
    env.update(TRAINYARD_LOG_FORMAT="json", TRAINYARD_RUNTIME="none", TRAINYARD_NO_CONSOLE="1")
    env.update(extra)
    return env


# --------------------------------------------------------------- serve, make run


def test_serve_help_lists_every_server_flag(capsys):
    import argparse

    reference = argparse.ArgumentParser()
    add_arguments(reference)
    flags = {s for a in reference._actions for s in a.option_strings if s.startswith("--")}
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    assert flags and all(flag in text for flag in flags), sorted(f for f in flags if f not in text)


def test_serve_runs_a_server_with_the_flags_given(tmp_path):
    port_file, data = tmp_path / "port", tmp_path / "data"
    process = subprocess.Popen(
        [
            sys.executable, "-m", "client.cli", "serve", "--address", "127.0.0.1:0",
            "--data-dir", str(data), "--port-file", str(port_file),
            "--executables-dir", str(ROOT / "samples/executables"), "--runtime", "none",
        ],
        cwd=ROOT, env=_server_env(tmp_path), start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        port = _wait_port(port_file, process)
        with TrainyardClient(f"127.0.0.1:{port}", timeout=10) as ty:
            assert {e.id for e in ty.list_executables()} >= {"iris-train", "iris-infer"}
            assert ty.get_meta().runtime == "none"
        assert (data / "trainyard.db").exists()
    finally:
        _stop(process)


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_run_honours_the_trainyard_variables(tmp_path):
    port_file, data = tmp_path / "port", tmp_path / "data"
    env = _server_env(
        tmp_path,
        TRAINYARD_ADDRESS="127.0.0.1:0",
        TRAINYARD_DATA_DIR=str(data),
        TRAINYARD_PORT_FILE=str(port_file),
    )
    process = subprocess.Popen(
        ["make", "--no-print-directory", "-s", "run"], cwd=ROOT, env=env,
        start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        port = _wait_port(port_file, process, timeout=240)
        assert port != 50051
        assert (data / "trainyard.db").exists()
        with TrainyardClient(f"127.0.0.1:{port}", timeout=10) as ty:
            assert "iris-train" in {e.id for e in ty.list_executables()}
    finally:
        _stop(process)


# ------------------------------------------------------------------ global options


def test_global_options_work_after_the_command(idle, capsys):
    with TrainyardClient(idle.address, resource_group="team-a") as ty:
        exe = ty.create_executable((ROOT / "samples/executables/iris-train.yaml").read_text())
        data = ty.create_artifact("iris", (ROOT / "samples/data/iris.csv").as_uri(), "iris")
        config = ty.create_configuration("c", exe.id, "iris", {}, {"iris-data": data.id})
        execution = ty.create_execution(config.id).id

    def listing(*args: str) -> str:
        assert main(args) == 0
        return capsys.readouterr().out

    assert execution in listing("executions", "list", "-g", "team-a", "--address", idle.address)
    assert execution in listing("executions", "list", "--resource-group", "team-a",
                                "--address", idle.address)
    assert execution not in listing("executions", "list", "-g", "team-b",
                                    "--address", idle.address)
    # Before the command, as before; and a value given there is kept by the command.
    assert execution in listing("-g", "team-a", "--address", idle.address, "executions", "list")
    assert execution in listing("-g", "team-a", "executions", "list", "--address", idle.address)
    assert listing("executions", "list", "-q", "-g", "team-a",
                   "--address", idle.address).split() == [execution]


def test_version(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("trainyard ") and out.split()[1][0].isdigit()


# ------------------------------------------------------------------ readable output


def test_executables_and_artifacts_get_are_readable_summaries(cli):
    exe = cli("executables", "get", "iris-train")
    assert "PARAMETER_TYPE" not in exe and "ARTIFACT_KIND" not in exe and "{" not in exe
    assert "learning_rate" in exe and "float" in exe and "default 0.1" in exe
    assert "iris-data" in exe and "dataset" in exe and "iris-model" in exe
    dataset, config = _first_session(cli)
    art = cli("artifacts", "get", dataset)
    assert "ARTIFACT_KIND" not in art and "{" not in art
    assert "dataset" in art and "iris.csv" in art
    cfg = cli("configurations", "get", config)
    assert "learning_rate=0.1" in cfg and f"iris-data={dataset}" in cfg
    assert "iris" in cli("scenarios", "get", "iris")
    assert cli("artifacts", "get", dataset, "-q").strip() == dataset
    assert '"kind": "ARTIFACT_KIND_DATASET"' in cli("artifacts", "get", dataset, "--json")


def test_help_names_the_get_command(capsys):
    for command in ("scenarios", "executables", "artifacts", "configurations"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = capsys.readouterr().out.replace("show this help message", "")
        assert "get" in text and "show" not in text, text


def test_an_error_is_printed_once(cli):
    dataset, _ = _first_session(cli)
    err = cli(
        "configurations", "create", "--name", "bad", "--executable", "iris-train",
        "-p", "learning_rat=0.1", "-a", f"iris-data={dataset}", expect=1,
    )
    assert err.count("unknown parameter 'learning_rat'") == 1, err
    assert "CONFIGURATION_INVALID" in err and "configuration.parameter_bindings[0]" in err


def test_an_unreachable_server_gets_a_hint(capsys):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    for command in (["executions", "list"], ["logs", "-f", "01a236e6003e1237b855"],
                    ["watch", "01a236e6003e1237b855"]):
        assert main([*command, "--address", f"127.0.0.1:{port}", "--timeout", "5"]) == 1
        err = capsys.readouterr().err
        assert f"cannot reach a Trainyard server at 127.0.0.1:{port}" in err, command
        assert "hint:" in err and "trainyard serve" in err and "TRAINYARD_ADDRESS" in err
        assert "reconnecting" not in err
        assert [line.startswith("error:") for line in err.splitlines()] == [True, False], err


def test_long_cells_end_in_an_ellipsis_at_a_word_boundary():
    text = "step train was killed by SIGTERM (exit code 143) after the stop was requested"
    short = shorten(text, 40)
    assert len(short) <= 40 and short.endswith("…")
    assert text.startswith(short[:-1]) and text[len(short) - 1] == " "
    assert shorten("short", 40) == "short"


def test_times_show_their_zone_and_follow_tz(cli, monkeypatch):
    _, config = _first_session(cli)
    execution = cli("executions", "create", config).strip()
    try:
        monkeypatch.setenv("TZ", "Asia/Kolkata")
        time.tzset()
        assert "+05:30" in cli("executions", "get", execution)
        assert "+05:30" in cli("executions", "list")
        monkeypatch.setenv("TZ", "UTC")
        time.tzset()
        assert "+00:00" in cli("executions", "get", execution)
    finally:
        monkeypatch.undo()
        time.tzset()


def test_reconnect_notices_say_what_happens_in_words(capsys):
    import grpc

    lost = TrainyardError(grpc.StatusCode.UNAVAILABLE, "connection reset")
    cursor = "eyJzIjogMTIzNDUsICJ0IjogIjAxOWFiIn0"
    _watch_notice(lost, cursor)
    err = capsys.readouterr().err
    assert cursor not in err and "UNAVAILABLE" not in err
    assert "lost the connection" in err and "reconnecting" in err
    _log_notice(lost, 1234)
    assert "after line 1234" in capsys.readouterr().err


def test_batch_stop_of_pending_executions_says_stopped(server_factory, capsys):
    server = server_factory(max_concurrent_executions=1)
    runner = Runner(server.address)
    try:
        runner.register(workflow("hog", [container("main", "sleep", "60")]))
        config = runner.configure("hog")
        hog = runner.start(config)
        runner.wait(hog, "RUNNING")
        queued = [runner.start(config) for _ in range(2)]
        assert main(["executions", "stop", *queued, "--address", server.address]) == 0
        out = capsys.readouterr().out
        rows = [line.split() for line in out.splitlines()[1:]]
        assert sorted(r[0] for r in rows) == sorted(queued)
        assert all(r[1:3] == ["stopped", "STOPPED"] for r in rows), out
        assert main(["executions", "stop", hog, queued[0], "--address", server.address]) == 1
        out = capsys.readouterr().out
        assert {tuple(line.split()[:3]) for line in out.splitlines()[1:]} >= {
            (hog, "stopping", "STOPPING")
        }, out
    finally:
        runner.close()


def test_colour_only_on_a_terminal_and_never_with_no_color(idle, tmp_path):
    import pty

    def run(extra_env: dict[str, str], terminal: bool) -> bytes:
        env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
        env.update(extra_env, TRAINYARD_ADDRESS=idle.address, TERM="xterm-256color")
        command = [sys.executable, "-m", "client.cli", "executables", "list"]
        if not terminal:
            return subprocess.run(command, env=env, cwd=ROOT, capture_output=True,
                                  timeout=60, check=True).stdout
        leader, follower = pty.openpty()
        process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=follower,
                                   stderr=follower, stdin=subprocess.DEVNULL)
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the other side closed
                break
            if not chunk:
                break
            chunks.append(chunk)
        os.close(leader)
        assert process.wait(60) == 0
        return b"".join(chunks)

    coloured = run({}, terminal=True)
    assert b"\x1b[" in coloured and b"iris-train" in coloured
    assert b"\x1b[" not in run({"NO_COLOR": "1"}, terminal=True)
    assert b"\x1b[" not in run({}, terminal=False)


# ------------------------------------------------------------------------ signals


def test_a_step_whose_shell_reports_sigterm_names_the_signal(server, capsys):
    runner = Runner(server.address)
    try:
        runner.register(
            workflow("termed", [container("main", "/bin/sh", "-c", 'sh -c "kill -TERM \\$\\$"')])
        )
        execution = runner.wait(runner.start(runner.configure("termed")))
        assert "killed by SIGTERM" in execution.status_message, execution.status_message
        assert main(["executions", "get", execution.id, "--address", server.address]) == 0
        out = capsys.readouterr().out
        step_line = next(line for line in out.splitlines() if line.strip().startswith("main "))
        assert "SIGTERM" in step_line, out
    finally:
        runner.close()


def test_watch_tells_in_words_that_it_reconnects_after_a_restart(server_factory, stubs_for,
                                                                  capsys):
    from server.domain.models import Status
    from tests.streamkit import Driver, make_execution

    first = server_factory(runtime="none")
    port, data_dir = first.running.port, first.settings.data_dir
    execution_id = make_execution(stubs_for(first))
    Driver(first, execution_id).transition(Status.RUNNING)
    result: list[int] = []
    watcher = threading.Thread(
        target=lambda: result.append(main(["watch", execution_id, "--address", first.address]))
    )
    watcher.start()
    printed: list[str] = []

    def shown(text: str) -> bool:
        captured = capsys.readouterr()
        printed.append(captured.out + captured.err)
        return text in "".join(printed)

    wait_for(lambda: shown("RUNNING"), 30, "the watch to show RUNNING")
    first.call(first.running.stop(0.5))
    first.running = None
    second = server_factory(runtime="none", address=f"127.0.0.1:{port}", data_dir=data_dir)
    wait_for(lambda: shown("reconnecting"), 30, "the reconnect notice")
    Driver(second, execution_id).finish()
    watcher.join(60)
    assert not watcher.is_alive() and result == [0]
    shown("")
    notices = [line for line in "".join(printed).splitlines() if "reconnecting" in line]
    assert notices and all(
        line == "trainyard: lost the connection to the server; reconnecting, resuming after "
        "the last event shown"
        for line in notices
    ), notices
    assert "COMPLETED" in "".join(printed)
