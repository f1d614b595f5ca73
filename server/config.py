"""Server settings, from command-line flags and TRAINYARD_* environment variables."""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPLICA_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


@dataclass(slots=True)
class Settings:
    address: str = "127.0.0.1:50051"
    data_dir: Path = field(default_factory=lambda: Path(".data"))
    database_url: str = ""  # default: sqlite file under data_dir
    # Seconds a SQLite statement waits for another connection's lock before the call
    # fails with UNAVAILABLE (STORE_UNAVAILABLE).
    database_busy_timeout: float = 10.0
    executables_dir: Path | None = None
    default_resource_group: str = "default"
    log_format: str = "auto"  # auto | json | console
    log_level: str = "info"
    max_concurrent_executions: int = 4
    stop_grace_seconds: float = 10.0
    max_message_bytes: int = 4 * 1024 * 1024
    max_streams_per_client: int = 100
    # local: steps run as local processes; container: in their images; ray: as Ray
    # jobs; none: nothing runs
    runtime: str = "local"
    # The container runtime (docs/runtime.md): the engine ("": Podman, else Docker),
    # the user steps run as, their network ("api": only this machine's loopback).
    container_engine: str = ""
    container_user: str = "65534:65534"
    container_network: str = "api"
    ray_address: str = ""  # the Ray cluster's job submission address (http://HEAD:8265)
    # A folder the server and every node of the Ray cluster see at the same path:
    # executions' working directories and output artifacts go there (default: data_dir).
    artifact_root: Path | None = None
    port_file: Path | None = None  # where `serve` writes the bound port
    # This server among the replicas of one database; default: the host name and a
    # digest of the data directory, the same across restarts of the same server.
    replica_id: str = ""
    lease_seconds: float = 10.0  # a replica that does not renew for this long is lost
    # A YAML file of resource plans added to (or replacing some of) SAP's defaults.
    resource_plans_file: Path | None = None
    # The key that encrypts secret values at rest; made on first start. Default:
    # DATA_DIR/secrets.key.
    secrets_key_file: Path | None = None
    # The key page tokens are signed with; default: data_dir/page-token.key, made on
    # first start. Replicas of one database are given the same file, so that each
    # accepts the tokens the others issued.
    page_token_key_file: Path | None = None
    # How long request ids (creates, WriteMetrics) are remembered (seconds).
    idempotency_retention_seconds: float = 24 * 3600.0
    # Security (docs/security.md). Auth is on when a token file or a client CA is given.
    auth_tokens: Path | None = None  # the token file (hashes only)
    tls_cert: Path | None = None  # PEM certificate chain; with tls_key: TLS
    tls_key: Path | None = None
    tls_client_ca: Path | None = None  # PEM CA bundle: mutual TLS, client certificates
    insecure: bool = False  # allow plaintext / no auth on a non-loopback address
    # Abuse limits per authenticated principal (0: none).
    max_requests_per_second: float = 1000.0
    max_streams_per_principal: int = 100
    # How often the token file is checked for changes, and live streams for
    # credentials that expired or were revoked.
    auth_reload_seconds: float = 1.0
    # host:port of the browser console (HTTP, the Connect protocol); "" serves none.
    console_address: str = ""

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir)
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / 'trainyard.db'}"
        if self.secrets_key_file is None:
            self.secrets_key_file = self.data_dir / "secrets.key"
        self.secrets_key_file = Path(self.secrets_key_file)
        if not self.replica_id:
            where = hashlib.sha256(str(self.data_dir.resolve()).encode()).hexdigest()[:8]
            self.replica_id = f"{socket.gethostname()}-{where}"
        if not REPLICA_ID_RE.match(self.replica_id):
            raise ValueError(
                f"replica id {self.replica_id!r}: 1-64 letters, digits, '.', '_' or '-'"
            )
        for name in ("auth_tokens", "tls_cert", "tls_key", "tls_client_ca"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                setattr(self, name, Path(value))
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("--tls-cert and --tls-key go together")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("--tls-client-ca needs --tls-cert and --tls-key")

    def check_exposure(self) -> None:
        """Refuses plaintext or no authentication beyond loopback unless ``insecure``."""
        from server.security.tls import is_loopback

        if is_loopback(self.address) or self.insecure:
            return
        if not self.tls_enabled:
            raise ValueError(
                f"refusing plaintext on non-loopback address {self.address}: give"
                " --tls-cert and --tls-key, or --insecure"
            )
        if not self.auth_enabled:
            raise ValueError(
                f"refusing to serve {self.address} without authentication: give"
                " --auth-tokens or --tls-client-ca, or --insecure"
            )

    @property
    def tls_enabled(self) -> bool:
        return self.tls_cert is not None

    @property
    def auth_enabled(self) -> bool:
        return self.auth_tokens is not None or self.tls_client_ca is not None

    @property
    def work_dir(self) -> Path:
        """Where executions get their working directories."""
        return (self.artifact_root or self.data_dir) / "executions"

    @property
    def artifacts_dir(self) -> Path:
        """Where output artifacts of executions are kept (they outlive the execution)."""
        return (self.artifact_root or self.data_dir) / "artifacts"


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"TRAINYARD_{name}", default)


DESCRIPTION = "Run the Trainyard control plane."
EPILOG = (
    "other commands: `trainyard-server tokens add|list|revoke` manages a token file; "
    "`trainyard-server copy-database --from URL --to URL` copies every row of a "
    "database into a new, empty one (SQLite to PostgreSQL, or back)"
)


def _duration(text: str) -> float:
    from server.domain.retention import parse_duration

    try:
        return parse_duration(text)
    except ValueError:
        raise ValueError(f"--idempotency-retention: not a duration: {text!r} (e.g. 24h)") from None


def parse_args(argv: list[str] | None = None) -> Settings:
    """Settings of `trainyard-server` (and `python -m server`) from its command line."""
    parser = argparse.ArgumentParser(
        prog="trainyard-server", description=DESCRIPTION, epilog=EPILOG
    )
    add_arguments(parser)
    return settings_from(parser.parse_args(argv), parser)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the server's flags to ``parser``: the one definition that `trainyard-server`
    and `trainyard serve` share. Each flag's default reads its TRAINYARD_* variable."""
    parser.add_argument(
        "--address",
        default=_env("ADDRESS", "127.0.0.1:50051"),
        help="host:port to listen on (TRAINYARD_ADDRESS)",
    )
    parser.add_argument(
        "--data-dir",
        default=_env("DATA_DIR", ".data"),
        help="directory for the database and execution files (TRAINYARD_DATA_DIR)",
    )
    parser.add_argument(
        "--database-url",
        default=_env("DATABASE_URL", ""),
        help="metadata store URL, default sqlite:///DATA_DIR/trainyard.db (TRAINYARD_DATABASE_URL)",
    )
    parser.add_argument(
        "--database-busy-timeout",
        type=float,
        default=float(_env("DATABASE_BUSY_TIMEOUT", "10")),
        metavar="SECONDS",
        help="how long a SQLite statement waits for a lock held by another connection "
        "before the call fails with UNAVAILABLE (TRAINYARD_DATABASE_BUSY_TIMEOUT)",
    )
    parser.add_argument(
        "--executables-dir",
        default=_env("EXECUTABLES_DIR"),
        help="directory of WorkflowTemplate YAML files loaded at start (TRAINYARD_EXECUTABLES_DIR)",
    )
    parser.add_argument(
        "--default-resource-group",
        default=_env("DEFAULT_RESOURCE_GROUP", "default"),
        help="resource group of requests without ai-resource-group metadata "
        "(TRAINYARD_DEFAULT_RESOURCE_GROUP)",
    )
    parser.add_argument(
        "--log-format",
        choices=["auto", "json", "console"],
        default=_env("LOG_FORMAT", "auto"),
        help="json, console, or auto: console on a terminal (TRAINYARD_LOG_FORMAT)",
    )
    parser.add_argument(
        "--log-level",
        default=_env("LOG_LEVEL", "info"),
        help="debug, info, warning or error (TRAINYARD_LOG_LEVEL)",
    )
    parser.add_argument(
        "--max-concurrent-executions",
        type=int,
        default=int(_env("MAX_CONCURRENT_EXECUTIONS", "4")),
        help="executions running at once; others wait PENDING "
        "(TRAINYARD_MAX_CONCURRENT_EXECUTIONS)",
    )
    parser.add_argument(
        "--stop-grace-seconds",
        type=float,
        default=float(_env("STOP_GRACE_SECONDS", "10")),
        help="time between SIGTERM and SIGKILL when stopping a step "
        "(TRAINYARD_STOP_GRACE_SECONDS)",
    )
    parser.add_argument(
        "--max-streams-per-client",
        type=int,
        default=int(_env("MAX_STREAMS_PER_CLIENT", "100")),
        help="open server streams per client connection; more are RESOURCE_EXHAUSTED "
        "(TRAINYARD_MAX_STREAMS_PER_CLIENT)",
    )
    parser.add_argument(
        "--runtime",
        choices=["local", "container", "ray", "none"],
        default=_env("RUNTIME", "local"),
        help="local: run steps as local processes (default); container: run each step in "
        "its image through Podman (or Docker); ray: run each step as a job on the Ray cluster "
        "at --ray-address; none: run nothing, executions stay PENDING (TRAINYARD_RUNTIME)",
    )
    parser.add_argument(
        "--container-engine",
        default=_env("CONTAINER_ENGINE", ""),
        help="the container engine's command for --runtime container (default: podman, "
        "else docker) (TRAINYARD_CONTAINER_ENGINE)",
    )
    parser.add_argument(
        "--container-user",
        default=_env("CONTAINER_USER", "65534:65534"),
        help="UID:GID container steps run as (TRAINYARD_CONTAINER_USER)",
    )
    parser.add_argument(
        "--container-network",
        default=_env("CONTAINER_NETWORK", "api"),
        help="the network of container steps: api (default): only this machine's "
        "loopback, where the API listens; none: no network; anything else is the "
        "engine's --network value (TRAINYARD_CONTAINER_NETWORK)",
    )
    parser.add_argument(
        "--ray-address",
        default=_env("RAY_ADDRESS", ""),
        metavar="URL",
        help="job submission address of the Ray cluster of --runtime ray, "
        "http://HEAD:8265 (TRAINYARD_RAY_ADDRESS)",
    )
    parser.add_argument(
        "--artifact-root",
        default=_env("ARTIFACT_ROOT"),
        metavar="DIR",
        help="folder for executions' working directories and output artifacts, seen at "
        "the same path by the server and every Ray node (default: the data directory; "
        "TRAINYARD_ARTIFACT_ROOT)",
    )
    parser.add_argument(
        "--replica-id",
        default=_env("REPLICA_ID", ""),
        help="this server's name among the replicas of one database, 1-64 letters, digits,"
        " '.', '_' or '-'; default: host name and a digest of the data directory"
        " (TRAINYARD_REPLICA_ID)",
    )
    parser.add_argument(
        "--lease-seconds",
        type=float,
        default=float(_env("LEASE_SECONDS", "10")),
        help="how long a replica's claim on its executions lasts unless renewed; the "
        "executions of a replica silent for longer are taken over (TRAINYARD_LEASE_SECONDS)",
    )
    parser.add_argument(
        "--resource-plans",
        default=_env("RESOURCE_PLANS"),
        metavar="FILE",
        help="YAML file mapping resource plan names to {cpu, memory, gpu}, added to "
        "SAP AI Core's plans (starter, basic, ...) or replacing some (TRAINYARD_RESOURCE_PLANS)",
    )
    parser.add_argument(
        "--secrets-key-file",
        default=_env("SECRETS_KEY_FILE"),
        metavar="FILE",
        help="the key that encrypts secret values at rest, made (mode 0600) on first "
        "start; replicas of one database share it. Default DATA_DIR/secrets.key "
        "(TRAINYARD_SECRETS_KEY_FILE)",
    )
    parser.add_argument(
        "--idempotency-retention",
        default=_env("IDEMPOTENCY_RETENTION", "24h"),
        metavar="DURATION",
        help="how long a request id is remembered: a repeat within it returns the first "
        "result, after it is a new request; the recorded changes set watches resume "
        "from are kept as long (90s, 30m, 24h, 7d; default 24h) "
        "(TRAINYARD_IDEMPOTENCY_RETENTION)",
    )
    parser.add_argument(
        "--page-token-key-file",
        default=_env("PAGE_TOKEN_KEY_FILE"),
        metavar="FILE",
        help="key that signs page tokens (made, random, if missing); without it the "
        "key stored in the database is used (made, random, by the first server to start "
        "on it), so every replica of one database signs with the same key "
        "(TRAINYARD_PAGE_TOKEN_KEY_FILE)",
    )
    parser.add_argument(
        "--auth-tokens",
        default=_env("AUTH_TOKENS"),
        metavar="FILE",
        help="token file (`trainyard-server tokens add`); turns authentication on; "
        "changes are noticed without a restart (TRAINYARD_AUTH_TOKENS)",
    )
    parser.add_argument(
        "--tls-cert",
        default=_env("TLS_CERT"),
        metavar="PEM",
        help="server certificate chain; with --tls-key serves TLS; both are reread on "
        "SIGHUP (TRAINYARD_TLS_CERT)",
    )
    parser.add_argument(
        "--tls-key", default=_env("TLS_KEY"), metavar="PEM", help="server private key"
    )
    parser.add_argument(
        "--tls-client-ca",
        default=_env("TLS_CLIENT_CA"),
        metavar="PEM",
        help="CA bundle of client certificates: mutual TLS, a certificate's subject maps "
        "to a principal of the token file (TRAINYARD_TLS_CLIENT_CA)",
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        default=_env("INSECURE", "") in ("1", "true", "yes"),
        help="allow plaintext and no authentication on a non-loopback address",
    )
    parser.add_argument(
        "--max-requests-per-second",
        type=float,
        default=float(_env("MAX_REQUESTS_PER_SECOND", "1000")),
        help="calls per second per authenticated principal (bursts of twice that); more "
        "are RESOURCE_EXHAUSTED with a retry delay; 0: no limit",
    )
    parser.add_argument(
        "--max-streams-per-principal",
        type=int,
        default=int(_env("MAX_STREAMS_PER_PRINCIPAL", "100")),
        help="open server streams per authenticated principal; 0: no limit",
    )
    parser.add_argument(
        "--console-address",
        default=_env("CONSOLE_ADDRESS", "127.0.0.1:8051"),
        help="host:port of the browser console (TRAINYARD_CONSOLE_ADDRESS)",
    )
    parser.add_argument(
        "--no-console",
        action="store_true",
        default=_env("NO_CONSOLE", "") not in ("", "0", "false"),
        help="serve no browser console (TRAINYARD_NO_CONSOLE=1)",
    )
    parser.add_argument(
        "--port-file",
        default=_env("PORT_FILE"),
        help="write the bound port to this file once the server serves (TRAINYARD_PORT_FILE)",
    )


def settings_from(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Settings:
    """Settings from flags parsed by a parser that :func:`add_arguments` set up; a bad
    combination exits through ``parser.error``."""
    if args.max_concurrent_executions < 1:
        parser.error("--max-concurrent-executions must be at least 1")
    if args.lease_seconds <= 0:
        parser.error("--lease-seconds must be positive")
    if args.database_busy_timeout < 0:
        parser.error("--database-busy-timeout must not be negative")
    if args.runtime == "ray" and not args.ray_address:
        parser.error("--runtime ray needs --ray-address (or TRAINYARD_RAY_ADDRESS)")
    if args.replica_id and not REPLICA_ID_RE.match(args.replica_id):
        parser.error("--replica-id: 1-64 letters, digits, '.', '_' or '-'")
    try:
        settings = _settings(args)
        settings.check_exposure()
        return settings
    except ValueError as exc:
        parser.error(str(exc))


def _settings(args: argparse.Namespace) -> Settings:
    def path(value: str | None) -> Path | None:
        return Path(value) if value else None

    return Settings(
        auth_tokens=path(args.auth_tokens),
        tls_cert=path(args.tls_cert),
        tls_key=path(args.tls_key),
        tls_client_ca=path(args.tls_client_ca),
        insecure=args.insecure,
        max_requests_per_second=args.max_requests_per_second,
        max_streams_per_principal=args.max_streams_per_principal,
        address=args.address,
        data_dir=Path(args.data_dir),
        database_url=args.database_url,
        database_busy_timeout=args.database_busy_timeout,
        executables_dir=Path(args.executables_dir) if args.executables_dir else None,
        default_resource_group=args.default_resource_group,
        log_format=args.log_format,
        log_level=args.log_level,
        max_concurrent_executions=args.max_concurrent_executions,
        stop_grace_seconds=args.stop_grace_seconds,
        max_streams_per_client=args.max_streams_per_client,
        runtime=args.runtime,
        container_engine=args.container_engine,
        container_user=args.container_user,
        container_network=args.container_network,
        ray_address=args.ray_address,
        artifact_root=path(args.artifact_root),
        port_file=Path(args.port_file) if args.port_file else None,
        replica_id=args.replica_id,
        lease_seconds=args.lease_seconds,
        resource_plans_file=Path(args.resource_plans) if args.resource_plans else None,
        secrets_key_file=Path(args.secrets_key_file) if args.secrets_key_file else None,
        page_token_key_file=path(args.page_token_key_file),
        idempotency_retention_seconds=_duration(args.idempotency_retention),
        console_address="" if args.no_console else args.console_address,
    )


def json_logs(log_format: str) -> bool:
    """Whether the server logs JSON lines: asked for, or by default when stderr is not
    a terminal."""
    return log_format == "json" or (log_format == "auto" and not sys.stderr.isatty())
