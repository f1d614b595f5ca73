"""One configure_logging() at start: structlog, JSON when stderr is not a terminal.

Libraries that log through the standard library (grpc, peewee, asyncio) are routed
through the same processors and renderer: every line on stderr has one format.

The server logs a line per call. With ``background`` (the server's own setting) the
lines go to stderr through one thread of their own, in the order they were logged: a
call that logs only queues its line, so the event loop never waits on stderr (a pipe to
a slow journal, a terminal scrolled back, a reader that stopped)."""

from __future__ import annotations

import atexit
import logging
import queue
import sys
import threading
import time
from typing import TextIO

import structlog

from server.api.context import add_call_context
from server.config import json_logs

_HANDLER_NAME = "trainyard-structlog"
# Lines queued for a stderr that does not take them (nobody reads its pipe) are
# dropped past this many, and counted: memory stays bounded, the loop never waits.
MAX_QUEUED_LINES = 50_000
EXIT_DRAIN_SECONDS = 5.0  # at exit, how long the queued lines may take to be written
# After the first line of a batch, the writer waits this long for more: a thread woken
# for every line would take the interpreter's lock from the event loop thousands of
# times a second (the server logs a line per call), slowing every call by a fifth.
LINGER_SECONDS = 0.02


class LineWriter:
    """A stream for log lines: ``write`` queues the text, one thread writes it to
    ``stream`` in order, the lines of a linger in one write."""

    def __init__(self, stream: TextIO, max_queued: int = MAX_QUEUED_LINES):
        self.stream = stream
        self.max_queued = max_queued
        self.dropped = 0
        self._drops = threading.Lock()
        self._queue: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="trainyard-stderr", daemon=True)
        self._thread.start()

    def write(self, text: str) -> int:
        # Past the bound a line is dropped, unless it is the writer's own note of drops.
        full = self._queue.qsize() >= self.max_queued
        if full and threading.current_thread() is not self._thread:
            with self._drops:
                self.dropped += 1
        else:
            self._queue.put(text)
        return len(text)

    def flush(self) -> None:
        """Nothing to do: the writer thread flushes after each batch."""

    def isatty(self) -> bool:
        return self.stream.isatty()

    def close(self, timeout: float = EXIT_DRAIN_SECONDS) -> None:
        """Write what is queued (waiting at most ``timeout``), then stop the thread."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout)

    def _run(self) -> None:
        done = False
        while not done:
            first = self._queue.get()
            if first is not None:
                time.sleep(LINGER_SECONDS)
            batch = [first, *self._queued(self.max_queued)]
            done = None in batch  # closed: write what is queued, then stop
            self._write(batch)
            if self.dropped:
                with self._drops:
                    dropped, self.dropped = self.dropped, 0
                structlog.get_logger(__name__).warning(
                    "log lines dropped: stderr did not take them", dropped=dropped
                )
            if done:
                self._write(self._queued(self.max_queued))

    def _queued(self, most: int) -> list[str | None]:
        items: list[str | None] = []
        while len(items) < most:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return items

    def _write(self, items: list[str | None]) -> None:
        """The texts of ``items`` (the end mark left out) in one write."""
        text = "".join(t for t in items if t is not None)
        if not text:
            return
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # stderr closed: no one to tell
            pass


_writer: LineWriter | None = None


def _background_stream() -> LineWriter:
    """The process's one writer thread, started by the first configuration asking."""
    global _writer
    if _writer is None:
        _writer = LineWriter(sys.stderr)
        atexit.register(_writer.close)
    return _writer


def configure_logging(
    log_format: str = "auto", level: str = "info", background: bool = False
) -> None:
    use_json = json_logs(log_format)
    stream = _background_stream() if background else sys.stderr
    renderer = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    threshold = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    shared = [
        add_call_context,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info if use_json else structlog.dev.set_exc_info,
    ]
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=structlog.WriteLoggerFactory(file=stream),
        cache_logger_on_first_use=True,
    )
    # The standard library's records: the same processors (plus the logger's name),
    # rendered alike, on the same stream.
    handler = logging.StreamHandler(stream)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(threshold)
