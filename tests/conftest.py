"""Test fixtures: a real Trainyard server on an ephemeral loopback port, in a thread of
its own with its own event loop, and typed stubs that talk to it over gRPC."""

from __future__ import annotations

import asyncio
import inspect
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from server.app import TrainyardServer, start_server
from server.config import Settings
from server.log_setup import configure_logging
from tests.services.podman import Podman, start_podman_or_skip
from tests.services.postgres import PostgresCluster, start_postgres_or_skip
from tests.services.ray_cluster import RayCluster, start_ray_or_skip
from trainyard.v1 import (
    artifact_service_pb2_grpc,
    configuration_service_pb2_grpc,
    executable_service_pb2_grpc,
    execution_service_pb2_grpc,
    log_service_pb2_grpc,
    meta_service_pb2_grpc,
    scenario_service_pb2_grpc,
)

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples" / "executables"

configure_logging("console", "warning")


class ServerThread:
    """Runs start_server() on a private event loop in a daemon thread."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.running: TrainyardServer | None = None

    def call(self, coro, timeout: float = 60):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def run_sync(self, fn, *args, timeout: float = 60, **kwargs):
        """Run a function on the server's loop thread and return its result; a
        coroutine it returns (a store or control plane call) is awaited there."""
        future: Future = Future()

        def _settle(task: asyncio.Future) -> None:
            if task.cancelled():
                future.cancel()
            elif task.exception() is not None:
                future.set_exception(task.exception())
            else:
                future.set_result(task.result())

        def _run():
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:  # noqa: BLE001
                future.set_exception(exc)
                return
            if inspect.isawaitable(result):
                asyncio.ensure_future(result).add_done_callback(_settle)
            else:
                future.set_result(result)

        self.loop.call_soon_threadsafe(_run)
        return future.result(timeout)

    def start(self) -> ServerThread:
        self.thread.start()
        self.running = self.call(start_server(self.settings))
        return self

    def stop(self, grace: float = 2.0) -> None:
        if self.loop.is_closed():
            return
        if self.running is not None:
            self.call(self.running.stop(grace))
            self.running = None
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def detach_runtime(self) -> None:
        """Stop the server's runtime and take it away: nothing runs from now on, and
        executions stay as the test puts them."""

        async def detach():
            runtime, self.plane.runtime = self.plane.runtime, None
            if runtime is not None:
                await runtime.close()

        self.call(detach())

    @property
    def address(self) -> str:
        assert self.running is not None
        return self.running.address

    @property
    def plane(self):
        assert self.running is not None
        return self.running.plane


@dataclass
class Stubs:
    channel: grpc.Channel
    scenarios: scenario_service_pb2_grpc.ScenarioServiceStub
    executables: executable_service_pb2_grpc.ExecutableServiceStub
    artifacts: artifact_service_pb2_grpc.ArtifactServiceStub
    configurations: configuration_service_pb2_grpc.ConfigurationServiceStub
    executions: execution_service_pb2_grpc.ExecutionServiceStub
    logs: log_service_pb2_grpc.LogServiceStub
    meta: meta_service_pb2_grpc.MetaServiceStub


def make_stubs(address: str) -> Stubs:
    channel = grpc.insecure_channel(address)
    return Stubs(
        channel=channel,
        scenarios=scenario_service_pb2_grpc.ScenarioServiceStub(channel),
        executables=executable_service_pb2_grpc.ExecutableServiceStub(channel),
        artifacts=artifact_service_pb2_grpc.ArtifactServiceStub(channel),
        configurations=configuration_service_pb2_grpc.ConfigurationServiceStub(channel),
        executions=execution_service_pb2_grpc.ExecutionServiceStub(channel),
        logs=log_service_pb2_grpc.LogServiceStub(channel),
        meta=meta_service_pb2_grpc.MetaServiceStub(channel),
    )


def make_settings(tmp_path: Path, **overrides) -> Settings:
    values = dict(
        address="127.0.0.1:0",
        data_dir=tmp_path / "data",
        executables_dir=SAMPLES,
        log_format="console",
        log_level="warning",
        max_concurrent_executions=4,
        stop_grace_seconds=2.0,
    )
    values.update(overrides)
    return Settings(**values)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests of modules marked ``backends("sqlite", "postgresql")`` run once per backend
    (their servers' database); every other test runs on SQLite."""
    if "backend" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("backends")
        names = marker.args if marker is not None else ("sqlite",)
        metafunc.parametrize("backend", names, indirect=True, scope="function")


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    """The store backend of the test's servers: "sqlite" or "postgresql"."""
    return getattr(request, "param", "sqlite")


@pytest.fixture
def database_url(backend: str, request: pytest.FixtureRequest) -> str:
    """The database URL the test's servers share ("" for SQLite: each server's data
    directory holds its file)."""
    if backend == "postgresql":
        return request.getfixturevalue("postgres_url")
    return ""


@pytest.fixture
def server_factory(tmp_path: Path, request: pytest.FixtureRequest, database_url: str):
    """Start servers with custom settings; every one is stopped at the end. In modules
    marked ``driven`` the servers run no runtime: the tests play its part themselves
    (lines through the log sink, transitions through the control plane)."""
    started: list[ServerThread] = []
    driven = request.node.get_closest_marker("driven") is not None

    def factory(**overrides) -> ServerThread:
        if database_url:
            overrides.setdefault("database_url", database_url)
        if driven:
            overrides.setdefault("runtime", "none")
        thread = ServerThread(make_settings(tmp_path, **overrides)).start()
        started.append(thread)
        return thread

    yield factory
    for thread in started:
        thread.stop()


@pytest.fixture
def server(server_factory) -> ServerThread:
    return server_factory()


@pytest.fixture
def stubs(server: ServerThread) -> Iterator[Stubs]:
    s = make_stubs(server.address)
    try:
        yield s
    finally:
        s.channel.close()


@pytest.fixture
def stubs_for():
    """Stubs for any server a test starts; every channel is closed at the end."""
    made: list[Stubs] = []

    def factory(server: ServerThread) -> Stubs:
        stubs = make_stubs(server.address)
        made.append(stubs)
        return stubs

    yield factory
    for stubs in made:
        stubs.channel.close()


def group(name: str) -> tuple[tuple[str, str], ...]:
    """Call metadata selecting a resource group."""
    return (("ai-resource-group", name),)


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """One throwaway PostgreSQL cluster for the whole run, started by the first test that
    asks for it (tests/services/postgres.py). Skipped where PostgreSQL is not installed
    or does not start; failed instead with TRAINYARD_REQUIRE_SERVICES=1."""
    cluster = start_postgres_or_skip()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def podman() -> Iterator[Podman]:
    """A private Podman store with the test image, for one test module
    (tests/services/podman.py). Skipped where Podman cannot run; failed instead with
    TRAINYARD_REQUIRE_SERVICES=1."""
    store = start_podman_or_skip()
    try:
        yield store
    finally:
        store.close()


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[RayCluster]:
    """One throwaway Ray cluster (a head and one worker node, 1 CPU each, loopback only)
    for the whole run, started by the first test that asks for it
    (tests/services/ray_cluster.py). Skipped where Ray is not installed or does not
    start; failed instead with TRAINYARD_REQUIRE_SERVICES=1."""
    cluster = start_ray_or_skip(head_cpus=1, worker_cpus=1)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def postgres_databases(postgres_cluster: PostgresCluster) -> Iterator[Callable[[], str]]:
    """Make fresh empty databases on the cluster: each call returns a new one's URL; all
    are dropped at the end of the test, with any sessions still connected to them."""
    made: list[str] = []

    def factory() -> str:
        name = f"t_{uuid.uuid4().hex[:16]}"
        made.append(name)
        return postgres_cluster.create_database(name)

    yield factory
    for name in made:
        postgres_cluster.drop_database(name)


@pytest.fixture
def postgres_url(postgres_databases: Callable[[], str]) -> str:
    """The URL of a fresh empty database of this test's own
    (postgresql://trainyard@127.0.0.1:PORT/t_...), dropped at its end."""
    return postgres_databases()
