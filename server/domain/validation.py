"""Request validation rules shared by every service: names, labels, ids, URLs, and the
check of a configuration against its executable."""

from __future__ import annotations

import re

from server.domain.errors import FieldViolation, InvalidArgument, Reason
from server.domain.models import (
    Artifact,
    ArtifactKind,
    Executable,
    ParameterType,
)
from server.domain.templates import parameter_value_error

MAX_NAME = 256
MAX_DESCRIPTION = 5000
MAX_LABELS = 64
MAX_LABEL_KEY = 256
MAX_LABEL_VALUE = 5000
MAX_URL = 2048
MAX_ID = 128
MAX_BINDINGS = 1000
MAX_BINDING_VALUE = 64 * 1024

ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
RESOURCE_GROUP_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,252}$")
LABEL_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")
URL_RE = re.compile(r"^([a-z][a-z0-9+.-]*://\S+|/\S*)$")
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


class Violations:
    """Collects field violations; ``raise_if_any`` raises them together."""

    def __init__(self) -> None:
        self.items: list[FieldViolation] = []

    def add(self, field: str, description: str) -> None:
        self.items.append(FieldViolation(field, description))

    def raise_if_any(self, reason: Reason = Reason.INVALID_ARGUMENT, summary: str = "") -> None:
        if self.items:
            head = summary or "invalid request"
            detail = "; ".join(f"{v.field}: {v.description}" for v in self.items[:5])
            raise InvalidArgument(
                message=f"{head}: {detail}", reason=reason, violations=list(self.items)
            )


def check_name(v: Violations, field: str, value: str, *, required: bool = True) -> None:
    if not value:
        if required:
            v.add(field, "is required")
        return
    if len(value) > MAX_NAME:
        v.add(field, f"must be at most {MAX_NAME} characters")
    elif CONTROL_RE.search(value):
        v.add(field, "must not contain control characters")


def check_text(v: Violations, field: str, value: str, limit: int = MAX_DESCRIPTION) -> None:
    if len(value) > limit:
        v.add(field, f"must be at most {limit} characters")


def check_id(v: Violations, field: str, value: str, *, required: bool = True) -> None:
    if not value:
        if required:
            v.add(field, "is required")
        return
    if not ID_RE.match(value):
        v.add(
            field, "must be 1 to 128 letters, digits or . _ : - (starting with a letter or digit)"
        )


def check_request_id(v: Violations, value: str, field: str = "request_id") -> None:
    check_id(v, field, value, required=False)


def check_labels(v: Violations, field: str, labels: dict[str, str]) -> None:
    if len(labels) > MAX_LABELS:
        v.add(field, f"at most {MAX_LABELS} labels")
        return
    for key, value in labels.items():
        if not key or len(key) > MAX_LABEL_KEY or not LABEL_KEY_RE.match(key):
            v.add(f"{field}[{key[:64]!r}]", "label key must be 1 to 256 of A-Z a-z 0-9 . _ / -")
        elif len(value) > MAX_LABEL_VALUE or CONTROL_RE.search(value):
            v.add(f"{field}[{key!r}]", "label value too long or has control characters")


def check_url(v: Violations, field: str, url: str) -> None:
    if not url:
        v.add(field, "is required")
    elif len(url) > MAX_URL:
        v.add(field, f"must be at most {MAX_URL} characters")
    elif not URL_RE.match(url):
        v.add(field, "must be an absolute path or a URL with a scheme, such as file:///data/x.csv")


def check_resource_group(resource_group: str) -> None:
    if not RESOURCE_GROUP_RE.match(resource_group):
        raise InvalidArgument.of(
            "metadata.ai-resource-group",
            "must be 1 to 253 letters, digits, '.' or '-', starting with a letter or digit",
        )


def parse_parameter(kind: ParameterType, text: str) -> str | None:
    """None when ``text`` is a valid value of ``kind``, else the problem (the same rule
    that checks an executable's defaults)."""
    return parameter_value_error(kind, text)


def check_configuration(
    executable: Executable,
    scenario_id: str,
    parameters: list[tuple[str, str]],
    artifact_bindings: list[tuple[str, str]],
    artifacts: dict[str, Artifact],
) -> tuple[dict[str, str], dict[str, str]]:
    """Check bindings against ``executable``; returns the resolved (parameters with
    defaults filled in, artifact bindings). ``artifacts``: the bound ids that exist in
    the caller's group. Raises InvalidArgument (CONFIGURATION_INVALID) listing every
    problem with its field."""
    v = Violations()
    if scenario_id and scenario_id != executable.scenario_id:
        v.add(
            "configuration.scenario_id",
            f"executable {executable.id} belongs to scenario {executable.scenario_id!r}",
        )
    specs = {p.name: p for p in executable.parameters}
    bound: dict[str, str] = {}
    if len(parameters) > MAX_BINDINGS:
        v.add("configuration.parameter_bindings", f"at most {MAX_BINDINGS} bindings")
    for i, (key, value) in enumerate(parameters):
        field = f"configuration.parameter_bindings[{i}]"
        if key in bound:
            v.add(field, f"parameter {key!r} is bound twice")
            continue
        spec = specs.get(key)
        if spec is None:
            known = ", ".join(sorted(specs)) or "none"
            v.add(field, f"unknown parameter {key!r} (executable declares: {known})")
            continue
        if len(value) > MAX_BINDING_VALUE:
            v.add(field, "value longer than 64 KiB")
            continue
        problem = parse_parameter(spec.type, value)
        if problem:
            v.add(field, f"parameter {key!r} must be {spec.type}: {problem}")
            continue
        if spec.enum and value not in spec.enum:
            listed = ", ".join(repr(e) for e in spec.enum)
            v.add(field, f"parameter {key!r} must be one of {listed}, not {value!r}")
            continue
        bound[key] = value
    resolved: dict[str, str] = {}
    for spec in executable.parameters:
        if spec.name in bound:
            resolved[spec.name] = bound[spec.name]
        elif spec.default is not None:
            resolved[spec.name] = spec.default
        elif not any(key == spec.name for key, _ in parameters):
            v.add(
                "configuration.parameter_bindings",
                f"parameter {spec.name!r} has no default and must be bound",
            )
    inputs = {a.name: a for a in executable.input_artifacts}
    bound_artifacts: dict[str, str] = {}
    for i, (key, artifact_id) in enumerate(artifact_bindings):
        field = f"configuration.input_artifact_bindings[{i}]"
        if key in bound_artifacts:
            v.add(field, f"input artifact {key!r} is bound twice")
            continue
        spec = inputs.get(key)
        if spec is None:
            known = ", ".join(sorted(inputs)) or "none"
            v.add(field, f"unknown input artifact {key!r} (executable declares: {known})")
            continue
        artifact = artifacts.get(artifact_id)
        if artifact is None:
            v.add(f"{field}.artifact_id", f"artifact {artifact_id!r} not found")
            continue
        if spec.kind is not None and artifact.kind != spec.kind:
            v.add(
                f"{field}.artifact_id",
                f"input {key!r} needs a {spec.kind} artifact, {artifact_id} is a {artifact.kind}",
            )
            continue
        bound_artifacts[key] = artifact_id
    for spec in executable.input_artifacts:
        if spec.name not in bound_artifacts and not any(
            k == spec.name for k, _ in artifact_bindings
        ):
            v.add(
                "configuration.input_artifact_bindings",
                f"input artifact {spec.name!r} must be bound"
                + (f" to a {spec.kind} artifact" if spec.kind else ""),
            )
    v.raise_if_any(
        reason=Reason.CONFIGURATION_INVALID, summary="configuration does not match executable"
    )
    return resolved, bound_artifacts


KIND_NAMES = {k.value: k for k in ArtifactKind}
