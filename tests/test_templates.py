"""Parsing executable definitions (Argo WorkflowTemplates, SAP AI Core flavour)."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
import yaml

from server.domain.errors import InvalidArgument
from server.domain.models import ArtifactKind, ParameterSpec, ParameterType
from server.domain.templates import (
    load_directory,
    parameter_value_error,
    parse_template,
    parse_template_text,
)

SAMPLES = Path(__file__).resolve().parent.parent / "samples" / "executables"
RG = "default"


def sample(name: str) -> dict:
    return yaml.safe_load((SAMPLES / f"{name}.yaml").read_text())


def minimal() -> dict:
    """A small valid template: a dag calling a container template."""
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "WorkflowTemplate",
        "metadata": {
            "name": "tiny",
            "labels": {"scenarios.ai.sap.com/id": "demo", "ai.sap.com/version": "0.1.0"},
        },
        "spec": {
            "entrypoint": "main",
            "arguments": {"parameters": [{"name": "count", "type": "int", "default": "3"}]},
            "templates": [
                {
                    "name": "work",
                    "container": {"image": "python:3.11-slim", "command": ["true"]},
                },
                {
                    "name": "main",
                    "dag": {
                        "tasks": [
                            {"name": "a", "template": "work"},
                            {"name": "b", "template": "work", "dependencies": ["a"]},
                        ]
                    },
                },
            ],
        },
    }


def violations(doc: dict) -> dict[str, str]:
    with pytest.raises(InvalidArgument) as caught:
        parse_template(doc, RG)
    assert caught.value.code == "INVALID_ARGUMENT"
    return {v.field: v.description for v in caught.value.violations}


# --------------------------------------------------------------------------- samples


def test_train_sample_parses_with_typed_parameters_and_artifacts():
    executable = parse_template(sample("iris-train"), RG)

    assert executable.id == "iris-train"
    assert executable.resource_group == RG
    assert executable.scenario_id == "iris"
    assert executable.scenario_name == "Iris classification"
    assert executable.version == "1.0.0"
    assert executable.name == "Train iris classifier"
    assert executable.description
    assert executable.deployable is False
    assert executable.labels == {}
    assert [(p.name, p.type, p.default) for p in executable.parameters] == [
        ("learning_rate", ParameterType.FLOAT, "0.1"),
        ("epochs", ParameterType.INT, "20"),
        ("seed", ParameterType.INT, "0"),
    ]
    assert [(a.name, a.kind) for a in executable.input_artifacts] == [
        ("iris-data", ArtifactKind.DATASET)
    ]
    [model] = executable.output_artifacts
    assert (model.name, model.kind, model.path, model.step) == (
        "iris-model",
        ArtifactKind.MODEL,
        "/tmp/model/model.json",
        "train",
    )
    assert executable.spec["entrypoint"] == "train"
    assert len(executable.digest) == 64


def test_infer_sample_is_a_two_step_workflow():
    executable = parse_template(sample("iris-infer"), RG)

    assert (executable.id, executable.scenario_id, executable.version) == (
        "iris-infer",
        "iris",
        "1.0.0",
    )
    assert executable.parameters == [
        ParameterSpec("batch_size", ParameterType.INT, "32", "Rows scored per batch")
    ]
    assert [(a.name, a.kind) for a in executable.input_artifacts] == [
        ("iris-model", ArtifactKind.MODEL),
        ("iris-data", ArtifactKind.DATASET),
    ]
    [predictions] = executable.output_artifacts
    assert (predictions.name, predictions.kind, predictions.step) == (
        "iris-predictions",
        ArtifactKind.RESULTSET,
        "score",
    )
    main = executable.spec["templates"][0]
    assert [[step["name"] for step in group] for group in main["steps"]] == [
        ["prepare"],
        ["score"],
    ]


def test_spec_is_plain_json_data():
    doc = minimal()
    doc["spec"]["templates"][0]["metadata"] = {
        "annotations": {"when": yaml.safe_load("2024-01-02")}
    }
    executable = parse_template(doc, RG)
    assert json.loads(json.dumps(executable.spec)) == executable.spec
    assert executable.spec["templates"][0]["metadata"]["annotations"]["when"] == "2024-01-02"


# --------------------------------------------------------------------------- digest


def test_digest_is_stable_and_ignores_key_order():
    doc = sample("iris-train")
    reordered = dict(reversed(list(copy.deepcopy(doc).items())))
    assert parse_template(doc, RG).digest == parse_template(reordered, RG).digest


def test_changed_definition_gives_new_digest():
    doc = sample("iris-train")
    changed = copy.deepcopy(doc)
    changed["spec"]["arguments"]["parameters"][1]["default"] = "30"
    relabelled = copy.deepcopy(doc)
    relabelled["metadata"]["annotations"]["executables.ai.sap.com/description"] = "other"

    digests = {parse_template(d, RG).digest for d in (doc, changed, relabelled)}
    assert len(digests) == 3


# --------------------------------------------------------------------------- validation


def test_missing_scenario_id_label_is_named():
    doc = minimal()
    del doc["metadata"]["labels"]["scenarios.ai.sap.com/id"]
    assert 'metadata.labels["scenarios.ai.sap.com/id"]' in violations(doc)


def test_missing_version_label_is_named():
    doc = minimal()
    del doc["metadata"]["labels"]["ai.sap.com/version"]
    assert 'metadata.labels["ai.sap.com/version"]' in violations(doc)


def test_missing_entrypoint_is_named():
    doc = minimal()
    del doc["spec"]["entrypoint"]
    assert "spec.entrypoint" in violations(doc)


def test_entrypoint_naming_no_template_is_refused():
    doc = minimal()
    doc["spec"]["entrypoint"] = "nope"
    found = violations(doc)
    assert "'nope'" in found["spec.entrypoint"]


def test_unknown_template_in_dag_task_is_named():
    doc = minimal()
    doc["spec"]["templates"][1]["dag"]["tasks"][1]["template"] = "missing"
    assert "spec.templates[1].dag.tasks[1].template" in violations(doc)


def test_unknown_template_in_step_is_named():
    doc = sample("iris-infer")
    doc["spec"]["templates"][0]["steps"][1][0]["template"] = "scroe"
    found = violations(doc)
    assert "no template named 'scroe'" in found["spec.templates[0].steps[1][0].template"]


def test_unknown_dag_dependency_is_named():
    doc = minimal()
    doc["spec"]["templates"][1]["dag"]["tasks"][1]["dependencies"] = ["zzz"]
    assert "spec.templates[1].dag.tasks[1].dependencies" in violations(doc)


def test_dag_cycle_is_named():
    doc = minimal()
    doc["spec"]["templates"][1]["dag"]["tasks"][0]["dependencies"] = ["b"]
    found = violations(doc)
    assert list(found) == ["spec.templates[1].dag.tasks[0].dependencies"]
    assert "cycle" in found["spec.templates[1].dag.tasks[0].dependencies"]


def test_dag_cycle_through_depends_expression_is_found():
    doc = minimal()
    tasks = doc["spec"]["templates"][1]["dag"]["tasks"]
    tasks.append({"name": "c", "template": "work", "depends": "b.Succeeded && a"})
    tasks[0]["depends"] = "c || b.Failed"
    found = violations(doc)
    assert "spec.templates[1].dag.tasks[0].depends" in found


def test_task_depending_on_itself_is_refused():
    doc = minimal()
    doc["spec"]["templates"][1]["dag"]["tasks"][0]["dependencies"] = ["a"]
    assert "spec.templates[1].dag.tasks[0].dependencies" in violations(doc)


def test_bad_parameter_type_is_named():
    doc = minimal()
    doc["spec"]["arguments"]["parameters"][0]["type"] = "boolean"
    assert "spec.arguments.parameters[0].type" in violations(doc)


def test_default_that_is_not_an_int_is_named():
    doc = minimal()
    doc["spec"]["arguments"]["parameters"][0]["default"] = "3.5"
    found = violations(doc)
    assert "not an int" in found["spec.arguments.parameters[0].default"]


def test_argo_value_is_the_default_and_is_checked():
    doc = minimal()
    doc["spec"]["arguments"]["parameters"] = [
        {"name": "rate", "type": "float", "value": "fast"},
    ]
    assert "spec.arguments.parameters[0].value" in violations(doc)
    doc["spec"]["arguments"]["parameters"][0]["value"] = 0.5
    assert parse_template(doc, RG).parameters[0].default == "0.5"


def test_parameter_names_are_lenient_but_checked():
    doc = minimal()
    doc["spec"]["arguments"]["parameters"] = [{"name": "DT_MAX_DEPTH"}, {"name": "9lives"}]
    found = violations(doc)
    assert list(found) == ["spec.arguments.parameters[1].name"]


def test_duplicate_parameter_is_refused():
    doc = minimal()
    doc["spec"]["inputs"] = {"parameters": [{"name": "count"}]}
    assert "spec.arguments.parameters[0].name" in violations(doc)


def test_template_with_container_and_script_is_named():
    doc = minimal()
    doc["spec"]["templates"][0]["script"] = {"image": "python:3.11", "source": "print(1)"}
    found = violations(doc)
    assert "container and script" in found["spec.templates[0]"]


def test_template_of_unsupported_type_is_named():
    doc = minimal()
    doc["spec"]["templates"][0] = {"name": "work", "suspend": {}}
    found = violations(doc)
    assert "'suspend'" in found["spec.templates[0]"]


def test_script_without_source_is_named():
    doc = sample("iris-train")
    del doc["spec"]["templates"][0]["script"]["source"]
    assert "spec.templates[0].script.source" in violations(doc)


def test_invalid_names_are_named():
    doc = minimal()
    doc["metadata"]["name"] = "Tiny_Exec"
    doc["spec"]["templates"][0]["name"] = "-work"
    found = violations(doc)
    assert "metadata.name" in found
    assert "spec.templates[0].name" in found


def test_duplicate_global_name_is_refused():
    doc = minimal()
    out = {"name": "m", "globalName": "model", "path": "/tmp/m"}
    doc["spec"]["templates"][0]["outputs"] = {"artifacts": [out]}
    doc["spec"]["templates"].append(copy.deepcopy(doc["spec"]["templates"][0]))
    doc["spec"]["templates"][2]["name"] = "work2"
    assert "spec.templates[2].outputs.artifacts[0].globalName" in violations(doc)


def test_several_problems_are_reported_together():
    doc = minimal()
    del doc["metadata"]["labels"]["scenarios.ai.sap.com/id"]
    doc["spec"]["arguments"]["parameters"][0]["default"] = "many"
    doc["spec"]["templates"][1]["dag"]["tasks"][0]["template"] = "gone"
    found = violations(doc)
    assert {
        'metadata.labels["scenarios.ai.sap.com/id"]',
        "spec.arguments.parameters[0].default",
        "spec.templates[1].dag.tasks[0].template",
    } <= set(found)


def test_other_kinds_are_refused():
    doc = minimal()
    doc["kind"] = "ServingTemplate"
    assert "kind" in violations(doc)
    with pytest.raises(InvalidArgument):
        parse_template(["not", "a", "mapping"], RG)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- artifacts


def test_artifact_passed_between_steps_is_not_an_executable_input():
    doc = minimal()
    work, main = doc["spec"]["templates"]
    work["inputs"] = {"artifacts": [{"name": "data", "path": "/in"}, {"name": "raw", "path": "/r"}]}
    work["outputs"] = {"artifacts": [{"name": "data", "path": "/out"}]}
    main["dag"]["tasks"][1]["arguments"] = {
        "artifacts": [{"name": "data", "from": "{{tasks.a.outputs.artifacts.data}}"}]
    }
    # "data" is open for task a, so it is still an input; a template-level source closes it.
    assert [a.name for a in parse_template(doc, RG).input_artifacts] == ["data", "raw"]
    work["inputs"]["artifacts"][1]["raw"] = {"data": "hello"}
    assert [a.name for a in parse_template(doc, RG).input_artifacts] == ["data"]


def test_serving_style_spec_inputs_are_accepted():
    doc = minimal()
    del doc["spec"]["arguments"]
    doc["metadata"]["annotations"] = {"artifacts.ai.sap.com/weights.kind": "Model"}
    doc["spec"]["inputs"] = {
        "parameters": [{"name": "rate", "type": "float", "default": "1e-3", "description": "d"}],
        "artifacts": [{"name": "weights", "description": "initial weights"}, {"name": "extra"}],
    }
    executable = parse_template(doc, RG)
    assert executable.parameters == [ParameterSpec("rate", ParameterType.FLOAT, "1e-3", "d")]
    assert [(a.name, a.kind, a.description) for a in executable.input_artifacts] == [
        ("weights", ArtifactKind.MODEL, "initial weights"),
        ("extra", None, ""),
    ]


def test_unknown_artifact_kind_becomes_other():
    doc = minimal()
    doc["metadata"]["annotations"] = {"artifacts.ai.sap.com/out.kind": "checkpoint"}
    doc["spec"]["templates"][0]["outputs"] = {
        "artifacts": [{"name": "o", "globalName": "out", "path": "/tmp/o"}]
    }
    [out] = parse_template(doc, RG).output_artifacts
    assert (out.name, out.kind, out.step) == ("out", ArtifactKind.OTHER, "work")


# --------------------------------------------------------------------------- AI Core style

AI_CORE_TEMPLATE = """
apiVersion: argoproj.io/v1alpha1
kind: WorkflowTemplate
metadata:
  name: house-price-train
  annotations:
    scenarios.ai.sap.com/description: "Predict house prices"
    scenarios.ai.sap.com/name: "House prices"
    executables.ai.sap.com/description: "Train a regression model"
    executables.ai.sap.com/name: "training"
    artifacts.ai.sap.com/housedataset.kind: "dataset"
    artifacts.ai.sap.com/housemodel.kind: "model"
  labels:
    scenarios.ai.sap.com/id: "house-prices"
    executables.ai.sap.com/id: "house-price-train"
    ai.sap.com/version: "2.0"
spec:
  imagePullSecrets:
    - name: my-registry-secret
  entrypoint: mypipeline
  arguments:
    parameters:
      - name: DT_MAX_DEPTH
  templates:
  - name: mypipeline
    steps:
    - - name: mypredictor
        template: mycodeblock1
  - name: mycodeblock1
    metadata:
      labels:
        ai.sap.com/resourcePlan: starter
    inputs:
      artifacts:
        - name: housedataset
          path: /app/data/
    outputs:
      artifacts:
        - name: housepricemodel
          globalName: housemodel
          path: /app/model/
          archive:
            none: {}
    container:
      image: docker.io/someone/house-price:01
      command: ["/bin/sh", "-c"]
      env:
        - name: DT_MAX_DEPTH
          value: "{{workflow.parameters.DT_MAX_DEPTH}}"
      args:
        - "python /app/src/main.py"
"""


def test_ai_core_style_template_loads_unchanged():
    [executable] = parse_template_text(AI_CORE_TEMPLATE, RG)

    assert (executable.id, executable.scenario_id, executable.version) == (
        "house-price-train",
        "house-prices",
        "2.0",
    )
    assert executable.scenario_name == "House prices"
    assert executable.labels == {"executables.ai.sap.com/id": "house-price-train"}
    assert executable.parameters == [ParameterSpec("DT_MAX_DEPTH", ParameterType.STRING, None)]
    assert [(a.name, a.kind) for a in executable.input_artifacts] == [
        ("housedataset", ArtifactKind.DATASET)
    ]
    [model] = executable.output_artifacts
    assert (model.name, model.kind, model.path, model.step) == (
        "housemodel",
        ArtifactKind.MODEL,
        "/app/model/",
        "mycodeblock1",
    )
    assert executable.spec["imagePullSecrets"] == [{"name": "my-registry-secret"}]


# --------------------------------------------------------------------------- text and files


def test_text_with_several_documents_gives_several_executables():
    text = (
        (SAMPLES / "iris-train.yaml").read_text()
        + "\n---\n"
        + (SAMPLES / "iris-infer.yaml").read_text()
    )
    assert [e.id for e in parse_template_text(text, RG)] == ["iris-train", "iris-infer"]


def test_non_workflow_template_document_is_invalid():
    text = AI_CORE_TEMPLATE + "\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n"
    with pytest.raises(InvalidArgument) as caught:
        parse_template_text(text, RG)
    assert [v.field for v in caught.value.violations] == [
        "documents[1].apiVersion",
        "documents[1].kind",
    ]


def test_same_id_twice_in_one_text_is_refused():
    with pytest.raises(InvalidArgument) as caught:
        parse_template_text(AI_CORE_TEMPLATE + "\n---\n" + AI_CORE_TEMPLATE, RG)
    assert [v.field for v in caught.value.violations] == ["documents[1].metadata.name"]


@pytest.mark.parametrize("text", ["", "---\n", "spec: [unclosed\n"])
def test_empty_or_broken_yaml_is_invalid(text):
    with pytest.raises(InvalidArgument):
        parse_template_text(text, RG)


def test_directory_with_a_broken_file_still_loads_the_others(tmp_path):
    for name in ("iris-train.yaml", "iris-infer.yaml"):
        shutil.copy(SAMPLES / name, tmp_path / name)
    (tmp_path / "house.yml").write_text(AI_CORE_TEMPLATE)
    broken = sample("iris-train")
    broken["metadata"]["name"] = "broken"
    broken["spec"]["entrypoint"] = "nowhere"
    (tmp_path / "a-broken.yaml").write_text(yaml.safe_dump(broken))
    (tmp_path / "b-not-yaml.yaml").write_text("key: [1, 2\n")
    (tmp_path / "z-again.yaml").write_text((SAMPLES / "iris-train.yaml").read_text())
    (tmp_path / "notes.txt").write_text("not a template")
    (tmp_path / "nested").mkdir()
    shutil.copy(SAMPLES / "iris-train.yaml", tmp_path / "nested" / "x.yaml")

    executables, failures = load_directory(tmp_path, RG)

    assert [e.id for e in executables] == ["house-price-train", "iris-infer", "iris-train"]
    assert all(e.resource_group == RG for e in executables)
    failed = dict(failures)
    assert list(failed) == [
        str(tmp_path / "a-broken.yaml"),
        str(tmp_path / "b-not-yaml.yaml"),
        str(tmp_path / "z-again.yaml"),
    ]
    assert "spec.entrypoint" in failed[str(tmp_path / "a-broken.yaml")]
    assert "YAML" in failed[str(tmp_path / "b-not-yaml.yaml")]
    assert "iris-train.yaml" in failed[str(tmp_path / "z-again.yaml")]


def test_sample_directory_loads_cleanly():
    executables, failures = load_directory(SAMPLES, RG)
    assert failures == []
    assert sorted(e.id for e in executables) == ["iris-infer", "iris-train"]


# --------------------------------------------------------------------------- values


@pytest.mark.parametrize(
    ("type_", "value", "ok"),
    [
        (ParameterType.INT, "42", True),
        (ParameterType.INT, "-7", True),
        (ParameterType.INT, "4.0", False),
        (ParameterType.INT, "1_000", False),
        (ParameterType.FLOAT, "0.1", True),
        (ParameterType.FLOAT, "3", True),
        (ParameterType.FLOAT, "1e-3", True),
        (ParameterType.FLOAT, "nan", False),
        (ParameterType.FLOAT, "1e999", False),
        (ParameterType.STRING, "anything at all", True),
    ],
)
def test_parameter_value_rules(type_, value, ok):
    assert (parameter_value_error(type_, value) is None) is ok
