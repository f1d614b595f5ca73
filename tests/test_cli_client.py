"""The Python client as README documents it: the README's example runs as written
against a real server; the scenario is inferred; artifact kinds are an enum."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import grpc
import pytest

from client.client import ArtifactKind, TrainyardClient, TrainyardError, artifact_kind
from tests.conftest import ROOT


def _readme_example() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### The Python client", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_example_of_the_python_client_runs(server):
    code = _readme_example().replace(
        "file:///path/to/iris.csv", (ROOT / "samples/data/iris.csv").as_uri()
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAINYARD_")}
    env["TRAINYARD_ADDRESS"] = server.address
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr
    assert "best: lr-" in done.stdout
    assert "INVALID_ARGUMENT CONFIGURATION_INVALID" in done.stdout
    assert "configuration.parameter_bindings[0]" in done.stdout


def test_create_configuration_infers_the_scenario_and_kinds_are_an_enum(server):
    with TrainyardClient(server.address) as ty:
        data = ty.create_artifact("iris", (ROOT / "samples/data/iris.csv").as_uri(), "iris",
                                  kind="dataset")
        assert artifact_kind(data) is ArtifactKind.DATASET
        config = ty.create_configuration("inferred", "iris-train",
                                         artifacts={"iris-data": data.id})
        assert config.scenario_id == "iris"
        other = ty.create_artifact("m", (ROOT / "samples/data/iris.csv").as_uri(), "iris",
                                   kind=ArtifactKind.MODEL)
        listed = [a.id for a in ty.list_artifacts(kind=ArtifactKind.MODEL)]
        assert listed == [other.id]
        assert [a.id for a in ty.list_artifacts(kind="DATASET")] == [data.id]
        with pytest.raises(ValueError, match="unknown artifact kind 'weights'"):
            ty.create_artifact("w", "file:///w", "iris", kind="weights")
        with pytest.raises(TrainyardError) as caught:
            ty.create_configuration("x", "no-such-executable")
        assert caught.value.code == grpc.StatusCode.NOT_FOUND
