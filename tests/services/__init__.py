"""Real system services started for the tests that need them (PostgreSQL, ...), each a
throwaway instance on loopback in a temporary folder of its own.

A service that is absent or does not start skips the tests that need it, with one line
saying why; with ``TRAINYARD_REQUIRE_SERVICES=1`` (as CI runs) it fails them instead.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import NoReturn

REQUIRE_ENV = "TRAINYARD_REQUIRE_SERVICES"


def services_required() -> bool:
    """True when a missing service must fail the run rather than skip its tests."""
    return os.environ.get(REQUIRE_ENV, "").strip() not in ("", "0", "false", "no")


def unavailable(message: str) -> NoReturn:
    """Skip the requesting test with ``message``, or fail it when services are required."""
    import pytest

    if services_required():
        pytest.fail(f"{message} ({REQUIRE_ENV}=1)", pytrace=False)
    pytest.skip(message)


def spawn_logged(argv: list[str], log: Path, **options) -> subprocess.Popen:
    """Start a service's process in a session (process group) of its own, which is how
    its fixture stops it and everything it started, with stdin closed and stdout and
    stderr appended to ``log``. ``options``: more of Popen's (cwd, env)."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **options,
        )


def log_tail(log: Path, lines: int = 3) -> str:
    """The last lines of a service's log, on one line: what a start error quotes."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return " | ".join(text.strip().splitlines()[-lines:]) or "(empty log)"
