"""The entrypoint wrapper of a Ray step: keeps its stdout and stderr apart in Ray's log.

Ray writes a job's stdout and stderr to one log. The Ray runner therefore starts a
step's command under this script (its source travels in the job's runtime_env, so the
node needs nothing but a ``python3``), which runs the command with a pipe for each
stream and copies both to its own stdout, Ray's log, whole lines only: each stderr line
starts with the job's marker (a random token of the job, also in its metadata), which
the server strips; stdout lines are copied as they are. No line's bytes change. A line
with no newline in sight is cut into pieces of 64 KiB; an unterminated last line is
ended with a newline.

The wrapper reads both pipes as they fill, so the order between the streams is the
order in which the step's writes reached them (as for a local step). Signals that stop
the job (SIGTERM, SIGINT, SIGHUP) are for the command, which Ray signals itself: the
wrapper outlives it to copy its last lines, then exits as the command did, with its
exit code or by its signal. A command that exits while its descendants still hold its
pipes gets two more seconds of their output.

Standard library only, Python 3.9 and later: it runs on the Ray node's Python.
"""

import os
import selectors
import signal
import subprocess
import sys
import time

PIECE = 64 * 1024  # a line with no newline in sight is cut into pieces of this size
DRAIN = 2.0  # seconds of output taken from what outlives the command
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def _write(data):
    view = memoryview(data)
    while view:
        view = view[os.write(1, view) :]


def main():
    mark = os.environ.pop("TRAINYARD_RAY_STDERR_MARK", "").encode()
    argv = sys.argv[1:]
    early = []  # stop signals that came before the command existed

    def hold(signum, frame):
        early.append(signum)

    for signum in STOP_SIGNALS:
        signal.signal(signum, hold)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        child = subprocess.Popen(argv, stdout=out_w, stderr=err_w)
    except OSError as exc:
        why = exc.strerror or str(exc)
        _write(mark + f"{argv[0] if argv else ''}: {why}\n".encode(errors="replace"))
        sys.exit(127 if isinstance(exc, FileNotFoundError) else 126)
    os.close(out_w)
    os.close(err_w)
    for signum in early:
        child.send_signal(signum)

    marks = {out_r: b"", err_r: mark}
    pending = {out_r: b"", err_r: b""}

    def emit(fd, data):
        """Whole lines of one stream (``data`` ends with a newline)."""
        prefix = marks[fd]
        if prefix:
            data = prefix + data[:-1].replace(b"\n", b"\n" + prefix) + b"\n"
        _write(data)

    selector = selectors.DefaultSelector()
    selector.register(out_r, selectors.EVENT_READ)
    selector.register(err_r, selectors.EVENT_READ)
    open_fds = 2
    deadline = None
    while open_fds:
        if deadline is None:
            timeout = 0.5
            if child.poll() is not None:
                deadline = time.monotonic() + DRAIN
        if deadline is not None:
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                break
        for key, _ in selector.select(timeout):
            fd = key.fd
            data = os.read(fd, 65536)
            if not data:
                if pending[fd]:
                    emit(fd, pending[fd] + b"\n")
                    pending[fd] = b""
                selector.unregister(fd)
                os.close(fd)
                open_fds -= 1
                continue
            if pending[fd]:
                data = pending[fd] + data
            end = data.rfind(b"\n")
            if end >= 0:
                emit(fd, data[: end + 1] if end + 1 < len(data) else data)
                data = data[end + 1 :]
            while len(data) >= PIECE:
                emit(fd, data[:PIECE] + b"\n")
                data = data[PIECE:]
            pending[fd] = data
    for fd, rest in pending.items():  # what outlived the command, unterminated
        if rest:
            emit(fd, rest + b"\n")
    code = child.wait()
    if code < 0:  # killed by a signal: the same end, so that Ray sees the same
        try:
            signal.signal(-code, signal.SIG_DFL)
        except (OSError, ValueError):  # SIGKILL, SIGSTOP: default already
            pass
        os.kill(os.getpid(), -code)
        sys.exit(128 - code)
    sys.exit(code)


if __name__ == "__main__":
    main()
