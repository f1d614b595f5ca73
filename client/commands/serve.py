"""`trainyard serve`: run the server in the foreground, with the flags of
`trainyard-server` (one definition, in server/config.py)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    from server.config import DESCRIPTION, add_arguments

    parser = subparsers.add_parser(
        "serve",
        help="run the Trainyard server in the foreground (the flags of trainyard-server)",
        description=DESCRIPTION + " Every flag also reads a TRAINYARD_* variable.",
        global_options=False,
    )
    add_arguments(parser)
    parser.set_defaults(handler=_serve, no_client=True, parser=parser)


def _serve(_client, args) -> int:
    from server.__main__ import run
    from server.config import settings_from

    run(settings_from(args, args.parser))
    return 0
