"""The fields of a WorkflowTemplate that Trainyard runs: an allow-list.

Registration accepts a document only if every field in it is named here, at the place
where it stands: a field the runtime runs, or one that is accepted and has no effect
here (Kubernetes scheduling and similar, :attr:`Shape.ignored`). Everything else is
refused with its field named, with the reason where one helps
(:attr:`Shape.refused`), so that an unknown or misspelt field never loads only to be
dropped when the execution runs. The values themselves (types, names, references) are
checked by server/domain/templates.py; this module looks at field names only, and at
Argo's expression tags (``{{=...}}``), which no runtime here evaluates.

docs/templates.md lists the same fields for users; a change here goes there too.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["check_fields"]

# ``Report(path, why)``: one refused field.
Report = Callable[[str, str], None]


class _Any:
    """A value this module does not look into (a scalar, or what templates.py checks)."""


ANY = _Any()


@dataclass(frozen=True)
class Shape:
    """The fields a mapping may hold; ``what`` names it in messages."""

    what: str
    fields: Mapping[str, Any]  # name -> Shape, Each, Groups, Keys or ANY
    ignored: frozenset[str] = frozenset()
    refused: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Each:
    """A list whose mappings have ``shape``."""

    shape: Shape


@dataclass(frozen=True)
class Groups:
    """A list of lists whose mappings have ``shape`` (a steps template's step groups)."""

    shape: Shape


@dataclass(frozen=True)
class Keys:
    """A mapping of names chosen by the author (labels, resource quantities): any key,
    unless ``allowed`` is given; keys in ``ignored`` are accepted too."""

    allowed: frozenset[str] | None = None
    ignored: frozenset[str] = frozenset()
    what: str = ""


def _names(*names: str) -> frozenset[str]:
    return frozenset(names)


_ARTIFACT_SOURCES_REFUSED = {
    key: f"{key} artifact sources are not supported; bind the artifact in the "
    f"configuration, or pass it from a step"
    for key in (
        "s3", "gcs", "oss", "hdfs", "http", "git", "artifactory", "azure", "fromExpression",
    )
}

_RAW = Shape("raw data", {"data": ANY})
_ARTIFACT = Shape(
    "an artifact",
    {
        "name": ANY, "path": ANY, "from": ANY, "raw": _RAW, "optional": ANY,
        "globalName": ANY, "description": ANY,
    },
    ignored=_names("archive", "mode", "archiveLogs"),
    refused={
        **_ARTIFACT_SOURCES_REFUSED,
        "subPath": "subPath is not supported; use the artifact's whole path",
        "recurseMode": "recurseMode is not supported",
    },
)
# Parameters the workflow declares (spec.arguments, spec.inputs): ``type`` is ours.
_WORKFLOW_PARAMETER = Shape(
    "a workflow parameter",
    {"name": ANY, "value": ANY, "default": ANY, "type": ANY, "description": ANY, "enum": ANY},
    refused={
        "valueFrom": "valueFrom is not supported for a workflow parameter; give a value",
        "globalName": "global parameters are not supported",
    },
)
_INPUT_PARAMETER = Shape(
    "a template's input parameter",
    {"name": ANY, "value": ANY, "default": ANY, "description": ANY, "enum": ANY},
    refused={"valueFrom": "valueFrom is not supported for an input parameter; give a value"},
)
# Output parameters: valueFrom's keys and globalName are checked by templates.py.
_OUTPUT_PARAMETER = Shape(
    "an output parameter",
    {"name": ANY, "valueFrom": ANY, "value": ANY, "description": ANY, "globalName": ANY},
)
_ARGUMENT_PARAMETER = Shape(
    "an argument parameter",
    {"name": ANY, "value": ANY, "valueFrom": ANY},  # valueFrom: refused by templates.py
)
_INPUTS = Shape("inputs", {"parameters": Each(_INPUT_PARAMETER), "artifacts": Each(_ARTIFACT)})
_WORKFLOW_INPUTS = Shape(
    "the workflow's inputs",
    {"parameters": Each(_WORKFLOW_PARAMETER), "artifacts": Each(_ARTIFACT)},
)
_OUTPUTS = Shape(
    "outputs",
    {"parameters": Each(_OUTPUT_PARAMETER), "artifacts": Each(_ARTIFACT)},
    refused={"result": "outputs.result is set by the step's standard output, not written"},
)
_ARGUMENTS = Shape(
    "arguments",
    {"parameters": Each(_ARGUMENT_PARAMETER), "artifacts": Each(_ARTIFACT)},
)

_SECRET_KEY_REF = Shape("a secretKeyRef", {"name": ANY, "key": ANY, "optional": ANY})
_ENV_VALUE_FROM = Shape(
    "an env valueFrom",
    {"secretKeyRef": _SECRET_KEY_REF},
    refused={
        key: f"{key} is not supported; only secretKeyRef (a secret of the execution's "
        f"resource group) is"
        for key in ("configMapKeyRef", "fieldRef", "resourceFieldRef")
    },
)
_ENV = Shape("an env entry", {"name": ANY, "value": ANY, "valueFrom": _ENV_VALUE_FROM})
_ENV_FROM = Shape(
    "an envFrom entry",
    {"secretRef": Shape("a secretRef", {"name": ANY, "optional": ANY}), "prefix": ANY},
    refused={
        "configMapRef": "config maps are not supported; put the values in a secret "
        "(secretRef) or in env"
    },
)
_QUANTITIES = Keys(
    allowed=_names("cpu", "memory", "nvidia.com/gpu"),
    ignored=_names("ephemeral-storage"),
    what="a resource (cpu, memory, nvidia.com/gpu)",
)
_RESOURCES = Shape(
    "resources",
    {"requests": _QUANTITIES, "limits": _QUANTITIES},
    refused={"claims": "resource claims are not supported"},
)
_VOLUME_MOUNT = Shape(
    "a volume mount",
    {"name": ANY, "mountPath": ANY, "readOnly": ANY},
    refused={
        key: f"{key} is not supported; mount the whole volume"
        for key in ("subPath", "subPathExpr")
    }
    | {"mountPropagation": "mountPropagation is not supported"},
)
_PROCESS_FIELDS = {
    "image": ANY, "command": ANY, "args": ANY, "env": Each(_ENV), "envFrom": Each(_ENV_FROM),
    "workingDir": ANY, "resources": _RESOURCES, "volumeMounts": Each(_VOLUME_MOUNT),
}
_PROCESS_IGNORED = _names(
    "name", "imagePullPolicy", "ports", "livenessProbe", "readinessProbe", "startupProbe",
    "terminationMessagePath", "terminationMessagePolicy",
)
_PROCESS_REFUSED = {
    "securityContext": "securityContext is not supported: steps run as an unprivileged "
    "user with no added capabilities",
    "lifecycle": "lifecycle hooks of a container are not supported",
    "volumeDevices": "volumeDevices is not supported",
    "stdin": "stdin is not supported: a step reads no input",
    "stdinOnce": "stdinOnce is not supported: a step reads no input",
    "tty": "tty is not supported",
}
_CONTAINER = Shape(
    "a container", _PROCESS_FIELDS, ignored=_PROCESS_IGNORED, refused=_PROCESS_REFUSED
)
_SCRIPT = Shape(
    "a script",
    {**_PROCESS_FIELDS, "source": ANY},
    ignored=_PROCESS_IGNORED,
    refused=_PROCESS_REFUSED,
)
_VOLUME = Shape(
    "a volume",
    {
        "name": ANY,
        "emptyDir": Shape("an emptyDir", {}, ignored=_names("medium", "sizeLimit")),
        "secret": Shape(
            "a secret volume",
            {
                "secretName": ANY,
                "items": Each(Shape("a secret volume item", {"key": ANY, "path": ANY},
                                    ignored=_names("mode"))),
                "optional": ANY,
            },
            ignored=_names("defaultMode"),
        ),
    },
    refused={
        key: f"{key} volumes are not supported; emptyDir and secret volumes are (pass "
        f"data as artifacts)"
        for key in (
            "persistentVolumeClaim", "hostPath", "configMap", "nfs", "csi", "ephemeral",
            "projected", "downwardAPI", "awsElasticBlockStore", "azureDisk", "azureFile",
            "cephfs", "gcePersistentDisk", "glusterfs", "iscsi", "image",
        )
    },
)
_TEMPLATE_REF = Shape(
    "a templateRef",
    {"name": ANY, "template": ANY, "clusterScope": ANY},  # clusterScope: templates.py
)
_CALL_FIELDS = {
    "name": ANY, "template": ANY, "templateRef": _TEMPLATE_REF, "arguments": _ARGUMENTS,
    "withItems": ANY, "withParam": ANY, "when": ANY,
}
_CALL_REFUSED = {
    "withSequence": "withSequence is not supported; use withItems",
    "continueOn": "continueOn is not supported; use depends with .Failed in a dag",
    "hooks": "lifecycle hooks are not supported; use the workflow's onExit",
    "onExit": "a step's own exit handler is not supported; use the workflow's onExit",
    "inline": "inline templates are not supported; name a template of this document",
}
_STEP = Shape("a step", _CALL_FIELDS, refused=_CALL_REFUSED)
_TASK = Shape(
    "a dag task",
    {**_CALL_FIELDS, "dependencies": ANY, "depends": ANY},
    refused=_CALL_REFUSED,
)
_DAG = Shape(
    "a dag",
    {"tasks": Each(_TASK)},
    refused={
        "failFast": "failFast is not supported",
        "target": "target is not supported: a dag runs all its tasks",
    },
)
_TEMPLATE_METADATA = Shape(
    "a template's metadata", {"labels": Keys(), "annotations": Keys()}
)
_TEMPLATE = Shape(
    "a template",
    {
        "name": ANY, "container": _CONTAINER, "script": _SCRIPT, "dag": _DAG,
        "steps": Groups(_STEP),
        "inputs": _INPUTS, "outputs": _OUTPUTS, "metadata": _TEMPLATE_METADATA,
        "retryStrategy": ANY,  # its keys: templates.py
        "activeDeadlineSeconds": ANY, "volumes": Each(_VOLUME),
        # Template kinds that do not run here: templates.py says so for the template.
        "resource": ANY, "suspend": ANY, "containerSet": ANY, "http": ANY, "plugin": ANY,
        "data": ANY,
    },
    ignored=_names(
        "nodeSelector", "tolerations", "affinity", "podSpecPatch", "priorityClassName",
        "schedulerName", "serviceAccountName", "automountServiceAccountToken",
        "archiveLocation",
    ),
    refused={
        "daemon": "daemon templates are not supported",
        "sidecars": "sidecars are not supported",
        "initContainers": "init containers are not supported",
        "synchronization": "synchronization (semaphores, mutexes) is not supported",
        "memoize": "memoization is not supported",
        "timeout": "timeout is not supported; use activeDeadlineSeconds",
        "failFast": "failFast is not supported",
        "parallelism": "parallelism is not supported: a template's steps all run when ready",
        "securityContext": "securityContext is not supported: steps run as an unprivileged "
        "user with no added capabilities",
        "hostAliases": "hostAliases is not supported",
        "executor": "executor settings are not supported",
    },
)
_SPEC = Shape(
    "the workflow spec",
    {
        "entrypoint": ANY, "templates": Each(_TEMPLATE), "arguments": _WORKFLOW_INPUTS,
        "inputs": _WORKFLOW_INPUTS, "onExit": ANY, "activeDeadlineSeconds": ANY,
        "imagePullSecrets": Each(Shape("an image pull secret", {"name": ANY})),
        "volumes": Each(_VOLUME),
    },
    ignored=_names(
        "serviceAccountName", "podGC", "ttlStrategy", "nodeSelector", "tolerations",
        "affinity", "podMetadata", "workflowMetadata", "priorityClassName",
        "podPriorityClassName", "schedulerName", "automountServiceAccountToken",
        "archiveLogs", "artifactGC",
    ),
    refused={
        "hooks": "lifecycle hooks are not supported; use onExit",
        "templateDefaults": "templateDefaults is not supported; set the fields on each template",
        "volumeClaimTemplates": "persistent volume claims are not supported; use artifacts",
        "synchronization": "synchronization (semaphores, mutexes) is not supported",
        "suspend": "suspended workflows are not supported",
        "parallelism": "parallelism is not supported: every step runs when it is ready",
        "securityContext": "securityContext is not supported: steps run as an unprivileged "
        "user with no added capabilities",
        "hostNetwork": "hostNetwork is not supported (docs/runtime.md says what a step "
        "can reach)",
        "dnsConfig": "dnsConfig is not supported",
        "dnsPolicy": "dnsPolicy is not supported",
        "hostAliases": "hostAliases is not supported",
        "executor": "executor settings are not supported",
        "artifactRepositoryRef": "artifact repositories are not supported: outputs are "
        "kept by the server",
        "workflowTemplateRef": "a workflow that only refers to another template is not "
        "supported; use templateRef in a step",
        "shutdown": "shutdown is not supported; stop the execution",
        "retryStrategy": "a workflow's retryStrategy is not supported; set it on the "
        "container or script templates",
    },
)
_METADATA = Shape(
    "the metadata",
    {"name": ANY, "labels": Keys(), "annotations": Keys()},
    ignored=_names(
        "namespace", "uid", "resourceVersion", "generation", "creationTimestamp",
        "managedFields", "ownerReferences", "finalizers",
    ),
)
_DOCUMENT = Shape(
    "a WorkflowTemplate",
    {"apiVersion": ANY, "kind": ANY, "metadata": _METADATA, "spec": _SPEC},
    ignored=_names("status"),
)

_IDENTIFIER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_EXPRESSION_TAG_RE = re.compile(r"\{\{\s*=")


def check_fields(document: Mapping[str, Any], report: Report) -> None:
    """Report every field of ``document`` that Trainyard does not run, and every
    expression tag, naming its field."""
    _check(document, _DOCUMENT, "", report)
    _expression_tags(document.get("spec"), "spec", report)


def _check(value: Any, node: Any, path: str, report: Report) -> None:
    if isinstance(node, Shape):
        if not isinstance(value, Mapping):
            return  # templates.py reports a value of the wrong type
        for key, item in value.items():
            where = _key_path(path, key)
            if key in node.fields:
                _check(item, node.fields[key], where, report)
            elif key in node.refused:
                report(where, node.refused[key])
            elif key not in node.ignored:
                report(where, _unknown(key, node))
    elif isinstance(node, Each):
        if isinstance(value, list):
            for i, item in enumerate(value):
                _check(item, node.shape, f"{path}[{i}]", report)
    elif isinstance(node, Groups):
        if isinstance(value, list):
            for g, group in enumerate(value):
                if isinstance(group, list):
                    for s, item in enumerate(group):
                        _check(item, node.shape, f"{path}[{g}][{s}]", report)
    elif isinstance(node, Keys) and node.allowed is not None and isinstance(value, Mapping):
        for key in value:
            if key not in node.allowed and key not in node.ignored:
                report(f'{path}["{key}"]', f"{key!r} is not {node.what}")


def _unknown(key: Any, node: Shape) -> str:
    known = ", ".join(sorted(node.fields))
    return f"{key!r} is not a field of {node.what} that Trainyard runs (known: {known})"


def _key_path(path: str, key: Any) -> str:
    text = str(key)
    if _IDENTIFIER_RE.match(text):
        return f"{path}.{text}" if path else text
    return f'{path}["{text}"]'


def _expression_tags(value: Any, path: str, report: Report) -> None:
    """Argo's ``{{=expression}}`` tags: refused wherever they stand."""
    if isinstance(value, str):
        if _EXPRESSION_TAG_RE.search(value):
            report(
                path,
                "expression tags ({{=...}}) are not supported; use a plain placeholder "
                "such as {{inputs.parameters.name}}, and when for conditions",
            )
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _expression_tags(item, _key_path(path, key), report)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _expression_tags(item, f"{path}[{i}]", report)
