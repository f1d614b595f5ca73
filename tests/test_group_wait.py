"""Waiting for a step's process group watches the group itself (the leader's pidfd,
then signal 0 to the group), never a scan of every process on the host."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import psutil
import pytest

from server.domain.models import LogStream
from server.domain.ports import StepLaunch
from server.runtime import processes as procs
from server.runtime.process_runner import ProcessRunner

needs_pidfd = pytest.mark.skipif(
    not hasattr(os, "pidfd_open"), reason="os.pidfd_open needs Linux 5.3 or later"
)


class Output:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.notes: list[str] = []

    def write(self, stream: LogStream, lines: list[str]) -> None:
        self.lines.extend(lines)

    async def room(self) -> None:
        return None

    def backlog(self) -> bool:
        return False

    def note(self, text: str) -> None:
        self.notes.append(text)


@pytest.fixture
def scans(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the host-wide process scans (psutil.process_iter) made while it is on."""
    calls: list[int] = []
    real = psutil.process_iter

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(psutil, "process_iter", counting)
    return calls


@pytest.fixture
def pidfds(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The pids a pidfd was opened for."""
    opened: list[int] = []
    real = procs.open_pidfd

    def recording(pid: int) -> int | None:
        opened.append(pid)
        return real(pid)

    monkeypatch.setattr(procs, "open_pidfd", recording)
    return opened


def test_a_step_leaving_a_background_process_ends_without_a_host_scan(
    tmp_path, scans, pidfds
):
    """The step's first process exits while a process it started in the background
    lives on (holding the step's pipes open): the runner tells the leader's exit by
    its pidfd, kills the rest of the group and waits for it to be gone with signal 0
    to the group alone."""

    async def run() -> tuple[int, list[str], list[str], int]:
        runner = ProcessRunner()
        await runner.open()
        launch = StepLaunch(
            execution_id="e1",
            resource_group="default",
            step="main",
            template="t",
            attempt=1,
            image="",
            command=("sh", "-c"),
            args=("sleep 30 & echo started",),
            env={},
            api_address="127.0.0.1:1",
            root=str(tmp_path),
        )
        output = Output()
        handle = await runner.start(launch, output)
        ended = await handle.wait()
        return ended.exit_code, output.lines, output.notes, handle.pgid

    code, lines, notes, pgid = asyncio.run(run())
    assert code == 0
    assert lines == ["started"]
    assert notes == []
    assert not procs.group_signalable(pgid), "the background sleep survived its step"
    if hasattr(os, "pidfd_open"):
        assert pgid in pidfds, "the leader's exit was not waited for by its pidfd"
    assert scans == [], "waiting for the step's group scanned every process of the host"


@needs_pidfd
def test_stopping_a_group_that_is_not_our_child_waits_on_its_pidfd(scans, pidfds):
    """After a restart the step's leader is not our child: terminate_group still
    waits on the leader's pidfd, and scans nothing."""
    # A parent of its own (which reaps it) starts the leader in a session of its own.
    # The leader outlives the SIGTERM by a second (one dead at once could be gone
    # before its pidfd is opened), and says when it handles the signal.
    leader = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *_: (time.sleep(1), sys.exit(0)))\n"
        "print('ready', flush=True)\n"
        "time.sleep(30)\n"
    )
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys\n"
            f"p = subprocess.Popen([sys.executable, '-c', {leader!r}], start_new_session=True)\n"
            "print(p.pid, flush=True)\n"
            "p.wait()\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        lines = {parent.stdout.readline().strip(), parent.stdout.readline().strip()}
        lines.discard("ready")
        pgid = int(lines.pop())
        assert psutil.Process(pgid).ppid() == parent.pid
        gone = asyncio.run(procs.terminate_group(pgid, grace=10.0))
        assert gone
        assert not procs.group_signalable(pgid)
        assert pgid in pidfds
        assert scans == [], "waiting for the group scanned every process of the host"
    finally:
        parent.kill()
        parent.wait()


def test_a_group_of_zombies_nobody_reaps_counts_as_gone():
    """Zombies keep a group answering signals; once they are all that is left, the
    wait looks closer (off the event loop) and reports the group gone."""
    # Our own child, never reaped while we wait: a zombie leader of its own group.
    child = subprocess.Popen(["sh", "-c", "exit 0"], start_new_session=True)
    try:
        deadline_ok = asyncio.run(_wait_zombie(child.pid))
        assert deadline_ok
    finally:
        child.wait()


async def _wait_zombie(pid: int) -> bool:
    loop = asyncio.get_running_loop()
    until = loop.time() + 10
    while psutil.Process(pid).status() != psutil.STATUS_ZOMBIE and loop.time() < until:
        await asyncio.sleep(0.01)
    assert procs.group_signalable(pid), "a zombie leader still answers signal 0"
    return await procs.wait_gone(pid, timeout=5.0)
