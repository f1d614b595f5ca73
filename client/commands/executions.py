"""`trainyard executions ...`: start, inspect, stop and delete executions."""

from __future__ import annotations

import argparse
import re
import signal
import sys
from collections.abc import Callable
from contextlib import redirect_stdout
from datetime import UTC, datetime, timedelta

from client.client import TrainyardClient
from client.output import (
    duration,
    enum_name,
    error,
    print_json,
    quiet,
    shorten,
    table,
    when,
)
from trainyard.v1 import artifact_pb2, execution_pb2

STATUSES = {
    enum_name(name).lower(): value
    for name, value in execution_pb2.ExecutionStatus.items()
    if value != execution_pb2.EXECUTION_STATUS_UNSPECIFIED
}

# Extra sections of `executions get` (name, renderer(client, execution) -> lines).
DETAIL_SECTIONS: list[
    tuple[str, Callable[[TrainyardClient, execution_pb2.Execution], list[str]]]
] = []


def status_name(value: int) -> str:
    return enum_name(execution_pb2.ExecutionStatus.Name(value))


def exit_text(code: int) -> str:
    """An exit code, with the signal a code of 128 + N reports: ``143 (SIGTERM)``."""
    if 128 < code < 128 + signal.NSIG:
        try:
            return f"{code} ({signal.Signals(code - 128).name})"
        except ValueError:
            pass
    return str(code)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "executions", help="start, inspect, stop, re-run and delete executions"
    )
    sub = parser.add_subparsers(dest="action", required=True)

    create = sub.add_parser(
        "create",
        help="start an execution of a configuration",
        description="Start an execution and print its id. With --wait, wait until it "
        "ends; with --follow, print its log lines meanwhile. Either way the exit code is "
        "0 only when it COMPLETED.",
    )
    create.add_argument("configuration_id")
    create.add_argument("--request-id", default="", help="idempotency key (default: random)")
    then = create.add_mutually_exclusive_group()
    then.add_argument("--wait", action="store_true", help="wait until the execution ends")
    then.add_argument(
        "-f", "--follow", action="store_true", help="print its log until the execution ends"
    )
    create.set_defaults(handler=create_cmd)

    rerun = sub.add_parser(
        "rerun",
        help="start a new execution of an ended one's configuration",
        description="Start a re-run of an ended execution: a new execution of the same "
        "configuration, linked to it both ways (`executions get` shows the link; "
        "`executions list --rerun-of ID` lists the re-runs). Prints the new id.",
    )
    rerun.add_argument("execution_id")
    rerun.add_argument("--request-id", default="", help="idempotency key (default: random)")
    then = rerun.add_mutually_exclusive_group()
    then.add_argument("--wait", action="store_true", help="wait until the re-run ends")
    then.add_argument(
        "-f", "--follow", action="store_true", help="print its log until the re-run ends"
    )
    rerun.set_defaults(handler=rerun_cmd)

    get = sub.add_parser("get", help="status, timeline, steps and outputs of an execution")
    get.add_argument("execution_id")
    get.set_defaults(handler=get_cmd)

    lst = sub.add_parser("list", help="list executions, newest first")
    lst.add_argument("--status", action="append", choices=sorted(STATUSES), default=[])
    lst.add_argument("--scenario", default="")
    lst.add_argument("--executable", default="")
    lst.add_argument("--configuration", default="")
    lst.add_argument("--rerun-of", default="", metavar="EXECUTION_ID",
                     help="only the re-runs of this execution")
    lst.add_argument("--limit", type=int, default=50, help="at most this many (0: all)")
    lst.set_defaults(handler=list_cmd)

    stop = sub.add_parser(
        "stop",
        help="stop executions, by id or by filter",
        description="Stop the executions named, or those a filter selects "
        "(`--status pending --older-than 1h`); a filter asks for confirmation first.",
    )
    stop.add_argument("execution_ids", nargs="*", metavar="EXECUTION_ID")
    _selection(stop)
    stop.set_defaults(handler=stop_cmd)

    delete = sub.add_parser(
        "delete",
        help="delete final executions, by id or by filter",
        description="Delete the executions named, or those a filter selects "
        "(`--status dead --older-than 7d`); a filter asks for confirmation first.",
    )
    delete.add_argument("execution_ids", nargs="*", metavar="EXECUTION_ID")
    delete.add_argument("--keep-metrics", action="store_true", help="keep their metrics")
    _selection(delete)
    delete.set_defaults(handler=delete_cmd)

    history = sub.add_parser("history", help="lifecycle transitions of an execution")
    history.add_argument("execution_id")
    history.set_defaults(handler=history_cmd)


def _selection(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("selecting by filter (instead of ids)")
    group.add_argument("--status", action="append", choices=sorted(STATUSES), default=[],
                       help="executions in this status (repeatable)")
    group.add_argument("--older-than", type=parse_age, default=None, metavar="AGE",
                       help="created longer ago than this: 30m, 12h, 7d")
    group.add_argument("--scenario", default="", help="executions of this scenario")
    group.add_argument("--executable", default="", help="executions of this executable")
    group.add_argument("--configuration", default="", help="executions of this configuration")
    parser.add_argument("-y", "--yes", action="store_true",
                        help="do not ask for confirmation")


_AGE = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h|d|w)$")
_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_age(value: str) -> timedelta:
    """``30m``, ``12h``, ``7d``, ``2w``."""
    match = _AGE.match(value.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"{value!r} is not an age such as 30m, 12h or 7d")
    return timedelta(seconds=float(match.group(1)) * _AGE_UNITS[match.group(2)])


def create_cmd(client: TrainyardClient, args) -> int:
    execution = client.create_execution(args.configuration_id, args.request_id or None)
    return _started(client, args, execution)


def rerun_cmd(client: TrainyardClient, args) -> int:
    execution = client.rerun_execution(args.execution_id, args.request_id or None)
    return _started(client, args, execution)


def _started(client: TrainyardClient, args, execution: execution_pb2.Execution) -> int:
    """Print a new execution's id; with --wait or --follow, see it to its end."""
    if not (args.wait or args.follow):
        if args.json:
            print_json(execution)
        else:
            print(execution.id)
        return 0
    if not args.json:
        print(execution.id, file=sys.stderr if args.follow else sys.stdout, flush=True)
    if args.follow:
        from client.commands.streams import follow_to_end

        follow_to_end(client, execution.id)
    final = wait_until_final(client, execution.id)
    if args.json:
        print_json(final)
    elif not quiet():
        message = f"  ({final.status_message})" if final.status_message else ""
        print(f"{final.id} {status_name(final.status)}{message}",
              file=sys.stderr if args.follow else sys.stdout)
    return 0 if final.status == execution_pb2.EXECUTION_STATUS_COMPLETED else 1


def wait_until_final(client: TrainyardClient, execution_id: str) -> execution_pb2.Execution:
    """Watch the execution (resuming over reconnects) until its status is final."""
    from client.streams import watch

    for _ in watch(client, execution_id):
        pass  # the watch of one execution ends by itself at its final status
    return client.get_execution(execution_id)


def render_execution(client: TrainyardClient, e: execution_pb2.Execution) -> list[str]:
    lines = [
        f"Execution     {e.id}",
        f"Status        {status_name(e.status)}"
        + (f"  ({e.status_message})" if e.status_message else ""),
        f"Target        {enum_name(execution_pb2.TargetStatus.Name(e.target_status))}",
        f"Configuration {e.configuration_id} {e.configuration_name}".rstrip(),
        *([f"Re-run of     {e.rerun_of}"] if e.rerun_of else []),
        f"Executable    {e.executable_id} (scenario {e.scenario_id})",
        f"Created       {when(e.create_time)}   duration {duration(e.start_time, e.complete_time)}",
        "",
        "Timeline",
    ]
    for t in e.history:
        source = status_name(t.from_status) if t.from_status else "-"
        lines.append(
            f"  {when(t.time)}  {source:>9} -> {status_name(t.to_status):<9}  {t.cause}"
            + (f": {t.message}" if t.message else "")
        )
    lines += ["", "Steps"]
    if not e.step_details:
        lines.append("  (none yet)")
    for s in e.step_details:
        code = exit_text(s.exit_code) if s.HasField("exit_code") else "-"
        lines.append(
            f"  {s.name:<20} {enum_name(execution_pb2.StepPhase.Name(s.phase)):<10} "
            f"exit {code:<4} {duration(s.start_time, s.finish_time):>8}  {s.message}".rstrip()
        )
    lines += ["", "Output artifacts"]
    if not e.output_artifacts:
        lines.append("  (none)")
    for a in e.output_artifacts:
        kind = enum_name(artifact_pb2.ArtifactKind.Name(a.kind)).lower()
        lines.append(f"  {a.id}  {a.name} ({kind})  {a.url}")
    reruns = [r.id for r in client.list_executions(rerun_of=e.id, page_size=50)]
    if reruns:
        lines += ["", "Re-runs", *(f"  {r}" for r in reruns)]
    for title, section in DETAIL_SECTIONS:
        lines += ["", title, *section(client, e)]
    return lines


def get_cmd(client: TrainyardClient, args) -> int:
    execution = client.get_execution(args.execution_id)
    if args.json:
        print_json(execution)
        return 0
    print("\n".join(render_execution(client, execution)))
    return 0


def list_cmd(client: TrainyardClient, args) -> int:
    items = []
    for e in client.list_executions(
        statuses=[STATUSES[s] for s in args.status],
        scenario_id=args.scenario,
        executable_id=args.executable,
        configuration_id=args.configuration,
        rerun_of=args.rerun_of,
        page_size=min(args.limit or 1000, 1000),
    ):
        items.append(e)
        if args.limit and len(items) >= args.limit:
            break
    if args.json:
        print_json(items)
        return 0
    list_table(items)
    return 0


def list_table(items: list[execution_pb2.Execution]) -> None:
    table(
        ["ID", "STATUS", "CONFIGURATION", "EXECUTABLE", "CREATED", "DURATION", "MESSAGE"],
        [
            [
                e.id,
                status_name(e.status),
                e.configuration_name or e.configuration_id,
                e.executable_id,
                when(e.create_time),
                duration(e.start_time, e.complete_time),
                shorten(e.status_message, 60),
            ]
            for e in items
        ],
    )


def _stop_result(status: int) -> str:
    """What a granted stop did: a PENDING execution is STOPPED at once, a running one is
    STOPPING until its processes are gone."""
    return "stopped" if status == execution_pb2.EXECUTION_STATUS_STOPPED else "stopping"


def _outcomes(outcomes, result: Callable[[int], str], as_json: bool) -> int:
    if as_json:
        print_json(list(outcomes))
    else:
        table(
            ["ID", "RESULT", "STATUS", "REASON"],
            [
                [
                    o.execution_id,
                    result(o.status) if o.ok else "refused",
                    status_name(o.status) if o.status else "-",
                    o.reason or o.message,
                ]
                for o in outcomes
            ],
        )
    return 0 if all(o.ok for o in outcomes) else 1


def _filtered(args) -> bool:
    return bool(
        args.status or args.older_than or args.scenario or args.executable or args.configuration
    )


def _select(client: TrainyardClient, args, verb: str) -> list[str] | None:
    """The ids to act on: those named, or those the filter selects once confirmed.
    None when there is nothing to do (refused, declined or none selected)."""
    if args.execution_ids and _filtered(args):
        error(f"executions {verb}: give ids or a filter, not both")
        raise SystemExit(2)
    if args.execution_ids:
        return args.execution_ids
    if not _filtered(args):
        error(f"executions {verb}: give execution ids, or a filter such as "
              "--status dead --older-than 7d")
        raise SystemExit(2)
    cutoff = datetime.now(UTC) - args.older_than if args.older_than else None
    chosen = [
        e
        for e in client.list_executions(
            statuses=[STATUSES[s] for s in args.status],
            scenario_id=args.scenario,
            executable_id=args.executable,
            configuration_id=args.configuration,
            page_size=1000,
        )
        if cutoff is None or e.create_time.ToDatetime(tzinfo=UTC) < cutoff
    ]
    if not chosen:
        print(f"no execution matches; nothing to {verb}", file=sys.stderr)
        return None
    if not args.yes:
        if not confirm(client, chosen, verb):
            print(f"nothing {'stopped' if verb == 'stop' else 'deleted'}", file=sys.stderr)
            return None
    return [e.id for e in chosen]


def confirm(client: TrainyardClient, chosen: list[execution_pb2.Execution], verb: str) -> bool:
    """Show what the filter selected and ask; a reader that cannot answer (no terminal,
    end of input) declines: scripts pass --yes."""
    with redirect_stdout(sys.stderr):
        list_table(chosen)
    sys.stderr.write(
        f"{verb.capitalize()} these {len(chosen)} execution(s) in resource group "
        f"{client.resource_group!r}? [y/N] "
    )
    sys.stderr.flush()
    answer = sys.stdin.readline() if sys.stdin is not None else ""
    if not answer:
        sys.stderr.write("\n(no answer: pass --yes to confirm without a prompt)\n")
    return answer.strip().lower() in ("y", "yes")


def _batches(ids: list[str], size: int = 100) -> list[list[str]]:
    return [ids[i : i + size] for i in range(0, len(ids), size)]


def stop_cmd(client: TrainyardClient, args) -> int:
    ids = _select(client, args, "stop")
    if ids is None:
        return 0
    if _filtered(args):
        outcomes = [o for batch in _batches(ids) for o in client.batch_stop(batch)]
        return _outcomes(outcomes, _stop_result, args.json)
    if len(args.execution_ids) == 1 and not args.json:
        e = client.stop_execution(args.execution_ids[0])
        print(f"{e.id} {status_name(e.status)}")
        return 0
    return _outcomes(client.batch_stop(args.execution_ids), _stop_result, args.json)


def delete_cmd(client: TrainyardClient, args) -> int:
    ids = _select(client, args, "delete")
    if ids is None:
        return 0
    if _filtered(args):
        outcomes = [
            o
            for batch in _batches(ids)
            for o in client.batch_delete(batch, keep_metrics=args.keep_metrics)
        ]
        return _outcomes(outcomes, lambda _status: "deleted", args.json)
    if len(args.execution_ids) == 1 and not args.json:
        client.delete_execution(args.execution_ids[0], keep_metrics=args.keep_metrics)
        print(f"{args.execution_ids[0]} deleted")
        return 0
    return _outcomes(
        client.batch_delete(args.execution_ids, keep_metrics=args.keep_metrics),
        lambda _status: "deleted",
        args.json,
    )


def history_cmd(client: TrainyardClient, args) -> int:
    transitions = client.execution_history(args.execution_id)
    if args.json:
        print_json(transitions)
        return 0
    table(
        ["#", "TIME", "FROM", "TO", "CAUSE", "MESSAGE"],
        [
            [
                t.sequence,
                when(t.time),
                status_name(t.from_status) if t.from_status else "-",
                status_name(t.to_status),
                t.cause,
                t.message,
            ]
            for t in transitions
        ],
    )
    return 0
