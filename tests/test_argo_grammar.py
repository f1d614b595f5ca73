"""Argo's template language at registration: what is accepted, and what is refused
with the field named (the runtime starts whatever registration accepts)."""

from __future__ import annotations

import copy

import pytest

from server.domain.errors import InvalidArgument
from server.domain.templates import parse_template
from server.domain.workflow import NOT_RUN_YET, step_names

BASE = {
    "apiVersion": "argoproj.io/v1alpha1",
    "kind": "WorkflowTemplate",
    "metadata": {
        "name": "grammar",
        "labels": {"scenarios.ai.sap.com/id": "demo", "ai.sap.com/version": "1.0.0"},
    },
    "spec": {
        "entrypoint": "main",
        "templates": [
            {
                "name": "main",
                "steps": [
                    [{"name": "a", "template": "leaf"}, {"name": "b", "template": "leaf"}],
                ],
            },
            {
                "name": "flow",
                "dag": {
                    "tasks": [
                        {"name": "x", "template": "leaf"},
                        {"name": "y", "template": "leaf", "depends": "x"},
                    ]
                },
            },
            {"name": "leaf", "container": {"image": "busybox", "command": ["true"]}},
        ],
    },
}


def doc(**changes) -> dict:
    """BASE with changes at paths like ``spec.templates[0].steps[0][1]``."""
    result = copy.deepcopy(BASE)
    for path, value in changes.items():
        holder = _at(result, path)
        holder.update(value)
    return result


def _at(document: dict, path: str):
    node = document
    for part in path.replace("]", "").replace("[", ".").split("."):
        node = node[int(part)] if part.isdigit() else node[part]
    return node


def violations(document: dict) -> dict[str, str]:
    with pytest.raises(InvalidArgument) as caught:
        parse_template(document, "default")
    found: dict[str, str] = {}
    for v in caught.value.violations:
        found[v.field] = f"{found[v.field]}; {v.description}" if v.field in found else v.description
    return found


@pytest.mark.parametrize(
    ("where", "change", "field", "message"),
    [
        ("spec.templates[0].steps[0][1]", {"withSequence": {"count": "3"}},
         "spec.templates[0].steps[0][1].withSequence", "withSequence is not supported"),
        ("spec.templates[0].steps[0][1]", {"continueOn": {"failed": True}},
         "spec.templates[0].steps[0][1].continueOn", "continueOn is not supported"),
        ("spec.templates[0].steps[0][1]", {"inline": {"container": {"image": "x"}}},
         "spec.templates[0].steps[0][1].inline", "inline templates are not supported"),
        ("spec.templates[0].steps[0][1]", {"onExit": "leaf"},
         "spec.templates[0].steps[0][1].onExit", "exit handler is not supported"),
        ("spec.templates[0].steps[0][1]", {"withItems": []},
         "spec.templates[0].steps[0][1].withItems", "non-empty list"),
        ("spec.templates[0].steps[0][1]", {"withParam": "not json"},
         "spec.templates[0].steps[0][1].withParam", "is not a JSON list"),
        ("spec.templates[0].steps[0][1]", {"withItems": [1], "withParam": "[2]"},
         "spec.templates[0].steps[0][1].withParam", "not both"),
        ("spec.templates[0].steps[0][1]",
         {"template": "flow", "withParam": "{{steps.a.outputs.result}}"},
         "spec.templates[0].steps[0][1].withParam", "container or script template"),
        ("spec.templates[0].steps[0][1]", {"when": "{{item}} =="},
         "spec.templates[0].steps[0][1].when", "a value expected at the end"),
        ("spec.templates[0].steps[0][1]",
         {"arguments": {"parameters": [{"name": "p", "valueFrom": {"supplied": {}}}]}},
         "spec.templates[0].steps[0][1].arguments.parameters[0].valueFrom",
         "valueFrom is not supported"),
        ("spec.templates[0].steps[0][1]",
         {"arguments": {"parameters": [{"name": "v", "value": "{{steps.a.outputs.result}}"}]}},
         "spec.templates[0].steps[0][1].arguments.parameters[0].value",
         "'a' is not a step of an earlier group"),
        ("spec.templates[1].dag.tasks[0]", {"when": "{{tasks.y.outputs.result}} == 1"},
         "spec.templates[1].dag.tasks[0].when", "'y' is not a task it depends on"),
        ("spec.templates[1].dag.tasks[1]",
         {"when": "{{tasks.x.outputs.parameters.p}} == 1"},
         "spec.templates[1].dag.tasks[1].when", "template 'leaf' has no output parameter 'p'"),
        ("spec.templates[1].dag.tasks[1]", {"when": "{{steps.x.outputs.result}} == 1"},
         "spec.templates[1].dag.tasks[1].when", "use tasks.NAME in a dag template"),
        ("spec.templates[1].dag.tasks[1]", {"depends": "x.Finished"},
         "spec.templates[1].dag.tasks[1].depends", "'Finished' is not a task result"),
        ("spec.templates[1].dag.tasks[1]", {"depends": "x &&"},
         "spec.templates[1].dag.tasks[1].depends", "a task name expected"),
        ("spec.templates[1].dag.tasks[1]", {"dependencies": ["x"]},
         "spec.templates[1].dag.tasks[1].depends", "not both"),
        ("spec.templates[1].dag.tasks[1]", {"depends": "z"},
         "spec.templates[1].dag.tasks[1].depends", "no task named 'z'"),
        ("spec.templates[2]", {"daemon": True}, "spec.templates[2].daemon", "daemon"),
        ("spec.templates[2]", {"sidecars": []}, "spec.templates[2].sidecars", "sidecars"),
        ("spec.templates[2]", {"retryStrategy": {"limit": 2, "retryPolicy": "Sometimes"}},
         "spec.templates[2].retryStrategy.retryPolicy", "'Sometimes' is not one of"),
        ("spec.templates[2]", {"retryStrategy": {"limit": "x"}},
         "spec.templates[2].retryStrategy.limit", "whole number"),
        ("spec.templates[2]", {"retryStrategy": {"limit": 1, "backoff": {"duration": "soon"}}},
         "spec.templates[2].retryStrategy.backoff.duration", "is not a duration"),
        ("spec.templates[2]", {"retryStrategy": {"limit": 1, "expression": "true"}},
         "spec.templates[2].retryStrategy.expression", "not supported"),
        ("spec.templates[2]", {"activeDeadlineSeconds": -3},
         "spec.templates[2].activeDeadlineSeconds", "positive whole number"),
        ("spec.templates[2]",
         {"outputs": {"parameters": [{"name": "p", "valueFrom": {"jsonPath": "{.x}"}}]}},
         "spec.templates[2].outputs.parameters[0].valueFrom.jsonPath", "not supported"),
        ("spec.templates[2]",
         {"outputs": {"parameters": [{"name": "p", "valueFrom": {}}]}},
         "spec.templates[2].outputs.parameters[0].valueFrom.path", "is required"),
        ("spec", {"onExit": "nothing"}, "spec.onExit", "no template named 'nothing'"),
        ("spec", {"hooks": {}}, "spec.hooks", "use onExit"),
        ("spec", {"templateDefaults": {}}, "spec.templateDefaults", "templateDefaults"),
        # Allow-list: what is not a field Trainyard runs is refused, not dropped.
        ("spec", {"parallelism": 2}, "spec.parallelism", "parallelism is not supported"),
        ("spec", {"entrypiont": "main"}, "spec.entrypiont",
         "'entrypiont' is not a field of the workflow spec"),
        ("spec", {"arguments": {"parameters": [{"name": "p", "valueFrom": {"x": 1}}]}},
         "spec.arguments.parameters[0].valueFrom", "give a value"),
        ("spec.templates[2]", {"parallelism": 2}, "spec.templates[2].parallelism",
         "parallelism is not supported"),
        ("spec.templates[2]", {"securityContext": {"runAsUser": 0}},
         "spec.templates[2].securityContext", "unprivileged"),
        ("spec.templates[2].container", {"securityContext": {"privileged": True}},
         "spec.templates[2].container.securityContext", "unprivileged"),
        ("spec.templates[2].container", {"workdir": "/app"},
         "spec.templates[2].container.workdir", "'workdir' is not a field of a container"),
        ("spec.templates[2].container",
         {"env": [{"name": "A", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}]},
         "spec.templates[2].container.env[0].valueFrom.configMapKeyRef",
         "only secretKeyRef"),
        ("spec.templates[2].container", {"resources": {"limits": {"amd.com/gpu": 1}}},
         'spec.templates[2].container.resources.limits["amd.com/gpu"]',
         "'amd.com/gpu' is not a resource"),
        ("spec.templates[2]", {"inputs": {"artifacts": [{"name": "d", "path": "/d",
                                                          "s3": {"key": "k"}}]}},
         "spec.templates[2].inputs.artifacts[0].s3", "s3 artifact sources are not supported"),
        ("spec.templates[2].container", {"volumeMounts": [{"name": "cache", "mountPath": "/c"}]},
         "spec.templates[2].container.volumeMounts[0].name", "no volume named 'cache'"),
        ("spec", {"volumes": [{"name": "data", "hostPath": {"path": "/srv"}}]},
         "spec.volumes[0].hostPath", "hostPath volumes are not supported"),
        ("spec", {"volumes": [{"name": "s", "secret": {"secretName": "x",
                                                      "items": [{"key": "k", "path": "../k"}]}}]},
         "spec.volumes[0].secret.items[0].path", "not a relative file path"),
        ("spec.templates[0].steps[0][1]", {"wen": "true"},
         "spec.templates[0].steps[0][1].wen", "'wen' is not a field of a step"),
        ("spec.templates[1].dag", {"failFast": False}, "spec.templates[1].dag.failFast",
         "failFast is not supported"),
        ("spec.templates[2].container", {"args": ["{{=sprig.upper('a')}}"]},
         "spec.templates[2].container.args[0]", "expression tags ({{=...}}) are not supported"),
        ("spec.templates[0].steps[0][1]", {"when": "{{= 1 == 1}}"},
         "spec.templates[0].steps[0][1].when", "expression tags"),
    ],
)
def test_refused_at_registration_with_the_field_named(where, change, field, message):
    found = violations(doc(**{where: change}))
    assert field in found, found
    assert message in found[field]


def test_fields_with_no_effect_here_are_accepted():
    """Kubernetes scheduling and pull settings have no counterpart here: accepted, and
    docs/templates.md says they are ignored."""
    document = doc(**{
        "spec": {"serviceAccountName": "runner", "podGC": {"strategy": "OnPodSuccess"},
                 "arguments": {"parameters": [{"name": "mode", "value": "a",
                                               "enum": ["a", "b"]}]}},
        "metadata": {"namespace": "team", "uid": "1"},
        "spec.templates[2]": {"nodeSelector": {"gpu": "yes"},
                              "metadata": {"annotations": {"note": "x"}}},
        "spec.templates[2].container": {
            "imagePullPolicy": "IfNotPresent",
            "ports": [{"containerPort": 8080}],
            "resources": {"limits": {"cpu": "1", "ephemeral-storage": "1Gi"}},
        },
    })
    parse_template(document, "default")


def test_every_problem_is_reported_at_once():
    document = doc(**{
        "spec.templates[0].steps[0][1]": {"withSequence": {"count": "2"}},
        "spec.templates[2]": {"daemon": True},
    })
    assert set(violations(document)) >= {
        "spec.templates[0].steps[0][1].withSequence",
        "spec.templates[2].daemon",
    }


def test_loops_and_plain_depends_are_accepted():
    document = doc(**{
        "spec.templates[0].steps[0][1]": {"withItems": ["p", {"k": 1}]},
        "spec.templates[1].dag.tasks[1]": {"depends": "x.Succeeded && x"},
    })
    executable = parse_template(document, "default")
    assert step_names(executable.spec) == ["a", "b(0:p)", "b(1:k:1)"]


@pytest.mark.parametrize(
    ("where", "change", "field", "feature"),
    [
        ("spec.templates[0].steps[0][1]", {"when": "{{item}} == 2"},
         "spec.templates[0].steps[0][1].when", "when"),
        ("spec.templates[1].dag.tasks[1]", {"depends": "x.Failed || x"},
         "spec.templates[1].dag.tasks[1].depends", "depends"),
        ("spec.templates[2]", {"retryStrategy": {"limit": 2}},
         "spec.templates[2].retryStrategy", "retryStrategy"),
        ("spec.templates[2]", {"activeDeadlineSeconds": 5},
         "spec.templates[2].activeDeadlineSeconds", "activeDeadlineSeconds"),
        ("spec", {"onExit": "leaf"}, "spec.onExit", "onExit"),
        ("spec", {"activeDeadlineSeconds": "30"}, "spec.activeDeadlineSeconds",
         "activeDeadlineSeconds"),
        ("spec.templates[2]",
         {"outputs": {"parameters": [{"name": "p", "valueFrom": {"path": "/tmp/p"}}]}},
         "spec.templates[2].outputs.parameters", "outputs.parameters"),
    ],
)
def test_what_the_runtime_does_not_run_yet_is_refused_at_registration(
    where, change, field, feature
):
    if feature not in NOT_RUN_YET:
        parse_template(doc(**{where: change}), "default")  # runs: accepted
        return
    assert violations(doc(**{where: change})) == {field: NOT_RUN_YET[feature]}
