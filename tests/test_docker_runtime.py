"""The container runtime through Docker (`--container-engine docker`): the container
tests of tests/test_container_runtime.py, run again here against a throwaway Docker
daemon of their own (tests/services/docker.py) with the same image.

What differs from Podman, and is tested as such: Docker's log file is its json-file
(found by `docker inspect`), its entrypoint is one word (the rest of a command goes
first in the arguments), and a step reaches the API through the host's network
(`--container-network host`): Docker has no network that leads to the host's loopback
alone. The tests imported below take their engine through the ``podman`` fixture, which
this module overrides with the Docker daemon."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests import test_container_runtime
from tests.services.docker import Docker, start_docker_or_skip
from tests.services.podman import IMAGE
from tests.test_container_runtime import (  # noqa: F401 - collected again, on Docker
    one_step,
    secret_left_while_rm_held,
    test_a_container_with_only_an_image_runs_the_image_entrypoint,
    test_a_container_without_command_runs_the_image_entrypoint,
    test_a_missing_image_is_dead_at_start_naming_it,
    test_a_sap_style_template_runs_in_its_image,
    test_a_server_ended_mid_run_reattaches_its_running_container,
    test_after_a_restart_containers_of_deleted_executions_are_removed,
    test_empty_dir_and_secret_volumes_are_mounted,
    test_loops_when_output_parameters_and_exit_handler_in_containers,
    test_stop_ends_the_container_within_the_grace_period,
)
from tests.test_image_pull import (  # noqa: F401 - collected again, on Docker
    registry,
    test_a_missing_image_is_pulled_with_the_groups_pull_secret,
    test_a_wrong_pull_secret_is_dead_naming_the_image_and_the_refusal,
)
from tests.workflow_helpers import STATUS_NAME

runner = test_container_runtime.runner  # the same fixture, on this module's server

# Servers started as processes (the restart tests) read their engine from these.
ENGINE_ENV = {"TRAINYARD_CONTAINER_ENGINE": "docker", "TRAINYARD_CONTAINER_NETWORK": "host"}


@pytest.fixture(scope="module")
def podman() -> Iterator[Docker]:
    """The engine of the container tests, here Docker (the name is theirs)."""
    docker = start_docker_or_skip()
    saved = {key: os.environ.get(key) for key in ENGINE_ENV}
    os.environ.update(ENGINE_ENV)
    try:
        yield docker
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        docker.close()


@pytest.fixture
def container_server(server_factory, podman):
    return server_factory(
        runtime="container",
        container_engine="docker",
        container_network="host",
        console_address="127.0.0.1:0",
        stop_grace_seconds=2.0,
    )


@pytest.fixture
def server(container_server):
    """The image pull tests' server: this module's, on Docker."""
    return container_server


def test_the_docker_daemon_runs_the_steps(container_server, podman):
    """The server found Docker, not Podman, as its engine."""
    assert container_server.settings.container_engine == "docker"
    assert podman("version", "--format", "{{.Server.Version}}").stdout.strip()


def test_a_command_of_several_words_keeps_them_in_order(runner, podman):
    runner.register(
        one_step(
            "words",
            f"        image: {IMAGE}\n"
            '        command: ["/bin/sh", "-c", "echo $0 $1", "first"]\n'
            '        args: ["second"]',
        )
    )
    execution_id = runner.start(runner.configure("words", scenario="container-tests"))
    execution = runner.wait(execution_id, timeout=60)
    assert STATUS_NAME[execution.status] == "COMPLETED", execution.status_message
    assert runner.output(execution_id) == ["first second"]


def test_a_secret_printed_by_a_step_is_not_left_in_dockers_log(
    server_factory, podman, tmp_path
):
    """Docker keeps a container's json-file log in its own folder: the server deletes
    it once read, before the execution ends, so the unmasked value is on no disk even
    while the engine is slow to remove the container (its `rm` held here 3 s)."""
    docker_files = podman.root / "data" / "containers"
    assert secret_left_while_rm_held(
        server_factory, podman, tmp_path, docker_files, container_network="host"
    ) == []
