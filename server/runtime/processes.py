"""Process groups of steps: reading their output, signalling, telling whether they are
gone, and finding them again after a server restart.

Each step is started in a session (and so a process group) of its own, whose id is the
pid of the step's first process. Signals go to the whole group. A group is gone when no
process of it is alive; zombies (exited processes that wait for their parent to reap
them) count as gone, since under an init that does not reap they can linger.

Waiting for a group never reads every process of the host on the event loop: the
leader's exit is told by its pidfd (Linux 5.3 and later; it works for any pid, so also
after a restart, when the leader is not our child), the rest of the group by signal 0
to the group. Only a group that keeps answering signals (zombies nobody reaps) is
looked at closer, in a worker thread.

After a restart the runtime only has what it recorded when a step started: the pid of
the leader, which is the group id, and the leader's start time. :func:`owned_group` uses
them to tell a surviving group of ours from a group that reused the id.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import psutil

READ_CHUNK = 64 * 1024
# A line with no newline in sight is cut into pieces of this size.
MAX_LINE_BYTES = 64 * 1024
ENV_EXECUTION_ID = "TRAINYARD_EXECUTION_ID"
PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Linux: adopt the orphaned descendants of our steps, so that we can reap them
    (:func:`reap_group`) instead of leaving zombies under an init that never reaps.
    Returns False where the platform has no such thing."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


async def read_lines(
    stream: asyncio.StreamReader,
    emit: Callable[[list[str]], None],
    room: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Call ``emit`` with the lines of ``stream`` (without their ends of line, a
    trailing carriage return dropped too), decoded as UTF-8 with bad bytes replaced: a
    list per read, of the lines it completed. Over-long lines are cut in pieces of
    MAX_LINE_BYTES.

    ``room`` (the log sink's ``wait_for_room``) is awaited after each emit, before the
    next read: while it waits nothing is read, the pipe fills, and the writing process
    blocks in its writes.

    The complete lines of a read are decoded at once and split in C. This decodes
    exactly as line by line would: a newline byte is never part of a UTF-8 sequence,
    so a bad sequence at the end of one line is replaced within that line."""
    buffer = bytearray()
    while True:
        chunk = await stream.read(READ_CHUNK)
        if not chunk:
            break
        buffer += chunk
        end = buffer.rfind(b"\n")
        if end >= 0:
            text = buffer[:end].decode("utf-8", errors="replace")
            del buffer[: end + 1]
            lines = text.split("\n")
            if "\r" in text:
                lines = [line[:-1] if line.endswith("\r") else line for line in lines]
            emit(lines)
        while len(buffer) >= MAX_LINE_BYTES:
            emit([_decode(buffer[:MAX_LINE_BYTES])])
            del buffer[:MAX_LINE_BYTES]
        if room is not None:
            await room()
    if buffer:
        emit([_decode(buffer)])


def _decode(data: bytes | bytearray) -> str:
    if data.endswith(b"\r"):
        data = data[:-1]
    return data.decode("utf-8", errors="replace")


def signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to every process of the group; False when the group is gone."""
    if pgid <= 1 or pgid == os.getpgid(0):
        return False  # never our own group, never everything
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return False


def reap_group(pgid: int) -> None:
    """Reap the exited children of ours in the group (orphans we adopted). Call it only
    once the group leader was waited for: it must not take the leader's exit status."""
    try:
        while True:
            pid, _ = os.waitpid(-pgid, os.WNOHANG)
            if pid == 0:
                return
    except ChildProcessError:
        return


def live_members(pgid: int) -> list[int]:
    """Pids of the live (not zombie) processes of the group."""
    members = []
    for proc in psutil.process_iter(["status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                members.append(proc.pid)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return members


def group_signalable(pgid: int) -> bool:
    """Whether the group still has any process, zombies included: one signal-0 system
    call, no look at other processes (cheap enough for the event loop)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def group_gone(pgid: int) -> bool:
    """Whether no live process of the group remains, zombies counting as gone.
    Blocking when the group still answers signals (it then reads every process of the
    host): call it from a worker thread."""
    return not group_signalable(pgid) or not live_members(pgid)


def open_pidfd(pid: int) -> int | None:
    """A pidfd for the process (Linux 5.3 and later), readable once it exits; it works
    for any pid, not only for children of ours. None where there is no such thing or
    the process is gone."""
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is None:
        return None
    try:
        return pidfd_open(pid)
    except OSError:
        return None


async def wait_readable(fd: int, timeout: float | None) -> bool:
    """Wait until ``fd`` is readable or ``timeout`` seconds passed (None: no limit);
    True when readable."""
    loop = asyncio.get_running_loop()
    ready = loop.create_future()

    def on_ready() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, on_ready)
    try:
        await asyncio.wait_for(ready, None if timeout is None else max(timeout, 0.0))
        return True
    except TimeoutError:
        return False
    finally:
        loop.remove_reader(fd)


def _leads(pgid: int) -> bool:
    try:
        return os.getpgid(pgid) == pgid
    except (ProcessLookupError, PermissionError):
        return False


def create_time(pid: int) -> float | None:
    """When the process started (seconds since the epoch), None when it is gone."""
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def owned_group(pgid: int, leader_create_time: float | None) -> bool:
    """Whether live processes of the group we recorded (leader ``pgid``, started at
    ``leader_create_time``) are still there.

    The group id is the leader's pid. While the leader lives, its start time tells it
    from a process that reused the pid. Once the leader is gone, the id cannot be given
    to a new process while any member of the group remains, so members are ours.
    """
    try:
        leader = psutil.Process(pgid)
        if leader.status() != psutil.STATUS_ZOMBIE:
            if leader_create_time is None:
                return False
            return abs(leader.create_time() - leader_create_time) < 0.05
    except psutil.Error:
        pass
    return not group_gone(pgid)


# A group that still answers signals this long may be only zombies that nobody reaps
# (an init that does not reap, and we are not their parent): from then on, look for
# live members in a worker thread every so often.
ZOMBIE_CHECK_AFTER = 0.5
ZOMBIE_CHECK_EVERY = 0.5


async def wait_gone(pgid: int, timeout: float, reap: bool = False) -> bool:
    """Wait until the group is gone or ``timeout`` seconds passed; True when gone.

    While the group's leader lives, its pidfd tells when it exits (no polling, and it
    works after a restart too, when the leader is not our child). Then the rest of the
    group is watched with signal 0 to the group, with a growing delay. Nothing here
    reads other processes on the event loop: only a group that lingers (zombies
    nobody reaps count as gone) is looked at closer, in a worker thread."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    if _leads(pgid):
        fd = open_pidfd(pgid)
        if fd is not None:
            try:
                exited = await wait_readable(fd, deadline - loop.time())
            finally:
                os.close(fd)
            if not exited:
                return not await asyncio.to_thread(live_members, pgid)
    next_check = loop.time() + ZOMBIE_CHECK_AFTER
    delay = 0.005
    while True:
        if reap:
            reap_group(pgid)
        if not group_signalable(pgid):
            return True
        now = loop.time()
        if now >= next_check or now >= deadline:
            if not await asyncio.to_thread(live_members, pgid):
                return True
            if loop.time() >= deadline:
                return False
            next_check = loop.time() + ZOMBIE_CHECK_EVERY
        await asyncio.sleep(min(delay, max(deadline - loop.time(), 0.0)))
        delay = min(delay * 2, 0.1)


async def terminate_group(pgid: int, grace: float, kill_timeout: float = 5.0) -> bool:
    """SIGTERM to the group, SIGKILL after ``grace`` seconds; True once it is gone."""
    if not signal_group(pgid, signal.SIGTERM):
        return True
    if await wait_gone(pgid, grace):
        return True
    signal_group(pgid, signal.SIGKILL)
    return await wait_gone(pgid, kill_timeout)


def processes_of(
    execution_ids: Iterable[str], descendants_only: bool = False
) -> dict[str, list[int]]:
    """Live processes whose environment names one of these executions (blocking: it
    reads process environments; run it in a worker thread). ``descendants_only``
    looks at this process's descendants alone, which is enough while the server is a
    child subreaper (orphans of its steps are re-parented to it), and much cheaper
    than reading every process of the host."""
    wanted = set(execution_ids)
    found: dict[str, list[int]] = {}
    if not wanted:
        return found
    me = os.getpid()
    if descendants_only:
        try:
            candidates = psutil.Process(me).children(recursive=True)
        except psutil.Error:
            candidates = []
    else:
        candidates = list(psutil.process_iter())
    for proc in candidates:
        try:
            if proc.pid == me or proc.status() == psutil.STATUS_ZOMBIE:
                continue
        except psutil.Error:
            continue
        try:
            execution_id = proc.environ().get(ENV_EXECUTION_ID)
        except (psutil.Error, OSError):
            continue
        if execution_id in wanted:
            found.setdefault(execution_id, []).append(proc.pid)
    return found


async def kill_processes(pids: Iterable[int], grace: float) -> None:
    """Terminate stray processes: each one's whole group when it is a group of its own
    (never the server's), else the process alone."""
    own = os.getpgid(0)
    groups: set[int] = set()
    for pid in pids:
        try:
            pgid = os.getpgid(pid)
        except ProcessLookupError:
            continue
        if pgid != own and pgid > 1:
            groups.add(pgid)
        else:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    await asyncio.gather(*(terminate_group(g, grace) for g in groups))


def signal_of_exit_code(code: int) -> int:
    """The signal a shell's exit code 128 + N reports (N), or 0 for an ordinary code."""
    number = code - 128
    if number <= 0:
        return 0
    try:
        signal.Signals(number)
    except ValueError:
        return 0
    return number


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


# ------------------------------------------------------------------ the state file


def encode_state(state: dict[str, Any]) -> bytes:
    """The state file's bytes (on the loop: the state may change right after)."""
    return json.dumps(state, indent=1, sort_keys=True).encode()


def write_state(path: Path, data: bytes) -> None:
    """Replace the state file atomically and durably: written to a temporary file,
    flushed to disk, renamed over the old one, and the directory flushed so that the
    rename survives a power loss. Blocking: call it from a thread."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_state(path: Path) -> dict[str, Any] | None:
    """The recorded state, None when missing or unreadable."""
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict) or not isinstance(state.get("steps"), dict):
        return None
    return state
