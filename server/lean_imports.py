"""Optional packages that libraries import when installed, kept out of a server that
does not use them.

peewee imports psycopg (and with it libpq and OpenSSL, about 15 MB resident) whenever
it is installed, and structlog imports rich (with pygments, about 5 MB) for its console
renderer. A server on the embedded SQLite store that logs JSON uses neither, so
``python -m server`` imports those libraries with the unused packages hidden
(``bench.unary`` prints the idle RSS this keeps down). Nothing else changes: a
PostgreSQL server, or one logging to a terminal, imports them as usual.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager


def unused_packages(database_url: str, json_logs: bool) -> list[str]:
    """What a server with these settings never imports of its own."""
    unused = []
    if not database_url.startswith(("postgresql:", "postgres:")):
        unused.append("psycopg")
    if json_logs:
        unused.append("rich")
    return unused


@contextmanager
def hidden(names: list[str]) -> Iterator[None]:
    """While inside, ``import NAME`` raises ImportError for each of ``names`` not yet
    imported, so that an optional import of it (``try: import NAME``) takes its
    fallback; afterwards it can be imported again."""
    hid = [name for name in names if name not in sys.modules]
    for name in hid:
        sys.modules[name] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        for name in hid:
            if sys.modules.get(name) is None:
                del sys.modules[name]
