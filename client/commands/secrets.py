"""`trainyard secrets create|update|list|delete`: the resource group's secrets.

Values are given as KEY=VALUE, KEY=@FILE (the file's contents) or KEY=- (one value
read from standard input, so that it stays out of the shell's history); they are
never shown again.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from client.client import TrainyardClient
from client.output import print_json, table, when


def register(subparsers: argparse._SubParsersAction) -> None:
    secrets = subparsers.add_parser("secrets", help="create, update, list or delete secrets")
    sub = secrets.add_subparsers(dest="action", required=True)
    for action, what in (("create", "create a secret"), ("update", "replace a secret's values")):
        parser = sub.add_parser(action, help=what)
        parser.add_argument("name")
        parser.add_argument(
            "values", nargs="+", metavar="KEY=VALUE",
            help="a value, KEY=@FILE for a file's contents, KEY=- to read it from stdin",
        )
        parser.set_defaults(handler=secrets_write, action=action)
    sub.add_parser("list", help="list secrets: names and key names").set_defaults(
        handler=secrets_list
    )
    delete = sub.add_parser("delete", help="delete a secret")
    delete.add_argument("name")
    delete.set_defaults(handler=secrets_delete)


def _values(items: list[str]) -> dict[str, str]:
    values: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"error: values take KEY=VALUE, got {item.split('=')[0]!r}")
        if value == "-":
            value = sys.stdin.readline().rstrip("\n")
        elif value.startswith("@"):
            value = Path(value[1:]).read_text(encoding="utf-8")
        values[key] = value
    return values


def secrets_write(client: TrainyardClient, args) -> int:
    write = client.create_secret if args.action == "create" else client.update_secret
    secret = write(args.name, _values(args.values))
    if args.json:
        print_json(secret)
    else:
        print(f"{secret.name}: {', '.join(secret.keys)}")
    return 0


def secrets_list(client: TrainyardClient, args) -> int:
    items = list(client.list_secrets())
    if args.json:
        print_json(items)
        return 0
    table(
        ["NAME", "KEYS", "CREATED", "UPDATED"],
        [[s.name, ",".join(s.keys), when(s.create_time), when(s.update_time)] for s in items],
    )
    return 0


def secrets_delete(client: TrainyardClient, args) -> int:
    client.delete_secret(args.name)
    print(f"deleted {args.name}")
    return 0
