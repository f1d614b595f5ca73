"""The shape of a workflow: which steps an executable runs, and when each may run.

A parsed WorkflowTemplate (``Executable.spec``) is a tree of templates: the entrypoint
is a ``container`` or ``script`` template (one step), or a ``steps`` / ``dag`` template
that calls other templates. :func:`walk` flattens that tree into its leaves, the steps
that run a process, each with what must be true before it runs:

* ``steps``: a list of groups run one after the other; the steps of a group run in
  parallel, and each waits for every step of the group before it (which must have
  succeeded, or been skipped).
* ``dag``: each task waits for the tasks named in ``dependencies`` (each succeeded or
  skipped) or in its ``depends`` expression (server/domain/expressions.py), which is
  decided once every task it names has ended.
* A step or task that calls a ``steps`` / ``dag`` template expands in place; its leaves
  are named ``outer.inner`` and wait for whatever the calling step waits for.
* ``withItems`` (or ``withParam`` with a JSON list written in the template) runs the
  call once per item; item ``i`` is named ``name(i:item)`` as Argo names it, and
  ``{{item}}`` / ``{{item.KEY}}`` take the item in the call's arguments and ``when``.
* ``when``: kept on the call (:attr:`Call.when`); the runtime decides it when the step is
  ready to run, after its placeholders are resolved. False: the step is SKIPPED.
* ``templateRef: {name: EXECUTABLE, template: TEMPLATE}`` calls a template of another
  registered executable of the same resource group (``library``: executable id -> its
  spec); that template's own calls resolve in its document.
* ``spec.onExit``: the exit handler's steps come last, named ``onExit`` (or
  ``onExit.inner``), marked :attr:`WorkflowStep.exit_handler`; they run after the main
  flow ended, whatever its outcome.

The leaves come in workflow order (document order, dependencies first), which is the
order of an execution's step details. Values (parameters, artifact paths) are not
resolved here: that is the runtime's planner (server/runtime/plan.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from server.domain.expressions import Depends, ExpressionError, all_succeeded, parse_depends

MAX_DEPTH = 16
EXIT_HANDLER = "onExit"
# withItems entries at most (a loop's items are step details of their own).
MAX_ITEMS = 1000


# Fields the grammar accepts that the runtime does not run yet: registration refuses
# them (naming the field), so that what loads also starts.
NOT_RUN_YET: dict[str, str] = {}


class WorkflowError(ValueError):
    """The workflow cannot be run as written (a loop of calls, an unknown template...)."""


_NO_ITEM = object()


@dataclass(frozen=True, slots=True)
class Call:
    """One link of the chain from the entrypoint to a step: a step or task (``call``,
    None for the entrypoint itself) and the template it runs; for one item of a loop,
    ``item`` is that item (``has_item``)."""

    call: dict[str, Any] | None
    template: dict[str, Any]
    item: Any = _NO_ITEM
    # The steps or tasks of the calling template before this one, by their names there
    # (for ``{{steps.X.outputs...}}`` / ``{{tasks.X.outputs...}}``): step names.
    siblings: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def has_item(self) -> bool:
        return self.item is not _NO_ITEM

    @property
    def when(self) -> str:
        """The call's ``when`` expression as written, or ``""``."""
        value = (self.call or {}).get("when")
        return value if isinstance(value, str) else ""


@dataclass(frozen=True, slots=True)
class Requirement:
    """A ``depends`` condition (plain ``dependencies`` and step groups are one too:
    ``A && B``) over the tasks of one steps/dag template, each task standing for the
    steps it expanded to."""

    expression: Depends
    tasks: dict[str, tuple[str, ...]]  # task name in the template -> step names

    def steps(self) -> frozenset[str]:
        return frozenset(s for names in self.tasks.values() for s in names)


@dataclass(slots=True)
class WorkflowStep:
    """A step that runs a process: a ``container`` or ``script`` template."""

    name: str
    template: dict[str, Any]
    chain: list[Call]  # entrypoint first, this step's own template last
    after: frozenset[str] = field(default_factory=frozenset)  # steps that end first
    requires: tuple[Requirement, ...] = ()  # all true once ``after`` ended, or skipped
    siblings: dict[str, str] = field(default_factory=dict)  # caller-local name -> step name
    exit_handler: bool = False
    # A withParam loop whose items are known only when it runs (a placeholder, such as
    # another step's outputs): this step stands for them until then.
    deferred_loop: bool = False
    # The loop (withItems) this step is an item of: the call's name as a step name,
    # under which {{steps.LOOP.outputs...}} gives every item's output as a JSON list.
    group: str = ""

    @property
    def kind(self) -> str:
        return "script" if "script" in self.template else "container"


def walk(spec: dict[str, Any], library: dict[str, dict] | None = None) -> list[WorkflowStep]:
    """Every step of the workflow in workflow order. ``library`` holds the specs of the
    executables its templateRefs name (see :func:`template_refs`). Raises
    :class:`WorkflowError`."""
    templates = _Templates(_by_name(spec), library or {})
    entrypoint = templates.get(spec.get("entrypoint", ""))
    if entrypoint is None:
        raise WorkflowError(f"no entrypoint template {spec.get('entrypoint')!r}")
    steps: list[WorkflowStep] = []
    _expand(templates, entrypoint, "", (), [Call(None, entrypoint)], steps)
    main = {s.name for s in steps}
    on_exit = spec.get("onExit")
    if on_exit:
        handler = templates.get(on_exit)
        if handler is None:
            raise WorkflowError(f"no exit handler template {on_exit!r}")
        first = len(steps)
        _expand(templates, handler, EXIT_HANDLER, (), [Call(None, handler)], steps)
        for step in steps[first:]:
            step.exit_handler = True
            if step.name in main:
                raise WorkflowError(f"exit handler step {step.name!r} clashes with a step")
    return steps


def direct_after(steps: list[WorkflowStep]) -> dict[str, tuple[str, ...]]:
    """For each step of :func:`walk`, the steps it directly waits for, in workflow
    order: a step another of them already waits for (through any chain) is left out.
    The exit handler's first steps wait for the main steps nothing else waits for."""
    order = {s.name: i for i, s in enumerate(steps)}
    main = [s for s in steps if not s.exit_handler]
    waited = {d for s in main for d in s.after}
    last = frozenset(s.name for s in main if s.name not in waited)
    upstream: dict[str, frozenset[str]] = {}  # step -> every step it waits for
    direct: dict[str, tuple[str, ...]] = {}
    for step in steps:  # a step comes after every step it waits for
        waits = step.after or (last if step.exit_handler else frozenset())
        waits = frozenset(d for d in waits if d in upstream)
        indirect = frozenset().union(*(upstream[d] for d in waits))
        upstream[step.name] = waits | indirect
        direct[step.name] = tuple(sorted(waits - indirect, key=order.__getitem__))
    return direct


def step_names(spec: dict[str, Any], library: dict[str, dict] | None = None) -> list[str]:
    """The names of the steps in workflow order; empty when the workflow cannot run
    (the runtime then reports why when the execution starts)."""
    try:
        return [step.name for step in walk(spec, library)]
    except WorkflowError:
        return []


class _Templates(dict):
    """The templates of one document by name, and the library templateRefs resolve in."""

    def __init__(self, templates: dict[str, dict], library: dict[str, dict]):
        super().__init__(templates)
        self.library = library


@dataclass(frozen=True, slots=True)
class TemplateRef:
    """A ``templateRef`` of a step or task: where it is written, what it names."""

    path: str  # e.g. spec.templates[0].steps[1][0].templateRef
    executable: str
    template: str
    call: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)  # its step


def template_refs(spec: dict[str, Any]) -> list[TemplateRef]:
    """Every well-formed ``templateRef`` of the spec's steps and tasks, in document order."""
    found: list[TemplateRef] = []
    for i, template in enumerate(spec.get("templates") or []):
        if not isinstance(template, dict):
            continue
        calls: list[tuple[str, Any]] = []
        if isinstance(template.get("steps"), list):
            for g, group in enumerate(template["steps"]):
                if isinstance(group, list):
                    calls += [(f"steps[{g}][{s}]", c) for s, c in enumerate(group)]
        dag = template.get("dag")
        if isinstance(dag, dict) and isinstance(dag.get("tasks"), list):
            calls += [(f"dag.tasks[{t}]", c) for t, c in enumerate(dag["tasks"])]
        for where, call in calls:
            ref = call.get("templateRef") if isinstance(call, dict) else None
            if (
                isinstance(ref, dict)
                and isinstance(ref.get("name"), str)
                and isinstance(ref.get("template"), str)
            ):
                path = f"spec.templates[{i}].{where}.templateRef"
                found.append(TemplateRef(path, ref["name"], ref["template"], call))
    return found


def _by_name(spec: dict[str, Any]) -> dict[str, dict]:
    return {
        t["name"]: t for t in spec.get("templates") or [] if isinstance(t, dict) and "name" in t
    }


def item_label(item: Any) -> str:
    """How an item shows in its step's name, as Argo writes it: ``a``, ``3``,
    ``lr:0.1,model:x`` (keys sorted)."""
    if isinstance(item, dict):
        return ",".join(f"{k}:{item_label(item[k])}" for k in sorted(item))
    if isinstance(item, bool):
        return "true" if item else "false"
    if isinstance(item, list):
        return json.dumps(item, separators=(",", ":"))
    return str(item)


def _expand(
    templates: dict[str, dict],
    template: dict,
    prefix: str,
    requires: tuple[Requirement, ...],
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
        after = frozenset().union(*(r.steps() for r in requires))
        out.append(WorkflowStep(name, template, chain, after, requires, dict(siblings or {})))
        return [name]
    if "steps" in template:
        return _expand_steps(templates, template, prefix, requires, chain, out)
    if "dag" in template:
        return _expand_dag(templates, template, prefix, requires, chain, out)
    raise WorkflowError(f"template {template.get('name')!r} runs nothing")


def _called(templates: _Templates, call: dict) -> tuple[dict, _Templates]:
    """The template a call runs, and the templates its own calls resolve in."""
    ref = call.get("templateRef")
    if isinstance(ref, dict):
        spec = templates.library.get(ref.get("name", ""))
        if spec is None:
            raise WorkflowError(
                f"step {call.get('name')!r}: no executable {ref.get('name')!r} to take "
                f"template {ref.get('template')!r} from"
            )
        templates = _Templates(_by_name(spec), templates.library)
        target = templates.get(ref.get("template", ""))
        if target is None:
            raise WorkflowError(
                f"step {call.get('name')!r}: executable {ref.get('name')!r} has no template "
                f"{ref.get('template')!r}"
            )
        return target, templates
    target = templates.get(call.get("template", ""))
    if target is None:
        raise WorkflowError(f"step {call.get('name')!r} calls no known template")
    return target, templates


def is_deferred_loop(call: dict) -> bool:
    """A withParam whose list comes from a placeholder: expanded when it runs."""
    param = call.get("withParam")
    return isinstance(param, str) and "{{" in param and "withItems" not in call


def _items(call: dict) -> list[Any] | None:
    """The items a call loops over; None when it is no loop."""
    if is_deferred_loop(call):
        return None
    if "withItems" in call:
        items = call["withItems"]
    elif "withParam" in call:
        text = call["withParam"]
        try:
            items = json.loads(text) if isinstance(text, str) else None
        except ValueError:
            items = None
        if not isinstance(items, list):
            raise WorkflowError(
                f"step {call.get('name')!r}: withParam must be a JSON list written in the "
                f"template, not {text!r}"
            )
    else:
        return None
    if not isinstance(items, list) or not items:
        raise WorkflowError(f"step {call.get('name')!r}: the loop has no items")
    if len(items) > MAX_ITEMS:
        raise WorkflowError(f"step {call.get('name')!r}: more than {MAX_ITEMS} items")
    return items


def _run_call(
    templates: dict[str, dict],
    call: dict,
    name: str,
    prefix: str,
    requires: tuple[Requirement, ...],
    chain: list[Call],
    out: list[WorkflowStep],
    local: dict[str, str],
) -> list[str]:
    """Expand one step or task, once or per item; returns the step names it produced."""
    target, inner = _called(templates, call)
    items = _items(call)
    known = dict(local)
    if items is None:
        links = [(_join(prefix, name), Call(call, target, siblings=known))]
    else:
        links = [
            (
                _join(prefix, f"{name}({i}:{item_label(item)})"),
                Call(call, target, item, siblings=known),
            )
            for i, item in enumerate(items)
        ]
    produced: list[str] = []
    for full, link in links:
        produced += _expand(inner, target, full, requires, [*chain, link], out, local)
        if items is not None and ("container" in target or "script" in target):
            out[-1].group = _join(prefix, name)
    if is_deferred_loop(call):
        if "container" not in target and "script" not in target:
            raise WorkflowError(
                f"step {name!r}: withParam from a placeholder loops over a container or "
                f"script template only"
            )
        out[-1].deferred_loop = True
    return produced


def _expand_steps(templates, template, prefix, requires, chain, out) -> list[str]:
    names: list[str] = []
    waits = requires
    local: dict[str, str] = {}  # name in this template -> step name, for {{steps.X...}}
    for group in template["steps"]:
        group_tasks: dict[str, tuple[str, ...]] = {}
        for call in group:
            produced = _run_call(templates, call, call["name"], prefix, waits, chain, out, local)
            _remember(local, call["name"], produced, out)
            group_tasks[call["name"]] = tuple(produced)
            names.extend(produced)
        waits = (*requires, _all_of(group_tasks))
    return names


def _expand_dag(templates, template, prefix, requires, chain, out) -> list[str]:
    tasks = {task["name"]: task for task in template["dag"]["tasks"]}
    conditions: dict[str, Depends | None] = {}
    for name, task in tasks.items():
        depends = task.get("depends")
        if depends:
            try:
                conditions[name] = parse_depends(depends)
            except ExpressionError as exc:
                raise WorkflowError(f"task {name!r}: depends {depends!r}: {exc}") from None
        elif task.get("dependencies"):
            conditions[name] = all_succeeded(list(task["dependencies"]))
        else:
            conditions[name] = None
        waits_on = conditions[name].names if conditions[name] else ()
        unknown = [d for d in waits_on if d not in tasks]
        if unknown:
            raise WorkflowError(f"task {name!r} depends on unknown tasks {unknown}")

    produced: dict[str, tuple[str, ...]] = {}
    local: dict[str, str] = {}
    names: list[str] = []
    remaining = list(tasks)  # document order; each round takes the first ready task
    while remaining:
        ready = next(
            (
                n
                for n in remaining
                if all(d in produced for d in (conditions[n].names if conditions[n] else ()))
            ),
            None,
        )
        if ready is None:
            raise WorkflowError(f"tasks {remaining} depend on each other in a cycle")
        remaining.remove(ready)
        task = tasks[ready]
        condition = conditions[ready]
        waits = requires
        if condition is not None:
            waits = (*requires, Requirement(condition, {d: produced[d] for d in condition.names}))
        produced[ready] = tuple(_run_call(templates, task, ready, prefix, waits, chain, out, local))
        _remember(local, ready, list(produced[ready]), out)
        names.extend(produced[ready])
    return names


def _remember(local: dict[str, str], name: str, produced: list[str], out: list) -> None:
    """A step or task that ran one container or script, or a loop of them: the step
    (or loop) name its outputs go by, for the calls after it."""
    by_name = {s.name: s for s in out[-len(produced):]} if produced else {}
    groups = {by_name[n].group for n in produced}
    if len(produced) == 1 and not by_name[produced[0]].group:
        local[name] = produced[0]
    elif len(groups) == 1 and "" not in groups:
        local[name] = groups.pop()


def _all_of(tasks: dict[str, tuple[str, ...]]) -> Requirement:
    """Every task of a step group succeeded (or was skipped)."""
    return Requirement(all_succeeded(list(tasks)), dict(tasks))


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name
