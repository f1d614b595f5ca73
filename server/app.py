"""Assembles the server: store, control plane, runtime, gRPC services, health and
reflection; starts and stops it."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

from server.api.audit import AuditService
from server.api.connect import Bridge
from server.api.errors import ErrorInterceptor, receive_limit
from server.api.logs import LogService, add_log_service
from server.api.meta import MetaService
from server.api.methods import HandlerCollector, MethodTable
from server.api.metrics import MetricService
from server.api.resources import (
    ArtifactService,
    ConfigurationService,
    ExecutableService,
    ScenarioService,
)
from server.api.secrets import SecretService
from server.api.watch import WatchingExecutionService
from server.config import Settings
from server.console import ConsoleServer, build_app, connect_apps
from server.domain import resources
from server.domain.audit import AuditEvent, Caller
from server.domain.logpurge import LogPurger
from server.domain.logs import LogReader
from server.domain.logsink import LogSink
from server.domain.metrics import MetricsService
from server.domain.models import SHARED_GROUP
from server.domain.principal import Principal
from server.domain.retention import IdempotencyPurger
from server.domain.secrets import SecretService as SecretUseCases
from server.domain.service import ControlPlane
from server.page_key import open_page_tokens
from server.process_tuning import tune_process
from server.runtime.container_runner import ContainerRunner
from server.runtime.executor import Executor, reachable_address
from server.runtime.process_runner import ProcessRunner
from server.security.authn import Authenticator, Limits
from server.security.tls import ServerTLS, is_loopback
from server.security.tokens import StepTokens
from server.store.async_store import AsyncMetricStore, AsyncStore
from server.store.cipher import open_key_file
from server.streams.broker import LocalBroker
from server.streams.tailer import LogTails
from server.streams.watch import ExecutionWatches
from trainyard.v1 import (
    artifact_service_connect,
    artifact_service_pb2,
    artifact_service_pb2_grpc,
    audit_service_connect,
    audit_service_pb2,
    audit_service_pb2_grpc,
    configuration_service_connect,
    configuration_service_pb2,
    configuration_service_pb2_grpc,
    executable_service_connect,
    executable_service_pb2,
    executable_service_pb2_grpc,
    execution_service_connect,
    execution_service_pb2,
    execution_service_pb2_grpc,
    log_service_connect,
    log_service_pb2,
    meta_service_connect,
    meta_service_pb2,
    meta_service_pb2_grpc,
    metric_service_connect,
    metric_service_pb2,
    metric_service_pb2_grpc,
    scenario_service_connect,
    scenario_service_pb2,
    scenario_service_pb2_grpc,
    secret_service_connect,
    secret_service_pb2,
    secret_service_pb2_grpc,
)

if TYPE_CHECKING:  # imported where used: psycopg only on PostgreSQL
    from server.streams.notify import PostgresNotifier

log = structlog.get_logger("trainyard.server")

# The generated Connect modules of the services, beside their message modules.
CONNECT_MODULES = [
    (scenario_service_connect, scenario_service_pb2),
    (executable_service_connect, executable_service_pb2),
    (artifact_service_connect, artifact_service_pb2),
    (configuration_service_connect, configuration_service_pb2),
    (execution_service_connect, execution_service_pb2),
    (log_service_connect, log_service_pb2),
    (meta_service_connect, meta_service_pb2),
    (metric_service_connect, metric_service_pb2),
    (secret_service_connect, secret_service_pb2),
    (audit_service_connect, audit_service_pb2),
]

SERVICE_NAMES = [
    scenario_service_pb2.DESCRIPTOR.services_by_name["ScenarioService"].full_name,
    executable_service_pb2.DESCRIPTOR.services_by_name["ExecutableService"].full_name,
    artifact_service_pb2.DESCRIPTOR.services_by_name["ArtifactService"].full_name,
    configuration_service_pb2.DESCRIPTOR.services_by_name["ConfigurationService"].full_name,
    execution_service_pb2.DESCRIPTOR.services_by_name["ExecutionService"].full_name,
    log_service_pb2.DESCRIPTOR.services_by_name["LogService"].full_name,
    meta_service_pb2.DESCRIPTOR.services_by_name["MetaService"].full_name,
    metric_service_pb2.DESCRIPTOR.services_by_name["MetricService"].full_name,
    secret_service_pb2.DESCRIPTOR.services_by_name["SecretService"].full_name,
    audit_service_pb2.DESCRIPTOR.services_by_name["AuditService"].full_name,
]


@dataclass
class TrainyardServer:
    """A running server. ``port`` is the bound port (useful with port 0)."""

    settings: Settings
    store: AsyncStore
    plane: ControlPlane
    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer | None = None
    extra: dict = field(default_factory=dict)

    @property
    def address(self) -> str:
        host = self.settings.address.rsplit(":", 1)[0]
        return f"{host}:{self.port}"

    async def stop(self, grace: float | None = 5.0) -> None:
        """Graceful shutdown: refuse new calls, let running ones finish within
        ``grace`` seconds, stop every execution process, close the store."""
        if self.health is not None:
            await self.health.enter_graceful_shutdown()
        console = self.extra.get("console")
        if console is not None:
            await console.stop()
        await self.server.stop(grace)
        auth = self.extra.get("auth")
        if auth is not None:
            await auth.close()
        for name in ("log_purger", "idempotency_purger"):
            purger = self.extra.get(name)
            if purger is not None:
                await purger.close()
        if self.plane.runtime is not None:
            await self.plane.runtime.close()
        sink = self.extra.get("log_sink")
        if sink is not None:
            await sink.close()
        if self.plane.runtime is not None:
            await self._hand_over()
        notifier = self.extra.get("notifier")
        if notifier is not None:
            # After the sink: its last lines and the final transitions are announced.
            await notifier.close()
        await asyncio.to_thread(self.store.close)
        log.info("server stopped")

    async def _hand_over(self) -> None:
        """End this replica's leases now, once nothing of it writes any more (its
        runtime closed, its last log lines stored): another replica takes its active
        executions over at its next round (a third of the lease), not once the leases
        run out; a restart of this replica reclaims them alike."""
        try:
            released = await self.store.release_leases(self.settings.replica_id)
        except Exception as exc:  # noqa: BLE001 - the store failed: the leases lapse
            log.warning("leases not released; they lapse", error=str(exc))
            return
        if released:
            log.info("leases released for other replicas", count=released)


def check_exposure(settings: Settings) -> None:
    """Refuses to serve plaintext or unauthenticated beyond loopback unless told to."""
    if is_loopback(settings.address) or settings.insecure:
        return
    if not settings.tls_enabled:
        raise ValueError(
            f"refusing plaintext on non-loopback address {settings.address}: give"
            " --tls-cert and --tls-key, or --insecure"
        )
    if not settings.auth_enabled:
        raise ValueError(
            f"refusing to serve {settings.address} without authentication: give"
            " --auth-tokens or --tls-client-ca, or --insecure"
        )


def check_console_exposure(settings: Settings) -> None:
    """The console's port under the same rule: beyond loopback only over HTTPS (the
    server's certificate) and with token authentication, unless told otherwise."""
    address = settings.console_address
    if not address or is_loopback(address) or settings.insecure:
        return
    if not settings.tls_enabled:
        raise ValueError(
            f"refusing plaintext on non-loopback console address {address}: give"
            " --tls-cert and --tls-key (the console then serves HTTPS), or --insecure"
        )
    if settings.auth_tokens is None:
        raise ValueError(
            f"refusing to serve the console on {address} without tokens (browsers sign in"
            " with one): give --auth-tokens, or --insecure"
        )


async def _record_token_changes(store: AsyncStore, replica_id: str, added, removed) -> None:
    """The audit events of a token file change, as this server noticed it."""
    who = Caller(Principal(name="token-file"))

    def event(action: str, principal) -> AuditEvent:
        roles = ", ".join(f"{g}={r}" for g, r in sorted(principal.roles.items()))
        return who.event(
            action,
            "token",
            principal.credential_id,
            "",
            detail=f"principal {principal.name}; roles {roles}; noticed by {replica_id}",
        )

    await store.record_audit(
        [event("token.add", p) for p in added] + [event("token.revoke", p) for p in removed]
    )


async def start_server(settings: Settings) -> TrainyardServer:
    if ":memory:" in settings.database_url:
        raise ValueError(
            "the server needs a database its threads can share: use a file"
            " (sqlite:///PATH) or PostgreSQL, not an in-memory database"
        )
    check_exposure(settings)
    check_console_exposure(settings)
    tls = (
        ServerTLS(settings.tls_cert, settings.tls_key, settings.tls_client_ca)
        if settings.tls_cert is not None and settings.tls_key is not None
        else None
    )
    step_tokens = StepTokens()
    auth = await asyncio.to_thread(
        Authenticator,
        settings.auth_tokens,
        client_certificates=settings.tls_client_ca is not None,
        step_tokens=step_tokens,
        limits=Limits(
            requests_per_second=settings.max_requests_per_second,
            burst=2 * settings.max_requests_per_second,
            max_streams=settings.max_streams_per_principal,
        ),
        reload_seconds=settings.auth_reload_seconds,
    )
    # Opening runs the migrations: off the loop like every other store call.
    store = await asyncio.to_thread(
        AsyncStore, settings.database_url, busy_timeout=settings.database_busy_timeout
    )
    plans = dict(resources.DEFAULT_PLANS)
    if settings.resource_plans_file is not None:
        plans = await asyncio.to_thread(resources.load_plan_file, settings.resource_plans_file)
    # Secret values are sealed with the key file's key (made on the first start).
    cipher = await asyncio.to_thread(open_key_file, settings.secrets_key_file)
    # Page tokens: signed with the key file's key when one is given, else with the
    # database's (the same for every replica of it).
    page_tokens = await open_page_tokens(settings.page_token_key_file, store)
    secrets = SecretUseCases(store, cipher, page_tokens)
    plane = ControlPlane(
        store=store,
        default_resource_group=settings.default_resource_group,
        resource_plans=plans,
        secrets=secrets,
        page_tokens=page_tokens,
    )
    # The sink stores lines on a writer thread of its own, with its own connection.
    log_sink = LogSink(store.sync)
    # Live streams: stored log lines and committed execution changes go to the broker.
    broker = LocalBroker()
    log_sink.row_subscribers.append(broker.publish_logs)
    plane.listeners.append(broker.publish_event)
    tails = LogTails(plane, broker)
    # Log lines of deleted executions, removed in the background (woken by deletes).
    log_purger = LogPurger(store)
    # Request ids past their retention, deleted in the background.
    idempotency_purger = IdempotencyPurger(store, settings.idempotency_retention_seconds)
    plane.listeners.append(log_purger.on_event)
    watches = ExecutionWatches(plane, broker)
    notifier: PostgresNotifier | None = None
    if store.kind == "postgresql":
        from server.streams.notify import PostgresNotifier

        # Replicas of one database: what is committed here reaches the others' brokers
        # (and theirs this one's) through LISTEN / NOTIFY (server/streams/notify.py).
        notifier = PostgresNotifier(
            settings.database_url,
            replica_id=settings.replica_id,
            store=store,
            plane=plane,
            broker=broker,
            log_sink=log_sink,
        )
    runner = None
    if settings.runtime == "local":
        runner = ProcessRunner()
    elif settings.runtime == "container":
        runner = ContainerRunner(
            engine=settings.container_engine,
            replica_id=settings.replica_id,
            user=settings.container_user,
            network=settings.container_network,
        )
    elif settings.runtime == "ray":
        from server.runtime.ray_runner import RayRunner  # Ray is an optional extra

        runner = RayRunner(settings.ray_address, stop_grace=settings.stop_grace_seconds)
    if runner is not None:
        plane.runtime = Executor(
            plane,
            log_sink,
            runner=runner,
            work_dir=settings.work_dir,
            artifacts_dir=settings.artifacts_dir,
            max_concurrent=settings.max_concurrent_executions,
            stop_grace=settings.stop_grace_seconds,
            replica_id=settings.replica_id,
            lease_seconds=settings.lease_seconds,
            credentials=step_tokens if auth.enabled else None,
        )
    if settings.executables_dir is not None:
        # Tenant-wide, as SAP AI Core's executables are: every group sees them.
        loaded = await plane.load_executables(settings.executables_dir, SHARED_GROUP)
        log.info("executables loaded", count=len(loaded), directory=str(settings.executables_dir))

    options = [
        # Above the server's limit, so that the interceptor sees (and refuses with
        # LIMIT_EXCEEDED details) requests up to RECEIVE_HEADROOM times the limit.
        ("grpc.max_receive_message_length", receive_limit(settings.max_message_bytes)),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.so_reuseport", 0),
    ]
    auth.on_change = partial(_record_token_changes, store, settings.replica_id)
    interceptor = ErrorInterceptor(
        settings.default_resource_group,
        settings.max_streams_per_client,
        settings.max_message_bytes,
        auth=auth,
    )
    interceptors: list[grpc.aio.ServerInterceptor] = [interceptor]
    server = grpc.aio.server(interceptors=interceptors, options=options)
    executions = WatchingExecutionService(plane, watches)
    capabilities = {
        "logs": True,
        "log_streaming": True,
        "bulk_updates": True,
        "status_watch": True,
        "metrics": True,
        "idempotent_creates": True,
        "executable_registration": True,
    }
    meta = MetaService(
        settings,
        capabilities,
        runtime=settings.runtime,
        store=store.kind,
        cluster=getattr(runner, "cluster", None),
        runtime_address=settings.ray_address if settings.runtime == "ray" else "",
        auth_enabled=auth.enabled,
        tls_enabled=tls is not None,
    )
    # Each service's registration, on the gRPC server and for the console's bridge.
    registrations: list[tuple[Callable, object]] = [
        (scenario_service_pb2_grpc.add_ScenarioServiceServicer_to_server, ScenarioService(plane)),
        (
            executable_service_pb2_grpc.add_ExecutableServiceServicer_to_server,
            ExecutableService(plane),
        ),
        (artifact_service_pb2_grpc.add_ArtifactServiceServicer_to_server, ArtifactService(plane)),
        (
            configuration_service_pb2_grpc.add_ConfigurationServiceServicer_to_server,
            ConfigurationService(plane),
        ),
        (execution_service_pb2_grpc.add_ExecutionServiceServicer_to_server, executions),
        (
            lambda servicer, target: add_log_service(target, servicer),
            LogService(LogReader(plane), tails),
        ),
        (
            metric_service_pb2_grpc.add_MetricServiceServicer_to_server,
            MetricService(
                MetricsService(AsyncMetricStore(store), page_tokens), settings.max_message_bytes
            ),
        ),
        (meta_service_pb2_grpc.add_MetaServiceServicer_to_server, meta),
        (secret_service_pb2_grpc.add_SecretServiceServicer_to_server, SecretService(secrets)),
        (audit_service_pb2_grpc.add_AuditServiceServicer_to_server, AuditService(plane)),
    ]
    collector = HandlerCollector()
    for add, servicer in registrations:
        add(servicer, collector)
    services = dict(collector.handlers)  # the console's bridge: our services only
    console: ConsoleServer | None = None
    if settings.console_address:
        bridge = Bridge(services, interceptors)
        console = ConsoleServer(
            build_app(connect_apps(bridge, CONNECT_MODULES)),
            settings.console_address,
            tls=(settings.tls_cert, settings.tls_key) if settings.tls_enabled else None,
            bridge=bridge,
        )

    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, collector)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
        reflection.aio.ReflectionServicer(
            [*SERVICE_NAMES, reflection.SERVICE_NAME, health.SERVICE_NAME]
        ),
        collector,
    )
    # Every method from one table (server/api/methods.py), none as a registered method.
    server.add_generic_rpc_handlers((MethodTable(collector.handlers),))

    if tls is not None:
        port = server.add_secure_port(settings.address, tls.credentials())
    else:
        port = server.add_insecure_port(settings.address)
    if port == 0:
        raise RuntimeError(f"cannot listen on {settings.address}")
    if notifier is not None:
        # Listening before anything is served or run: no tailer or watcher here can
        # miss a notification.
        await notifier.start()
    if plane.runtime is not None:
        # Reconcile what a previous server left before serving; steps dial `address`.
        await plane.runtime.start(f"{settings.address.rsplit(':', 1)[0]}:{port}")
    await server.start()
    await auth.start()
    if console is not None:
        await console.start()
        meta.console_address = console.address
        if isinstance(plane.runtime, Executor):  # steps may call the API over HTTP
            plane.runtime.http_address = reachable_address(console.address)
    log_purger.start()  # first what a previous server left queued
    idempotency_purger.start()
    for name in ["", *SERVICE_NAMES]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    running = TrainyardServer(
        settings,
        store,
        plane,
        server,
        port,
        health_servicer,
        extra={
            "log_sink": log_sink,
            "log_purger": log_purger,
            "idempotency_purger": idempotency_purger,
            "broker": broker,
            "tails": tails,
            "watches": watches,
            "interceptor": interceptor,
            "execution_responses": executions.responses,
            "notifier": notifier,
            "auth": auth,
            "tls": tls,
            "step_tokens": step_tokens,
            "console": console,
        },
    )
    log.info(
        "server started",
        address=running.address,
        database=settings.database_url,
        replica_id=settings.replica_id,
        auth=auth.enabled,
        tls=tls is not None,
    )
    return running


# After a second SIGTERM / SIGINT the process exits within this many seconds, whatever
# the shutdown is waiting for; executions it leaves are reconciled by the next start.
FORCED_EXIT_SECONDS = 2.0
# A graceful shutdown that takes longer than the stop grace plus this is cut short.
SHUTDOWN_SLACK_SECONDS = 15.0
EXIT_FORCED = 70


def _force_exit(reason: str) -> None:
    log.warning("exiting at once", reason=reason)
    sys.stderr.flush()
    os._exit(EXIT_FORCED)


async def serve(settings: Settings) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully. The handlers are in place
    before recovery starts: a signal during start-up lets the start finish (no
    reconciliation is left half-way) and then shuts down; a second signal forces the
    exit within FORCED_EXIT_SECONDS."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if stop.is_set():
            log.warning("second signal: forcing the exit", within_seconds=FORCED_EXIT_SECONDS)
            loop.call_later(FORCED_EXIT_SECONDS, _force_exit, "second signal")
            return
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    log.info("server starting")
    running = await start_server(settings)
    tune_process()
    if settings.port_file is not None:
        tmp = settings.port_file.with_name(settings.port_file.name + ".tmp")
        tmp.write_text(f"{running.port}\n")
        tmp.replace(settings.port_file)
    tls = running.extra.get("tls")
    if tls is not None:
        reloads: set[asyncio.Task] = set()

        def reload_tls() -> None:
            task = loop.create_task(tls.reload())
            reloads.add(task)
            task.add_done_callback(reloads.discard)

        loop.add_signal_handler(signal.SIGHUP, reload_tls)
    await stop.wait()
    log.info("shutting down")
    bound = settings.stop_grace_seconds + SHUTDOWN_SLACK_SECONDS
    watchdog = loop.call_later(bound, _force_exit, f"shutdown took over {bound:.0f} s")
    try:
        await running.stop(grace=5.0)
    finally:
        watchdog.cancel()
