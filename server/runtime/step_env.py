"""What a step's environment may take from the server's.

A step never sees the server's environment as a whole: database URLs, cloud
credentials, the server's own settings and anything else in it stay with the server.
A runner that starts steps on the server's machine (the local process runner) passes
on only these variables, when the server has them; a runner with an environment of its
own (a container image, a Ray worker) passes on none. On top come the template's own
``env`` entries (secrets only as the template asks, through ``secretKeyRef`` and
``envFrom``) and the
``TRAINYARD_*`` variables of the step: TRAINYARD_ADDRESS, TRAINYARD_EXECUTION_ID,
TRAINYARD_RESOURCE_GROUP, TRAINYARD_STEP and, when the server checks credentials,
TRAINYARD_TOKEN (the execution's own short-lived token).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

# Documented in docs/security.md ("Steps"). Locale, time zone, home, user, shell,
# temporary directory and search path: what programs need to behave as on the host.
ALLOWED = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "LC_MESSAGES",
    "LC_NUMERIC",
    "LC_TIME",
    "TZ",
    "TMPDIR",
    "TERM",
)


def inherited(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The allow-listed variables of the server's environment."""
    source = os.environ if environ is None else environ
    return {name: source[name] for name in ALLOWED if name in source}
