"""`trainyard serve`: run the server in the foreground."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve", help="run the Trainyard server (same options as trainyard-server)",
        add_help=False,
    )
    parser.add_argument("server_args", nargs=argparse.REMAINDER)
    parser.set_defaults(handler=_serve, no_client=True)


def _serve(_client, args) -> int:
    from server.__main__ import main

    main(args.server_args)
    return 0
