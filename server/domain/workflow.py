"""The shape of a workflow: which steps an executable runs, in which order.

A parsed WorkflowTemplate (``Executable.spec``) is a tree of templates: the entrypoint
is a ``container`` or ``script`` template (one step), or a ``steps`` / ``dag`` template
that calls other templates. :func:`walk` flattens that tree into its leaves, the steps
that run a process, each with the steps that must succeed before it:

* ``steps``: a list of groups run one after the other; the steps of a group run in
  parallel, and each waits for every step of the group before it.
* ``dag``: each task waits for the tasks named in ``dependencies`` or ``depends``.
* A step or task that calls a ``steps`` / ``dag`` template expands in place; its leaves
  are named ``outer.inner`` and wait for whatever the calling step waits for.

The leaves come in workflow order (document order, dependencies first), which is the
order of an execution's step details. Values (parameters, artifact paths) are not
resolved here: that is the runtime's planner (server/runtime/plan.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

MAX_DEPTH = 16

_DEPENDS_TOKEN_RE = re.compile(r"[A-Za-z0-9][-A-Za-z0-9._]*")


class WorkflowError(ValueError):
    """The workflow cannot be run as written (a loop of calls, an unknown template...)."""


@dataclass(frozen=True, slots=True)
class Call:
    """One link of the chain from the entrypoint to a step: a step or task (``call``,
    None for the entrypoint itself) and the template it runs."""

    call: dict[str, Any] | None
    template: dict[str, Any]


@dataclass(slots=True)
class WorkflowStep:
    """A step that runs a process: a ``container`` or ``script`` template."""

    name: str
    template: dict[str, Any]
    chain: list[Call]  # entrypoint first, this step's own template last
    after: frozenset[str] = field(default_factory=frozenset)  # steps that must succeed first
    siblings: dict[str, str] = field(default_factory=dict)  # caller-local name -> step name

    @property
    def kind(self) -> str:
        return "script" if "script" in self.template else "container"


def walk(spec: dict[str, Any]) -> list[WorkflowStep]:
    """Every step of the workflow in workflow order. Raises :class:`WorkflowError`."""
    templates = {
        t["name"]: t for t in spec.get("templates") or [] if isinstance(t, dict) and "name" in t
    }
    entrypoint = templates.get(spec.get("entrypoint", ""))
    if entrypoint is None:
        raise WorkflowError(f"no entrypoint template {spec.get('entrypoint')!r}")
    steps: list[WorkflowStep] = []
    _expand(templates, entrypoint, "", frozenset(), [Call(None, entrypoint)], steps)
    return steps


def step_names(spec: dict[str, Any]) -> list[str]:
    """The names of the steps in workflow order; empty when the workflow cannot run
    (the runtime then reports why when the execution starts)."""
    try:
        return [step.name for step in walk(spec)]
    except WorkflowError:
        return []


def depends_names(expression: str) -> list[str]:
    """The task names of a ``depends`` expression made of names joined with ``&&``
    (``A && B.Succeeded``). Raises :class:`WorkflowError` for anything richer."""
    names = []
    for part in expression.split("&&"):
        part = part.strip()
        if part.endswith(".Succeeded"):
            part = part[: -len(".Succeeded")]
        if not _DEPENDS_TOKEN_RE.fullmatch(part):
            raise WorkflowError(
                f"depends {expression!r}: only task names joined with && are supported"
            )
        names.append(part)
    return names


def _expand(
    templates: dict[str, dict],
    template: dict,
    prefix: str,
    after: frozenset[str],
    chain: list[Call],
    out: list[WorkflowStep],
    siblings: dict[str, str] | None = None,
) -> list[str]:
    """Append the steps of ``template`` to ``out``; returns their names."""
    if len(chain) > MAX_DEPTH:
        path = " -> ".join(c.template.get("name", "?") for c in chain)
        raise WorkflowError(f"templates call each other too deeply: {path}")
    if "container" in template or "script" in template:
        name = prefix or template["name"]
        out.append(WorkflowStep(name, template, chain, after, dict(siblings or {})))
        return [name]
    if "steps" in template:
        return _expand_steps(templates, template, prefix, after, chain, out)
    if "dag" in template:
        return _expand_dag(templates, template, prefix, after, chain, out)
    raise WorkflowError(f"template {template.get('name')!r} runs nothing")


def _called(templates: dict[str, dict], call: dict) -> dict:
    target = templates.get(call.get("template", ""))
    if target is None:
        raise WorkflowError(f"step {call.get('name')!r} calls no known template")
    for key in ("withItems", "withParam", "withSequence", "when"):
        if key in call:
            raise WorkflowError(
                f"step {call.get('name')!r}: {key} is not supported by the local runtime"
            )
    return target


def _expand_steps(templates, template, prefix, after, chain, out) -> list[str]:
    names: list[str] = []
    waits = after
    local: dict[str, str] = {}  # name in this template -> step name, for {{steps.X...}}
    for group in template["steps"]:
        group_names: list[str] = []
        for call in group:
            target = _called(templates, call)
            full = _join(prefix, call["name"])
            produced = _expand(
                templates, target, full, waits, [*chain, Call(call, target)], out, local
            )
            if len(produced) == 1:
                local[call["name"]] = produced[0]
            group_names.extend(produced)
        names.extend(group_names)
        waits = frozenset(group_names)
    return names


def _expand_dag(templates, template, prefix, after, chain, out) -> list[str]:
    tasks = {task["name"]: task for task in template["dag"]["tasks"]}
    waits_on: dict[str, list[str]] = {}
    for name, task in tasks.items():
        deps = list(task.get("dependencies") or [])
        if task.get("depends"):
            deps += depends_names(task["depends"])
        unknown = [d for d in deps if d not in tasks]
        if unknown:
            raise WorkflowError(f"task {name!r} depends on unknown tasks {unknown}")
        waits_on[name] = deps

    produced: dict[str, list[str]] = {}
    local: dict[str, str] = {}
    names: list[str] = []
    remaining = list(tasks)  # document order; each round takes the first ready task
    while remaining:
        ready = next((n for n in remaining if all(d in produced for d in waits_on[n])), None)
        if ready is None:
            raise WorkflowError(f"tasks {remaining} depend on each other in a cycle")
        remaining.remove(ready)
        task = tasks[ready]
        target = _called(templates, task)
        waits = after.union(*(produced[d] for d in waits_on[ready]))
        produced[ready] = _expand(
            templates,
            target,
            _join(prefix, ready),
            frozenset(waits),
            [*chain, Call(task, target)],
            out,
            local,
        )
        if len(produced[ready]) == 1:
            local[ready] = produced[ready][0]
        names.extend(produced[ready])
    return names


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name
