"""A throwaway PostgreSQL cluster for tests and benchmarks: its own data folder in a
temporary directory, its own postmaster listening on 127.0.0.1 only, on a free port,
with trust authentication for one superuser. Stopping it stops that postmaster alone
(``pg_ctl stop -m fast`` on its data folder) and removes the folder.

The binaries are found in ``PG_BIN`` when it is set, else in Debian's
``/usr/lib/postgresql/<version>/bin`` (the newest version first), else on ``PATH``.
``initdb`` refuses to run as root, so under root every PostgreSQL program runs as the
``postgres`` system user, and the temporary folder is handed to that user.

    with PostgresCluster() as cluster:
        url = cluster.create_database("scratch")   # postgresql://trainyard@127.0.0.1:PORT/scratch

Tests take it through ``start_postgres_or_skip()`` (the ``postgres_cluster`` fixture),
which skips when PostgreSQL is not installed or does not start, and fails instead when
``TRAINYARD_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg import sql

from tests.services import unavailable

PG_BIN_ENV = "PG_BIN"
DEBIAN_BIN_GLOB = "/usr/lib/postgresql/*/bin"
RUN_AS_WHEN_ROOT = "postgres"
SUPERUSER = "trainyard"
HOST = "127.0.0.1"
PROGRAMS = ("initdb", "pg_ctl", "postgres")
DATABASE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
# Start-up failures that a retry on another free port can cure (the port was taken
# between choosing it and the postmaster binding it).
PORT_TAKEN = ("could not bind", "Address already in use", "could not create any TCP/IP")


class PostgresNotFound(RuntimeError):
    """No PostgreSQL binaries (initdb, pg_ctl, postgres) where they were looked for."""


class PostgresStartError(RuntimeError):
    """The cluster could not be created or its postmaster did not come up."""


def _version_key(bin_dir: str) -> tuple[int, ...]:
    name = Path(bin_dir).parent.name
    return tuple(int(part) for part in re.findall(r"\d+", name)) or (0,)


def _has_programs(bin_dir: Path) -> bool:
    return all(os.access(bin_dir / program, os.X_OK) for program in PROGRAMS)


def find_bin_dir() -> Path:
    """The folder of initdb, pg_ctl and postgres, or PostgresNotFound saying where it
    looked. ``PG_BIN``, when set, is the only place looked at."""
    explicit = os.environ.get(PG_BIN_ENV)
    if explicit:
        path = Path(explicit)
        if _has_programs(path):
            return path
        raise PostgresNotFound(f"{PG_BIN_ENV}={explicit} has no {', '.join(PROGRAMS)}")
    for candidate in sorted(glob.glob(DEBIAN_BIN_GLOB), key=_version_key, reverse=True):
        if _has_programs(Path(candidate)):
            return Path(candidate)
    on_path = shutil.which("initdb")
    if on_path and _has_programs(Path(on_path).parent):
        return Path(on_path).parent
    raise PostgresNotFound(f"none in {PG_BIN_ENV}, {DEBIAN_BIN_GLOB} or on PATH")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _conf_value(value: str | int | float | bool) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, int | float):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


LOG_PREFIX = re.compile(r"^\d{4}-\d\d-\d\d [\d:.]+ \S+ \[\d+\] ")


def _summary(text: str, lines: int = 2) -> str:
    """The last lines of a program's output on one line, without log timestamps."""
    kept = [LOG_PREFIX.sub("", line).strip() for line in text.splitlines() if line.strip()]
    return " / ".join(" ".join(line.split()) for line in kept[-lines:]) or "(no output)"


class PostgresCluster:
    """One throwaway cluster. ``start()`` creates and starts it, ``stop()`` stops it and
    removes its folder; both are idempotent, and a context manager does the two.

    ``settings`` are extra ``postgresql.conf`` lines (``{"max_connections": 300}``).
    Durability stays at PostgreSQL's defaults (fsync on), so what is measured or tested
    against it behaves as a real server does.
    """

    def __init__(
        self,
        *,
        bin_dir: Path | str | None = None,
        user: str = SUPERUSER,
        settings: Mapping[str, str | int | float | bool] | None = None,
        start_timeout: float = 60.0,
    ):
        self.bin_dir = Path(bin_dir) if bin_dir is not None else find_bin_dir()
        self.user = user
        self.settings = dict(settings or {})
        self.start_timeout = start_timeout
        self.host = HOST
        self.port: int | None = None
        self.base_dir: Path | None = None
        self._process: subprocess.Popen | None = None
        self._as_user: dict = {}

    # -- paths -------------------------------------------------------------------------

    @property
    def data_dir(self) -> Path:
        assert self.base_dir is not None, "cluster not started"
        return self.base_dir / "data"

    @property
    def socket_dir(self) -> Path:
        assert self.base_dir is not None, "cluster not started"
        return self.base_dir / "socket"

    @property
    def log_file(self) -> Path:
        assert self.base_dir is not None, "cluster not started"
        return self.base_dir / "postgres.log"

    @property
    def pid(self) -> int | None:
        """The postmaster's process id while it runs (its backends are its children)."""
        return self._process.pid if self.running else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # -- life cycle --------------------------------------------------------------------

    def _owner(self) -> dict:
        """subprocess arguments that run PostgreSQL's programs as a non-root user."""
        if os.geteuid() != 0:
            return {}
        try:
            entry = pwd.getpwnam(RUN_AS_WHEN_ROOT)
        except KeyError:
            raise PostgresStartError(
                f"running as root (initdb refuses root) and there is no "
                f"'{RUN_AS_WHEN_ROOT}' user to run PostgreSQL as"
            ) from None
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}

    def _run(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
        return subprocess.run(
            args,
            cwd=self.base_dir,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            **self._as_user,
        )

    def start(self) -> PostgresCluster:
        if self.base_dir is not None:
            return self
        self._as_user = self._owner()
        self.base_dir = Path(tempfile.mkdtemp(prefix="trainyard-pg-"))
        atexit.register(self.stop)
        try:
            if self._as_user:
                os.chown(self.base_dir, self._as_user["user"], self._as_user["group"])
            self._init()
            for attempt in range(3):
                self.port = free_port()
                try:
                    self._launch()
                    break
                except PostgresStartError as exc:
                    if attempt == 2 or not any(s in str(exc) for s in PORT_TAKEN):
                        raise
        except BaseException:
            self.stop()
            raise
        return self

    def _init(self) -> None:
        self.socket_dir.mkdir()
        if self._as_user:
            os.chown(self.socket_dir, self._as_user["user"], self._as_user["group"])
        # --no-sync: initdb's own final flush of the new files; the folder is thrown
        # away, so a crash during initdb needs no care. The server keeps fsync on.
        done = self._run(
            str(self.bin_dir / "initdb"),
            "-D",
            str(self.data_dir),
            "--auth=trust",
            f"--username={self.user}",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
            timeout=120,
        )
        if done.returncode != 0:
            raise PostgresStartError(
                f"initdb exited with {done.returncode}: {_summary(done.stderr or done.stdout)}"
            )
        conf = {
            "listen_addresses": self.host,
            "unix_socket_directories": str(self.socket_dir),
            **self.settings,
        }
        with open(self.data_dir / "postgresql.conf", "a") as f:
            f.write("\n# trainyard test cluster\n")
            for name, value in conf.items():
                f.write(f"{name} = {_conf_value(value)}\n")

    def _launch(self) -> None:
        with open(self.log_file, "ab") as log:
            self._process = subprocess.Popen(
                [str(self.bin_dir / "postgres"), "-D", str(self.data_dir), "-p", str(self.port)],
                cwd=self.base_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                **self._as_user,
            )
        deadline = time.monotonic() + self.start_timeout
        last_error = "no answer"
        while True:
            code = self._process.poll()
            if code is not None:
                self._process = None
                raise PostgresStartError(
                    f"postgres exited with {code}: {_summary(self.log_file.read_text())}"
                )
            try:
                with psycopg.connect(self.url(), connect_timeout=2, autocommit=True) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError as exc:
                last_error = _summary(str(exc), lines=1)
            if time.monotonic() > deadline:
                raise PostgresStartError(
                    f"no connection within {self.start_timeout:.0f}s on port {self.port}: "
                    f"{last_error}"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        """Fast shutdown of this cluster's postmaster (its open sessions are ended),
        then the folder goes."""
        atexit.unregister(self.stop)
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            try:
                pg_ctl = str(self.bin_dir / "pg_ctl")
                self._run(pg_ctl, "stop", "-D", str(self.data_dir), "-m", "fast", "-w", timeout=45)
            except subprocess.TimeoutExpired:
                pass
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.send_signal(signal.SIGQUIT)  # immediate shutdown, this one only
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        if self.base_dir is not None:
            shutil.rmtree(self.base_dir, ignore_errors=True)
            self.base_dir = None

    def __enter__(self) -> PostgresCluster:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # -- databases ---------------------------------------------------------------------

    def url(self, dbname: str = "postgres") -> str:
        assert self.port is not None, "cluster not started"
        return f"postgresql://{quote(self.user)}@{self.host}:{self.port}/{quote(dbname)}"

    def _admin(self) -> psycopg.Connection:
        return psycopg.connect(self.url(), autocommit=True, connect_timeout=10)

    def create_database(self, name: str) -> str:
        """Create an empty database and return its URL."""
        if not DATABASE_NAME.match(name):
            raise ValueError(f"database name {name!r}: letters, digits and '_' only")
        with self._admin() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop a database if it exists, ending any session still connected to it."""
        with self._admin() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def start_postgres_or_skip(**options) -> PostgresCluster:
    """A started cluster, or the calling test skipped (failed when services are
    required) with one line saying why."""
    try:
        cluster = PostgresCluster(**options)
    except PostgresNotFound as exc:
        unavailable(f"PostgreSQL not installed (no initdb): {exc}")
    try:
        return cluster.start()
    except PostgresStartError as exc:
        unavailable(f"PostgreSQL did not start: {exc}")
