"""The local step runner: each step runs as a process group on the server's machine.

A step starts in a session (and so a process group) of its own, with the step's root
directory as its current directory and its stdout and stderr read line by line into
the log pipeline. When the step's first process exits, whatever is left of its process
group is killed. Stop: SIGTERM to the group, SIGKILL ``grace`` seconds later.

A step's environment is the allow-listed part of the server's (server/runtime/
step_env.py: locale, home, path and the like, never the rest), the template's env,
the ``TRAINYARD_*`` variables of the step, the repository root on
``PYTHONPATH`` (so that steps can import ``client``) and the server's interpreter first
on ``PATH`` (``python3`` in a step is the server's Python, with its packages).

The image a template declares is not used: the command runs on the host. Mounts are
not needed either: the planner already placed every artifact under the step's root.

After a restart the runner cannot read a surviving step's pipes again, so it does not
re-attach: the executor ends survivors (:meth:`ProcessRunner.discard`), recognised by
their process group and its leader's start time, and as a last resort by the execution
id in their environment (:meth:`ProcessRunner.strays`).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from server.domain.models import LogStream
from server.domain.ports import StepExit, StepLaunch, StepOutput, StepStartError
from server.runtime import processes as procs
from server.runtime import step_env as step_env_module

# The repository root: on every step's PYTHONPATH, so that steps can import `client`.
REPO_ROOT = Path(__file__).resolve().parents[2]
KILL_TIMEOUT = 5.0  # how long a SIGKILLed process group may take to disappear
REAP_TIMEOUT = 5.0  # how long the child watcher may take to reap an exited step
DRAIN_TIMEOUT = 2.0  # how long to read a step's pipes after its processes are gone
# ... and longer while the log store holds the readers back, up to this much.
STORE_DRAIN_TIMEOUT = 60.0


def step_env(launch: StepLaunch) -> dict[str, str]:
    env = step_env_module.inherited()
    env.update(launch.env)
    python_path = [str(REPO_ROOT)]
    if env.get("PYTHONPATH"):
        python_path.append(env["PYTHONPATH"])
    env.update(
        TRAINYARD_ADDRESS=launch.api_address,
        TRAINYARD_API_URL=launch.api_url,
        PYTHONPATH=os.pathsep.join(python_path),
        PYTHONUNBUFFERED="1",
        PATH=os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")]),
    )
    return env


class ProcessHandle:
    """One step's process group."""

    def __init__(self, step: str, process: asyncio.subprocess.Process, output: StepOutput):
        self.step = step
        self.process = process
        self.pgid = process.pid
        self.output = output
        self.exited = False
        self._stopping = False
        self._kill_timer: asyncio.TimerHandle | None = None
        self._state = {
            "pid": process.pid,
            "pgid": process.pid,
            "create_time": procs.create_time(process.pid),
        }
        room = output.room
        self._readers = [
            asyncio.create_task(procs.read_lines(pipe, partial(output.write, stream), room))
            for pipe, stream in (
                (process.stdout, LogStream.STDOUT),
                (process.stderr, LogStream.STDERR),
            )
        ]

    @property
    def state(self) -> dict[str, Any]:
        return dict(self._state)

    @property
    def where(self) -> str:
        return f"process group {self.pgid}"

    def stop(self, grace: float) -> None:
        if self._stopping or self.exited:
            return
        self._stopping = True
        procs.signal_group(self.pgid, signal.SIGTERM)
        self._kill_timer = asyncio.get_running_loop().call_later(grace, self._kill, grace)

    def _kill(self, grace: float) -> None:
        if self.exited:
            return
        self.output.note(
            f"step {self.step} still running {grace:g}s after SIGTERM: "
            f"sending SIGKILL to process group {self.pgid}"
        )
        procs.signal_group(self.pgid, signal.SIGKILL)

    def kill_now(self) -> None:
        procs.signal_group(self.pgid, signal.SIGKILL)

    async def wait(self) -> StepExit:
        try:
            returncode = await self._leader_exit()
        finally:
            self.exited = True
            if self._kill_timer is not None:
                self._kill_timer.cancel()
            await self._clear_group()
            await self._drain()
        if returncode >= 0:
            return StepExit(returncode)
        return StepExit(128 - returncode, -returncode)

    async def _leader_exit(self) -> int:
        """The exit status of the step's first process, as soon as it exits.

        ``Process.wait`` also waits for the step's pipes to close, which a process
        the step left running in the background holds open: the group would only be
        cleared once that process ended by itself. The leader's pidfd tells its exit
        alone; the child watcher then reaps it and sets its return code."""
        fd = procs.open_pidfd(self.process.pid)
        if fd is None:
            return await self.process.wait()
        try:
            await procs.wait_readable(fd, None)
        finally:
            os.close(fd)
        loop = asyncio.get_running_loop()
        reaped_by = loop.time() + REAP_TIMEOUT
        delay = 0.001
        while self.process.returncode is None and loop.time() < reaped_by:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)
        if self.process.returncode is not None:
            return self.process.returncode
        return await self.process.wait()

    async def _clear_group(self) -> None:
        """The step's first process exited: kill whatever is left of its group."""
        if procs.signal_group(self.pgid, signal.SIGKILL):
            if not await procs.wait_gone(self.pgid, KILL_TIMEOUT, reap=True):
                self.output.note(
                    f"step {self.step}: processes of group {self.pgid} survive SIGKILL"
                )
        procs.reap_group(self.pgid)

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        _, unread = await asyncio.wait(self._readers, timeout=DRAIN_TIMEOUT)
        drained_by = loop.time() + STORE_DRAIN_TIMEOUT
        while unread and self.output.backlog() and loop.time() < drained_by:
            # Held back by a slow log store, not by a pipe left open: read on.
            _, unread = await asyncio.wait(unread, timeout=DRAIN_TIMEOUT)
        for reader in unread:
            reader.cancel()
        if unread:
            self.output.note(
                f"step {self.step}: its output was still open after its processes "
                f"ended; stopped reading it"
            )


class ProcessRunner:
    """Runs each step as a local process group (the ``local`` runtime)."""

    name = "local"
    isolated = False
    outlives_server = False  # a step is a child of the server: it dies with it

    def __init__(self) -> None:
        self._subreaper = False  # set by open(): orphans of steps come back to us

    async def open(self) -> None:
        self._subreaper = procs.become_subreaper()

    async def admit(self, launch: StepLaunch) -> str:
        return ""

    async def start(self, launch: StepLaunch, output: StepOutput) -> ProcessHandle:
        try:
            process = await asyncio.create_subprocess_exec(
                *launch.argv,
                cwd=launch.root,
                env=step_env(launch),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            raise StepStartError(f"step {launch.step} could not start: {exc}") from None
        return ProcessHandle(launch.step, process, output)

    async def reattach(
        self, state: Mapping[str, Any], output: StepOutput, lines_stored: int
    ) -> None:
        return None  # the pipes of a surviving step died with the previous server

    async def adopt(self, launch: StepLaunch, output: StepOutput) -> None:
        return None  # as reattach: its steps do not outlive the server

    async def alive(self, state: Mapping[str, Any]) -> bool:
        pgid = state.get("pgid")
        if not isinstance(pgid, int):
            return False
        return await asyncio.to_thread(procs.owned_group, pgid, state.get("create_time"))

    async def discard(self, state: Mapping[str, Any], grace: float) -> None:
        pgid = state.get("pgid")
        if isinstance(pgid, int) and await asyncio.to_thread(
            procs.owned_group, pgid, state.get("create_time")
        ):
            await procs.terminate_group(pgid, grace)

    async def strays(
        self, execution_ids: Sequence[str], everywhere: bool = False
    ) -> dict[str, list[str]]:
        found = await asyncio.to_thread(
            procs.processes_of,
            list(execution_ids),
            descendants_only=self._subreaper and not everywhere,
        )
        return {eid: [str(pid) for pid in pids] for eid, pids in found.items()}

    async def remove_strays(self, strays: Sequence[str], grace: float) -> None:
        await procs.kill_processes([int(s) for s in strays], grace)

    async def executions_left(self) -> list[str]:
        return []  # found by their environment instead, execution by execution (strays)

    async def close(self) -> None:
        return None
