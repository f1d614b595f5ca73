"""The `trainyard` command line.

Subcommands live in client/commands/: every module there has a
``register(subparsers)`` function that adds its commands, each with a ``handler``
taking (client, args) and returning an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys

from client import commands
from client.client import DEFAULT_ADDRESS, TrainyardClient, TrainyardError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trainyard", description="Trainyard: run and watch AI training executions."
    )
    parser.add_argument("--address", default=None,
                        help=f"server address (TRAINYARD_ADDRESS, default {DEFAULT_ADDRESS})")
    parser.add_argument("-g", "--resource-group", default=None,
                        help="resource group (TRAINYARD_RESOURCE_GROUP, default 'default')")
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="deadline of each call in seconds (default 30)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands.__name__}.{module_info.name}")
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    # --json is accepted anywhere on the line (`trainyard executions list --json`),
    # except after `serve`, whose options belong to the server.
    as_json = "--json" in argv and (not argv or argv[0] != "serve")
    if as_json:
        argv = [a for a in argv if a != "--json"]
    args = parser.parse_args(argv)
    args.json = args.json or as_json
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    if getattr(args, "no_client", False):
        return handler(None, args) or 0
    client = TrainyardClient(args.address, resource_group=args.resource_group, timeout=args.timeout)
    try:
        return handler(client, args) or 0
    except TrainyardError as error:
        print(f"error: {error}", file=sys.stderr)
        for violation in error.violations:
            print(f"  {violation.field}: {violation.description}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`trainyard logs ID | head`): stop quietly, and keep
        # Python from complaining while it flushes stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    finally:
        client.close()


if __name__ == "__main__":
    sys.exit(main())
