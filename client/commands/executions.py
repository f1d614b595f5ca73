"""`trainyard executions ...`: start, inspect, stop and delete executions."""

from __future__ import annotations

import argparse
import signal
from collections.abc import Callable

from client.client import TrainyardClient
from client.output import duration, enum_name, print_json, shorten, table, when
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
    parser = subparsers.add_parser("executions", help="start, inspect, stop, delete executions")
    sub = parser.add_subparsers(dest="action", required=True)

    create = sub.add_parser("create", help="start an execution of a configuration")
    create.add_argument("configuration_id")
    create.add_argument("--request-id", default="", help="idempotency key (default: random)")
    create.set_defaults(handler=create_cmd)

    get = sub.add_parser("get", help="status, timeline, steps and outputs of an execution")
    get.add_argument("execution_id")
    get.set_defaults(handler=get_cmd)

    lst = sub.add_parser("list", help="list executions, newest first")
    lst.add_argument("--status", action="append", choices=sorted(STATUSES), default=[])
    lst.add_argument("--scenario", default="")
    lst.add_argument("--executable", default="")
    lst.add_argument("--configuration", default="")
    lst.add_argument("--limit", type=int, default=50, help="at most this many (0: all)")
    lst.set_defaults(handler=list_cmd)

    stop = sub.add_parser("stop", help="stop one or more executions")
    stop.add_argument("execution_ids", nargs="+")
    stop.set_defaults(handler=stop_cmd)

    delete = sub.add_parser("delete", help="delete one or more final executions")
    delete.add_argument("execution_ids", nargs="+")
    delete.add_argument("--keep-metrics", action="store_true")
    delete.set_defaults(handler=delete_cmd)

    history = sub.add_parser("history", help="lifecycle transitions of an execution")
    history.add_argument("execution_id")
    history.set_defaults(handler=history_cmd)


def create_cmd(client: TrainyardClient, args) -> int:
    execution = client.create_execution(args.configuration_id, args.request_id or None)
    if args.json:
        print_json(execution)
    else:
        print(execution.id)
    return 0


def render_execution(client: TrainyardClient, e: execution_pb2.Execution) -> list[str]:
    lines = [
        f"Execution     {e.id}",
        f"Status        {status_name(e.status)}"
        + (f"  ({e.status_message})" if e.status_message else ""),
        f"Target        {enum_name(execution_pb2.TargetStatus.Name(e.target_status))}",
        f"Configuration {e.configuration_id} {e.configuration_name}".rstrip(),
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
        page_size=min(args.limit or 1000, 1000),
    ):
        items.append(e)
        if args.limit and len(items) >= args.limit:
            break
    if args.json:
        print_json(items)
        return 0
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
    return 0


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


def stop_cmd(client: TrainyardClient, args) -> int:
    if len(args.execution_ids) == 1 and not args.json:
        e = client.stop_execution(args.execution_ids[0])
        print(f"{e.id} {status_name(e.status)}")
        return 0
    return _outcomes(client.batch_stop(args.execution_ids), _stop_result, args.json)


def delete_cmd(client: TrainyardClient, args) -> int:
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
