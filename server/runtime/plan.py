"""The planner: what an execution runs, resolved down to command lines and paths.

:func:`build_plan` takes the executable's workflow (see server/domain/workflow.py for
its shape), the configuration's parameter values and the URLs of its bound artifacts,
and gives one :class:`PlannedStep` per step: its command line with every placeholder
substituted, the input artifacts to stage, the outputs it must leave behind.

Each step gets a root directory of its own in the execution's working directory,
``<work dir>/steps/<step>``, which stands in for the container's file system: an artifact
path such as ``/data/iris`` becomes ``<work dir>/steps/<step>/data/iris``. The step runs
with that root as its current directory. Steps see each other's files only through
artifacts, as in Argo.

Placeholders (``{{ ... }}``, spaces inside allowed):

* ``{{workflow.parameters.NAME}}``: the configuration's value (or the default).
* ``{{inputs.parameters.NAME}}``: the template's input; the entrypoint's inputs take the
  workflow parameters of the same name, a called template's inputs take the calling
  step's ``arguments.parameters`` (themselves substituted in the caller's scope), then
  the input's own ``value`` or ``default``.
* ``{{inputs.artifacts.NAME.path}}``, ``{{outputs.artifacts.NAME.path}}``: the artifact's
  path in the step's root.
* ``{{workflow.name}}``, ``{{workflow.uid}}``: the execution id;
  ``{{workflow.namespace}}``: the resource group.
* ``{{item}}``, ``{{item.KEY}}``: in the arguments and ``when`` of a call that loops
  (``withItems``), the item (a mapping or list as JSON) or one of its values.

Values are pasted as plain text. A placeholder of those families that has no value is an
error; any other ``{{...}}`` text is left as it is.

Some values are known only while the execution runs; their placeholders are left in the
step's command, env, script and ``when`` for the runtime to resolve when the step starts
(:func:`resolve_late`):

* ``{{steps.X.outputs.parameters.P}}`` / ``{{tasks.X.outputs.parameters.P}}``: the value
  step X read from its ``outputs.parameters[P].valueFrom.path`` (or its default);
  ``{{steps.X.outputs.result}}``: what X wrote to its standard output (at most 256 KiB,
  the trailing newline dropped). X is a step or task of the calling template that
  finishes before this one; the planner rewrites its name to the step name.
* ``{{workflow.status}}``: in the exit handler, ``Succeeded``, ``Failed`` or ``Error``.
* ``{{workflow.failures}}``: in the exit handler, the steps that failed (or were
  stopped) as Argo gives them: a JSON list of ``displayName``, ``message``,
  ``templateName``, ``phase``, ``podName``, ``finishedAt`` (``null`` when none failed),
  pasted as a double-quoted string (:func:`failures_value`).

Input artifacts come from the calling step's ``arguments.artifacts`` (``from:
"{{inputs.artifacts.X}}"``, ``from: "{{steps.S.outputs.artifacts.O}}"`` or ``tasks.``,
``raw``), then the input's own ``raw`` data, then the configuration's artifact bound to
the same name. Other sources (s3, http, git...) are errors here.

Planning is pure: it touches no file. :class:`PlanError` says why a workflow cannot run.
"""

from __future__ import annotations

import dataclasses
import json
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from server.domain import resources as plans_
from server.domain.models import Executable, OutputArtifactSpec
from server.domain.resources import Resources
from server.domain.workflow import Requirement, WorkflowError, WorkflowStep, item_label, walk

STEPS_DIR = "steps"
SCRIPTS_DIR = "scripts"
# Where a script template's source is in a step that has a file system of its own
# (where Argo puts it too).
SCRIPT_IN_STEP = "/argo/staging/script"

_PLACEHOLDER_RE = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
# An output of another step, known once it ended: steps.X.outputs.parameters.P / .result
_LATE_OUTPUT_RE = re.compile(
    r"^(?:steps|tasks)\.(?P<step>.+?)\.outputs\.(?P<what>parameters\.[^.{}\s]+|result)$"
)
WORKFLOW_STATUS = "workflow.status"
WORKFLOW_FAILURES = "workflow.failures"
# Workflow values known only once the exit handler runs.
_EXIT_VALUES = (WORKFLOW_STATUS, WORKFLOW_FAILURES)
RESULT_LIMIT = 256 * 1024
_RESOLVED_FAMILIES = ("inputs.", "outputs.", "workflow.", "steps.", "tasks.")
_FROM_INPUT_RE = re.compile(r"^\{\{\s*inputs\.artifacts\.([^.{}\s]+)\s*\}\}$")
_FROM_STEP_RE = re.compile(
    r"^\{\{\s*(?:steps|tasks)\.([^.{}\s]+)\.outputs\.artifacts\.([^.{}\s]+)\s*\}\}$"
)
_OTHER_SOURCES = (
    "s3", "gcs", "oss", "hdfs", "http", "git", "artifactory", "azure", "fromExpression"
)


class PlanError(Exception):
    """The workflow cannot run as configured; the message says why."""


@dataclass(frozen=True, slots=True)
class Source:
    """Where a staged input artifact comes from: exactly one of the three."""

    url: str = ""  # a bound artifact's URL ...
    binding: str = ""  # ... bound to this input name in the configuration
    raw: str | None = None  # literal contents
    step: str = ""  # the output ``output`` of another step
    output: str = ""

    def describe(self) -> str:
        if self.url:
            return f"{self.url} (bound as {self.binding})"
        if self.step:
            return f"output {self.output} of step {self.step}"
        return "inline data"


@dataclass(slots=True)
class StepInput:
    name: str
    path: Path
    source: Source


@dataclass(slots=True)
class OutputParameter:
    """An output parameter: read from ``path`` (in the step's root) once it succeeded."""

    name: str
    path: Path
    default: str | None = None


@dataclass(slots=True)
class StepOutput:
    name: str
    path: Path
    global_name: str = ""
    optional: bool = False


@dataclass(frozen=True, slots=True)
class StepVolume:
    """A volume a step mounts (``volumeMounts`` of its container): an ``emptyDir``,
    fresh for each attempt, or the keys of a secret as files (``files``: relative path
    and contents), always read-only."""

    name: str
    mount_path: str
    read_only: bool = False
    files: tuple[tuple[str, str], ...] | None = None  # None: an emptyDir

    @property
    def secret(self) -> bool:
        return self.files is not None


@dataclass(frozen=True, slots=True)
class Retry:
    """A step's ``retryStrategy``: how many more attempts, on which failures, how soon."""

    limit: int  # attempts after the first
    policy: str = "OnFailure"  # Always | OnFailure | OnError | OnTransientError
    duration: float = 0.0  # seconds before the first retry
    factor: int = 1  # each later wait is this many times the one before
    max_duration: float | None = None  # no retry starts later than this after the first

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (from 1)."""
        return self.duration * self.factor ** (retry - 1)


@dataclass(slots=True)
class PlannedStep:
    name: str
    template: str
    kind: str  # "container" | "script"
    image: str
    argv: list[str]  # command and args, as a process on this machine runs them
    root: Path  # the step's file system root and current directory
    # How many leading words of argv are the template's command (the rest are its
    # args); 0: no command, the image's entrypoint runs with the args.
    command_length: int = 0
    working_dir: str = ""  # the template's workingDir, in the step's file system
    after: frozenset[str] = frozenset()  # steps that end before it is decided
    requires: tuple[Requirement, ...] = ()  # all true, or the step is SKIPPED
    when: tuple[str, ...] = ()  # ``when`` of its calls (substituted), all true to run
    exit_handler: bool = False
    # withParam from a placeholder (resolved in the caller's scope, later placeholders
    # left): the runtime expands the step into one per item when it is ready to run.
    loop: str = ""
    retry: Retry | None = None
    deadline: float | None = None  # the template's activeDeadlineSeconds
    upstream: frozenset[str] = frozenset()  # every step that finishes before it starts
    script: str | None = None  # script source, written to ``script_path`` before the start
    script_path: Path | None = None
    env: dict[str, str] = field(default_factory=dict)  # the template's own env entries
    inputs: list[StepInput] = field(default_factory=list)
    outputs: list[StepOutput] = field(default_factory=list)
    resources: Resources = field(default_factory=Resources)  # limits a runner applies
    parameters: list[OutputParameter] = field(default_factory=list)  # outputs.parameters
    keeps_result: bool = False  # a later step reads its {{...outputs.result}}
    volumes: tuple[StepVolume, ...] = ()  # container runtime only

    @property
    def command(self) -> list[str]:
        return self.argv[: self.command_length]

    @property
    def args(self) -> list[str]:
        return self.argv[self.command_length :]

    def output(self, name: str) -> StepOutput | None:
        return next((o for o in self.outputs if o.name == name), None)


@dataclass(slots=True)
class Collect:
    """An output artifact to register after success: where the step left it."""

    spec: OutputArtifactSpec
    step: str
    path: Path
    optional: bool = False


@dataclass(slots=True)
class Plan:
    work_dir: Path
    steps: list[PlannedStep]
    collect: list[Collect]
    # Registry credentials from the template's imagePullSecrets, resolved in the
    # execution's resource group: the text of a container auth file
    # ({"auths": {REGISTRY: {"auth": ...}}}, as a .dockerconfigjson holds), or None.
    pull_auth: str | None = None
    deadline: float | None = None  # the workflow's activeDeadlineSeconds
    # Steps whose failure a depends expression handles (names it .Failed, .Errored or
    # .AllFailed): their failure does not end the execution.
    handled: frozenset[str] = frozenset()
    # withItems loops over a container or script template: loop name -> its items,
    # whose outputs {{steps.LOOP.outputs...}} gives as a JSON list.
    groups: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def step(self, name: str) -> PlannedStep:
        return next(s for s in self.steps if s.name == name)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.steps]


def step_root(work_dir: Path, step: str) -> Path:
    return work_dir / STEPS_DIR / step


def build_plan(
    executable: Executable,
    parameters: dict[str, str],
    artifact_urls: dict[str, str],
    *,
    execution_id: str,
    resource_group: str,
    work_dir: Path,
    plans: Mapping[str, Resources] | None = None,
    secrets: Mapping[tuple[str, str], str] | None = None,
    pull_auth: str | None = None,
    library: dict[str, dict] | None = None,
    step_paths: bool = False,
) -> Plan:
    """Resolve the executable's workflow for one execution. Raises :class:`PlanError`.

    ``library`` holds the specs of the executables its templateRefs name, by id
    (ControlPlane.template_library).

    ``step_paths``: the step runs in a file system of its own (a container) where the
    artifacts are mounted at their template paths, so placeholders of artifact paths
    (and a script's path) give those paths; otherwise they give the paths under the
    step's root on this machine. A step may then have no command (the image's
    entrypoint runs with its args).

    ``plans`` is the resource plan table (default: SAP's plans) that gives each step
    its :class:`Resources` (see server/domain/resources.py). ``secrets`` holds the
    values of the execution's group's secrets its steps use, by (secret, key), and
    ``pull_auth`` the registry credentials of its ``imagePullSecrets``, as
    server/domain/secrets.py resolved them at the start."""
    try:
        workflow = walk(executable.spec, library)
    except WorkflowError as exc:
        raise PlanError(str(exc)) from None
    if not workflow:
        raise PlanError("the workflow has no step to run")

    global_values = {
        "workflow.name": execution_id,
        "workflow.uid": execution_id,
        "workflow.namespace": resource_group,
    }
    workflow_parameters = {
        p.name: p.default for p in executable.parameters if p.default is not None
    }
    workflow_parameters.update(parameters)
    for name, value in workflow_parameters.items():
        global_values[f"workflow.parameters.{name}"] = value

    planner = _Planner(
        global_values,
        workflow_parameters,
        artifact_urls,
        work_dir,
        plans_.DEFAULT_PLANS if plans is None else plans,
        secrets or {},
        step_paths,
        documents={"": executable.spec, **(library or {})},
    )
    steps = [planner.step(ws) for ws in workflow]
    groups: dict[str, tuple[str, ...]] = {}
    for ws in workflow:
        if ws.group:
            groups[ws.group] = (*groups.get(ws.group, ()), ws.name)
    _link(steps, groups)
    handled: set[str] = set()
    for step in steps:
        for requirement in step.requires:
            for task, result in requirement.expression.mentions:
                if result in _HANDLING_RESULTS:
                    handled.update(requirement.tasks.get(task, ()))
    collect = []
    for spec in executable.output_artifacts:
        producers = [
            (s, o)
            for s in steps
            if s.template == spec.step
            for o in s.outputs
            if o.global_name == spec.name
        ]
        if producers:
            step, output = producers[-1]
            collect.append(Collect(spec, step.name, output.path, output.optional))
    return Plan(
        work_dir,
        steps,
        collect,
        pull_auth=pull_auth,
        deadline=_seconds(executable.spec, "spec"),
        handled=frozenset(handled),
        groups=groups,
    )


def _link(steps: list[PlannedStep], groups: dict[str, tuple[str, ...]]) -> None:
    """Fill ``upstream`` and check that step-to-step inputs come from earlier steps."""
    by_name = {s.name: s for s in steps}
    for step in steps:  # workflow order: a step's predecessors are already linked
        upstream: set[str] = set(step.after)
        for name in step.after:
            upstream |= by_name[name].upstream
        step.upstream = frozenset(upstream)
        for item in step.inputs:
            source = item.source
            if not source.step:
                continue
            producer = by_name.get(source.step)
            if producer is None or source.step not in step.upstream:
                raise PlanError(
                    f"step {step.name}: input artifact {item.name} comes from step "
                    f"{source.step}, which does not finish before it"
                )
            if producer.output(source.output) is None:
                raise PlanError(
                    f"step {step.name}: step {source.step} has no output artifact "
                    f"{source.output}"
                )
        for key in _late_keys(step):
            match = _LATE_OUTPUT_RE.match(key)
            if match is None:
                if key in _EXIT_VALUES and not step.exit_handler:
                    raise PlanError(
                        f"step {step.name}: {{{{{key}}}}} has a value in the exit handler only"
                    )
                continue
            name, what = match.group("step"), match.group("what")
            members = groups.get(name, (name,))
            producers = [by_name.get(n) for n in members]
            if None in producers or not all(n in step.upstream for n in members):
                raise PlanError(
                    f"step {step.name}: {{{{{key}}}}} names no step that finishes before it"
                )
            for producer in producers:
                if what == "result":
                    producer.keeps_result = True
                elif not any(
                    p.name == what.removeprefix("parameters.") for p in producer.parameters
                ):
                    raise PlanError(
                        f"step {step.name}: step {producer.name} has no output parameter "
                        f"{what.removeprefix('parameters.')}"
                    )


@dataclass
class _Scope:
    """What placeholders mean inside one template of the call chain."""

    parameters: dict[str, str]
    artifacts: dict[str, Source]
    when: list[str] = field(default_factory=list)  # the calls' conditions, outermost first
    loop: str = ""  # the last call's withParam, when the step is a deferred loop


class _Planner:
    def __init__(
        self,
        global_values: dict[str, str],
        workflow_parameters: dict[str, str],
        artifact_urls: dict[str, str],
        work_dir: Path,
        plans: Mapping[str, Resources],
        secrets: Mapping[tuple[str, str], str],
        step_paths: bool = False,
        documents: Mapping[str, Mapping[str, Any]] | None = None,
    ):
        self.global_values = global_values
        self.workflow_parameters = workflow_parameters
        self.artifact_urls = artifact_urls
        self.work_dir = work_dir
        self.plans = plans
        self.secrets = secrets
        self.step_paths = step_paths
        # The workflow's spec ("") and those of the executables its templateRefs name.
        self.documents = documents or {}

    def _volumes(
        self, ws: WorkflowStep, process: Mapping[str, Any], where: str
    ) -> tuple[StepVolume, ...]:
        """The step's ``volumeMounts``, each with its volume: the template's own
        ``volumes``, else those of the spec of the document the template is in (the
        workflow's, or the executable a templateRef names)."""
        mounts = process.get("volumeMounts") or []
        if not mounts:
            return ()
        if not self.step_paths:
            raise PlanError(
                f"{where}: volumeMounts: only the container runtime (--runtime container) "
                "mounts volumes"
            )
        document = self.documents.get("", {})
        for link in reversed(ws.chain):
            ref = link.call.get("templateRef") if link.call else None
            if isinstance(ref, dict):
                document = self.documents.get(str(ref.get("name")), {})
                break
        declared: dict[str, dict] = {}
        for holder in (document, ws.template):
            for volume in holder.get("volumes") or []:
                if isinstance(volume, dict) and volume.get("name"):
                    declared[str(volume["name"])] = volume
        result = []
        for mount in mounts:
            name = str(mount.get("name"))
            volume = declared.get(name)
            if volume is None:
                raise PlanError(f"{where}: volumeMounts: no volume named {name!r}")
            read_only = mount.get("readOnly") is True
            files = None
            if "secret" in volume:
                files = self._secret_files(volume["secret"] or {}, f"{where}: volume {name}")
                read_only = True
            result.append(StepVolume(name, str(mount.get("mountPath")), read_only, files))
        return tuple(result)

    def _secret_files(self, secret: Mapping[str, Any], where: str) -> tuple[tuple[str, str], ...]:
        """A secret volume's files: each key (or each of ``items``, at its path)."""
        name = str(secret.get("secretName"))
        values = {key: value for (n, key), value in self.secrets.items() if n == name}
        items = secret.get("items")
        if items:
            files = []
            for item in items:
                key = str(item.get("key"))
                if key not in values:
                    if secret.get("optional") is True:
                        continue
                    raise PlanError(f"{where}: key {key!r} of secret {name!r} is not available")
                files.append((str(item.get("path")), values[key]))
            return tuple(files)
        if not values and secret.get("optional") is not True:
            raise PlanError(f"{where}: secret {name!r} is not available")
        return tuple(sorted(values.items()))

    def _env_from(self, process: Mapping[str, Any], where: str) -> dict[str, str]:
        """The variables of ``envFrom``: every key of each secret named (resolved at the
        start), after its prefix; later entries win, and ``env`` wins over them all."""
        env: dict[str, str] = {}
        for entry in process.get("envFrom") or []:
            ref = entry.get("secretRef") if isinstance(entry, dict) else None
            if not isinstance(ref, dict):
                raise PlanError(f"{where}: envFrom takes secretRef entries only")
            name, prefix = str(ref.get("name")), str(entry.get("prefix") or "")
            keys = {key: value for (secret, key), value in self.secrets.items() if secret == name}
            if not keys and ref.get("optional") is not True:
                raise PlanError(f"{where}: envFrom: secret {name!r} is not available")
            env.update((prefix + key, value) for key, value in sorted(keys.items()))
        return env

    def _shown(self, root: Path, path: Path) -> str:
        """What a placeholder of ``path`` (under ``root``) gives the step."""
        if self.step_paths:
            return "/" + path.relative_to(root).as_posix()
        return str(path)

    def step(self, ws: WorkflowStep) -> PlannedStep:
        scope = self._scope(ws)
        template = ws.template
        root = step_root(self.work_dir, ws.name)
        where = f"step {ws.name}"

        values = dict(self.global_values)
        for name, value in scope.parameters.items():
            values[f"inputs.parameters.{name}"] = value
        inputs: list[StepInput] = []
        for entry in _entries(template.get("inputs"), "artifacts"):
            source = scope.artifacts.get(entry["name"])
            path = _in_root(
                root, entry.get("path", ""), f"{where}: input artifact {entry['name']}"
            )
            values[f"inputs.artifacts.{entry['name']}.path"] = self._shown(root, path)
            if source is not None:
                inputs.append(StepInput(entry["name"], path, source))
        outputs: list[StepOutput] = []
        for entry in _entries(template.get("outputs"), "artifacts"):
            path = _in_root(
                root, entry.get("path", ""), f"{where}: output artifact {entry['name']}"
            )
            values[f"outputs.artifacts.{entry['name']}.path"] = self._shown(root, path)
            outputs.append(
                StepOutput(
                    entry["name"],
                    path,
                    global_name=entry.get("globalName") or "",
                    optional=bool(entry.get("optional")),
                )
            )

        parameters = []
        for entry in _entries(template.get("outputs"), "parameters"):
            value_from = entry.get("valueFrom") or {}
            path = _in_root(
                root, str(value_from.get("path", "")), f"{where}: output parameter {entry['name']}"
            )
            default = value_from.get("default")
            parameters.append(
                OutputParameter(entry["name"], path, None if default is None else _text(default))
            )

        process = template[ws.kind]
        image = str(process.get("image", ""))
        command = [_substitute(c, values, where) for c in process.get("command") or []]
        args = [_substitute(a, values, where) for a in process.get("args") or []]
        env = self._env_from(process, where)
        for entry in process.get("env") or []:
            name = entry.get("name") if isinstance(entry, dict) else None
            if not name:
                continue
            if "valueFrom" in entry:
                ref = (entry.get("valueFrom") or {}).get("secretKeyRef")
                if not isinstance(ref, dict):
                    raise PlanError(
                        f"{where}: env {name}: only valueFrom.secretKeyRef is supported"
                    )
                value = self.secrets.get((str(ref.get("name")), str(ref.get("key"))))
                if value is None:
                    if ref.get("optional") is True:
                        continue
                    raise PlanError(
                        f"{where}: env {name}: key {ref.get('key')!r} of secret "
                        f"{ref.get('name')!r} is not available"
                    )
                env[name] = value
                continue
            env[name] = _substitute(str(entry.get("value", "")), values, where)

        plan = plans_.step_plan([link.template for link in ws.chain])
        if plan:
            plan = _substitute(plan, values, where)
        try:
            resources = plans_.resolve(plan, process, self.plans)
        except KeyError:
            raise PlanError(
                f"{where}: unknown resource plan {plan!r} (known: {', '.join(sorted(self.plans))})"
            ) from None
        except ValueError as exc:
            raise PlanError(f"{where}: resources: {exc}") from None

        script = script_path = None
        if ws.kind == "script":
            if not command:
                raise PlanError(f"{where}: a script template needs a command, such as [python3]")
            script = _substitute(process["source"], values, where)
            script_path = self.work_dir / SCRIPTS_DIR / ws.name
            command = [*command, SCRIPT_IN_STEP if self.step_paths else str(script_path)]
        elif not command and not args and not self.step_paths:
            raise PlanError(
                f"{where}: nothing to run: the container has no command and no args, and "
                "only the container runtime (--runtime container) runs an image's own "
                "entrypoint"
            )
        argv = [*command, *args]
        volumes = self._volumes(ws, process, where)
        return PlannedStep(
            name=ws.name,
            template=template["name"],
            kind=ws.kind,
            image=image,
            argv=argv,
            command_length=len(command),
            working_dir=str(process.get("workingDir") or ""),
            root=root,
            after=ws.after,
            requires=ws.requires,
            when=tuple(scope.when),
            loop=scope.loop if ws.deferred_loop else "",
            exit_handler=ws.exit_handler,
            retry=_retry(template.get("retryStrategy"), where),
            deadline=_seconds(template, where),
            volumes=volumes,
            script=script,
            script_path=script_path,
            env=env,
            inputs=inputs,
            outputs=outputs,
            resources=resources,
            parameters=parameters,
        )

    def _scope(self, ws: WorkflowStep) -> _Scope:
        """Walk the call chain from the entrypoint down to the step's template."""
        scope = _Scope({}, {})
        when: list[str] = []
        loop = ""
        last = len(ws.chain) - 1
        for i, link in enumerate(ws.chain):
            template = link.template
            where = f"step {ws.name}: template {template['name']}"
            if link.call is None:  # the entrypoint takes the workflow's parameters
                passed = dict(self.workflow_parameters)
                passed_artifacts: dict[str, Source] = {}
            else:
                caller_values = dict(self.global_values)
                caller_values.update(
                    {f"inputs.parameters.{k}": v for k, v in scope.parameters.items()}
                )
                if link.has_item:
                    caller_values.update(_item_values(link.item))
                if i == last and ws.deferred_loop:
                    loop = _substitute(
                        _text(link.call.get("withParam", "")), caller_values, where, link.siblings
                    )
                if link.when:
                    when.append(
                        _substitute(link.when, caller_values, where, link.siblings)
                    )
                arguments = link.call.get("arguments") or {}
                passed = {
                    e["name"]: _substitute(
                        _text(e.get("value", "")), caller_values, where, link.siblings
                    )
                    for e in _entries(arguments, "parameters")
                    if "value" in e
                }
                passed_artifacts = {}
                for e in _entries(arguments, "artifacts"):
                    source = self._argument_source(
                        e, scope, ws.siblings if i == last else {}, caller_values, where
                    )
                    if source is not None:
                        passed_artifacts[e["name"]] = source

            parameters: dict[str, str] = {}
            for e in _entries(template.get("inputs"), "parameters"):
                name = e["name"]
                if name in passed:
                    parameters[name] = passed[name]
                elif "value" in e or "default" in e:
                    raw = e["value"] if "value" in e else e["default"]
                    parameters[name] = _substitute(_text(raw), self.global_values, where)
                else:
                    raise PlanError(
                        f"{where}: input parameter {name} has no value (pass it in the "
                        f"calling step's arguments or give it a default)"
                    )

            artifacts: dict[str, Source] = {}
            for e in _entries(template.get("inputs"), "artifacts"):
                name = e["name"]
                if name in passed_artifacts:
                    artifacts[name] = passed_artifacts[name]
                elif "raw" in e:
                    artifacts[name] = Source(raw=_raw_data(e, self.global_values, where))
                elif any(key in e for key in (*_OTHER_SOURCES, "from")):
                    key = next(k for k in (*_OTHER_SOURCES, "from") if k in e)
                    raise PlanError(
                        f"{where}: input artifact {name}: {key} sources are not supported "
                        f"by the local runtime"
                    )
                elif name in self.artifact_urls:
                    artifacts[name] = Source(url=self.artifact_urls[name], binding=name)
                elif not e.get("optional"):
                    raise PlanError(
                        f"{where}: input artifact {name} is not bound in the configuration"
                    )
            scope = _Scope(parameters, artifacts, when, loop)
        return scope

    def _argument_source(
        self,
        entry: dict,
        caller: _Scope,
        siblings: dict[str, str],
        caller_values: dict[str, str],
        where: str,
    ) -> Source | None:
        """The source an argument artifact gives; None when it gives none (the input is
        then bound by name from the configuration)."""
        name = entry["name"]
        if "raw" in entry:
            return Source(raw=_raw_data(entry, caller_values, where))
        if "from" in entry:
            text = _text(entry["from"])
            match = _FROM_INPUT_RE.match(text)
            if match:
                source = caller.artifacts.get(match.group(1))
                if source is None:
                    raise PlanError(f"{where}: artifact {name}: {text} has no value here")
                return source
            match = _FROM_STEP_RE.match(text)
            if match:
                step = siblings.get(match.group(1))
                if step is None:
                    raise PlanError(
                        f"{where}: artifact {name}: {text} names no earlier step that runs "
                        f"a container or script"
                    )
                return Source(step=step, output=match.group(2))
            raise PlanError(f"{where}: artifact {name}: from {text!r} is not supported")
        other = next((k for k in _OTHER_SOURCES if k in entry), None)
        if other:
            raise PlanError(
                f"{where}: artifact {name}: {other} sources are not supported by the local runtime"
            )
        return None


def loop_item(step: PlannedStep, index: int, item: Any, work_dir: Path) -> PlannedStep:
    """Item ``index`` of a deferred loop (``step.loop``): a step of its own, named
    ``name(index:item)``, with a root of its own and ``{{item}}`` / ``{{item.KEY}}``
    pasted in."""
    name = f"{step.name}({index}:{item_label(item)})"
    root = step_root(work_dir, name)
    values = _item_values(item)
    old_root = str(step.root)

    def paste(text: str) -> str:
        text = _PLACEHOLDER_RE.sub(lambda m: values.get(m.group(1), m.group(0)), text)
        return text.replace(old_root + "/", str(root) + "/") if old_root in text else text

    def moved(path: Path) -> Path:
        try:
            return root / path.relative_to(step.root)
        except ValueError:
            return path

    script_path = None if step.script_path is None else work_dir / SCRIPTS_DIR / name
    argv = [paste(a) for a in step.argv]
    if step.script_path is not None:
        argv = [str(script_path) if a == str(step.script_path) else a for a in argv]
    return dataclasses.replace(
        step,
        name=name,
        argv=argv,
        root=root,
        loop="",
        when=tuple(paste(w) for w in step.when),
        script=None if step.script is None else paste(step.script),
        script_path=script_path,
        env={k: paste(v) for k, v in step.env.items()},
        inputs=[dataclasses.replace(i, path=moved(i.path)) for i in step.inputs],
        outputs=[dataclasses.replace(o, path=moved(o.path)) for o in step.outputs],
        parameters=[dataclasses.replace(p, path=moved(p.path)) for p in step.parameters],
    )


def _item_values(item: Any) -> dict[str, str]:
    """``item`` and ``item.KEY`` for one item of a loop."""
    if isinstance(item, dict | list):
        values = {"item": json.dumps(item, separators=(",", ":"))}
    else:
        values = {"item": _text(item)}
    if isinstance(item, dict):
        for key, value in item.items():
            values[f"item.{key}"] = (
                json.dumps(value, separators=(",", ":"))
                if isinstance(value, dict | list)
                else _text(value)
            )
    return values


def _seconds(holder: dict, where: str) -> float | None:
    value = holder.get("activeDeadlineSeconds")
    if value is None:
        return None
    try:
        seconds = float(int(str(value)))
    except ValueError:
        raise PlanError(f"{where}: activeDeadlineSeconds {value!r} is not seconds") from None
    if seconds <= 0:
        raise PlanError(f"{where}: activeDeadlineSeconds must be positive")
    return seconds


_HANDLING_RESULTS = ("Failed", "Errored", "AllFailed")

_DURATION_PART_RE = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ns|us|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration_seconds(value: Any) -> float:
    """A duration as Argo writes it (``30``, ``"30"``, ``"10s"``, ``"1m30s"``) in seconds.
    Raises ValueError."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip()
    if text.isdigit():
        return float(text)
    parts = _DURATION_PART_RE.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"{value!r} is not a duration")
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)


def _retry(strategy: Any, where: str) -> Retry | None:
    if not isinstance(strategy, dict):
        return None
    backoff = strategy.get("backoff") or {}
    try:
        limit = int(str(strategy.get("limit", 0)))
        duration = duration_seconds(backoff.get("duration", 0))
        factor = int(str(backoff.get("factor", 1)))
        max_duration = (
            duration_seconds(backoff["maxDuration"]) if "maxDuration" in backoff else None
        )
    except ValueError as exc:
        raise PlanError(f"{where}: retryStrategy: {exc}") from None
    return Retry(
        limit=max(0, limit),
        policy=str(strategy.get("retryPolicy") or "OnFailure"),
        duration=duration,
        factor=max(1, factor),
        max_duration=max_duration,
    )


def _substitute(
    text: str, values: dict[str, str], where: str, siblings: dict[str, str] | None = None
) -> str:
    """Paste the values; outputs of other steps and the workflow's status stay for
    :func:`resolve_late`, a sibling's local name (``siblings``) rewritten to its step
    name."""

    def replace(match: re.Match) -> str:
        key = match.group(1)
        if key in values:
            return values[key]
        if key in _EXIT_VALUES:
            return match.group(0)
        late = _LATE_OUTPUT_RE.match(key)
        if late is not None:
            step = late.group("step")
            if siblings and step in siblings:
                return f"{{{{steps.{siblings[step]}.outputs.{late.group('what')}}}}}"
            return match.group(0)
        if key.startswith(_RESOLVED_FAMILIES):
            raise PlanError(f"{where}: cannot resolve {{{{{key}}}}}")
        return match.group(0)

    return _PLACEHOLDER_RE.sub(replace, text)


def _late_keys(step: PlannedStep) -> list[str]:
    texts = [*step.argv, *step.env.values(), *step.when, step.script or "", step.loop]
    return [
        m.group(1)
        for text in texts
        for m in _PLACEHOLDER_RE.finditer(text)
        if m.group(1) in _EXIT_VALUES or _LATE_OUTPUT_RE.match(m.group(1))
    ]


def late_key(step: str, what: str) -> str:
    """The key of a step's output for :func:`resolve_late`: ``what`` is
    ``parameters.NAME`` or ``result``."""
    return f"steps.{step}.outputs.{what}"


def resolve_late(text: str, values: Mapping[str, str], where: str) -> str:
    """Resolve what :func:`_substitute` left: step outputs (keys from :func:`late_key`),
    ``workflow.status`` and ``workflow.failures``. Raises :class:`PlanError` for one
    without a value."""

    def replace(match: re.Match) -> str:
        key = match.group(1)
        if key not in _EXIT_VALUES and _LATE_OUTPUT_RE.match(key) is None:
            return match.group(0)
        late = _LATE_OUTPUT_RE.match(key)
        if late is not None:
            key = late_key(late.group("step"), late.group("what"))
        if key not in values:
            raise PlanError(f"{where}: {match.group(0)} has no value")
        return values[key]

    return _PLACEHOLDER_RE.sub(replace, text)


@dataclass(frozen=True, slots=True)
class Failure:
    """A failed (or stopped) step for ``{{workflow.failures}}``, with Argo's fields."""

    display_name: str  # the step's name, as its step details name it
    message: str
    template_name: str
    phase: str  # "Failed": it ran and failed, or was stopped; "Error": it could not run
    pod_name: str  # what ran it (``process group 12``, ``container 4f2a...``), or ""
    finished_at: datetime | None


def failures_value(failures: list[Failure]) -> str:
    """``{{workflow.failures}}`` as Argo pastes it: the JSON list of the failures
    (``null`` for none, as Go writes an empty list) written as a double-quoted string,
    so that ``echo {{workflow.failures}}`` in a shell prints the list and
    ``json.loads({{workflow.failures}})`` in a Python script reads it."""
    nodes = [
        {
            "displayName": f.display_name,
            "message": f.message,
            "templateName": f.template_name,
            "phase": f.phase,
            "podName": f.pod_name,
            "finishedAt": None
            if f.finished_at is None
            else f.finished_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        for f in failures
    ]
    text = json.dumps(nodes or None, ensure_ascii=False, separators=(",", ":"))
    return json.dumps(text, ensure_ascii=False)


def _in_root(root: Path, path: str, where: str) -> Path:
    """An artifact path of the template, inside the step's root (``..`` cannot leave it)."""
    relative = posixpath.normpath("/" + path).lstrip("/")
    if not path or not relative:
        raise PlanError(f"{where}: needs a path below /")
    return root / relative


def _raw_data(entry: dict, values: dict[str, str], where: str) -> str:
    raw = entry.get("raw")
    data = raw.get("data") if isinstance(raw, dict) else None
    if not isinstance(data, str):
        raise PlanError(f"{where}: artifact {entry['name']}: raw needs data")
    return _substitute(data, values, where)


def _entries(holder: Any, key: str) -> list[dict]:
    if not isinstance(holder, dict):
        return []
    return [e for e in holder.get(key) or [] if isinstance(e, dict) and e.get("name")]


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
