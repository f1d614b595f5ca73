"""An image the engine's store lacks is pulled with the credentials of the template's
`imagePullSecrets`, from a real registry that checks them (tests/services/registry.py:
a throwaway one on loopback, its user's password known only to the group's secret)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import pytest

from tests.services.podman import IMAGE, Podman
from tests.services.registry import Registry, start_registry_or_skip
from tests.test_container_runtime import files_holding, one_step
from tests.workflow_helpers import STATUS_NAME, Runner

USER, PASSWORD = "ci-bot", "pull-pw-5b8e"


@pytest.fixture(scope="module")
def registry(podman: Podman) -> Iterator[Registry]:
    registry = start_registry_or_skip(USER, PASSWORD)
    try:
        podman.trust_insecure(registry.address)
        yield registry
    finally:
        registry.close()


@pytest.fixture
def server(server_factory, podman):
    return server_factory(runtime="container")


@pytest.fixture
def runner(server) -> Iterator[Runner]:
    r = Runner(server.address)
    yield r
    r.close()


def _pushed(podman: Podman, registry: Registry, name: str) -> str:
    """The test image pushed to the registry as ``name`` and absent from the store."""
    remote = f"{registry.address}/trainyard/{name}"
    podman.push(IMAGE, remote, USER, PASSWORD)
    assert not podman.has_image(remote)
    return remote


def _pull_secret(runner: Runner, registry: Registry, password: str) -> None:
    auth = base64.b64encode(f"{USER}:{password}".encode()).decode()
    config = {"auths": {registry.address: {"auth": auth}}}
    runner.client.create_secret("registry", {".dockerconfigjson": json.dumps(config)})


def _template(name: str, image: str) -> str:
    text = one_step(name, f'        image: {image}\n        command: ["echo", "pulled"]')
    return text.replace("spec:\n", "spec:\n  imagePullSecrets:\n    - name: registry\n", 1)


def test_a_missing_image_is_pulled_with_the_groups_pull_secret(
    server, runner, podman, registry
):
    image = _pushed(podman, registry, "pulled:1")
    _pull_secret(runner, registry, PASSWORD)
    runner.register(_template("pull", image))
    execution_id = runner.start(runner.configure("pull", scenario="container-tests"))
    execution = runner.wait(execution_id, timeout=120)
    assert STATUS_NAME[execution.status] == "COMPLETED", execution.status_message
    assert runner.output(execution_id) == ["pulled"]
    assert podman.has_image(image)
    # The credentials went to the engine in a file of the step's, gone once it pulled.
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode())
    assert files_holding(server.settings.data_dir, token) == []
    podman.wait_empty("the step's container to be removed")


def test_a_wrong_pull_secret_is_dead_naming_the_image_and_the_refusal(runner, podman, registry):
    image = _pushed(podman, registry, "refused:1")
    _pull_secret(runner, registry, "not-the-password")
    runner.register(_template("refused", image))
    execution_id = runner.start(runner.configure("refused", scenario="container-tests"))
    execution = runner.wait(execution_id, timeout=120)
    assert STATUS_NAME[execution.status] == "DEAD"
    assert f"cannot run image {image}" in execution.status_message
    assert "unauthorized" in execution.status_message.lower()
    assert not podman.has_image(image)
    assert podman.ours() == []
