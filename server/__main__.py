"""`python -m server`: run the Trainyard server."""

from __future__ import annotations

import asyncio
import sys

from server.config import Settings, json_logs, parse_args
from server.lean_imports import hidden, unused_packages


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["tokens"]:
        from server.security.tokens_cli import main as tokens_main

        sys.exit(tokens_main(args[1:]))
    if args[:1] == ["copy-database"]:
        from server.database_cli import main as copy_main

        sys.exit(copy_main(args[1:]))
    run(parse_args(args))


def run(settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT."""
    with hidden(unused_packages(settings.database_url, json_logs(settings.log_format))):
        from server.app import serve
        from server.log_setup import configure_logging

    configure_logging(settings.log_format, settings.log_level, background=True)
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
