"""The control plane's use cases: what each API call does, free of protobuf and peewee.

API handlers call these methods; the runtime reports progress through ``transition``
and ``update_execution``. Every committed change of an execution is announced to the
``listeners`` (status watch streams subscribe there).

The methods that read or write are coroutines: the store (a port, server/domain/ports.py)
runs its work off the event loop, so a slow or locked database delays only the calls
that need it. Nothing here relies on the absence of an ``await`` between a read and a
write: lifecycle changes are compare-and-set in the store, and watchers order what they
hear by the history's sequence numbers.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from server.domain import lifecycle, resources, templates, validation, workflow
from server.domain.audit import SYSTEM_CALLER, AuditEvent, AuditFilter, Caller
from server.domain.errors import (
    DomainError,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Reason,
    StoreUnavailable,
)
from server.domain.ids import time_ordered_id
from server.domain.models import (
    Artifact,
    ArtifactKind,
    Configuration,
    Executable,
    ExecutableStep,
    Execution,
    Page,
    Scenario,
    Status,
    StepDetail,
    StepPhase,
    TargetStatus,
    Transition,
)
from server.domain.paging import PageTokens, page_request
from server.domain.principal import ADMIN, ALL_GROUPS
from server.domain.secrets import SecretRef, SecretService, check_references, references
from server.domain.validation import Violations

if TYPE_CHECKING:
    from server.domain.ports import Store
    from server.runtime.base import Runtime

log = structlog.get_logger(__name__)

MAX_DEFINITION_BYTES = 1024 * 1024
MAX_BATCH = 100
# Creates written in one transaction at most: bounds the time one write holds the
# store's write lock.
MAX_GROUP = 256
# Turns of the event loop a group waits for more creates before it is written: gRPC
# takes several turns per call, so each turn may bring in creates that then share the
# commit. On SQLite a commit takes a fraction of a millisecond, so without this wait
# nearly every create under load had a transaction (and a writer hand-off) of its own.
# An idle loop runs these turns in well under a millisecond.
GROUP_TURNS = 32
# ... but never longer than this (seconds), however long the loop's turns take.
MAX_GROUP_WAIT = 0.005


# A create waiting for its grouped write: execution, request id, the caller's future
# and context.
_WaitingCreate = tuple[Execution, str, asyncio.Future, contextvars.Context, AuditEvent]


def new_id() -> str:
    """A resource id: 20 hex digits, in time order (see server/domain/ids.py)."""
    return time_ordered_id()


@dataclass(slots=True)
class ExecutionEvent:
    """A committed change of one execution, for watchers."""

    kind: str  # "created" | "transition" | "step" | "deleted"
    execution: Execution
    transition: Transition | None = None
    step: StepDetail | None = None
    # The replica the change was made on, for a change heard from another replica;
    # "" for a change made here.
    origin: str = ""


@dataclass(slots=True)
class BatchOutcome:
    execution_id: str
    ok: bool
    code: str = "OK"
    reason: str = ""
    message: str = ""
    status: Status | None = None


def _check_execution_id(execution_id: str) -> None:
    """InvalidArgument naming ``execution_id`` unless it is a well-formed id."""
    v = Violations()
    validation.check_id(v, "execution_id", execution_id)
    v.raise_if_any()


@dataclass
class ControlPlane:
    store: Store
    default_resource_group: str = "default"
    runtime: Runtime | None = None
    # The resource plan table (server/domain/resources.py): name -> what a step may use.
    resource_plans: Mapping[str, resources.Resources] = field(
        default_factory=lambda: dict(resources.DEFAULT_PLANS)
    )
    # The secrets of the resource groups: what executions' steps refer to.
    secrets: SecretService | None = None
    listeners: list[Callable[[ExecutionEvent], None]] = field(default_factory=list)
    # Signs the page tokens of every list (server/domain/paging.py).
    page_tokens: PageTokens = field(default_factory=PageTokens)
    # Creates waiting for their grouped write, and the step names of each executable.
    _creates: list[_WaitingCreate] = field(default_factory=list, init=False, repr=False)
    _writing: asyncio.Task | None = field(default=None, init=False, repr=False)
    _steps: dict[tuple[str, str, str, str], list[ExecutableStep]] = field(
        default_factory=dict, init=False, repr=False
    )
    _secret_refs: dict[tuple[str, str, str, str], list[SecretRef]] = field(
        default_factory=dict, init=False, repr=False
    )

    # ------------------------------------------------------------------ events

    def _announce(self, event: ExecutionEvent) -> None:
        for listener in list(self.listeners):
            try:
                listener(event)
            except Exception:  # a faulty listener must not break a state change
                log.exception("execution listener failed", execution_id=event.execution.id)

    def receive_remote(self, event: ExecutionEvent) -> None:
        """A change committed by another replica (``event.origin``), as rebuilt from
        the store by the cross-replica notifier: announced to the listeners like a
        change made here."""
        self._announce(event)

    # -------------------------------------------------------------- executables

    async def register_executable(
        self, resource_group: str, definition: str, caller: Caller = SYSTEM_CALLER
    ) -> tuple[Executable, bool]:
        if not definition.strip():
            raise InvalidArgument.of("definition", "is required")
        if len(definition.encode()) > MAX_DEFINITION_BYTES:
            raise InvalidArgument.of("definition", "must be at most 1 MiB")
        # YAML parsing takes milliseconds for a large template: off the loop.
        parsed = await asyncio.to_thread(templates.parse_template_text, definition, resource_group)
        if len(parsed) != 1:
            raise InvalidArgument.of(
                "definition", f"must hold exactly one WorkflowTemplate, found {len(parsed)}"
            )
        self.check_resources(parsed[0])
        exe = parsed[0]
        await self._add_referenced_artifacts(exe)
        event = caller.event("register", "executable", f"{exe.id}@{exe.version}", resource_group)
        return await self.store.put_executable(exe, audit=event)

    def check_resources(self, exe: Executable) -> None:
        """InvalidArgument naming every unknown resource plan (reason
        RESOURCE_PLAN_UNKNOWN), bad ``resources`` quantity and malformed secret
        reference of the executable."""
        violations = resources.check_spec(exe.spec, self.resource_plans)
        violations += [
            FieldViolation(path, why)
            for path, why in check_references(references(exe.spec))
        ]
        if not violations:
            return
        unknown_plan = any(resources.names_unknown_plan(v) for v in violations)
        listed = "; ".join(f"{v.field}: {v.description}" for v in violations)
        raise InvalidArgument(
            message=f"invalid workflow template: {listed}",
            reason=Reason.RESOURCE_PLAN_UNKNOWN if unknown_plan else Reason.INVALID_ARGUMENT,
            violations=violations,
        )

    async def load_executables(
        self, directory: str | Path, resource_group: str
    ) -> list[Executable]:
        """Load every template of ``directory`` into ``resource_group`` (the server loads
        its executables directory into SHARED_GROUP: every group sees those); broken
        files are logged and skipped."""
        loaded, failures = await asyncio.to_thread(
            templates.load_directory, directory, resource_group
        )
        stored: list[Executable] = []
        waiting = list(loaded)  # one whose templateRef names a later file waits for it
        while waiting:
            errors: list[tuple[Executable, DomainError]] = []
            for exe in waiting:
                try:
                    self.check_resources(exe)
                    await self._add_referenced_artifacts(exe)
                    stored.append((await self.store.put_executable(exe))[0])
                except DomainError as exc:
                    errors.append((exe, exc))
            if len(errors) == len(waiting):
                for exe, exc in errors:
                    log.warning("executable not loaded", executable_id=exe.id, error=str(exc))
                break
            waiting = [exe for exe, _ in errors]
        for path, error in failures:
            log.warning("executable file not loaded", file=str(path), error=error)
        return stored

    async def _add_referenced_artifacts(self, exe: Executable) -> None:
        """Check the executable's templateRefs (see template_library) and add the input
        and output artifacts of the templates they run to its own."""
        library = await self._referenced(exe.resource_group, exe.spec)
        if library:
            exe.output_artifacts += templates.referenced_output_artifacts(exe, library)
            exe.input_artifacts += templates.referenced_input_artifacts(exe, library)

    async def template_library(
        self, resource_group: str, spec: dict, *, created: bool = False
    ) -> dict[str, dict]:
        """The specs of the executables the spec's templateRefs name (and theirs), by
        id: their latest versions in ``resource_group``. Raises InvalidArgument naming
        the field of a reference to a missing executable or template (reason
        TEMPLATE_REF_NOT_FOUND; FailedPrecondition when ``created``: an execution)."""
        found = await self._referenced(resource_group, spec, created=created)
        return {executable_id: exe.spec for executable_id, exe in found.items()}

    async def _referenced(
        self, resource_group: str, spec: dict, *, created: bool = False
    ) -> dict[str, Executable]:
        """:meth:`template_library` with the executables themselves."""
        library: dict[str, Executable] = {}
        violations: list[FieldViolation] = []
        queue = [(ref, "") for ref in workflow.template_refs(spec)]
        while queue:
            ref, via = queue.pop(0)
            where = f"{via}{ref.path}" if not via else f"{ref.path} (in executable {via})"
            if ref.executable not in library:
                try:
                    found = await self.store.get_executable(resource_group, ref.executable)
                except NotFound:
                    violations.append(
                        FieldViolation(
                            f"{where}.name",
                            f"no executable {ref.executable!r} in resource group "
                            f"{resource_group!r}",
                        )
                    )
                    continue
                library[ref.executable] = found
                queue += [(r, ref.executable) for r in workflow.template_refs(found.spec)]
            names = {
                t.get("name")
                for t in library[ref.executable].spec.get("templates") or []
                if isinstance(t, dict)
            }
            if ref.template not in names:
                violations.append(
                    FieldViolation(
                        f"{where}.template",
                        f"executable {ref.executable!r} has no template {ref.template!r}",
                    )
                )
        if violations:
            listed = "; ".join(f"{v.field}: {v.description}" for v in violations)
            if created:
                raise FailedPrecondition(
                    message=f"the executable's templateRef cannot be resolved: {listed}",
                    reason=Reason.TEMPLATE_REF_NOT_FOUND,
                )
            raise InvalidArgument(
                message=f"invalid workflow template: {listed}",
                reason=Reason.TEMPLATE_REF_NOT_FOUND,
                violations=violations,
            )
        return library

    async def steps_of(self, executable: Executable) -> list[ExecutableStep]:
        """:meth:`executable_steps`, with the templates its templateRefs name."""
        if not workflow.template_refs(executable.spec):
            return self.executable_steps(executable)
        try:
            library = await self.template_library(executable.resource_group, executable.spec)
        except DomainError:
            return []
        return self.executable_steps(executable, library)

    async def get_executable(
        self, resource_group: str, executable_id: str, version: str = ""
    ) -> Executable:
        v = Violations()
        validation.check_id(v, "executable_id", executable_id)
        v.raise_if_any()
        return await self.store.get_executable(resource_group, executable_id, version)

    async def list_executables(
        self,
        resource_group: str,
        page_size: int,
        page_token: str,
        scenario_id: str = "",
        all_versions: bool = False,
    ) -> Page[Executable]:
        filters = {"scenario_id": scenario_id, "all_versions": all_versions}
        page = page_request(page_size, page_token, filters, tokens=self.page_tokens)
        return await self.store.list_executables(resource_group, page, scenario_id, all_versions)

    # ---------------------------------------------------------------- scenarios

    async def get_scenario(self, resource_group: str, scenario_id: str) -> tuple[Scenario, int]:
        v = Violations()
        validation.check_id(v, "scenario_id", scenario_id)
        v.raise_if_any()
        scenario = await self.store.get_scenario(resource_group, scenario_id)
        return scenario, await self.store.count_executables(resource_group, scenario_id)

    async def list_scenarios(
        self, resource_group: str, page_size: int, page_token: str
    ) -> Page[tuple[Scenario, int]]:
        page = await self.store.list_scenarios(
            resource_group, page_request(page_size, page_token, {}, tokens=self.page_tokens)
        )
        items = [(s, await self.store.count_executables(resource_group, s.id)) for s in page.items]
        return Page(items, page.next_page_token, page.total_size)

    # ---------------------------------------------------------------- artifacts

    async def create_artifact(
        self,
        resource_group: str,
        *,
        name: str,
        kind: ArtifactKind | None,
        url: str,
        scenario_id: str,
        description: str = "",
        labels: dict[str, str] | None = None,
        request_id: str = "",
        caller: Caller = SYSTEM_CALLER,
    ) -> Artifact:
        labels = labels or {}
        v = Violations()
        validation.check_name(v, "artifact.name", name)
        if kind is None:
            v.add("artifact.kind", "is required")
        validation.check_url(v, "artifact.url", url)
        validation.check_id(v, "artifact.scenario_id", scenario_id)
        validation.check_text(v, "artifact.description", description)
        validation.check_labels(v, "artifact.labels", labels)
        validation.check_request_id(v, request_id)
        v.raise_if_any()
        await self.store.get_scenario(resource_group, scenario_id)
        artifact = Artifact(
            id=new_id(),
            resource_group=resource_group,
            name=name,
            kind=kind,
            url=url,
            scenario_id=scenario_id,
            description=description,
            labels=labels,
            created_by=caller.name,
        )
        event = caller.event("create", "artifact", artifact.id, resource_group)
        return await self.store.create_artifact(artifact, request_id, audit=event)

    async def register_output_artifact(self, artifact: Artifact) -> Artifact:
        """Runtime use: register an artifact an execution produced."""
        if not artifact.id:
            artifact.id = new_id()
        return await self.store.create_artifact(artifact)

    async def get_artifact(self, resource_group: str, artifact_id: str) -> Artifact:
        v = Violations()
        validation.check_id(v, "artifact_id", artifact_id)
        v.raise_if_any()
        return await self.store.get_artifact(resource_group, artifact_id)

    async def list_artifacts(
        self,
        resource_group: str,
        page_size: int,
        page_token: str,
        *,
        scenario_id: str = "",
        kind: ArtifactKind | None = None,
        execution_id: str = "",
        labels: dict[str, str] | None = None,
        name: str = "",
    ) -> Page[Artifact]:
        v = Violations()
        validation.check_labels(v, "labels", labels or {})
        v.raise_if_any()
        filters = {
            "scenario_id": scenario_id,
            "kind": str(kind or ""),
            "execution_id": execution_id,
            "labels": labels or {},
            "name": name,
        }
        page = page_request(page_size, page_token, filters, tokens=self.page_tokens)
        return await self.store.list_artifacts(
            resource_group,
            page,
            scenario_id=scenario_id,
            kind=kind,
            execution_id=execution_id,
            labels=labels,
            name=name,
        )

    # ----------------------------------------------------------- configurations

    async def create_configuration(
        self,
        resource_group: str,
        *,
        name: str,
        executable_id: str,
        executable_version: str = "",
        scenario_id: str,
        parameters: list[tuple[str, str]],
        artifact_bindings: list[tuple[str, str]],
        request_id: str = "",
        caller: Caller = SYSTEM_CALLER,
    ) -> Configuration:
        v = Violations()
        validation.check_name(v, "configuration.name", name)
        validation.check_id(v, "configuration.executable_id", executable_id)
        validation.check_id(v, "configuration.scenario_id", scenario_id)
        validation.check_request_id(v, request_id)
        for i, (key, _) in enumerate(parameters):
            if not key:
                v.add(f"configuration.parameter_bindings[{i}].key", "is required")
        for i, (key, artifact_id) in enumerate(artifact_bindings):
            if not key:
                v.add(f"configuration.input_artifact_bindings[{i}].key", "is required")
            validation.check_id(
                v, f"configuration.input_artifact_bindings[{i}].artifact_id", artifact_id
            )
        v.raise_if_any()
        executable = await self.store.get_executable(
            resource_group, executable_id, executable_version
        )
        artifacts = {
            a.id: a
            for a in await self.store.get_artifacts(
                resource_group, [aid for _, aid in artifact_bindings]
            )
        }
        resolved, bound = validation.check_configuration(
            executable, scenario_id, parameters, artifact_bindings, artifacts
        )
        configuration = Configuration(
            id=new_id(),
            resource_group=resource_group,
            name=name,
            executable_id=executable.id,
            executable_version=executable.version,
            scenario_id=executable.scenario_id,
            parameter_bindings=resolved,
            input_artifact_bindings=bound,
            created_by=caller.name,
        )
        event = caller.event("create", "configuration", configuration.id, resource_group)
        return await self.store.create_configuration(configuration, request_id, audit=event)

    async def get_configuration(self, resource_group: str, configuration_id: str) -> Configuration:
        v = Violations()
        validation.check_id(v, "configuration_id", configuration_id)
        v.raise_if_any()
        return await self.store.get_configuration(resource_group, configuration_id)

    async def list_configurations(
        self,
        resource_group: str,
        page_size: int,
        page_token: str,
        scenario_id: str = "",
        executable_id: str = "",
    ) -> Page[Configuration]:
        filters = {"scenario_id": scenario_id, "executable_id": executable_id}
        page = page_request(page_size, page_token, filters, tokens=self.page_tokens)
        return await self.store.list_configurations(
            resource_group, page, scenario_id, executable_id
        )

    # --------------------------------------------------------------- executions

    async def create_execution(
        self,
        resource_group: str,
        configuration_id: str,
        request_id: str = "",
        caller: Caller = SYSTEM_CALLER,
        rerun_of: str = "",
    ) -> Execution:
        execution = await self._new_execution(
            resource_group, configuration_id, request_id, rerun_of
        )
        execution.created_by = caller.name
        stored, created = await self.store.create_execution(
            execution,
            request_id,
            audit=caller.event("create", "execution", execution.id, resource_group),
        )
        if created:
            self._execution_created(stored)
        return stored

    async def create_execution_grouped(
        self,
        resource_group: str,
        configuration_id: str,
        request_id: str = "",
        caller: Caller = SYSTEM_CALLER,
        rerun_of: str = "",
    ) -> Execution:
        """:meth:`create_execution`, written together with the creates that arrive
        while an earlier group is being written or in the next few turns of the event
        loop: one transaction and one commit for all of them (group commit). An idle
        server writes a create within a fraction of a millisecond; under load each
        commit takes everything that queued during the one before."""
        execution = await self._new_execution(
            resource_group, configuration_id, request_id, rerun_of
        )
        execution.created_by = caller.name
        event = caller.event("create", "execution", execution.id, resource_group)
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        # The announcement and the runtime's tasks run in the caller's context (its
        # request id on their log lines), the grouped write in a context of its own.
        self._creates.append((execution, request_id, future, contextvars.copy_context(), event))
        if self._writing is None:
            self._writing = loop.create_task(self._write_creates(), context=contextvars.Context())
        return await future

    async def _write_creates(self) -> None:
        """Write the waiting creates, MAX_GROUP per transaction, until none waits; each
        group first waits GROUP_TURNS turns of the loop (at most MAX_GROUP_WAIT) for
        more creates to join it, unless it is full."""
        loop = asyncio.get_running_loop()
        try:
            while self._creates:
                since = loop.time()
                for _ in range(GROUP_TURNS):
                    if len(self._creates) >= MAX_GROUP or loop.time() - since >= MAX_GROUP_WAIT:
                        break
                    await asyncio.sleep(0)
                waiting = self._creates[:MAX_GROUP]
                del self._creates[:MAX_GROUP]
                # A create whose caller went away (deadline, disconnect) is not written.
                waiting = [item for item in waiting if not item[2].done()]
                try:
                    if waiting:
                        await self._write_group(waiting)
                finally:
                    for _, _, future, _, _ in waiting:
                        if not future.done():  # only after a bug: never leave a caller waiting
                            future.set_exception(RuntimeError("execution create not written"))
        finally:
            self._writing = None

    async def _write_group(self, group: list[_WaitingCreate]) -> None:
        items = [(execution, request_id) for execution, request_id, _, _, _ in group]
        events = [event for *_, event in group]
        try:
            results: list = await self.store.create_executions(items, events)
        except StoreUnavailable as exc:  # the store is down: every caller hears it
            results = [exc] * len(items)
        except Exception:  # noqa: BLE001 - retried one by one, each with its own error
            log.warning("grouped create failed; writing one at a time", exc_info=True)
            results = []
            for item, event in zip(items, events, strict=True):
                try:
                    results.append(await self.store.create_execution(*item, audit=event))
                except Exception as exc:  # noqa: BLE001 - handed to that caller
                    results.append(exc)
        for (_, _, future, context, _), result in zip(group, results, strict=True):
            if future.done():
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
                continue
            stored, created = result
            try:
                if created:
                    context.run(self._execution_created, stored)
            except Exception as exc:  # noqa: BLE001 - as when the create ran alone
                future.set_exception(exc)
                continue
            future.set_result(stored)

    async def _new_execution(
        self, resource_group: str, configuration_id: str, request_id: str, rerun_of: str = ""
    ) -> Execution:
        """A validated, not yet stored execution of the configuration; with ``rerun_of``,
        of the configuration of that ended execution."""
        v = Violations()
        validation.check_id(v, "configuration_id", configuration_id, required=not rerun_of)
        validation.check_id(v, "rerun_of", rerun_of, required=False)
        validation.check_request_id(v, request_id)
        v.raise_if_any()
        if rerun_of:
            original = await self.store.get_execution(resource_group, rerun_of, with_history=False)
            lifecycle.check_operation(rerun_of, original.status, lifecycle.Operation.RERUN)
            if configuration_id and configuration_id != original.configuration_id:
                v.add(
                    "configuration_id",
                    f"must be empty or {original.configuration_id!r}, the configuration of "
                    f"the re-run execution {rerun_of}",
                )
                v.raise_if_any()
            configuration_id = original.configuration_id
        configuration = await self.store.get_configuration(resource_group, configuration_id)
        executable = await self.store.get_executable(
            resource_group, configuration.executable_id, configuration.executable_version
        )
        library = (
            await self.template_library(resource_group, executable.spec, created=True)
            if workflow.template_refs(executable.spec)
            else None
        )
        refs = self.secret_references(executable)
        if refs:
            if self.secrets is None:
                raise FailedPrecondition(
                    message="the executable uses secrets, and this server keeps none",
                    reason=Reason.SECRET_NOT_FOUND,
                )
            await self.secrets.require(resource_group, refs)
        return Execution(
            id=new_id(),
            resource_group=resource_group,
            configuration_id=configuration.id,
            executable_id=configuration.executable_id,
            scenario_id=configuration.scenario_id,
            step_details=[
                StepDetail(name=s.name, phase=StepPhase.PENDING)
                for s in self.executable_steps(executable, library)
            ],
            rerun_of=rerun_of,
        )

    def executable_steps(
        self, executable: Executable, library: dict[str, dict] | None = None
    ) -> list[ExecutableStep]:
        """The executable's steps in workflow order, named as step details name them,
        with their templates and resources (a version never changes: kept; the
        templates its templateRefs name are in ``library``, see template_library).
        Empty when the workflow cannot run (the execution's start then says why)."""
        key = (executable.resource_group, executable.id, executable.version, executable.digest)
        if library:
            key += tuple(sorted((k, json.dumps(v, sort_keys=True)) for k, v in library.items()))
        steps = self._steps.get(key)
        if steps is None:
            if len(self._steps) >= 1000:
                self._steps.clear()
            steps = self._steps[key] = self._walk_steps(executable, library)
        return steps

    def secret_references(self, executable: Executable) -> list[SecretRef]:
        """The secrets the executable's steps and pulls use (a version never changes:
        kept)."""
        key = (executable.resource_group, executable.id, executable.version, executable.digest)
        refs = self._secret_refs.get(key)
        if refs is None:
            if len(self._secret_refs) >= 1000:
                self._secret_refs.clear()
            refs = self._secret_refs[key] = references(executable.spec)
        return refs

    def _walk_steps(
        self, executable: Executable, library: dict[str, dict] | None = None
    ) -> list[ExecutableStep]:
        try:
            walked = workflow.walk(executable.spec, library)
        except workflow.WorkflowError:
            return []
        after = workflow.direct_after(walked)
        steps = []
        for ws in walked:
            plan = resources.step_plan([link.template for link in ws.chain]) or ""
            try:
                # A plan given as a placeholder is known only when an execution starts.
                limits = resources.resolve(
                    plan if "{{" not in plan else "",
                    ws.template.get(ws.kind) or {},
                    self.resource_plans,
                )
            except (KeyError, ValueError):
                limits = resources.Resources()
            steps.append(
                ExecutableStep(ws.name, ws.template.get("name", ""), plan, limits, after[ws.name])
            )
        return steps

    def _execution_created(self, execution: Execution) -> None:
        self._announce(ExecutionEvent("created", execution, transition=execution.history[-1]))
        if self.runtime is not None:
            self.runtime.submit(execution.id)

    def on_execution_written(self, callback: Callable[[str], None]) -> None:
        """Call ``callback`` with an execution's id whenever its row or history is
        written or deleted, by anyone, on the event loop once the write has committed
        and before the writer resumes: a cache of what was read drops it then. Unlike
        the listeners, which hear the announced changes, this hears every write."""
        self.store.on_execution_written(callback)

    def on_writes_unheard(self, callback: Callable[[bool], None]) -> None:
        """Call ``callback(True)`` when writes of other replicas may go unheard (a
        cache of reads must drop everything and cache nothing), ``callback(False)``
        when they are heard again; see the store port."""
        self.store.on_writes_unheard(callback)

    async def get_execution(self, resource_group: str, execution_id: str) -> Execution:
        _check_execution_id(execution_id)
        return await self.store.get_execution(resource_group, execution_id)

    async def get_execution_with_context(
        self, resource_group: str, execution_id: str
    ) -> tuple[Execution, dict[str, Artifact], dict[str, str]]:
        """:meth:`get_execution`, with the output artifacts (by id) and configuration
        names (by id) its message shows, read in one store call."""
        _check_execution_id(execution_id)
        return await self.store.execution_with_context(resource_group, execution_id)

    async def execution_history(self, resource_group: str, execution_id: str) -> list[Transition]:
        return (await self.get_execution(resource_group, execution_id)).history

    async def list_executions(
        self,
        resource_group: str,
        page_size: int,
        page_token: str,
        *,
        statuses: Sequence[Status] = (),
        scenario_id: str = "",
        executable_id: str = "",
        configuration_id: str = "",
        rerun_of: str = "",
    ) -> Page[Execution]:
        filters = {
            "statuses": sorted(str(s) for s in statuses),
            "scenario_id": scenario_id,
            "executable_id": executable_id,
            "configuration_id": configuration_id,
        }
        if rerun_of:  # only when set: tokens of lists without it stay as they were
            filters["rerun_of"] = rerun_of
        page = page_request(page_size, page_token, filters, tokens=self.page_tokens)
        return await self.store.list_executions(
            resource_group,
            page,
            statuses=statuses,
            scenario_id=scenario_id,
            executable_id=executable_id,
            configuration_id=configuration_id,
            rerun_of=rerun_of,
        )

    async def stop_execution(
        self, resource_group: str, execution_id: str, caller: Caller = SYSTEM_CALLER
    ) -> Execution:
        _check_execution_id(execution_id)
        stopped = await self.store.request_stop(
            resource_group,
            execution_id,
            audit=caller.event("stop", "execution", execution_id, resource_group),
        )
        self._announce_transition(stopped)
        if self.runtime is not None:
            await self.runtime.stop(execution_id)
        return await self.store.get_execution(resource_group, execution_id)

    async def delete_execution(
        self,
        resource_group: str,
        execution_id: str,
        keep_metrics: bool = False,
        caller: Caller = SYSTEM_CALLER,
    ) -> None:
        _check_execution_id(execution_id)
        execution = await self.store.get_execution(resource_group, execution_id, with_history=False)
        await self.store.delete_execution(
            resource_group,
            execution_id,
            keep_metrics,
            audit=caller.event("delete", "execution", execution_id, resource_group),
        )
        execution.target_status = TargetStatus.DELETED
        self._announce(ExecutionEvent("deleted", execution))
        if self.runtime is not None:
            self.runtime.forget(execution_id)

    async def _batch(
        self, execution_ids: Sequence[str], action: Callable[[str], Any]
    ) -> list[BatchOutcome]:
        v = Violations()
        if not execution_ids:
            v.add("execution_ids", "at least one id is required")
        if len(execution_ids) > MAX_BATCH:
            v.add("execution_ids", f"at most {MAX_BATCH} ids")
        seen: set[str] = set()
        for i, eid in enumerate(execution_ids):
            validation.check_id(v, f"execution_ids[{i}]", eid)
            if eid in seen:
                v.add(f"execution_ids[{i}]", f"duplicate id {eid!r}")
            seen.add(eid)
        v.raise_if_any()
        outcomes = []
        for eid in execution_ids:
            try:
                result = await action(eid)
                status = result.status if isinstance(result, Execution) else None
                outcomes.append(BatchOutcome(eid, True, status=status))
            except DomainError as exc:
                status = exc.metadata.get("status")
                outcomes.append(
                    BatchOutcome(
                        eid,
                        False,
                        code=exc.code,
                        reason=exc.reason,
                        message=exc.message,
                        status=Status(status) if status else None,
                    )
                )
        return outcomes

    async def batch_stop(
        self,
        resource_group: str,
        execution_ids: Sequence[str],
        caller: Caller = SYSTEM_CALLER,
    ) -> list[BatchOutcome]:
        return await self._batch(
            execution_ids, lambda eid: self.stop_execution(resource_group, eid, caller)
        )

    async def batch_delete(
        self,
        resource_group: str,
        execution_ids: Sequence[str],
        keep_metrics: bool = False,
        caller: Caller = SYSTEM_CALLER,
    ) -> list[BatchOutcome]:
        return await self._batch(
            execution_ids,
            lambda eid: self.delete_execution(resource_group, eid, keep_metrics, caller),
        )

    # ------------------------------------------------------------- audit trail

    async def list_audit_events(
        self,
        resource_group: str,
        caller: Caller,
        page_size: int,
        page_token: str,
        *,
        where: AuditFilter,
        all_groups: bool = False,
    ) -> Page[AuditEvent]:
        """The trail of one resource group (or, for an admin of every group, of all),
        newest first."""
        if all_groups:
            if caller.principal.roles.get(ALL_GROUPS) != ADMIN:
                raise PermissionDenied(
                    message="reading every group's audit trail needs the admin role on '*'",
                    reason=Reason.PERMISSION_DENIED,
                    metadata={"role": ADMIN, "resource_group": ALL_GROUPS},
                )
            where.resource_group = ""
        else:
            where.resource_group = resource_group
        v = Violations()
        for name in ("principal", "action", "resource_type", "resource_id"):
            validation.check_text(v, name, getattr(where, name))
        v.raise_if_any()
        filters = {
            "all": all_groups,
            "principal": where.principal,
            "action": where.action,
            "resource_type": where.resource_type,
            "resource_id": where.resource_id,
            "since": where.since_us,
            "until": where.until_us,
        }
        page = page_request(page_size, page_token, filters, tokens=self.page_tokens)
        return await self.store.list_audit_events(where, page)

    # ----------------------------------------------------------- runtime reports

    def _announce_transition(self, execution: Execution) -> None:
        """Announce a written move (the store returns it with its whole history)."""
        self._announce(ExecutionEvent("transition", execution, transition=execution.history[-1]))

    async def transition(
        self,
        execution_id: str,
        to_status: Status,
        cause: str,
        message: str = "",
        **kwargs: Any,
    ) -> Execution:
        """Runtime use: move an execution along the lifecycle and announce it."""
        execution = await self.store.transition(execution_id, to_status, cause, message, **kwargs)
        self._announce_transition(execution)
        return execution

    async def record_unchanged(
        self, execution_id: str, cause: str, message: str, **kwargs: Any
    ) -> Execution:
        """Runtime use: a history entry that keeps the status, announced as a move."""
        execution = await self.store.record_unchanged(execution_id, cause, message, **kwargs)
        self._announce_transition(execution)
        return execution

    async def update_execution(
        self, execution_id: str, *, changed_step: StepDetail | None = None, **kwargs: Any
    ) -> Execution:
        """Runtime use: update step details, outputs or the submit time."""
        if changed_step is not None:
            kwargs["changed_step"] = changed_step.name
        execution = await self.store.update_execution(execution_id, **kwargs)
        if changed_step is not None:
            self._announce(ExecutionEvent("step", execution, step=changed_step))
        return execution

    async def require_execution(self, resource_group: str, execution_id: str) -> Execution:
        """The execution without history; NotFound outside ``resource_group``."""
        _check_execution_id(execution_id)
        return await self.store.get_execution(resource_group, execution_id, with_history=False)
