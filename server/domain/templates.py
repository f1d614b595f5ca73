"""Executable definitions: Argo ``WorkflowTemplate`` documents in the SAP AI Core flavour.

An executable is registered from a YAML document such as::

    apiVersion: argoproj.io/v1alpha1
    kind: WorkflowTemplate
    metadata:
      name: iris-train                                  # executable id
      annotations:
        scenarios.ai.sap.com/name: "Iris"
        executables.ai.sap.com/name: "Train"
        artifacts.ai.sap.com/iris-model.kind: model     # kind of an artifact, by name
      labels:
        scenarios.ai.sap.com/id: iris                   # required
        ai.sap.com/version: "1.0.0"                     # required
    spec:
      entrypoint: train
      arguments:
        parameters:                                     # the executable's parameters
          - name: epochs
            type: int                                   # string (default), int or float
            default: "20"
      templates:
        - name: train
          inputs:
            artifacts:                                  # input artifact placeholders
              - {name: iris-data, path: /data/iris}
          outputs:
            artifacts:                                  # registered when it has a globalName
              - {name: iris-model, globalName: iris-model, path: /tmp/model/model.json}
          container: {image: python:3.11-slim, command: [python3, train.py]}

Where things come from:

- Parameters: ``spec.arguments.parameters`` (how AI Core workflow templates declare them)
  and ``spec.inputs.parameters`` (the AI Core serving-template style); ``type`` is our
  extension (AI Core knows only strings). A parameter's default is its ``default``, or its
  ``value`` as Argo writes workflow arguments.
- Input artifacts: ``spec.inputs.artifacts``, ``spec.arguments.artifacts``, and every
  ``inputs.artifacts`` entry of a template that nothing inside the workflow supplies (no
  source of its own, not passed by the step or task that calls the template). AI Core binds
  the configuration's artifacts to those by name.
- Output artifacts: every ``outputs.artifacts`` entry with a ``globalName``.
- Templates of other executables that ``templateRef`` runs: once those are known (at
  registration), their unsupplied input artifacts and their output artifacts are the
  executable's too (:func:`referenced_input_artifacts`, :func:`referenced_output_artifacts`).

The parser checks the structure the runtime relies on and reports every problem it finds
as an :class:`InvalidArgument` whose violations name the field, e.g.
``spec.templates[1].dag.tasks[0].dependencies``. Paths are relative to the document; when
a text holds several documents they are prefixed with ``documents[i]``.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import yaml

from server.domain.errors import FieldViolation, InvalidArgument
from server.domain.expressions import ExpressionError, parse_depends, parse_when
from server.domain.grammar import check_fields
from server.domain.models import (
    ArtifactKind,
    Executable,
    InputArtifactSpec,
    OutputArtifactSpec,
    ParameterSpec,
    ParameterType,
)
from server.domain.workflow import (
    NOT_RUN_YET,
    WorkflowError,
    is_deferred_loop,
    template_refs,
    walk,
)

# libyaml's parser (several times faster than the pure-Python one) where PyYAML was
# built with it, with the same safe constructors.
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

__all__ = [
    "API_VERSION",
    "KIND",
    "load_directory",
    "parameter_value_error",
    "parse_template",
    "parse_template_text",
    "referenced_input_artifacts",
    "referenced_output_artifacts",
]

API_VERSION = "argoproj.io/v1alpha1"
KIND = "WorkflowTemplate"

SCENARIO_ID_LABEL = "scenarios.ai.sap.com/id"
VERSION_LABEL = "ai.sap.com/version"
SCENARIO_NAME_ANNOTATION = "scenarios.ai.sap.com/name"
SCENARIO_DESCRIPTION_ANNOTATION = "scenarios.ai.sap.com/description"
EXECUTABLE_NAME_ANNOTATION = "executables.ai.sap.com/name"
EXECUTABLE_DESCRIPTION_ANNOTATION = "executables.ai.sap.com/description"
ARTIFACT_ANNOTATION_PREFIX = "artifacts.ai.sap.com/"

MAX_NAME_LENGTH = 63
# Executable ids: SAP AI Core documents up to 64 characters.
MAX_ID_LENGTH = 64

# The executable id is a Kubernetes object name: lower case.
_ID_RE = re.compile(r"^[a-z0-9]([-a-z0-9._]*[a-z0-9])?$")
# Template, step, task and artifact names: the same shape, any case (Argo's own examples
# name dag tasks A, B, C) and underscores (Argo accepts them in artifact names).
_NAME_RE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9._]*[A-Za-z0-9])?$")
# Parameter names are often environment-variable like (DT_MAX_DEPTH, learning_rate).
_PARAMETER_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,62}$")
_LABEL_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,252}$")
_INT_RE = re.compile(r"^[+-]?[0-9]+$")
_FLOAT_RE = re.compile(r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$")
_PARAMETER_TYPES = {t.value for t in ParameterType}
_TEMPLATE_TYPES = ("container", "script", "steps", "dag")
_UNSUPPORTED_TEMPLATE_TYPES = (
    "resource",
    "suspend",
    "containerSet",
    "http",
    "plugin",
    "data",
)
_RETRY_POLICIES = ("Always", "OnFailure", "OnError", "OnTransientError")
_RETRY_FIELDS = ("limit", "retryPolicy", "backoff")
_BACKOFF_FIELDS = ("duration", "factor", "maxDuration")
_DURATION_RE = re.compile(r"^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$|^[0-9]+$")
_OUTPUT_PARAMETER_SOURCES = ("path", "default")
_OUTPUT_REFERENCE_RE = re.compile(
    r"\{\{\s*(?P<family>steps|tasks)\.(?P<name>[^.{}\s]+)\.outputs\."
    r"(?:(?P<kind>parameters|artifacts)\.(?P<output>[^.{}\s]+)|result)\s*\}\}"
)
_PLACEHOLDER_RE = re.compile(r"\{\{[^{}]*\}\}")

# Keys that give an artifact a source of its own, so no configuration has to bind it.
_ARTIFACT_SOURCES = (
    "from",
    "fromExpression",
    "raw",
    "s3",
    "gcs",
    "oss",
    "hdfs",
    "http",
    "git",
    "artifactory",
    "azure",
)


# --------------------------------------------------------------------------- public API


def parse_template(doc: dict, resource_group: str) -> Executable:
    """Parse one WorkflowTemplate document into an :class:`Executable`.

    Raises :class:`InvalidArgument` naming every bad field that was found.
    """
    problems = _Problems()
    executable = _parse(doc, resource_group, problems)
    if problems or executable is None:
        raise problems.error()
    return executable


def parse_template_text(text: str, resource_group: str) -> list[Executable]:
    """Parse every document of a YAML text; all of them must be valid WorkflowTemplates.

    Empty documents are skipped. Raises :class:`InvalidArgument` with the violations of all
    documents (prefixed with ``documents[i]`` when the text holds more than one).
    """
    try:
        docs = [d for d in _load_documents(text) if d is not None]
    except yaml.YAMLError as exc:
        raise _yaml_error(exc) from None
    if not docs:
        raise _invalid("the text holds no WorkflowTemplate document")

    problems = _Problems()
    executables: list[Executable] = []
    seen: dict[tuple[str, str], int] = {}
    for i, doc in enumerate(docs):
        prefix = f"documents[{i}]" if len(docs) > 1 else ""
        doc_problems = _Problems(prefix)
        executable = _parse(doc, resource_group, doc_problems)
        problems.extend(doc_problems)
        if executable is None or doc_problems:
            continue
        key = (executable.id, executable.version)
        if key in seen:
            problems.add(
                _join(prefix, "metadata.name"),
                f"executable {executable.id!r} version {executable.version!r} is already "
                f"defined by documents[{seen[key]}]",
            )
            continue
        seen[key] = i
        executables.append(executable)
    if problems:
        raise problems.error()
    return executables


def _load_documents(text: str) -> list[Any]:
    """The documents of a YAML text, with the plain scalars of ``metadata.labels`` and
    ``metadata.annotations`` kept as written: ``ai.sap.com/version: 1.10`` is the text
    ``1.10``, not the number 1.1 (nor ``true`` a boolean); elsewhere YAML's usual types."""
    loader = YAML_LOADER(text)
    try:
        docs = []
        while loader.check_node():
            node = loader.get_node()
            _keep_written(node)
            docs.append(loader.construct_document(node))
        return docs
    finally:
        loader.dispose()


_STR_TAG = "tag:yaml.org,2002:str"
_NULLS = ("", "~", "null", "Null", "NULL")


def _keep_written(document: yaml.Node | None) -> None:
    metadata = _child(document, "metadata")
    for key in ("labels", "annotations"):
        holder = _child(metadata, key)
        if not isinstance(holder, yaml.MappingNode):
            continue
        for _key, value in holder.value:
            if (
                isinstance(value, yaml.ScalarNode)
                and not value.style  # plain (None or ""): quoted text is a string already
                and value.value not in _NULLS
            ):
                value.tag = _STR_TAG


def _child(node: yaml.Node | None, key: str) -> yaml.Node | None:
    if not isinstance(node, yaml.MappingNode):
        return None
    for k, v in node.value:
        if isinstance(k, yaml.ScalarNode) and k.value == key:
            return v
    return None


def load_directory(
    path: str | Path, resource_group: str
) -> tuple[list[Executable], list[tuple[str, str]]]:
    """Load the executables of every ``*.yaml`` / ``*.yml`` file of a directory.

    Files are read in name order, not recursively; hidden files are skipped. The same
    executable id in several files (or documents) with different versions loads each
    version. A file that cannot be read or parsed, or that redefines an (id, version)
    of an earlier file, is left out as a whole and reported as ``(file path, error
    message)``; the other files still load. Raises ``OSError`` when the directory itself
    cannot be listed.
    """
    directory = Path(path)
    files = sorted(
        p
        for p in directory.iterdir()
        if p.suffix.lower() in (".yaml", ".yml") and not p.name.startswith(".") and p.is_file()
    )
    executables: list[Executable] = []
    failures: list[tuple[str, str]] = []
    defined_in: dict[tuple[str, str], str] = {}
    for file in files:
        try:
            text = file.read_text(encoding="utf-8")
            parsed = parse_template_text(text, resource_group)
        except InvalidArgument as exc:
            failures.append((str(file), _describe(exc)))
            continue
        except (OSError, UnicodeDecodeError) as exc:
            failures.append((str(file), f"cannot read the file: {exc}"))
            continue
        clash = next(((e.id, e.version) for e in parsed if (e.id, e.version) in defined_in), None)
        if clash is not None:
            failures.append(
                (
                    str(file),
                    f"executable {clash[0]!r} version {clash[1]!r} is already defined in "
                    f"{defined_in[clash]}",
                )
            )
            continue
        for executable in parsed:
            defined_in[(executable.id, executable.version)] = file.name
        executables.extend(parsed)
    return executables, failures


def parameter_value_error(type_: ParameterType, value: str) -> str | None:
    """Why ``value`` is not a valid value of a parameter of type ``type_``; None if it is.

    int: an optional sign and digits. float: a finite decimal number, exponent allowed.
    Configurations bind parameters with the same rule.
    """
    if type_ is ParameterType.INT and not _INT_RE.match(value):
        return f"{value!r} is not an int"
    if type_ is ParameterType.FLOAT and not (
        _FLOAT_RE.match(value) and math.isfinite(float(value))
    ):
        return f"{value!r} is not a float"
    return None


# --------------------------------------------------------------------------- parsing


@dataclass
class _Problems:
    """Collects field violations; ``prefix`` is prepended to every path."""

    prefix: str = ""
    violations: list[FieldViolation] = field(default_factory=list)

    def add(self, path: str, description: str) -> None:
        self.violations.append(FieldViolation(_join(self.prefix, path), description))

    def extend(self, other: _Problems) -> None:
        self.violations.extend(other.violations)

    def __bool__(self) -> bool:
        return bool(self.violations)

    def error(self) -> InvalidArgument:
        listed = "; ".join(_violation_text(v) for v in self.violations)
        return InvalidArgument(
            message=f"invalid workflow template: {listed}", violations=list(self.violations)
        )


def _parse(doc: Any, resource_group: str, problems: _Problems) -> Executable | None:
    if not isinstance(doc, dict):
        problems.add("", f"a document must be a mapping, not {_type_name(doc)}")
        return None
    doc = _plain(doc)

    api_version = doc.get("apiVersion")
    if api_version != API_VERSION:
        problems.add("apiVersion", f"must be {API_VERSION!r}, not {api_version!r}")
    kind = doc.get("kind")
    if kind != KIND:
        problems.add("kind", f"must be {KIND!r}, not {kind!r}")
        return None  # not a workflow template: its fields mean something else
    check_fields(doc, problems.add)

    metadata = _mapping(doc, "metadata", "metadata", problems, required=True)
    executable_id = metadata.get("name")
    if not isinstance(executable_id, str) or not executable_id:
        problems.add("metadata.name", "the executable id is required")
    elif not _ID_RE.match(executable_id) or len(executable_id) > MAX_ID_LENGTH:
        problems.add(
            "metadata.name",
            f"{executable_id!r} is not a valid executable id: lower-case letters, digits, "
            f"'-', '.' and '_', starting and ending with a letter or digit, "
            f"at most {MAX_ID_LENGTH} characters",
        )
    labels = _string_map(metadata.get("labels"), "metadata.labels", problems)
    annotations = _string_map(metadata.get("annotations"), "metadata.annotations", problems)

    scenario_id = labels.pop(SCENARIO_ID_LABEL, "")
    if not scenario_id:
        problems.add(f'metadata.labels["{SCENARIO_ID_LABEL}"]', "the scenario id is required")
    elif not _NAME_RE.match(scenario_id) or len(scenario_id) > MAX_NAME_LENGTH:
        problems.add(
            f'metadata.labels["{SCENARIO_ID_LABEL}"]',
            f"{scenario_id!r} is not a valid scenario id",
        )
    version = labels.pop(VERSION_LABEL, "")
    if not version:
        problems.add(f'metadata.labels["{VERSION_LABEL}"]', "the version is required")

    spec = _mapping(doc, "spec", "spec", problems, required=True)
    parameters = _parameters(spec, problems)
    templates = _templates(spec, problems)
    _check_spec_fields(spec, templates, problems)
    input_artifacts = _input_artifacts(spec, templates, annotations, problems)
    output_artifacts = _output_artifacts(templates, annotations, problems)

    if problems:
        return None
    return Executable(
        id=executable_id,
        resource_group=resource_group,
        name=annotations.get(EXECUTABLE_NAME_ANNOTATION) or executable_id,
        version=version,
        scenario_id=scenario_id,
        scenario_name=annotations.get(SCENARIO_NAME_ANNOTATION) or scenario_id,
        scenario_description=annotations.get(SCENARIO_DESCRIPTION_ANNOTATION, ""),
        description=annotations.get(EXECUTABLE_DESCRIPTION_ANNOTATION, ""),
        deployable=False,
        labels=labels,
        parameters=parameters,
        input_artifacts=input_artifacts,
        output_artifacts=output_artifacts,
        annotations=annotations,
        spec=spec,
        digest=_digest(doc),
    )


# --------------------------------------------------------------------------- parameters


def _parameters(spec: dict, problems: _Problems) -> list[ParameterSpec]:
    result: list[ParameterSpec] = []
    seen: set[str] = set()
    for section in ("inputs", "arguments"):
        base = f"spec.{section}"
        holder = _mapping(spec, section, base, problems)
        for path, entry in _entries(holder, "parameters", f"{base}.parameters", problems):
            name = entry.get("name")
            if not isinstance(name, str) or not _PARAMETER_NAME_RE.match(name):
                problems.add(
                    f"{path}.name",
                    f"{name!r} is not a valid parameter name: a letter or '_', then letters, "
                    f"digits, '_' or '-', at most 63 characters",
                )
                continue
            if name in seen:
                problems.add(f"{path}.name", f"parameter {name!r} is declared twice")
                continue
            seen.add(name)

            raw_type = entry.get("type")
            if raw_type is None:
                type_ = ParameterType.STRING
            elif isinstance(raw_type, str) and raw_type.lower() in _PARAMETER_TYPES:
                type_ = ParameterType(raw_type.lower())
            else:
                problems.add(
                    f"{path}.type",
                    f"{raw_type!r} is not a parameter type: use string, int or float",
                )
                continue

            key = "default" if "default" in entry else "value"
            default = entry.get(key)
            if default is not None:
                if isinstance(default, bool):
                    default = "true" if default else "false"
                elif isinstance(default, int | float | str):
                    default = str(default)
                else:
                    problems.add(f"{path}.{key}", "the default must be a single value")
                    continue
                reason = parameter_value_error(type_, default)
                if reason:
                    problems.add(f"{path}.{key}", f"the default {reason}")
                    continue

            description = entry.get("description", "")
            if not isinstance(description, str):
                problems.add(f"{path}.description", "must be a string")
                continue
            enum = _enum(entry.get("enum"), type_, default, path, key, problems)
            if enum is None:
                continue
            result.append(ParameterSpec(name, type_, default, description, enum))
    return result


def _enum(
    raw: Any, type_: ParameterType, default: str | None, path: str, key: str,
    problems: _Problems,
) -> tuple[str, ...] | None:
    """A parameter's ``enum``: the values it may take, as text; None when invalid."""
    if raw is None:
        return ()
    if not isinstance(raw, list) or not raw:
        problems.add(f"{path}.enum", "must be a non-empty list of values")
        return None
    values: list[str] = []
    for i, item in enumerate(raw):
        if isinstance(item, bool):
            item = "true" if item else "false"
        if not isinstance(item, int | float | str):
            problems.add(f"{path}.enum[{i}]", "must be a single value")
            return None
        text = str(item)
        reason = parameter_value_error(type_, text)
        if reason:
            problems.add(f"{path}.enum[{i}]", f"the value {reason}")
            return None
        values.append(text)
    if default is not None and default not in values:
        problems.add(f"{path}.{key}", f"the default {default!r} is not one of the enum values")
        return None
    return tuple(values)


# --------------------------------------------------------------------------- templates


@dataclass
class _Template:
    index: int
    name: str
    body: dict

    @property
    def path(self) -> str:
        return f"spec.templates[{self.index}]"


def _templates(spec: dict, problems: _Problems) -> dict[str, _Template]:
    """Check ``spec.templates`` and ``spec.entrypoint``; return the templates by name."""
    raw = spec.get("templates")
    if not isinstance(raw, list) or not raw:
        problems.add("spec.templates", "at least one template is required")
        raw = []
    templates: dict[str, _Template] = {}
    bodies: list[_Template] = []
    for i, body in enumerate(raw):
        path = f"spec.templates[{i}]"
        if not isinstance(body, dict):
            problems.add(path, f"a template must be a mapping, not {_type_name(body)}")
            continue
        name = body.get("name")
        if not _check_name(name, f"{path}.name", "template", problems):
            continue
        template = _Template(i, name, body)
        bodies.append(template)
        if name in templates:
            problems.add(f"{path}.name", f"template {name!r} is declared twice")
        else:
            templates[name] = template

    entrypoint = spec.get("entrypoint")
    if not entrypoint:
        problems.add("spec.entrypoint", "the entrypoint template is required")
    elif not isinstance(entrypoint, str) or entrypoint not in templates:
        problems.add("spec.entrypoint", f"no template named {entrypoint!r}{_known(templates)}")

    for template in bodies:
        _check_template(template, templates, problems)
    return templates


def _check_template(template: _Template, templates: dict[str, _Template], problems: _Problems):
    body, path = template.body, template.path
    present = [key for key in _TEMPLATE_TYPES if key in body]
    if not present:
        others = [key for key in _UNSUPPORTED_TEMPLATE_TYPES if key in body]
        why = f"{others[0]!r} templates are not supported; " if others else ""
        problems.add(path, f"{why}a template needs exactly one of container, script, steps, dag")
    elif len(present) > 1:
        problems.add(
            path,
            f"has {' and '.join(present)}: a template needs exactly one of "
            f"container, script, steps, dag",
        )
    else:
        kind = present[0]
        if kind in ("container", "script"):
            _check_process(body, f"{path}.{kind}", kind, problems)
        elif kind == "steps":
            _check_steps(body["steps"], f"{path}.steps", templates, problems)
        else:
            _check_dag(body["dag"], f"{path}.dag", templates, problems)

    leaf = len(present) == 1 and present[0] in ("container", "script")
    _check_retry(body.get("retryStrategy"), f"{path}.retryStrategy", problems)
    _check_deadline(body, path, problems)
    for key in ("retryStrategy", "activeDeadlineSeconds"):
        if body.get(key) is not None and present and not leaf:
            problems.add(
                f"{path}.{key}",
                f"{key} of a {present[0]} template is not supported; set it on the "
                f"container or script templates it calls",
            )
    inputs = _mapping(body, "inputs", f"{path}.inputs", problems)
    _check_names(
        _entries(inputs, "parameters", f"{path}.inputs.parameters", problems),
        "parameter",
        problems,
        parameter=True,
    )
    for entry_path, entry in _check_names(
        _entries(inputs, "artifacts", f"{path}.inputs.artifacts", problems), "artifact", problems
    ):
        if leaf:
            _check_artifact_path(entry, entry_path, problems)
    outputs = _mapping(body, "outputs", f"{path}.outputs", problems)
    for entry_path, entry in _check_names(
        _entries(outputs, "artifacts", f"{path}.outputs.artifacts", problems), "artifact", problems
    ):
        if leaf:
            _check_artifact_path(entry, entry_path, problems)
    for entry_path, entry in _check_names(
        _entries(outputs, "parameters", f"{path}.outputs.parameters", problems),
        "parameter",
        problems,
        parameter=True,
    ):
        _check_output_parameter(entry, entry_path, leaf, problems)


def _check_output_parameter(entry: dict, path: str, leaf: bool, problems: _Problems) -> None:
    """An output parameter: read from a file the step wrote (``valueFrom.path``), with
    an optional ``valueFrom.default``."""
    if "globalName" in entry:
        problems.add(f"{path}.globalName", "global output parameters are not supported")
    value_from = entry.get("valueFrom")
    if value_from is None:
        if "value" not in entry:
            problems.add(f"{path}.valueFrom", "an output parameter needs valueFrom.path")
        return
    if not isinstance(value_from, dict):
        problems.add(f"{path}.valueFrom", f"must be a mapping, not {_type_name(value_from)}")
        return
    for key in value_from:
        if key not in _OUTPUT_PARAMETER_SOURCES:
            problems.add(
                f"{path}.valueFrom.{key}",
                f"{key} is not supported; an output parameter is read from valueFrom.path",
            )
    file = value_from.get("path")
    if not isinstance(file, str) or not file.strip():
        problems.add(f"{path}.valueFrom.path", "the file to read the value from is required")
    elif not leaf:
        problems.add(
            f"{path}.valueFrom.path",
            "only a container or script template writes files to read a value from",
        )


def _check_spec_fields(spec: dict, templates: dict[str, _Template], problems: _Problems) -> None:
    _check_deadline(spec, "spec", problems)
    shared = _check_volumes(spec, "spec", problems)
    for template in templates.values():
        own = _check_volumes(template.body, template.path, problems)
        for kind in ("container", "script"):
            process = template.body.get(kind)
            if isinstance(process, dict):
                _check_volume_mounts(
                    process, f"{template.path}.{kind}", {**shared, **own}, problems
                )
    on_exit = spec.get("onExit")
    if on_exit is not None and (not isinstance(on_exit, str) or on_exit not in templates):
        problems.add("spec.onExit", f"no template named {on_exit!r}{_known(templates)}")


def _not_run_yet(holder: dict, key: str, feature: str, path: str, problems: _Problems) -> None:
    if holder.get(key) is not None and feature in NOT_RUN_YET:
        problems.add(path, NOT_RUN_YET[feature])


def _check_volumes(holder: dict, path: str, problems: _Problems) -> dict[str, dict]:
    """``volumes`` of the spec or a template: emptyDir and secret volumes, by name."""
    found: dict[str, dict] = {}
    for entry_path, entry in _check_names(
        _entries(holder, "volumes", f"{path}.volumes", problems), "volume", problems
    ):
        kinds = [kind for kind in ("emptyDir", "secret") if kind in entry]
        if len(kinds) != 1:
            problems.add(entry_path, "a volume needs exactly one of emptyDir, secret")
            continue
        found[entry["name"]] = entry
        secret = entry.get("secret")
        if kinds == ["secret"]:
            if not isinstance(secret, dict) or not secret.get("secretName"):
                problems.add(f"{entry_path}.secret.secretName", "the secret's name is required")
                continue
            for item_path, item in _entries(
                secret, "items", f"{entry_path}.secret.items", problems
            ):
                file = item.get("path")
                if not isinstance(file, str) or not _relative_file(file):
                    problems.add(
                        f"{item_path}.path",
                        f"{file!r} is not a relative file path inside the volume",
                    )
    return found


def _relative_file(path: str) -> bool:
    parts = path.split("/")
    return bool(path) and not path.startswith("/") and ".." not in parts and "" not in parts


def _check_volume_mounts(
    process: dict, path: str, volumes: dict[str, dict], problems: _Problems
) -> None:
    """A container's ``volumeMounts``: each names a volume of its template or the spec,
    at an absolute path of its own."""
    seen: set[str] = set()
    for entry_path, entry in _entries(process, "volumeMounts", f"{path}.volumeMounts", problems):
        name = entry.get("name")
        if name not in volumes:
            problems.add(f"{entry_path}.name", f"no volume named {name!r}{_known(volumes)}")
        target = entry.get("mountPath")
        if not isinstance(target, str) or not target.startswith("/") or "," in target:
            problems.add(f"{entry_path}.mountPath", "must be an absolute path (without ',')")
        elif target.rstrip("/") in seen:
            problems.add(f"{entry_path}.mountPath", f"{target!r} is mounted twice")
        else:
            seen.add(target.rstrip("/"))


def _check_deadline(holder: dict, path: str, problems: _Problems) -> None:
    value = holder.get("activeDeadlineSeconds")
    if value is None:
        return
    if isinstance(value, bool) or not (
        (isinstance(value, int) and value > 0)
        or (isinstance(value, str) and value.isdigit() and int(value) > 0)
    ):
        problems.add(
            f"{path}.activeDeadlineSeconds", f"must be a positive whole number, not {value!r}"
        )


def _check_retry(retry: Any, path: str, problems: _Problems) -> None:
    """``retryStrategy``: ``limit``, ``retryPolicy`` and ``backoff``."""
    if retry is None:
        return
    if not isinstance(retry, dict):
        problems.add(path, f"must be a mapping, not {_type_name(retry)}")
        return
    for key in retry:
        if key not in _RETRY_FIELDS:
            problems.add(
                f"{path}.{key}", f"{key} is not supported (use {', '.join(_RETRY_FIELDS)})"
            )
    limit = retry.get("limit")
    if limit is None:
        problems.add(f"{path}.limit", "the number of retries is required")
    elif not _whole(limit):
        problems.add(f"{path}.limit", f"must be a whole number of retries, not {limit!r}")
    policy = retry.get("retryPolicy")
    if policy is not None and policy not in _RETRY_POLICIES:
        problems.add(
            f"{path}.retryPolicy", f"{policy!r} is not one of {', '.join(_RETRY_POLICIES)}"
        )
    backoff = retry.get("backoff")
    if backoff is None:
        return
    if not isinstance(backoff, dict):
        problems.add(f"{path}.backoff", f"must be a mapping, not {_type_name(backoff)}")
        return
    for key in backoff:
        if key not in _BACKOFF_FIELDS:
            problems.add(f"{path}.backoff.{key}", f"{key} is not supported")
    for key in ("duration", "maxDuration"):
        value = backoff.get(key)
        if value is not None and not (
            (isinstance(value, int) and not isinstance(value, bool) and value >= 0)
            or (isinstance(value, str) and _DURATION_RE.match(value))
        ):
            problems.add(
                f"{path}.backoff.{key}",
                f"{value!r} is not a duration: seconds, or a text such as 10s, 1m30s",
            )
    factor = backoff.get("factor")
    if factor is not None and not _whole(factor, minimum=1):
        problems.add(f"{path}.backoff.factor", f"must be a whole number from 1, not {factor!r}")


def _whole(value: Any, minimum: int = 0) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    return isinstance(value, int) and value >= minimum


def _check_call(call: dict, path: str, problems: _Problems) -> None:
    """What a step or task adds to the template it calls: loops and conditions."""
    items = call.get("withItems")
    if items is not None and not (isinstance(items, list) and items):
        problems.add(f"{path}.withItems", "must be a non-empty list of items")
    param = call.get("withParam")
    if param is not None:
        if not isinstance(param, str) or not param.strip():
            problems.add(f"{path}.withParam", "must be a JSON list, or a placeholder giving one")
        elif items is not None:
            problems.add(f"{path}.withParam", "a step loops over withItems or withParam, not both")
        elif _PLACEHOLDER_RE.search(param):
            pass  # a list known when the step runs: its template is checked below
        else:
            try:
                loaded = json.loads(param)
            except ValueError:
                loaded = None
            if not isinstance(loaded, list):
                problems.add(f"{path}.withParam", f"{param!r} is not a JSON list")
    when = call.get("when")
    if when is not None:
        if not isinstance(when, str):
            problems.add(f"{path}.when", "must be an expression")
        else:
            try:  # placeholders stand for a value each until the step runs
                parse_when(_PLACEHOLDER_RE.sub("v", when))
            except ExpressionError as exc:
                problems.add(f"{path}.when", f"{when!r}: {exc}")
    arguments = call.get("arguments")
    if isinstance(arguments, dict):
        for entry_path, entry in _entries(
            arguments, "parameters", f"{path}.arguments.parameters", problems
        ):
            if "valueFrom" in entry:
                problems.add(
                    f"{entry_path}.valueFrom",
                    "valueFrom is not supported in arguments; pass a value",
                )


def _check_deferred_loop(
    call: dict, path: str, templates: dict[str, _Template], problems: _Problems
) -> None:
    """A withParam from a placeholder expands when it runs: over a container or
    script template of this document only."""
    if not is_deferred_loop(call):
        return
    target = templates.get(call.get("template")) if isinstance(call.get("template"), str) else None
    if "templateRef" in call or (
        target is not None and not ("container" in target.body or "script" in target.body)
    ):
        problems.add(
            f"{path}.withParam",
            "withParam from a placeholder loops over a container or script template of "
            "this document only; write the list, or use withItems",
        )


def _check_process(body: dict, path: str, kind: str, problems: _Problems) -> None:
    """A container or script template: the runtime starts a process from it."""
    process = body[kind]
    if not isinstance(process, dict):
        problems.add(path, f"must be a mapping, not {_type_name(process)}")
        return
    image = process.get("image")
    if not isinstance(image, str) or not image.strip():
        problems.add(f"{path}.image", "the image is required")
    for key in ("command", "args"):
        value = process.get(key)
        if value is not None and not (
            isinstance(value, list) and all(isinstance(v, str) for v in value)
        ):
            problems.add(f"{path}.{key}", "must be a list of strings")
    # A container with neither command nor args runs its image's own entrypoint: that
    # depends on the runtime (only the container runtime has the image), so it is
    # decided when the execution starts (server/runtime/plan.py), not here.
    if kind == "script":
        source = process.get("source")
        if not isinstance(source, str) or not source.strip():
            problems.add(f"{path}.source", "the script source is required")


def _check_steps(
    steps: Any, path: str, templates: dict[str, _Template], problems: _Problems
) -> None:
    """``steps`` is a list of groups run one after the other; a group's steps run together."""
    if not isinstance(steps, list) or not steps:
        problems.add(path, "must be a non-empty list of step groups")
        return
    seen: set[str] = set()
    earlier: dict[str, dict] = {}  # steps of the groups before, by name
    for g, group in enumerate(steps):
        group_path = f"{path}[{g}]"
        if not isinstance(group, list) or not group:
            problems.add(group_path, "a step group must be a non-empty list of steps")
            continue
        for s, step in enumerate(group):
            if isinstance(step, dict):
                _check_output_references(
                    step, f"{group_path}[{s}]", "steps", earlier, templates, problems
                )
            step_path = f"{group_path}[{s}]"
            if not isinstance(step, dict):
                problems.add(step_path, f"a step must be a mapping, not {_type_name(step)}")
                continue
            name = step.get("name")
            if _check_name(name, f"{step_path}.name", "step", problems):
                if name in seen:
                    problems.add(f"{step_path}.name", f"step {name!r} is declared twice")
                seen.add(name)
            _check_reference(step, step_path, templates, problems)
            _check_call(step, step_path, problems)
            _check_deferred_loop(step, step_path, templates, problems)
        earlier.update(
            (step["name"], step)
            for step in group
            if isinstance(step, dict) and isinstance(step.get("name"), str)
        )


def _check_dag(dag: Any, path: str, templates: dict[str, _Template], problems: _Problems):
    if not isinstance(dag, dict):
        problems.add(path, f"must be a mapping, not {_type_name(dag)}")
        return
    tasks = dag.get("tasks")
    if not isinstance(tasks, list) or not tasks:
        problems.add(f"{path}.tasks", "must be a non-empty list of tasks")
        return

    index: dict[str, int] = {}
    for t, task in enumerate(tasks):
        task_path = f"{path}.tasks[{t}]"
        if not isinstance(task, dict):
            problems.add(task_path, f"a task must be a mapping, not {_type_name(task)}")
            continue
        name = task.get("name")
        if _check_name(name, f"{task_path}.name", "task", problems):
            if name in index:
                problems.add(f"{task_path}.name", f"task {name!r} is declared twice")
            else:
                index[name] = t
        _check_reference(task, task_path, templates, problems)
        _check_call(task, task_path, problems)
        _check_deferred_loop(task, task_path, templates, problems)

    # Edges: task -> the tasks it waits for, with the field that declares each wait.
    waits: dict[str, list[str]] = {name: [] for name in index}
    edge_field: dict[tuple[str, str], str] = {}
    for name, t in index.items():
        task, task_path = tasks[t], f"{path}.tasks[{t}]"
        for key, dependencies in _task_dependencies(task, f"{task_path}", problems):
            for dependency in dependencies:
                if dependency == name:
                    problems.add(f"{task_path}.{key}", f"task {name!r} depends on itself")
                elif dependency not in index:
                    problems.add(
                        f"{task_path}.{key}",
                        f"no task named {dependency!r} in this dag{_known(index)}",
                    )
                else:
                    waits[name].append(dependency)
                    edge_field.setdefault((name, dependency), key)

    cycles = _cycles(waits, order=index)
    for cycle in cycles:
        # Name the field of the cycle's first task (in document order) that closes it.
        k = min(range(len(cycle) - 1), key=lambda i: index[cycle[i]])
        first = cycle[k]
        problems.add(
            f"{path}.tasks[{index[first]}].{edge_field[(first, cycle[k + 1])]}",
            "dependency cycle: " + " depends on ".join(cycle[k:-1] + cycle[: k + 1]),
        )
    if cycles:
        return
    for name, t in index.items():
        before: set[str] = set()
        todo = list(waits[name])
        while todo:
            dependency = todo.pop()
            if dependency not in before:
                before.add(dependency)
                todo.extend(waits[dependency])
        _check_output_references(
            tasks[t],
            f"{path}.tasks[{t}]",
            "tasks",
            {n: tasks[index[n]] for n in before},
            templates,
            problems,
        )


def _check_output_references(
    call: dict,
    path: str,
    family: str,
    before: dict[str, dict],
    templates: dict[str, _Template],
    problems: _Problems,
) -> None:
    """``{{steps.X.outputs...}}`` (``tasks.`` in a dag) in a call's arguments, when and
    withParam: X ends before this call (an earlier step group; a task it depends on),
    and declares the output parameter named."""
    texts: list[tuple[str, Any]] = [(f"{path}.when", call.get("when")),
                                    (f"{path}.withParam", call.get("withParam"))]
    arguments = call.get("arguments")
    if isinstance(arguments, dict):
        for key in ("parameters", "artifacts"):
            entries = arguments.get(key)
            if isinstance(entries, list):
                field_name = "value" if key == "parameters" else "from"
                texts += [
                    (f"{path}.arguments.{key}[{i}].{field_name}", e.get(field_name))
                    for i, e in enumerate(entries)
                    if isinstance(e, dict)
                ]
    for where, text in texts:
        if not isinstance(text, str):
            continue
        for match in _OUTPUT_REFERENCE_RE.finditer(text):
            if match.group("family") != family:
                kind_name = "steps" if family == "steps" else "dag"
                problems.add(
                    where, f"{match.group(0)}: use {family}.NAME in a {kind_name} template"
                )
                continue
            name, kind, output = match.group("name"), match.group("kind"), match.group("output")
            producer = before.get(name)
            if producer is None:
                runs = "a step of an earlier group" if family == "steps" else "a task it depends on"
                problems.add(where, f"{match.group(0)}: {name!r} is not {runs}")
                continue
            target = templates.get(producer.get("template")) if isinstance(
                producer.get("template"), str
            ) else None
            if kind != "parameters" or target is None:
                continue
            outputs = target.body.get("outputs")
            declared = {
                e.get("name")
                for e in (outputs.get("parameters") or [] if isinstance(outputs, dict) else [])
                if isinstance(e, dict)
            }
            if output not in declared:
                problems.add(
                    where,
                    f"{match.group(0)}: template {target.name!r} has no output parameter "
                    f"{output!r}",
                )


def _task_dependencies(
    task: dict, task_path: str, problems: _Problems
) -> Iterator[tuple[str, list[str]]]:
    """The task names of ``dependencies`` (a list) and of ``depends`` (an expression)."""
    dependencies = task.get("dependencies")
    if dependencies is not None:
        if isinstance(dependencies, list) and all(isinstance(d, str) for d in dependencies):
            yield "dependencies", dependencies
        else:
            problems.add(f"{task_path}.dependencies", "must be a list of task names")
    depends = task.get("depends")
    if depends is not None:
        if not isinstance(depends, str):
            problems.add(f"{task_path}.depends", "must be an expression of task names")
            return
        if task.get("dependencies") is not None:
            problems.add(f"{task_path}.depends", "use depends or dependencies, not both")
        try:
            yield "depends", list(parse_depends(depends).names)
        except ExpressionError as exc:
            problems.add(f"{task_path}.depends", f"{depends!r}: {exc}")


def _cycles(waits: dict[str, list[str]], order: dict[str, int]) -> list[list[str]]:
    """One cycle (``[a, b, a]``) per strongly connected group of tasks that wait on each other."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []
    found: list[list[str]] = []
    reported: set[frozenset[str]] = set()

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in waits[node]:
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt) :] + [nxt]
                key = frozenset(cycle)
                if not any(key & seen for seen in reported):
                    reported.add(key)
                    found.append(cycle)
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(waits, key=order.__getitem__):
        if node not in state:
            visit(node)
    return found


def _check_reference(
    call: dict, path: str, templates: dict[str, _Template], problems: _Problems
) -> None:
    """A step or task must call a template of this document."""
    if "templateRef" in call:
        ref = call["templateRef"]
        where = f"{path}.templateRef"
        if "template" in call:
            problems.add(f"{path}.template", "a step runs a template or a templateRef, not both")
        if not isinstance(ref, dict):
            problems.add(where, f"must be a mapping, not {_type_name(ref)}")
            return
        if ref.get("clusterScope"):
            problems.add(
                f"{where}.clusterScope", "cluster-scoped templates are not supported"
            )
        for key, what in (("name", "executable id"), ("template", "template name")):
            if not isinstance(ref.get(key), str) or not ref[key]:
                problems.add(f"{where}.{key}", f"the {what} is required")
        # Whether that executable and template exist is checked against the store
        # (ControlPlane.template_library).
        return
    if "inline" in call:
        return  # refused with the other fields a call cannot have
    target = call.get("template")
    if not target:
        problems.add(f"{path}.template", "the template to run is required")
    elif not isinstance(target, str) or target not in templates:
        problems.add(f"{path}.template", f"no template named {target!r}{_known(templates)}")


# --------------------------------------------------------------------------- artifacts


def _input_artifacts(
    spec: dict, templates: dict[str, _Template], annotations: dict[str, str], problems: _Problems
) -> list[InputArtifactSpec]:
    found: list[dict] = []
    for section in ("inputs", "arguments"):
        entries = _entries(spec.get(section), "artifacts", f"spec.{section}.artifacts", problems)
        found.extend(
            entry
            for _path, entry in _check_names(entries, "artifact", problems)
            if not _has_source(entry)
        )

    entrypoint = spec.get("entrypoint")
    supplied = _supplied_artifacts(templates)
    for template in templates.values():
        for _path, entry in _entries(template.body.get("inputs"), "artifacts", "", _Problems()):
            name = entry.get("name")
            # The entrypoint is called by the workflow itself, with spec.arguments.
            closed = (
                template.name != entrypoint
                and isinstance(name, str)
                and name in supplied.get(template.name, ())
            )
            if not (_has_source(entry) or closed):
                found.append(entry)

    result: dict[str, InputArtifactSpec] = {}
    for entry in found:
        name = entry.get("name")
        if not isinstance(name, str) or not _NAME_RE.match(name):
            continue  # reported where it is declared
        description = entry.get("description") or annotations.get(
            f"{ARTIFACT_ANNOTATION_PREFIX}{name}.description", ""
        )
        known = result.get(name)
        if known is None:
            result[name] = InputArtifactSpec(
                name=name,
                kind=_artifact_kind(name, annotations),
                description=description if isinstance(description, str) else "",
            )
        elif not known.description and isinstance(description, str):
            known.description = description
    return list(result.values())


def _supplied_artifacts(templates: dict[str, _Template]) -> dict[str, set[str]]:
    """Per template, the input artifacts that every step or task calling it passes with a
    source. A template nothing calls gets no entry."""
    supplied: dict[str, set[str]] = {}
    for template in templates.values():
        for call in _calls(template.body):
            target = call.get("template")
            if not isinstance(target, str):
                continue
            passed = {
                entry["name"]
                for _path, entry in _entries(call.get("arguments"), "artifacts", "", _Problems())
                if isinstance(entry.get("name"), str) and _has_source(entry)
            }
            supplied[target] = supplied[target] & passed if target in supplied else passed
    return supplied


def _calls(body: dict) -> Iterator[dict]:
    steps = body.get("steps")
    if isinstance(steps, list):
        for group in steps:
            if isinstance(group, list):
                yield from (s for s in group if isinstance(s, dict))
    dag = body.get("dag")
    if isinstance(dag, dict) and isinstance(dag.get("tasks"), list):
        yield from (t for t in dag["tasks"] if isinstance(t, dict))


def _output_artifacts(
    templates: dict[str, _Template], annotations: dict[str, str], problems: _Problems
) -> list[OutputArtifactSpec]:
    result: list[OutputArtifactSpec] = []
    declared_at: dict[str, str] = {}
    for template in templates.values():
        outputs = template.body.get("outputs")
        base = f"{template.path}.outputs.artifacts"
        for path, entry in _entries(outputs, "artifacts", base, _Problems()):
            if "globalName" not in entry:
                continue
            global_name = entry["globalName"]
            if not _check_name(global_name, f"{path}.globalName", "artifact", problems):
                continue
            if global_name in declared_at:
                problems.add(
                    f"{path}.globalName",
                    f"output artifact {global_name!r} is already declared at "
                    f"{declared_at[global_name]}",
                )
                continue
            declared_at[global_name] = path
            kind = _artifact_kind(global_name, annotations) or ArtifactKind.OTHER
            description = entry.get("description") or annotations.get(
                f"{ARTIFACT_ANNOTATION_PREFIX}{global_name}.description", ""
            )
            result.append(
                OutputArtifactSpec(
                    name=global_name,
                    kind=kind,
                    path=entry.get("path") if isinstance(entry.get("path"), str) else "",
                    description=description if isinstance(description, str) else "",
                    step=template.name,
                    labels=_artifact_labels(global_name, annotations, problems),
                )
            )
    return result


def referenced_output_artifacts(
    exe: Executable, library: Mapping[str, Executable]
) -> list[OutputArtifactSpec]:
    """The output artifacts (``globalName``) of the templates ``exe`` runs through
    ``templateRef`` (``library``: the executables its templateRefs name, and theirs, by
    id), to register beside its own: each with the kind, labels and description of
    ``exe``'s ``artifacts.ai.sap.com/<name>.*`` annotations, else those the referenced
    executable registered it with. Raises InvalidArgument naming the templateRef of a
    name declared twice, or a malformed labels annotation."""
    refs = {id(ref.call): ref.path for ref in template_refs(exe.spec)}
    problems = _Problems()
    declared = {a.name: f"template {a.step!r} of this executable" for a in exe.output_artifacts}
    result: list[OutputArtifactSpec] = []
    seen: set[tuple[str, str, str]] = set()
    for ws, links in _referenced_links(exe, library):
        owner = links[-1][1]  # whose template the step runs
        path = refs.get(id(links[0][0].call), "")
        template = str(ws.template.get("name"))
        outputs = ws.template.get("outputs")
        for _, entry in _entries(outputs, "artifacts", "", _Problems()):
            name = entry.get("globalName")
            if not isinstance(name, str) or (owner, template, name) in seen:
                continue
            seen.add((owner, template, name))
            where = f"template {template!r} of executable {owner!r}"
            if name in declared:
                problems.add(
                    path,
                    f"output artifact {name!r} of {where} is already declared by "
                    f"{declared[name]}",
                )
                continue
            declared[name] = where
            registered = library[owner].output_artifacts
            own = next((a for a in registered if (a.name, a.step) == (name, template)), None)
            prefix = f"{ARTIFACT_ANNOTATION_PREFIX}{name}"
            labels = (
                _artifact_labels(name, exe.annotations, problems)
                if f"{prefix}.labels" in exe.annotations
                else dict(own.labels) if own else {}
            )
            description = exe.annotations.get(f"{prefix}.description") or (
                own.description if own else str(entry.get("description") or "")
            )
            result.append(
                OutputArtifactSpec(
                    name=name,
                    kind=_artifact_kind(name, exe.annotations)
                    or (own.kind if own else ArtifactKind.OTHER),
                    path=entry.get("path") if isinstance(entry.get("path"), str) else "",
                    description=description,
                    step=template,
                    labels=labels,
                )
            )
    if problems:
        raise problems.error()
    return result


def referenced_input_artifacts(
    exe: Executable, library: Mapping[str, Executable]
) -> list[InputArtifactSpec]:
    """The input artifacts of the templates ``exe`` runs through ``templateRef`` (see
    :func:`referenced_output_artifacts`) that nothing in the workflow passes (no source
    of their own, none in the arguments of the step or task that calls them): bound by
    name from the configuration as its own templates' are, with the kind and
    description of ``exe``'s annotations, else those the referenced executable gives."""
    own = {a.name for a in exe.input_artifacts}
    result: dict[str, InputArtifactSpec] = {}
    for _ws, links in _referenced_links(exe, library):
        for link, owner in links:
            passed = {
                entry["name"]
                for _, entry in _entries(
                    (link.call or {}).get("arguments"), "artifacts", "", _Problems()
                )
                if isinstance(entry.get("name"), str) and _has_source(entry)
            }
            inputs = link.template.get("inputs")
            for _, entry in _entries(inputs, "artifacts", "", _Problems()):
                name = entry.get("name")
                if not isinstance(name, str) or _has_source(entry) or name in passed:
                    continue
                if name in own or name in result:
                    continue
                theirs = next((a for a in library[owner].input_artifacts if a.name == name), None)
                description = exe.annotations.get(
                    f"{ARTIFACT_ANNOTATION_PREFIX}{name}.description"
                ) or (theirs.description if theirs else str(entry.get("description") or ""))
                result[name] = InputArtifactSpec(
                    name=name,
                    kind=_artifact_kind(name, exe.annotations) or (theirs.kind if theirs else None),
                    description=description,
                )
    return list(result.values())


def _referenced_links(
    exe: Executable, library: Mapping[str, Executable]
) -> Iterator[tuple[Any, list[tuple[Any, str]]]]:
    """Each step of ``exe``'s workflow that runs through a templateRef, with the links
    of its call chain from that templateRef's call down, each with the id of the
    executable whose template it runs. Nothing when the workflow cannot run (its
    executions' start says why)."""
    try:
        walked = walk(exe.spec, {k: v.spec for k, v in library.items()})
    except WorkflowError:
        return
    for ws in walked:
        owner = ""
        links = []
        for link in ws.chain[1:]:
            ref = link.call.get("templateRef")
            if isinstance(ref, dict):
                owner = str(ref.get("name"))
            if owner in library:
                links.append((link, owner))
        if links:
            yield ws, links


def _artifact_labels(
    name: str, annotations: dict[str, str], problems: _Problems
) -> dict[str, str]:
    """The labels of ``artifacts.ai.sap.com/<name>.labels``: a JSON (or YAML flow)
    object of label keys to values, as SAP AI Core writes it, e.g.
    ``'{"ext.ai.sap.com/framework": "sklearn"}'``; values are kept as text."""
    key = f"{ARTIFACT_ANNOTATION_PREFIX}{name}.labels"
    text = annotations.get(key)
    if text is None:
        return {}
    path = f'metadata.annotations["{key}"]'
    try:
        value = yaml.load(text, Loader=YAML_LOADER) if text.strip() else {}
    except yaml.YAMLError:
        value = None
    if not isinstance(value, dict):
        problems.add(path, 'must be a JSON object of labels, e.g. {"ext.ai.sap.com/k": "v"}')
        return {}
    labels: dict[str, str] = {}
    for label, item in value.items():
        if not isinstance(label, str) or not _LABEL_KEY_RE.match(label):
            problems.add(path, f"{label!r} is not a label key")
        elif isinstance(item, bool) or not isinstance(item, str | int | float):
            problems.add(path, f"label {label!r}: the value must be a string")
        else:
            labels[label] = str(item)
    return labels


def _artifact_kind(name: str, annotations: dict[str, str]) -> ArtifactKind | None:
    value = annotations.get(f"{ARTIFACT_ANNOTATION_PREFIX}{name}.kind")
    if value is None:
        return None
    try:
        return ArtifactKind(value.strip().lower())
    except ValueError:
        return ArtifactKind.OTHER


def _has_source(entry: dict) -> bool:
    return any(key in entry for key in _ARTIFACT_SOURCES)


def _check_artifact_path(entry: dict, path: str, problems: _Problems) -> None:
    value = entry.get("path")
    if not isinstance(value, str) or not value.strip():
        problems.add(f"{path}.path", "the artifact's path in the step is required")


# --------------------------------------------------------------------------- helpers


def _entries(holder: Any, key: str, path: str, problems: _Problems) -> Iterator[tuple[str, dict]]:
    """The mappings of the list ``holder[key]``, with their paths; reports what is not."""
    if not isinstance(holder, dict) or holder.get(key) is None:
        return
    items = holder[key]
    if not isinstance(items, list):
        problems.add(path, f"must be a list, not {_type_name(items)}")
        return
    for i, item in enumerate(items):
        if isinstance(item, dict):
            yield f"{path}[{i}]", item
        else:
            problems.add(f"{path}[{i}]", f"must be a mapping, not {_type_name(item)}")


def _check_names(
    entries: Iterable[tuple[str, dict]], what: str, problems: _Problems, parameter: bool = False
) -> list[tuple[str, dict]]:
    """Check the names of a list of parameters or artifacts: valid and unique."""
    valid: list[tuple[str, dict]] = []
    seen: set[str] = set()
    for path, entry in entries:
        name = entry.get("name")
        if parameter:
            if not isinstance(name, str) or not _PARAMETER_NAME_RE.match(name):
                problems.add(f"{path}.name", f"{name!r} is not a valid {what} name")
                continue
        elif not _check_name(name, f"{path}.name", what, problems):
            continue
        if name in seen:
            problems.add(f"{path}.name", f"{what} {name!r} is declared twice")
            continue
        seen.add(name)
        valid.append((path, entry))
    return valid


def _check_name(name: Any, path: str, what: str, problems: _Problems) -> bool:
    if not name:
        problems.add(path, f"the {what} name is required")
        return False
    if not isinstance(name, str) or not _NAME_RE.match(name) or len(name) > MAX_NAME_LENGTH:
        problems.add(
            path,
            f"{name!r} is not a valid {what} name: letters, digits, '-', '.' and '_', "
            f"starting and ending with a letter or digit, at most {MAX_NAME_LENGTH} characters",
        )
        return False
    return True


def _mapping(
    holder: dict, key: str, path: str, problems: _Problems, required: bool = False
) -> dict:
    value = holder.get(key)
    if value is None:
        if required:
            problems.add(path, "is required")
        return {}
    if not isinstance(value, dict):
        problems.add(path, f"must be a mapping, not {_type_name(value)}")
        return {}
    return value


def _string_map(value: Any, path: str, problems: _Problems) -> dict[str, str]:
    """Labels and annotations: strings; numbers are accepted as their text (``1.0``)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.add(path, f"must be a mapping, not {_type_name(value)}")
        return {}
    result: dict[str, str] = {}
    for key, item in value.items():
        if isinstance(item, str):
            result[key] = item
        elif isinstance(item, int | float) and not isinstance(item, bool):
            result[key] = str(item)
        else:
            problems.add(f'{path}["{key}"]', "must be a string")
    return result


def _plain(value: Any) -> Any:
    """Plain JSON data: string keys, lists, dates as ISO text (YAML reads them as dates)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _digest(doc: dict) -> str:
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _known(names: Iterable[str]) -> str:
    listed = ", ".join(sorted(names))
    return f" (known: {listed})" if listed else ""


def _join(prefix: str, path: str) -> str:
    if not prefix:
        return path
    if not path:
        return prefix
    return f"{prefix}.{path}"


def _violation_text(violation: FieldViolation) -> str:
    if not violation.field:
        return violation.description
    return f"{violation.field}: {violation.description}"


def _yaml_error(exc: yaml.YAMLError) -> InvalidArgument:
    """A YAML syntax error, naming the field ``definition`` and where in it (1-based
    line and column, also in the metadata ``line`` and ``column``)."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or getattr(exc, "context", None)
    problem = _one_line(str(problem or exc))
    metadata = {}
    if mark is not None:
        line, column = mark.line + 1, mark.column + 1
        description = f"not valid YAML at line {line}, column {column}: {problem}"
        metadata = {"line": str(line), "column": str(column)}
    else:
        description = f"not valid YAML: {problem}"
    return InvalidArgument(
        message=f"definition: {description}",
        violations=[FieldViolation("definition", description)],
        metadata=metadata,
    )


def _invalid(description: str) -> InvalidArgument:
    """An error about the text as a whole (its violation names no field)."""
    return InvalidArgument(
        message=f"invalid workflow template: {description}",
        violations=[FieldViolation("", description)],
    )


def _describe(error: InvalidArgument) -> str:
    if not error.violations:
        return error.message
    return "; ".join(_violation_text(v) for v in error.violations)


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


def _one_line(text: str) -> str:
    return " ".join(text.split())
