"""What a step may use of a machine: CPUs, memory and GPUs, and the resource plans.

A step's :class:`Resources` come from its template's ``ai.sap.com/resourcePlan`` or
``ai.sap.com/instanceType`` label (``metadata.labels`` of the template that runs the
container, as SAP AI Core reads them "at pod level"; a calling ``steps`` / ``dag``
template's label applies to the steps below it that name none) through the plan table
(one table for both: SAP AI Core's instance types, listed per tenant, are added to it
with the plan file; a template giving both labels is refused), and from the container's own
``resources``: a value in ``resources.limits`` (or, where no limit is given, in
``resources.requests``) replaces the plan's value of that kind. A step with neither has
no limits. Step runners apply them (the container runner as engine limits, the Ray
runner as entrypoint resources); the local runner runs host processes and applies none.

The plan table (:data:`DEFAULT_PLANS`) holds SAP AI Core's resource plans with the CPU
cores, memory (the GB SAP documents, taken as GiB) and GPUs SAP documents for them; a
YAML file (``--resource-plans FILE``) adds plans or replaces some::

    starter: {cpu: 1, memory: 3Gi}
    train.xl: {cpu: 15, memory: 120Gi, gpu: 2}

An executable naming a plan or instance type the table does not hold is refused at
registration, with the label's field named (reason RESOURCE_PLAN_UNKNOWN). A plan
written as a placeholder (``{{inputs.parameters.plan}}``) is resolved and looked up when
the execution starts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server.domain.errors import FieldViolation, Reason

RESOURCE_PLAN_LABEL = "ai.sap.com/resourcePlan"
INSTANCE_TYPE_LABEL = "ai.sap.com/instanceType"
PLAN_LABELS = (RESOURCE_PLAN_LABEL, INSTANCE_TYPE_LABEL)
GPU_RESOURCE = "nvidia.com/gpu"
RESOURCE_PLAN_UNKNOWN = Reason.RESOURCE_PLAN_UNKNOWN

_GIB = 1024**3


@dataclass(frozen=True, slots=True)
class Resources:
    """Limits for one step; ``None`` in a field means no limit of that kind."""

    cpus: float | None = None
    memory_bytes: int | None = None
    gpus: int = 0


# SAP AI Core's resource plans (its "Choose a Resource Plan" table): CPU cores, memory
# and GPUs (train.l: one V100; infer.*: one T4).
DEFAULT_PLANS: dict[str, Resources] = {
    "starter": Resources(cpus=1, memory_bytes=3 * _GIB),
    "basic": Resources(cpus=3, memory_bytes=11 * _GIB),
    "basic.8x": Resources(cpus=31, memory_bytes=116 * _GIB),
    "train.l": Resources(cpus=7, memory_bytes=55 * _GIB, gpus=1),
    "infer.s": Resources(cpus=3, memory_bytes=10 * _GIB, gpus=1),
    "infer.m": Resources(cpus=7, memory_bytes=26 * _GIB, gpus=1),
    "infer.l": Resources(cpus=15, memory_bytes=58 * _GIB, gpus=1),
}

_PLAN_NAME_RE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9._]*[A-Za-z0-9])?$")
_CPU_RE = re.compile(r"^([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(m?)$")
_MEMORY_RE = re.compile(r"^([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE]([0-9]+))?([KMGTPE]i?|k)?$")
_MEMORY_UNITS = {
    "": 1, "k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15,
    "E": 10**18, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}


class PlanFileError(ValueError):
    """A resource plan file that cannot be used; the message says where and why."""


def parse_cpu(value: Any) -> float:
    """A Kubernetes CPU quantity (``2``, ``0.5``, ``500m``) in cores; ValueError if not."""
    text = str(value).strip() if isinstance(value, int | float | str) else ""
    match = _CPU_RE.match(text) if not isinstance(value, bool) else None
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"{value!r} is not a CPU quantity such as 2, 0.5 or 500m")
    number = float(match.group(1))
    return number / 1000 if match.group(2) else number


def parse_memory(value: Any) -> int:
    """A Kubernetes memory quantity (``3Gi``, ``512Mi``, ``1G``, ``1e9``) in bytes."""
    text = str(value).strip() if isinstance(value, int | float | str) else ""
    match = _MEMORY_RE.match(text) if not isinstance(value, bool) else None
    if not match:
        raise ValueError(f"{value!r} is not a memory quantity such as 3Gi, 512Mi or 1G")
    number = float(match.group(1)) * 10 ** int(match.group(2) or 0)
    result = int(number * _MEMORY_UNITS[match.group(3) or ""])
    if result <= 0:
        raise ValueError(f"{value!r} is not a positive memory quantity")
    return result


def parse_gpus(value: Any) -> int:
    if isinstance(value, bool) or not re.match(r"^[0-9]+$", str(value).strip()):
        raise ValueError(f"{value!r} is not a GPU count (a whole number)")
    return int(str(value).strip())


def load_plan_file(path: str | Path) -> dict[str, Resources]:
    """The default plans with those of a YAML file added or replaced. PlanFileError
    (naming the file and the entry) when it cannot be read or an entry is invalid."""
    import yaml  # only the server's start reads a plan file

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise PlanFileError(f"resource plan file {path}: {exc}") from None
    if isinstance(data, dict) and isinstance(data.get("plans"), dict):
        data = data["plans"]
    if not isinstance(data, dict) or not data:
        raise PlanFileError(
            f"resource plan file {path}: must map plan names to {{cpu, memory, gpu}}"
        )
    plans = dict(DEFAULT_PLANS)
    for name, entry in data.items():
        where = f"resource plan file {path}: plan {name!r}"
        if not isinstance(name, str) or not _PLAN_NAME_RE.match(name):
            raise PlanFileError(f"{where}: not a valid plan name")
        if not isinstance(entry, dict):
            raise PlanFileError(f"{where}: must be a mapping with cpu, memory and gpu")
        unknown = set(entry) - {"cpu", "memory", "gpu"}
        if unknown:
            raise PlanFileError(f"{where}: unknown keys {', '.join(sorted(map(str, unknown)))}")
        try:
            plans[name] = Resources(
                cpus=parse_cpu(entry["cpu"]) if entry.get("cpu") is not None else None,
                memory_bytes=(
                    parse_memory(entry["memory"]) if entry.get("memory") is not None else None
                ),
                gpus=parse_gpus(entry.get("gpu", 0)),
            )
        except ValueError as exc:
            raise PlanFileError(f"{where}: {exc}") from None
    return plans


def plan_labels(template: Mapping[str, Any]) -> dict[str, str]:
    """The plan labels a template gives (``ai.sap.com/resourcePlan``,
    ``ai.sap.com/instanceType``), label -> value as text."""
    metadata = template.get("metadata")
    labels = metadata.get("labels") if isinstance(metadata, dict) else None
    if not isinstance(labels, dict):
        return {}
    return {
        label: str(labels[label]).strip() for label in PLAN_LABELS if labels.get(label) is not None
    }


def plan_label(template: Mapping[str, Any]) -> str | None:
    """The plan a template names (its resource plan, else its instance type), as text;
    None when it names none."""
    given = plan_labels(template)
    return next((value for value in given.values() if value), None)


def step_plan(chain: list[Mapping[str, Any]]) -> str | None:
    """The plan that applies to a step: its own template's label, else the nearest
    calling template's (``chain`` is entrypoint first, the step's template last)."""
    for template in reversed(chain):
        plan = plan_label(template)
        if plan:
            return plan
    return None


def resolve(
    plan: str | None, container: Mapping[str, Any], plans: Mapping[str, Resources]
) -> Resources:
    """A step's resources: the plan's (KeyError when unknown), then the container's own
    ``resources`` (limits, else requests) per kind. ValueError for a bad quantity."""
    base = plans[plan] if plan else Resources()
    cpus, memory, gpus = base.cpus, base.memory_bytes, base.gpus
    spec = container.get("resources") if isinstance(container, Mapping) else None
    if isinstance(spec, Mapping):
        requests = spec.get("requests") if isinstance(spec.get("requests"), Mapping) else {}
        limits = spec.get("limits") if isinstance(spec.get("limits"), Mapping) else {}
        merged = {**requests, **limits}
        if merged.get("cpu") is not None:
            cpus = parse_cpu(merged["cpu"])
        if merged.get("memory") is not None:
            memory = parse_memory(merged["memory"])
        if merged.get(GPU_RESOURCE) is not None:
            gpus = parse_gpus(merged[GPU_RESOURCE])
    return Resources(cpus=cpus, memory_bytes=memory, gpus=gpus)


def names_unknown_plan(violation: FieldViolation) -> bool:
    """Whether a violation of :func:`check_spec` is an unknown plan or instance type."""
    return violation.description.startswith(_UNKNOWN) and any(
        label in violation.field for label in PLAN_LABELS
    )


_UNKNOWN = "unknown "


def check_spec(spec: Mapping[str, Any], plans: Mapping[str, Resources]) -> list[FieldViolation]:
    """Every unknown plan and bad ``resources`` quantity of a parsed template's spec,
    each naming its field. Placeholders in a plan label are left to the start."""
    violations: list[FieldViolation] = []
    templates = spec.get("templates") if isinstance(spec.get("templates"), list) else []
    for i, template in enumerate(templates):
        if not isinstance(template, dict):
            continue
        path = f"spec.templates[{i}]"
        given = plan_labels(template)
        if len(given) > 1:
            violations.append(
                FieldViolation(
                    f'{path}.metadata.labels["{INSTANCE_TYPE_LABEL}"]',
                    f"give {RESOURCE_PLAN_LABEL} or {INSTANCE_TYPE_LABEL}, not both",
                )
            )
        for label, plan in given.items():
            if "{{" not in plan and plan not in plans:
                what = "resource plan" if label == RESOURCE_PLAN_LABEL else "instance type"
                violations.append(
                    FieldViolation(
                        f'{path}.metadata.labels["{label}"]',
                        f"{_UNKNOWN}{what} {plan!r} (known: {', '.join(sorted(plans))}; "
                        f"the server's --resource-plans file adds more)",
                    )
                )
        for kind in ("container", "script"):
            container = template.get(kind)
            if not isinstance(container, dict) or container.get("resources") is None:
                continue
            resources = container["resources"]
            if not isinstance(resources, dict):
                violations.append(FieldViolation(f"{path}.{kind}.resources", "must be a mapping"))
                continue
            for section in ("requests", "limits"):
                values = resources.get(section)
                if values is None:
                    continue
                where = f"{path}.{kind}.resources.{section}"
                if not isinstance(values, dict):
                    violations.append(FieldViolation(where, "must be a mapping"))
                    continue
                for key, parse in (("cpu", parse_cpu), ("memory", parse_memory),
                                   (GPU_RESOURCE, parse_gpus)):
                    if values.get(key) is None:
                        continue
                    try:
                        parse(values[key])
                    except ValueError as exc:
                        violations.append(FieldViolation(f'{where}["{key}"]', str(exc)))
    return violations
