"""`trainyard scenarios|executables|artifacts|configurations ...`"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from client.client import TrainyardClient
from client.output import enum_name, print_json, quiet, shorten, table, when
from trainyard.v1 import artifact_pb2, executable_pb2

KINDS = {
    "dataset": artifact_pb2.ARTIFACT_KIND_DATASET,
    "model": artifact_pb2.ARTIFACT_KIND_MODEL,
    "resultset": artifact_pb2.ARTIFACT_KIND_RESULTSET,
    "other": artifact_pb2.ARTIFACT_KIND_OTHER,
}


def _pairs(values: list[str], option: str) -> dict[str, str]:
    result: dict[str, str] = {}
    for value in values or []:
        key, sep, rest = value.partition("=")
        if not sep or not key:
            raise SystemExit(f"error: {option} takes KEY=VALUE, got {value!r}")
        result[key] = rest
    return result


def register(subparsers: argparse._SubParsersAction) -> None:
    # scenarios
    scenarios = subparsers.add_parser("scenarios", help="list scenarios, or get one")
    s_sub = scenarios.add_subparsers(dest="action", required=True)
    s_sub.add_parser("list", help="list scenarios").set_defaults(handler=scenarios_list)
    s_get = s_sub.add_parser("get", help="a scenario: name, description, labels")
    s_get.add_argument("scenario_id")
    s_get.set_defaults(handler=scenarios_get)

    # executables
    exes = subparsers.add_parser(
        "executables", help="list executables, get one, or register a WorkflowTemplate"
    )
    e_sub = exes.add_subparsers(dest="action", required=True)
    e_list = e_sub.add_parser("list", help="list executables with their parameters")
    e_list.add_argument("--scenario", default="")
    e_list.add_argument("--all-versions", action="store_true")
    e_list.set_defaults(handler=executables_list)
    e_get = e_sub.add_parser(
        "get", help="an executable: its parameters with types and defaults, artifacts, steps"
    )
    e_get.add_argument("executable_id")
    e_get.add_argument("--version", default="")
    e_get.set_defaults(handler=executables_get)
    e_reg = e_sub.add_parser("register", help="register a WorkflowTemplate YAML file")
    e_reg.add_argument("file", type=Path)
    e_reg.set_defaults(handler=executables_register)

    # artifacts
    arts = subparsers.add_parser("artifacts", help="register artifacts, list them, or get one")
    a_sub = arts.add_subparsers(dest="action", required=True)
    a_create = a_sub.add_parser("create", help="register an artifact (a data set, usually)")
    a_create.add_argument("path_or_url", help="a local path or a file:// URL")
    a_create.add_argument("--name", required=True)
    a_create.add_argument("--scenario", required=True)
    a_create.add_argument("--kind", choices=sorted(KINDS), default="dataset")
    a_create.add_argument("--description", default="")
    a_create.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    a_create.add_argument("--request-id", default="")
    a_create.set_defaults(handler=artifacts_create)
    a_list = a_sub.add_parser("list", help="list artifacts")
    a_list.add_argument("--scenario", default="")
    a_list.add_argument("--kind", choices=sorted(KINDS))
    a_list.add_argument("--execution", default="")
    a_list.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    a_list.set_defaults(handler=artifacts_list)
    a_get = a_sub.add_parser(
        "get", help="an artifact: kind, URL, labels, the execution that made it"
    )
    a_get.add_argument("artifact_id")
    a_get.set_defaults(handler=artifacts_get)

    # configurations
    cfgs = subparsers.add_parser(
        "configurations", help="create configurations, list them, or get one"
    )
    c_sub = cfgs.add_subparsers(dest="action", required=True)
    c_create = c_sub.add_parser("create", help="bind parameters and artifacts to an executable")
    c_create.add_argument("--name", required=True)
    c_create.add_argument("--executable", required=True)
    c_create.add_argument("--version", default="", help="executable version (default: newest)")
    c_create.add_argument("--scenario", default="", help="default: the executable's scenario")
    c_create.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE")
    c_create.add_argument(
        "-a", "--artifact", action="append", default=[], metavar="NAME=ARTIFACT_ID"
    )
    c_create.add_argument("--request-id", default="")
    c_create.set_defaults(handler=configurations_create)
    c_list = c_sub.add_parser("list", help="list configurations")
    c_list.add_argument("--scenario", default="")
    c_list.add_argument("--executable", default="")
    c_list.set_defaults(handler=configurations_list)
    c_get = c_sub.add_parser(
        "get", help="a configuration: its executable, parameter values, bound artifacts"
    )
    c_get.add_argument("configuration_id")
    c_get.set_defaults(handler=configurations_get)


def scenarios_list(client: TrainyardClient, args) -> int:
    items = list(client.list_scenarios())
    if args.json:
        print_json(items)
        return 0
    table(
        ["ID", "NAME", "EXECUTABLES", "DESCRIPTION"],
        [[s.id, s.name, s.executable_count, shorten(s.description, 60)] for s in items],
    )
    return 0


def _kind(value: int) -> str:
    return enum_name(artifact_pb2.ArtifactKind.Name(value)).lower()


def _type(value: int) -> str:
    return enum_name(executable_pb2.ParameterType.Name(value)).lower()


def _show(args, message, lines: list[str]) -> int:
    """Print a resource: JSON with --json, its id with -q, else the readable lines."""
    if args.json:
        print_json(message)
    elif quiet():
        print(message.id)
    else:
        print("\n".join(line.rstrip() for line in lines))
    return 0


def _labels(labels) -> list[str]:
    return [f"  {k}={v}" for k, v in sorted(labels.items())] or ["  (none)"]


def scenarios_get(client: TrainyardClient, args) -> int:
    s = client.get_scenario(args.scenario_id)
    lines = [
        f"Scenario     {s.id}",
        f"Name         {s.name}",
        f"Description  {s.description or '-'}",
        f"Executables  {s.executable_count}",
        f"Created      {when(s.create_time)}",
        "",
        "Labels",
        *_labels(s.labels),
    ]
    return _show(args, s, lines)


def _params(exe: executable_pb2.Executable) -> str:
    parts = []
    for p in exe.parameters:
        text = f"{p.name}:{enum_name(executable_pb2.ParameterType.Name(p.type)).lower()}"
        if p.HasField("default_value"):
            text += f"={p.default_value}"
        parts.append(text)
    return " ".join(parts) or "-"


def executables_list(client: TrainyardClient, args) -> int:
    items = list(client.list_executables(args.scenario, args.all_versions))
    if args.json:
        print_json(items)
        return 0
    table(
        ["ID", "VERSION", "SCENARIO", "PARAMETERS", "INPUTS", "OUTPUTS"],
        [
            [
                e.id,
                e.version,
                e.scenario_id,
                _params(e),
                " ".join(
                    f"{a.name}:{enum_name(artifact_pb2.ArtifactKind.Name(a.kind)).lower()}"
                    for a in e.input_artifacts
                )
                or "-",
                " ".join(a.name for a in e.output_artifacts) or "-",
            ]
            for e in items
        ],
    )
    return 0


def executables_get(client: TrainyardClient, args) -> int:
    e = client.get_executable(args.executable_id, args.version)
    lines = [
        f"Executable   {e.id}",
        f"Name         {e.name}",
        f"Version      {e.version}",
        f"Scenario     {e.scenario_id}",
        f"Description  {e.description or '-'}",
        f"Steps        {' -> '.join(e.steps) or '-'}",
        f"Created      {when(e.create_time)}",
        "",
        "Parameters",
    ]
    width = max((len(p.name) for p in e.parameters), default=0)
    for p in e.parameters:
        default = f"default {p.default_value}" if p.HasField("default_value") else "required"
        lines.append(f"  {p.name:<{width}}  {_type(p.type):<7} {default:<16} {p.description}")
    if not e.parameters:
        lines.append("  (none)")
    lines += ["", "Input artifacts"]
    for a in e.input_artifacts:
        lines.append(f"  {a.name}  {_kind(a.kind)}  {a.description}")
    if not e.input_artifacts:
        lines.append("  (none)")
    lines += ["", "Output artifacts"]
    for o in e.output_artifacts:
        step = f"  (step {o.step})" if o.step else ""
        lines.append(f"  {o.name}  {_kind(o.kind)}{step}  {o.description}")
    if not e.output_artifacts:
        lines.append("  (none)")
    lines += ["", "Labels", *_labels(e.labels)]
    return _show(args, e, lines)


def executables_register(client: TrainyardClient, args) -> int:
    exe = client.create_executable(args.file.read_text())
    if args.json:
        print_json(exe)
    else:
        print(f"registered {exe.id} version {exe.version} (scenario {exe.scenario_id})")
    return 0


def _artifact_rows(items):
    return [
        [
            a.id,
            a.name,
            enum_name(artifact_pb2.ArtifactKind.Name(a.kind)).lower(),
            a.scenario_id,
            a.execution_id or "-",
            when(a.create_time),
            a.url,
        ]
        for a in items
    ]


ARTIFACT_HEADERS = ["ID", "NAME", "KIND", "SCENARIO", "EXECUTION", "CREATED", "URL"]


def artifacts_create(client: TrainyardClient, args) -> int:
    url = args.path_or_url
    if "://" not in url:
        path = Path(url).expanduser()
        if not path.exists():
            print(f"error: {url} does not exist", file=sys.stderr)
            return 1
        url = path.resolve().as_uri()
    artifact = client.create_artifact(
        name=args.name,
        url=url,
        scenario_id=args.scenario,
        kind=KINDS[args.kind],
        description=args.description,
        labels=_pairs(args.label, "--label"),
        request_id=args.request_id,
    )
    if args.json:
        print_json(artifact)
    else:
        print(artifact.id)
    return 0


def artifacts_list(client: TrainyardClient, args) -> int:
    items = list(
        client.list_artifacts(
            scenario_id=args.scenario,
            kind=KINDS[args.kind] if args.kind else 0,
            execution_id=args.execution,
            labels=_pairs(args.label, "--label"),
        )
    )
    if args.json:
        print_json(items)
        return 0
    table(ARTIFACT_HEADERS, _artifact_rows(items))
    return 0


def artifacts_get(client: TrainyardClient, args) -> int:
    a = client.get_artifact(args.artifact_id)
    lines = [
        f"Artifact     {a.id}",
        f"Name         {a.name}",
        f"Kind         {_kind(a.kind)}",
        f"Scenario     {a.scenario_id}",
        f"URL          {a.url}",
        f"Description  {a.description or '-'}",
        f"Execution    {a.execution_id or '- (registered by hand)'}",
        f"Created      {when(a.create_time)}",
        "",
        "Labels",
        *_labels(a.labels),
    ]
    return _show(args, a, lines)


def configurations_create(client: TrainyardClient, args) -> int:
    configuration = client.create_configuration(
        name=args.name,
        executable_id=args.executable,
        executable_version=args.version,
        scenario_id=args.scenario,
        parameters=_pairs(args.param, "--param"),
        artifacts=_pairs(args.artifact, "--artifact"),
        request_id=args.request_id,
    )
    if args.json:
        print_json(configuration)
    else:
        print(configuration.id)
    return 0


def configurations_list(client: TrainyardClient, args) -> int:
    items = list(client.list_configurations(args.scenario, args.executable))
    if args.json:
        print_json(items)
        return 0
    table(
        ["ID", "NAME", "EXECUTABLE", "PARAMETERS", "ARTIFACTS", "CREATED"],
        [
            [
                c.id,
                c.name,
                f"{c.executable_id}@{c.executable_version}",
                " ".join(f"{b.key}={b.value}" for b in c.parameter_bindings) or "-",
                " ".join(f"{b.key}={b.artifact_id}" for b in c.input_artifact_bindings) or "-",
                when(c.create_time),
            ]
            for c in items
        ],
    )
    return 0


def configurations_get(client: TrainyardClient, args) -> int:
    c = client.get_configuration(args.configuration_id)
    lines = [
        f"Configuration  {c.id}",
        f"Name           {c.name}",
        f"Executable     {c.executable_id} version {c.executable_version}",
        f"Scenario       {c.scenario_id}",
        f"Created        {when(c.create_time)}",
        "",
        "Parameters",
        *([f"  {b.key}={b.value}" for b in c.parameter_bindings] or ["  (none)"]),
        "",
        "Input artifacts",
        *([f"  {b.key}={b.artifact_id}" for b in c.input_artifact_bindings] or ["  (none)"]),
    ]
    return _show(args, c, lines)
