"""The `trainyard` command line.

Subcommands live in client/commands/: every module there has a
``register(subparsers)`` function that adds its commands, each with a ``handler``
taking (client, args) and returning an exit code.

The global options (--address, -g, --timeout, --json, -q, --no-color, and the
credentials: --token, --credentials, --ca, --cert, --key) are accepted
anywhere on the line: every command's parser carries them too, with defaults that do not
override a value given before the command.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
from importlib import metadata

import grpc

from client import commands, output
from client.client import DEFAULT_ADDRESS, TrainyardClient, TrainyardError


def version() -> str:
    try:
        return metadata.version("trainyard")
    except metadata.PackageNotFoundError:
        return "unknown"


def add_global_options(parser: argparse.ArgumentParser, top: bool) -> None:
    """The options every command takes. Below the top level their defaults are
    suppressed, so that `trainyard -g a executions list` keeps ``a``."""

    def default(value):
        return value if top else argparse.SUPPRESS

    group = parser.add_argument_group("global options")
    group.add_argument(
        "--address",
        default=default(None),
        help=f"server address (TRAINYARD_ADDRESS, default {DEFAULT_ADDRESS})",
    )
    group.add_argument(
        "-g",
        "--resource-group",
        default=default(None),
        help="resource group (TRAINYARD_RESOURCE_GROUP, default 'default')",
    )
    group.add_argument(
        "--timeout",
        type=float,
        default=default(30.0),
        help="deadline of each call in seconds (default 30)",
    )
    group.add_argument(
        "--json", action="store_true", default=default(False), help="print JSON, not tables"
    )
    group.add_argument(
        "--token",
        default=default(None),
        help="bearer token (TRAINYARD_TOKEN; else the --credentials file)",
    )
    group.add_argument(
        "--credentials",
        default=default(None),
        metavar="FILE",
        help="file whose first line is the token (TRAINYARD_CREDENTIALS, "
        "default ~/.config/trainyard/token)",
    )
    group.add_argument(
        "--ca",
        default=default(None),
        metavar="PEM",
        help="CA certificates to trust: speak TLS (TRAINYARD_CA)",
    )
    group.add_argument(
        "--cert",
        default=default(None),
        metavar="PEM",
        help="client certificate for mutual TLS (TRAINYARD_CERT)",
    )
    group.add_argument(
        "--key",
        default=default(None),
        metavar="PEM",
        help="the client certificate's private key (TRAINYARD_KEY)",
    )
    group.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=default(False),
        help="print only ids (one a line), for scripts",
    )
    group.add_argument(
        "--no-color",
        action="store_true",
        default=default(False),
        help="no colour, even on a terminal (also NO_COLOR)",
    )


class CommandParser(argparse.ArgumentParser):
    """A parser whose commands (at any depth) take the global options; a command made
    with ``global_options=False`` (`serve`, whose flags are the server's) does not."""

    def __init__(self, *args, global_options: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        if global_options:
            add_global_options(self, top=False)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trainyard", description="Trainyard: run and watch AI training executions."
    )
    parser.add_argument("--version", action="version", version=f"trainyard {version()}")
    add_global_options(parser, top=True)
    subparsers = parser.add_subparsers(
        dest="command", metavar="COMMAND", parser_class=CommandParser
    )
    for module_info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands.__name__}.{module_info.name}")
        module.register(subparsers)
    return parser


def print_error(error: TrainyardError, address: str) -> None:
    """One error, once: the server's message without the field violations it repeats,
    then each violation on its own line."""
    if error.code == grpc.StatusCode.UNAVAILABLE and not error.reason:
        output.error(f"cannot reach a Trainyard server at {address} ({error.message})")
        output.hint(
            "start one with `trainyard serve` (or `make run`), or point --address or "
            "TRAINYARD_ADDRESS at a running one"
        )
        return
    message = error.message
    for violation in error.violations:
        message = message.replace(f"{violation.field}: {violation.description}", "")
    message = message.strip().rstrip(":;, ").replace(": ;", ":")
    while ";;" in message or "; ;" in message:
        message = message.replace("; ;", ";").replace(";;", ";")
    text = f"{error.code.name}: {message}"
    if error.reason:
        text += f" [{error.reason}]"
    output.error(text)
    for violation in error.violations:
        output.detail(f"{violation.field}: {violation.description}")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    output.configure(quiet=args.quiet, color=not args.no_color)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    if getattr(args, "no_client", False):
        return handler(None, args) or 0
    client = TrainyardClient(
        args.address,
        resource_group=args.resource_group,
        timeout=args.timeout,
        token=args.token,
        credentials=args.credentials,
        ca=args.ca,
        cert=args.cert,
        key=args.key,
    )
    try:
        return handler(client, args) or 0
    except TrainyardError as error:
        print_error(error, client.address)
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
