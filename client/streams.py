"""Following logs and watching executions, with reconnects that resume exactly.

    from client.client import TrainyardClient
    from client.streams import follow_logs, watch

    with TrainyardClient() as ty:
        for line in follow_logs(ty, execution_id):
            print(line.sequence, line.text)
        for event in watch(ty, execution_id):
            print(event.type, event.execution.status)

Both generators keep their position (the last line's sequence number, the last event's
cursor). When the connection drops (UNAVAILABLE) or the server cuts off a reader that
fell too far behind (RESOURCE_EXHAUSTED with a cursor), they wait with bounded
exponential backoff and call again from that position: no line or event is missed or
repeated. Any other error is raised as ``TrainyardError``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from client.client import TrainyardClient, TrainyardError
from trainyard.v1 import execution_service_pb2, log_pb2, log_service_pb2

# Reasons of RESOURCE_EXHAUSTED after which a reader resumes from the error's cursor.
RESUMABLE_REASONS = frozenset({"TAILER_TOO_SLOW", "LIMIT_EXCEEDED"})


@dataclass
class Backoff:
    """Waits between reconnects: ``initial`` seconds, times ``multiplier`` per failure in
    a row, at most ``maximum``; gives up after ``attempts`` failures in a row without
    progress (None: never). Each wait is cut by a random part of up to ``jitter`` of
    it, so that many readers cut off at once (a server restart) do not all come back
    at the same moment."""

    initial: float = 0.1
    maximum: float = 5.0
    multiplier: float = 2.0
    attempts: int | None = 20
    jitter: float = 0.5
    rng: random.Random = field(default_factory=random.Random, repr=False)

    def delay(self, failures: int) -> float:
        base = min(self.maximum, self.initial * self.multiplier ** max(0, failures - 1))
        return base * (1.0 - self.jitter * self.rng.random())


# Called before each reconnect with the error and the position resumed from.
ReconnectHook = Callable[[TrainyardError, object], None]


def _resumable(error: TrainyardError) -> bool:
    if error.code == grpc.StatusCode.UNAVAILABLE:
        return True
    return (
        error.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        and error.reason in RESUMABLE_REASONS
        and "cursor" in error.metadata
    )


def _wait_to_resume(
    error: TrainyardError,
    failures: int,
    position: object,
    backoff: Backoff,
    on_reconnect: ReconnectHook | None,
    sleep: Callable[[float], None],
) -> int:
    """After a resumable error: raise it once ``backoff`` gives up, else report the
    reconnect and wait. Returns the failures in a row, this one included."""
    failures += 1
    if backoff.attempts is not None and failures > backoff.attempts:
        raise error from None
    if on_reconnect is not None:
        on_reconnect(error, position)
    sleep(backoff.delay(failures))
    return failures


def _timestamp(value: datetime | Timestamp) -> Timestamp:
    if isinstance(value, Timestamp):
        return value
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def follow_logs(
    client: TrainyardClient,
    execution_id: str,
    *,
    follow: bool = True,
    after_sequence: int = 0,
    since: datetime | Timestamp | None = None,
    tail_lines: int = 0,
    steps: Sequence[str] = (),
    streams: Sequence[int] = (),
    backoff: Backoff | None = None,
    on_reconnect: ReconnectHook | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[log_pb2.LogLine]:
    """Yield an execution's log lines (TailLogs), resuming after the last line on
    reconnect. With ``follow`` it ends after the execution's last line once it is final.
    At most one of ``after_sequence``, ``since`` and ``tail_lines``."""
    backoff = backoff or Backoff()
    cursor = after_sequence
    started = False  # a line was received: resume by cursor from now on
    failures = 0
    while True:
        request = log_service_pb2.TailLogsRequest(
            execution_id=execution_id, follow=follow, steps=list(steps), streams=list(streams)
        )
        if started or cursor:
            request.after_sequence = cursor
        elif since is not None:
            request.since_time.CopyFrom(_timestamp(since))
        elif tail_lines:
            request.tail_lines = tail_lines
        call = client.logs.TailLogs(request, metadata=client.metadata)
        try:
            for message in call:
                yield from message.lines
                if message.lines:
                    cursor = message.cursor or message.lines[-1].sequence
                    started = True
                    failures = 0
            return
        except grpc.RpcError as rpc_error:
            error = TrainyardError.from_rpc_error(rpc_error)
            if not _resumable(error):
                raise error from None
            if "cursor" in error.metadata:
                server_cursor = int(error.metadata["cursor"])
                if server_cursor > cursor:
                    cursor, started = server_cursor, True
            failures = _wait_to_resume(error, failures, cursor, backoff, on_reconnect, sleep)
        finally:
            call.cancel()


def watch(
    client: TrainyardClient,
    execution_id: str = "",
    *,
    statuses: Sequence[int] = (),
    scenario_id: str = "",
    configuration_id: str = "",
    executable_id: str = "",
    keep_watching: bool = False,
    after_cursor: str = "",
    backoff: Backoff | None = None,
    on_reconnect: ReconnectHook | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[execution_service_pb2.WatchExecutionsResponse]:
    """Yield WatchExecutions events, resuming after the last event's cursor on
    reconnect. Watching one execution ends after its final status unless
    ``keep_watching``; a filtered watch runs until the caller stops iterating."""
    backoff = backoff or Backoff()
    cursor = after_cursor
    failures = 0
    while True:
        request = execution_service_pb2.WatchExecutionsRequest(
            execution_id=execution_id,
            statuses=list(statuses),
            scenario_id=scenario_id,
            configuration_id=configuration_id,
            executable_id=executable_id,
            keep_watching=keep_watching,
            after_cursor=cursor,
        )
        call = client.executions.WatchExecutions(request, metadata=client.metadata)
        try:
            for event in call:
                yield event
                cursor = event.cursor or cursor
                failures = 0
            return
        except grpc.RpcError as rpc_error:
            error = TrainyardError.from_rpc_error(rpc_error)
            if not _resumable(error):
                raise error from None
            cursor = error.metadata.get("cursor") or cursor
            failures = _wait_to_resume(error, failures, cursor, backoff, on_reconnect, sleep)
        finally:
            call.cancel()
