"""`python -m server`: run the Trainyard server."""

from __future__ import annotations

import asyncio

from server.app import serve
from server.config import parse_args
from server.log_setup import configure_logging


def main(argv: list[str] | None = None) -> None:
    settings = parse_args(argv)
    configure_logging(settings.log_format, settings.log_level)
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
