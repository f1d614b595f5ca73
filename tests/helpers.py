"""Helpers shared by tests: unpack google.rpc details from an RpcError, wait for state."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import grpc

from client.client import TrainyardError
from trainyard.v1 import artifact_pb2, configuration_pb2, configuration_service_pb2
from trainyard.v1 import artifact_service_pb2 as art

T = TypeVar("T")

ROOT_DATA = __import__("pathlib").Path(__file__).resolve().parent.parent / "samples" / "data"


def details(error: grpc.RpcError) -> dict:
    """{'reason', 'metadata', 'fields': {field: description}} from the status details."""
    parsed = TrainyardError.from_rpc_error(error)
    return {
        "reason": parsed.reason,
        "metadata": parsed.metadata,
        "fields": {v.field: v.description for v in parsed.violations},
    }


def rpc_error(fn: Callable[..., object], *args, **kwargs) -> grpc.RpcError:
    """Call ``fn`` and return the RpcError it raises (fails the test if none)."""
    try:
        fn(*args, **kwargs)
    except grpc.RpcError as error:
        return error
    raise AssertionError("expected the call to fail")


def wait_for(predicate: Callable[[], T], timeout: float = 30.0, interval: float = 0.02) -> T:
    """Poll ``predicate`` until it returns something truthy; bounded by ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def register_iris(stubs, metadata=()) -> str:
    """Register samples/data/iris.csv as a dataset; returns the artifact id."""
    response = stubs.artifacts.CreateArtifact(
        art.CreateArtifactRequest(
            artifact=artifact_pb2.Artifact(
                name="iris",
                kind=artifact_pb2.ARTIFACT_KIND_DATASET,
                url=(ROOT_DATA / "iris.csv").as_uri(),
                scenario_id="iris",
            )
        ),
        metadata=metadata,
    )
    return response.artifact.id


def iris_configuration(stubs, dataset_id: str, metadata=(), **params) -> str:
    params = {"learning_rate": "0.1", "epochs": "5", **{k: str(v) for k, v in params.items()}}
    response = stubs.configurations.CreateConfiguration(
        configuration_service_pb2.CreateConfigurationRequest(
            configuration=configuration_pb2.Configuration(
                name="iris-config",
                executable_id="iris-train",
                scenario_id="iris",
                parameter_bindings=[
                    configuration_pb2.ParameterBinding(key=k, value=v) for k, v in params.items()
                ],
                input_artifact_bindings=[
                    configuration_pb2.InputArtifactBinding(key="iris-data", artifact_id=dataset_id)
                ],
            )
        ),
        metadata=metadata,
    )
    return response.configuration.id
