"""The server's log lines reach stderr through a thread of their own: in the order
they were logged, every one at exit, and a stderr nobody reads never stops a caller
(the lines past a bound are dropped and counted)."""

from __future__ import annotations

import json
import select
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def child(code: str, **popen) -> subprocess.Popen:
    script = textwrap.dedent(
        """
        import logging, sys, threading, time
        import structlog
        from server.log_setup import configure_logging
        configure_logging("json", "info", background=True)
        log = structlog.get_logger("test")
        """
    ) + textwrap.dedent(code)
    return subprocess.Popen(
        [sys.executable, "-c", script], cwd=ROOT, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen,
    )


def test_lines_of_every_thread_come_out_in_order_and_all_of_them_at_exit():
    process = child(
        """
        def other():
            for i in range(500):
                log.info("other", n=i)
        thread = threading.Thread(target=other)
        thread.start()
        for i in range(2000):
            log.info("main", n=i)
            if i == 1000:
                logging.getLogger("peewee").warning("from the standard library")
        thread.join()
        log.info("last")
        """
    )
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    lines = [json.loads(line) for line in err.splitlines()]
    assert [x["n"] for x in lines if x["event"] == "main"] == list(range(2000))
    assert [x["n"] for x in lines if x["event"] == "other"] == list(range(500))
    events = [x["event"] for x in lines]
    assert "from the standard library" in events
    assert events.index("from the standard library") > events.index("main") + 1000
    assert events[-1] == "last" and len(lines) == 2502


def test_a_stderr_nobody_reads_never_blocks_a_caller_and_drops_are_counted():
    total = 200_000  # well past the pipe's buffer and the queue's bound
    process = child(
        f"""
        started = time.monotonic()
        for i in range({total}):
            log.info("line", n=i)
        print(f"logged in {{time.monotonic() - started:.2f}}s", flush=True)
        """
    )
    try:
        # Nobody reads stderr yet: the loop above must end all the same.
        ready, _, _ = select.select([process.stdout], [], [], 120)
        assert ready, "logging blocked on a stderr nobody reads"
        assert process.stdout.readline().startswith("logged in")
        err = process.stderr.read()  # now read: the queued lines drain, then the exit
        assert process.wait(60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    lines = [json.loads(line) for line in err.splitlines()]
    numbers = [x["n"] for x in lines if x["event"] == "line"]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
    notes = [x for x in lines if x["event"].startswith("log lines dropped")]
    assert notes and all(x["level"] == "warning" for x in notes)
    dropped = sum(x["dropped"] for x in notes)
    assert dropped > 0 and len(numbers) + dropped == total


def test_the_server_answers_while_its_stderr_is_not_read(tmp_path):
    """A server whose stderr pipe is full (its reader stalled) still answers calls,
    each of which logs a line."""
    from client.client import TrainyardClient

    port_file = tmp_path / "port"
    process = subprocess.Popen(
        [sys.executable, "-m", "server", "--address", "127.0.0.1:0", "--port-file",
         str(port_file), "--data-dir", str(tmp_path / "data"), "--no-console",
         "--log-format", "json", "--runtime", "local"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while not port_file.exists() or not port_file.read_text().strip():
            assert process.poll() is None and time.monotonic() < deadline, "no server"
            time.sleep(0.05)
        address = f"127.0.0.1:{port_file.read_text().strip()}"
        with TrainyardClient(address, timeout=10) as client:
            for _ in range(3000):  # far more lines than the pipe holds
                client.get_meta()
    finally:
        process.terminate()
        process.stderr.read()
        process.wait(30)
