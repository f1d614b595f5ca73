"""`trainyard logs` and `trainyard watch`: follow an execution's log and status,
reconnecting and resuming where they left off when the connection drops."""

from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import UTC, datetime, timedelta

from client.client import TrainyardClient, TrainyardError
from client.commands.executions import STATUSES, status_name
from client.output import enum_name, to_dict, when
from client.streams import follow_logs, watch
from trainyard.v1 import execution_pb2, log_pb2
from trainyard.v1 import execution_service_pb2 as epb

STREAMS = {
    "stdout": log_pb2.LOG_STREAM_STDOUT,
    "stderr": log_pb2.LOG_STREAM_STDERR,
    "system": log_pb2.LOG_STREAM_SYSTEM,
}
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h|d)$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(value: str, now: datetime | None = None) -> datetime:
    """``10m``, ``2h``, ``30s``, ``1d`` ago, or an ISO 8601 time (UTC unless it says)."""
    match = _DURATION.match(value.strip())
    if match:
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
        return (now or datetime.now(UTC)) - timedelta(seconds=seconds)
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is neither a duration (10m, 2h) nor an ISO 8601 time"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def register(subparsers: argparse._SubParsersAction) -> None:
    logs = subparsers.add_parser(
        "logs", help="print (and follow) an execution's log",
        description="Print an execution's log lines; with -f keep following until it ends. "
        "A dropped connection is resumed after the last line printed.",
    )
    logs.add_argument("execution_id")
    logs.add_argument("-f", "--follow", action="store_true",
                      help="keep printing new lines until the execution is final")
    start = logs.add_mutually_exclusive_group()
    start.add_argument("--since", type=parse_since, default=None,
                       help="start at this time: a duration ago (10m, 2h) or ISO 8601")
    start.add_argument("--tail", type=int, default=0, metavar="N",
                       help="start with the last N lines")
    start.add_argument("--after", type=int, default=0, metavar="SEQ",
                       help="start after this sequence number (a cursor)")
    logs.add_argument("--step", action="append", default=[], metavar="STEP",
                      help="only lines of this step (repeatable)")
    logs.add_argument("--stream", action="append", default=[], choices=sorted(STREAMS),
                      help="only lines of this stream (repeatable)")
    logs.add_argument("-t", "--timestamps", action="store_true",
                      help="prefix each line with its sequence number, time, step and stream")
    logs.set_defaults(handler=logs_cmd)

    w = subparsers.add_parser(
        "watch", help="print status changes of an execution (or a filtered set)",
        description="Print the current state, then every status and step change. Watching "
        "one execution ends when it is final (unless --keep-watching). A dropped "
        "connection is resumed after the last event printed.",
    )
    w.add_argument("execution_id", nargs="?", default="")
    w.add_argument("--keep-watching", action="store_true",
                   help="stay open after the execution is final")
    w.add_argument("--status", action="append", choices=sorted(STATUSES), default=[],
                   help="filtered watch: only executions in this status (repeatable)")
    w.add_argument("--scenario", default="", help="filtered watch: only this scenario")
    w.add_argument("--executable", default="", help="filtered watch: only this executable")
    w.add_argument("--configuration", default="", help="filtered watch: only this configuration")
    w.set_defaults(handler=watch_cmd)


def _why(error: TrainyardError) -> str:
    if error.code.name == "UNAVAILABLE":
        return "lost the connection to the server"
    return "the server cut off this reader for falling behind"


def _log_notice(error: TrainyardError, position: object) -> None:
    where = f"after line {position}" if position else "from the start"
    print(f"trainyard: {_why(error)}; reconnecting, resuming {where}", file=sys.stderr)


def _watch_notice(error: TrainyardError, _cursor: object) -> None:
    # The cursor is opaque: tell what it means, not what it is.
    print(
        f"trainyard: {_why(error)}; reconnecting, resuming after the last event shown",
        file=sys.stderr,
    )


def format_line(line: log_pb2.LogLine, prefix: bool) -> str:
    if not prefix:
        return line.text
    stream = enum_name(log_pb2.LogStream.Name(line.stream)).lower()
    return f"{line.sequence:>7} {when(line.time, with_date=False)} {line.step or '-'} {stream} " \
        f"{line.text}"


def _check_reachable(client: TrainyardClient, execution_id: str) -> None:
    """One unary call before a stream: an unreachable server (or an unknown execution)
    is reported at once, not after a minute of reconnects."""
    if execution_id:
        client.get_execution(execution_id)
    else:
        client.get_meta()


def logs_cmd(client: TrainyardClient, args) -> int:
    _check_reachable(client, args.execution_id)
    lines = follow_logs(
        client,
        args.execution_id,
        follow=args.follow,
        after_sequence=args.after,
        since=args.since,
        tail_lines=args.tail,
        steps=args.step,
        streams=[STREAMS[s] for s in args.stream],
        on_reconnect=_log_notice,
    )
    out = sys.stdout
    for line in lines:
        if args.json:
            out.write(json.dumps(to_dict(line)) + "\n")
        else:
            out.write(format_line(line, args.timestamps) + "\n")
        out.flush()
    return 0


def follow_to_end(client: TrainyardClient, execution_id: str) -> None:
    """Print an execution's log as it is written, until its last line."""
    for line in follow_logs(client, execution_id, follow=True, on_reconnect=_log_notice):
        sys.stdout.write(line.text + "\n")
        sys.stdout.flush()


def _status(value: int) -> str:
    return status_name(value) if value else "-"


def format_event(event: epb.WatchExecutionsResponse) -> str:
    kind = enum_name(epb.WatchEventType.Name(event.type))
    e = event.execution
    if event.HasField("transition"):
        t = event.transition
        stamp = when(t.time)
        detail = f"{_status(t.from_status):>9} -> {_status(t.to_status):<9} {t.cause}"
        if t.message:
            detail += f": {t.message}"
    elif event.HasField("step"):
        s = event.step
        stamp = when(e.update_time)
        phase = enum_name(execution_pb2.StepPhase.Name(s.phase))
        detail = f"step {s.name} {phase}" + (f": {s.message}" if s.message else "")
    else:
        stamp = when(e.update_time)
        detail = _status(e.status) + (f"  ({e.status_message})" if e.status_message else "")
    return f"{stamp}  {kind:<12} {e.id}  {detail}".rstrip()


def watch_cmd(client: TrainyardClient, args) -> int:
    filtered = bool(args.status or args.scenario or args.executable or args.configuration)
    if not args.execution_id and not filtered and args.keep_watching:
        print("error: --keep-watching needs an execution id", file=sys.stderr)
        return 2
    _check_reachable(client, args.execution_id)
    events = watch(
        client,
        args.execution_id,
        statuses=[STATUSES[s] for s in args.status],
        scenario_id=args.scenario,
        configuration_id=args.configuration,
        executable_id=args.executable,
        keep_watching=args.keep_watching,
        on_reconnect=_watch_notice,
    )
    out = sys.stdout
    for event in events:
        if args.json:
            out.write(json.dumps(to_dict(event)) + "\n")
        else:
            out.write(format_event(event) + "\n")
        out.flush()
    return 0
