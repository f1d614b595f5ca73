"""The repository: every read and write of Trainyard's metadata.

Methods are synchronous and short; each write is one transaction (``atomic``), so a
transaction never spans an ``await`` of the event loop. Rows become domain objects
here; peewee's IntegrityError and DoesNotExist become AlreadyExists and NotFound.
"""

from __future__ import annotations

import functools
import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from itertools import chain
from typing import Any

import peewee as pw

from server.domain import lifecycle
from server.domain.errors import (
    AlreadyExists,
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    StoreUnavailable,
)
from server.domain.models import (
    Artifact,
    ArtifactKind,
    Configuration,
    Executable,
    Execution,
    InputArtifactSpec,
    Lease,
    LogLine,
    LogStream,
    OutputArtifactSpec,
    Page,
    ParameterSpec,
    ParameterType,
    Scenario,
    Status,
    StepDetail,
    StepPhase,
    TargetStatus,
    Transition,
)
from server.domain.paging import PageRequest
from server.store import tables
from server.store.dialects import open_database

STREAM_CODES = {LogStream.STDOUT: 1, LogStream.STDERR: 2, LogStream.SYSTEM: 3}
STREAM_NAMES = {v: k for k, v in STREAM_CODES.items()}
# Stored names -> enum members by dictionary (calling the enum class costs a few times more).
STATUSES = {str(s): s for s in Status}
TARGET_STATUSES = {str(s): s for s in TargetStatus}
STEP_PHASES = {str(p): p for p in StepPhase}

# Times a compare-and-set write reads again after another writer changed the row.
CAS_ATTEMPTS = 16


class _Conflict(Exception):
    """The row changed between this transaction's read and its conditional write."""


def _check_lease(row: dict, lease: Lease | None) -> None:
    """Refuse a runtime write made under a lease another replica has since taken."""
    if lease is not None and (row["owner"] != lease.owner or row["fence"] != lease.token):
        raise FailedPrecondition(
            message=(
                f"execution {row['execution_id']} is no longer run by {lease.owner}"
                f" (claim {lease.token}); another replica took it over"
            ),
            reason="LEASE_LOST",
            metadata={"execution_id": row["execution_id"], "owner": row["owner"] or ""},
        )


# The condition, on a read of one execution's log lines, that the execution is not
# deleted (queued for purging): its lines vanish from every read with the delete's
# commit, though the purger removes them later. Its parameter is the execution id.
_NOT_PURGED = "AND NOT EXISTS (SELECT 1 FROM log_purge AS p WHERE p.execution_id = ?)"
# Log lines deleted per purge transaction (Store.purge_logs).
PURGE_CHUNK = 20_000

# Rows per INSERT statement of log lines (6 parameters each; SQLite allows 32,766).
LOG_INSERT_ROWS = 4096


@functools.cache
def _log_insert_sql(rows: int) -> str:
    return (
        "INSERT INTO log_line (execution_id, seq, at_us, step, stream, text) VALUES "
        + ",".join(["(?,?,?,?,?,?)"] * rows)
    )


def now_us() -> int:
    return time.time_ns() // 1000


def to_dt(us: int | None) -> datetime | None:
    if us is None:
        return None
    return datetime.fromtimestamp(us / 1_000_000, tz=UTC)


def to_us(dt: datetime | None) -> int | None:
    if dt is None:
        return None
    return int(dt.timestamp() * 1_000_000)


def _int_key(after: Any, field: str = "page_token") -> int:
    if not isinstance(after, int) or isinstance(after, bool):
        raise InvalidArgument.of(field, "malformed page token", reason="INVALID_PAGE_TOKEN")
    return after


def _str_key(after: Any, parts: int, field: str = "page_token") -> list[str]:
    if (
        not isinstance(after, list)
        or len(after) != parts
        or not all(isinstance(x, str) for x in after)
    ):
        raise InvalidArgument.of(field, "malformed page token", reason="INVALID_PAGE_TOKEN")
    return after


def request_digest(payload: Any) -> str:
    raw = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(raw.encode()).hexdigest()


def _request_id_reused(request_id: str) -> FailedPrecondition:
    return FailedPrecondition(
        message=f"request_id {request_id!r} was already used for a different request",
        reason="REQUEST_ID_REUSED",
        metadata={"request_id": request_id},
    )


# ----------------------------------------------------------------------------- rows


def _step_to_json(step: StepDetail) -> dict:
    return {
        "name": step.name,
        "phase": str(step.phase),
        "started_us": to_us(step.started_at),
        "finished_us": to_us(step.finished_at),
        "exit_code": step.exit_code,
        "message": step.message,
    }


def _step_from_json(data: dict) -> StepDetail:
    return StepDetail(
        name=data["name"],
        phase=STEP_PHASES[data["phase"]],
        started_at=to_dt(data.get("started_us")),
        finished_at=to_dt(data.get("finished_us")),
        exit_code=data.get("exit_code"),
        message=data.get("message", ""),
    )


def _scenario(row: tables.ScenarioRow) -> Scenario:
    return Scenario(
        id=row.scenario_id,
        resource_group=row.resource_group,
        name=row.name,
        description=row.description,
        labels=dict(row.labels or {}),
        created_at=to_dt(row.created_us),
        modified_at=to_dt(row.modified_us),
    )


def _executable(row: tables.ExecutableRow, scenario_name: str = "") -> Executable:
    d = row.definition
    return Executable(
        id=row.executable_id,
        resource_group=row.resource_group,
        name=row.name,
        version=row.version,
        scenario_id=row.scenario_id,
        scenario_name=scenario_name,
        description=row.description,
        deployable=row.deployable,
        labels=dict(row.labels or {}),
        parameters=[
            ParameterSpec(
                name=p["name"],
                type=ParameterType(p["type"]),
                default=p.get("default"),
                description=p.get("description", ""),
            )
            for p in d.get("parameters", [])
        ],
        input_artifacts=[
            InputArtifactSpec(
                name=a["name"],
                kind=ArtifactKind(a["kind"]) if a.get("kind") else None,
                description=a.get("description", ""),
            )
            for a in d.get("input_artifacts", [])
        ],
        output_artifacts=[
            OutputArtifactSpec(
                name=a["name"],
                kind=ArtifactKind(a["kind"]),
                path=a.get("path", ""),
                description=a.get("description", ""),
                step=a.get("step", ""),
            )
            for a in d.get("output_artifacts", [])
        ],
        spec=d.get("spec", {}),
        digest=row.digest,
        created_at=to_dt(row.created_us),
        modified_at=to_dt(row.modified_us),
    )


def _artifact(row: tables.ArtifactRow) -> Artifact:
    return Artifact(
        id=row.artifact_id,
        resource_group=row.resource_group,
        name=row.name,
        kind=ArtifactKind(row.kind),
        url=row.url,
        scenario_id=row.scenario_id,
        description=row.description,
        labels=dict(row.labels or {}),
        execution_id=row.execution_id,
        created_at=to_dt(row.created_us),
        modified_at=to_dt(row.modified_us),
    )


def _configuration(row: tables.ConfigurationRow) -> Configuration:
    return Configuration(
        id=row.configuration_id,
        resource_group=row.resource_group,
        name=row.name,
        executable_id=row.executable_id,
        executable_version=row.executable_version,
        scenario_id=row.scenario_id,
        parameter_bindings=dict(row.parameter_bindings or {}),
        input_artifact_bindings=dict(row.input_artifact_bindings or {}),
        created_at=to_dt(row.created_us),
    )


_EXEC_FIELDS = (
    "id",
    "resource_group",
    "execution_id",
    "configuration_id",
    "executable_id",
    "scenario_id",
    "status",
    "target_status",
    "status_message",
    "step_details",
    "output_artifact_ids",
    "created_us",
    "submitted_us",
    "started_us",
    "completed_us",
    "modified_us",
    "history_len",
    "owner",
    "lease_expires_us",
    "fence",
)
_EXEC_COLUMNS = ", ".join(_EXEC_FIELDS)
_EXEC_INSERT = (
    "resource_group, execution_id, configuration_id, executable_id, scenario_id, status,"
    " target_status, status_message, step_details, output_artifact_ids, created_us,"
    " modified_us, history_len"
)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def _execution_from(row: dict) -> Execution:
    steps = row["step_details"]
    outputs = row["output_artifact_ids"]
    if isinstance(steps, str):
        steps = row["step_details"] = json.loads(steps)
    if isinstance(outputs, str):
        outputs = row["output_artifact_ids"] = [] if outputs == "[]" else json.loads(outputs)
    return Execution(
        id=row["execution_id"],
        resource_group=row["resource_group"],
        configuration_id=row["configuration_id"],
        executable_id=row["executable_id"],
        scenario_id=row["scenario_id"],
        status=STATUSES[row["status"]],
        target_status=TARGET_STATUSES[row["target_status"]],
        status_message=row["status_message"],
        step_details=[_step_from_json(s) for s in steps or []],
        output_artifact_ids=list(outputs or []),
        created_at=to_dt(row["created_us"]),
        submitted_at=to_dt(row["submitted_us"]),
        started_at=to_dt(row["started_us"]),
        completed_at=to_dt(row["completed_us"]),
        modified_at=to_dt(row["modified_us"]),
        owner=row["owner"] or "",
    )


def _executable_definition(exe: Executable) -> dict:
    return {
        "parameters": [
            {
                "name": p.name,
                "type": str(p.type),
                "default": p.default,
                "description": p.description,
            }
            for p in exe.parameters
        ],
        "input_artifacts": [
            {"name": a.name, "kind": str(a.kind) if a.kind else None, "description": a.description}
            for a in exe.input_artifacts
        ],
        "output_artifacts": [asdict(a) | {"kind": str(a.kind)} for a in exe.output_artifacts],
        "spec": exe.spec,
    }


# ----------------------------------------------------------------------- repository


class _Cursor:
    """A driver cursor whose statements are written in portable SQL."""

    __slots__ = ("cursor", "sql")

    def __init__(self, cursor, sql: Callable[[str], str]):
        self.cursor = cursor
        self.sql = sql

    def execute(self, sql: str, args: Sequence[Any] = ()):
        self.cursor.execute(self.sql(sql), args)
        return self.cursor

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]):
        self.cursor.executemany(self.sql(sql), rows)
        return self.cursor


class _Cache:
    """A small LRU map for immutable rows, shared by the store's worker threads."""

    def __init__(self, size: int):
        self.size = size
        self.items: OrderedDict = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key):
        with self.lock:
            value = self.items.get(key)
            if value is not None:
                self.items.move_to_end(key)
            return value

    def put(self, key, value):
        with self.lock:
            self.items[key] = value
            self.items.move_to_end(key)
            while len(self.items) > self.size:
                self.items.popitem(last=False)
        return value


class Store:
    """Trainyard's metadata store on a peewee database (SQLite by default)."""

    def __init__(self, url: str, *, busy_timeout: float = 10.0):
        self.url = url
        self.in_memory = ":memory:" in url
        self.db, self.dialect = open_database(url, busy_timeout=busy_timeout)
        self.kind = self.dialect.name
        # The models, bound to this database only (never process-wide).
        self.t = tables.bind(self.db)
        # Called with the execution id inside delete transactions, so that other parts
        # (metrics) can remove their rows atomically with the execution.
        self.delete_hooks: list = []
        # Called with the execution id whenever a write changes or deletes the
        # execution's row or history (inside the writing transaction, on the writing
        # thread), so that caches of what was read from them can drop it.
        self.execution_write_hooks: list[Callable[[str], None]] = []
        # Immutable resources, cached by key (bounded).
        self._configurations: _Cache = _Cache(10_000)
        self._executables: _Cache = _Cache(1_000)

    def close(self) -> None:
        if not self.db.is_closed():
            self.db.close()

    def atomic(self):
        return self.db.atomic()

    def write_lock(self):
        """A write transaction for a read-check-write (see Dialect.write_transaction)."""
        return self.dialect.write_transaction(self.db)

    def integrity_check(self) -> str:
        return self.dialect.integrity_check(self.db)

    def execute(self, sql: str, args: Sequence[Any] = ()):
        """Run portable SQL (``?`` placeholders) through peewee; returns the cursor."""
        return self.db.execute_sql(self.dialect.sql(sql), args)

    def _select_in(
        self, sql: str, ids: Sequence[str], args: Sequence[Any] = (), suffix: str = ""
    ) -> list[tuple]:
        """Rows of ``sql`` ending in ``... IN`` for every id, 500 ids a statement."""
        rows: list[tuple] = []
        ids = list(ids)
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            rows += self.execute(
                f"{sql} ({', '.join('?' * len(chunk))}){suffix}", [*args, *chunk]
            ).fetchall()
        return rows

    def cursor(self) -> _Cursor:
        """A cursor of this thread's connection that takes portable SQL."""
        return _Cursor(self.db.cursor(), self.dialect.sql)

    def reset_connection(self) -> None:
        """After a storage fault: drop this thread's connection if it is no longer
        usable (a lost PostgreSQL connection), so that the next call opens a new one."""
        try:
            usable = self.db.is_connection_usable()
        except Exception:  # noqa: BLE001 - a broken connection may fail to answer
            usable = False
        if not usable and not self.in_memory:
            try:
                self.db.close()
            except Exception:  # noqa: BLE001 - closing what is already broken
                pass

    # --------------------------------------------------------------- idempotency

    def _idempotent_lookup(
        self, resource_group: str, kind: str, request_id: str, digest: str
    ) -> str | None:
        if not request_id:
            return None
        found = self.execute(
            "SELECT resource_id, request_digest FROM idempotency_key"
            " WHERE resource_group = ? AND kind = ? AND request_id = ?",
            (resource_group, kind, request_id),
        ).fetchone()
        if found is None:
            return None
        resource_id, stored_digest = found
        if stored_digest != digest:
            raise _request_id_reused(request_id)
        return resource_id

    def _idempotent_record(
        self, resource_group: str, kind: str, request_id: str, digest: str, resource_id: str
    ) -> None:
        if request_id:
            self.execute(
                "INSERT INTO idempotency_key (resource_group, kind, request_id, resource_id,"
                " request_digest, created_us) VALUES (?, ?, ?, ?, ?, ?)",
                (resource_group, kind, request_id, resource_id, digest, now_us()),
            )

    # ----------------------------------------------------------------- scenarios

    def _upsert_scenario(
        self, resource_group: str, scenario_id: str, name: str, description: str, at: int
    ) -> None:
        row = self.t.ScenarioRow.get_or_none(
            (self.t.ScenarioRow.resource_group == resource_group)
            & (self.t.ScenarioRow.scenario_id == scenario_id)
        )
        if row is None:
            # Another replica may create it at the same time: either insert counts.
            self.t.ScenarioRow.insert(
                resource_group=resource_group,
                scenario_id=scenario_id,
                name=name or scenario_id,
                description=description,
                created_us=at,
                modified_us=at,
            ).on_conflict_ignore().execute()
        elif (name and name != row.name) or (description and description != row.description):
            row.name = name or row.name
            row.description = description or row.description
            row.modified_us = at
            row.save()

    def get_scenario(self, resource_group: str, scenario_id: str) -> Scenario:
        row = self.t.ScenarioRow.get_or_none(
            (self.t.ScenarioRow.resource_group == resource_group)
            & (self.t.ScenarioRow.scenario_id == scenario_id)
        )
        if row is None:
            raise NotFound.of("scenario", scenario_id)
        return _scenario(row)

    def count_executables(self, resource_group: str, scenario_id: str) -> int:
        return (
            self.t.ExecutableRow.select()
            .where(
                (self.t.ExecutableRow.resource_group == resource_group)
                & (self.t.ExecutableRow.scenario_id == scenario_id)
            )
            .count()
        )

    def list_scenarios(self, resource_group: str, page: PageRequest) -> Page[Scenario]:
        where = self.t.ScenarioRow.resource_group == resource_group
        total = self.t.ScenarioRow.select().where(where).count()
        query = self.t.ScenarioRow.select().where(where)
        if page.after is not None:
            after = _str_key(page.after, 1)
            query = query.where(self.t.ScenarioRow.scenario_id > after[0])
        rows = list(query.order_by(self.t.ScenarioRow.scenario_id).limit(page.size + 1))
        more = len(rows) > page.size
        rows = rows[: page.size]
        token = page.next_token([rows[-1].scenario_id]) if more else ""
        return Page([_scenario(r) for r in rows], token, total)

    # --------------------------------------------------------------- executables

    def put_executable(self, exe: Executable) -> tuple[Executable, bool]:
        """Register ``exe``; returns (stored, created). Same id + version with another
        definition is AlreadyExists: a changed definition needs a new version."""
        with self.write_lock():
            row = self.t.ExecutableRow.get_or_none(
                (self.t.ExecutableRow.resource_group == exe.resource_group)
                & (self.t.ExecutableRow.executable_id == exe.id)
                & (self.t.ExecutableRow.version == exe.version)
            )
            if row is not None:
                if row.digest != exe.digest:
                    raise AlreadyExists(
                        message=(
                            f"executable {exe.id} version {exe.version} exists with a "
                            "different definition; give the changed definition a new version"
                        ),
                        resource_type="executable",
                        resource_name=f"{exe.id}@{exe.version}",
                    )
                return _executable(row, exe.scenario_name), False
            at = now_us()
            self._upsert_scenario(
                exe.resource_group,
                exe.scenario_id,
                exe.scenario_name,
                exe.scenario_description,
                at,
            )
            row = self.t.ExecutableRow.create(
                resource_group=exe.resource_group,
                executable_id=exe.id,
                version=exe.version,
                scenario_id=exe.scenario_id,
                name=exe.name,
                description=exe.description,
                deployable=exe.deployable,
                labels=exe.labels,
                definition=_executable_definition(exe),
                digest=exe.digest,
                created_us=at,
                modified_us=at,
            )
            return _executable(row, exe.scenario_name), True

    def get_executable(
        self, resource_group: str, executable_id: str, version: str = ""
    ) -> Executable:
        """One executable version (the newest without ``version``). A version never
        changes once registered, so exact-version reads are cached."""
        if version:
            cached = self._executables.get((resource_group, executable_id, version))
            if cached is not None:
                return cached
        query = self.t.ExecutableRow.select().where(
            (self.t.ExecutableRow.resource_group == resource_group)
            & (self.t.ExecutableRow.executable_id == executable_id)
        )
        if version:
            query = query.where(self.t.ExecutableRow.version == version)
        row = query.order_by(self.t.ExecutableRow.id.desc()).first()
        if row is None:
            name = f"{executable_id}@{version}" if version else executable_id
            raise NotFound.of("executable", name)
        return self._executables.put((resource_group, executable_id, row.version), _executable(row))

    def list_executables(
        self,
        resource_group: str,
        page: PageRequest,
        scenario_id: str = "",
        all_versions: bool = False,
    ) -> Page[Executable]:
        R = self.t.ExecutableRow
        where = R.resource_group == resource_group
        if scenario_id:
            where &= R.scenario_id == scenario_id
        if not all_versions:
            newest = R.select(pw.fn.MAX(R.id)).where(where).group_by(R.executable_id)
            where &= R.id.in_(newest)
        total = R.select().where(where).count()
        query = R.select().where(where)
        if page.after is not None:
            eid, pk = _str_key(page.after, 2)
            query = query.where(
                (R.executable_id > eid) | ((R.executable_id == eid) & (R.id > int(pk)))
            )
        rows = list(query.order_by(R.executable_id, R.id).limit(page.size + 1))
        more = len(rows) > page.size
        rows = rows[: page.size]
        token = page.next_token([rows[-1].executable_id, str(rows[-1].id)]) if more else ""
        return Page([_executable(r) for r in rows], token, total)

    # ----------------------------------------------------------------- artifacts

    def create_artifact(self, art: Artifact, request_id: str = "") -> Artifact:
        digest = request_digest(
            {k: v for k, v in asdict(art).items() if k not in ("id", "created_at", "modified_at")}
        )
        with self.write_lock():
            existing = self._idempotent_lookup(art.resource_group, "artifact", request_id, digest)
            if existing:
                return self.get_artifact(art.resource_group, existing)
            at = now_us()
            try:
                self.t.ArtifactRow.create(
                    resource_group=art.resource_group,
                    artifact_id=art.id,
                    name=art.name,
                    kind=str(art.kind),
                    url=art.url,
                    scenario_id=art.scenario_id,
                    description=art.description,
                    labels=art.labels,
                    execution_id=art.execution_id,
                    created_us=at,
                    modified_us=at,
                )
            except pw.IntegrityError as exc:
                raise AlreadyExists(
                    message=f"artifact {art.id} already exists",
                    resource_type="artifact",
                    resource_name=art.id,
                ) from exc
            self._idempotent_record(art.resource_group, "artifact", request_id, digest, art.id)
        return self.get_artifact(art.resource_group, art.id)

    def get_artifact(self, resource_group: str, artifact_id: str) -> Artifact:
        row = self.t.ArtifactRow.get_or_none(
            (self.t.ArtifactRow.resource_group == resource_group)
            & (self.t.ArtifactRow.artifact_id == artifact_id)
        )
        if row is None:
            raise NotFound.of("artifact", artifact_id)
        return _artifact(row)

    def get_artifacts(self, resource_group: str, artifact_ids: Sequence[str]) -> list[Artifact]:
        """The artifacts that exist among ``artifact_ids``, in the given order."""
        if not artifact_ids:
            return []
        rows = self.t.ArtifactRow.select().where(
            (self.t.ArtifactRow.resource_group == resource_group)
            & (self.t.ArtifactRow.artifact_id.in_(list(artifact_ids)))
        )
        by_id = {r.artifact_id: _artifact(r) for r in rows}
        return [by_id[i] for i in artifact_ids if i in by_id]

    def list_artifacts(
        self,
        resource_group: str,
        page: PageRequest,
        scenario_id: str = "",
        kind: ArtifactKind | None = None,
        execution_id: str = "",
        labels: dict[str, str] | None = None,
        name: str = "",
    ) -> Page[Artifact]:
        R = self.t.ArtifactRow
        where = R.resource_group == resource_group
        if scenario_id:
            where &= R.scenario_id == scenario_id
        if kind:
            where &= R.kind == str(kind)
        if execution_id:
            where &= R.execution_id == execution_id
        if name:
            where &= R.name == name
        for key, value in sorted((labels or {}).items()):
            where &= self.dialect.label_equals(R.labels, key, value)
        total = R.select().where(where).count()
        query = R.select().where(where)
        if page.after is not None:
            query = query.where(R.id < _int_key(page.after))
        rows = list(query.order_by(R.id.desc()).limit(page.size + 1))
        more = len(rows) > page.size
        rows = rows[: page.size]
        token = page.next_token(rows[-1].id) if more else ""
        return Page([_artifact(r) for r in rows], token, total)

    # ------------------------------------------------------------ configurations

    def create_configuration(self, cfg: Configuration, request_id: str = "") -> Configuration:
        digest = request_digest(
            {
                "name": cfg.name,
                "executable_id": cfg.executable_id,
                "scenario_id": cfg.scenario_id,
                "parameters": cfg.parameter_bindings,
                "artifacts": cfg.input_artifact_bindings,
            }
        )
        with self.write_lock():
            existing = self._idempotent_lookup(
                cfg.resource_group, "configuration", request_id, digest
            )
            if existing:
                return self.get_configuration(cfg.resource_group, existing)
            self.t.ConfigurationRow.create(
                resource_group=cfg.resource_group,
                configuration_id=cfg.id,
                name=cfg.name,
                executable_id=cfg.executable_id,
                executable_version=cfg.executable_version,
                scenario_id=cfg.scenario_id,
                parameter_bindings=cfg.parameter_bindings,
                input_artifact_bindings=cfg.input_artifact_bindings,
                created_us=now_us(),
            )
            self._idempotent_record(cfg.resource_group, "configuration", request_id, digest, cfg.id)
        return self.get_configuration(cfg.resource_group, cfg.id)

    def get_configuration(self, resource_group: str, configuration_id: str) -> Configuration:
        """One configuration. Configurations are immutable, so they are cached."""
        key = (resource_group, configuration_id)
        cached = self._configurations.get(key)
        if cached is not None:
            return cached
        row = self.t.ConfigurationRow.get_or_none(
            (self.t.ConfigurationRow.resource_group == resource_group)
            & (self.t.ConfigurationRow.configuration_id == configuration_id)
        )
        if row is None:
            raise NotFound.of("configuration", configuration_id)
        return self._configurations.put(key, _configuration(row))

    def get_configurations(
        self, resource_group: str, configuration_ids: Iterable[str]
    ) -> dict[str, Configuration]:
        found: dict[str, Configuration] = {}
        missing = []
        for configuration_id in set(configuration_ids):
            cached = self._configurations.get((resource_group, configuration_id))
            if cached is not None:
                found[configuration_id] = cached
            else:
                missing.append(configuration_id)
        if missing:
            rows = self.t.ConfigurationRow.select().where(
                (self.t.ConfigurationRow.resource_group == resource_group)
                & (self.t.ConfigurationRow.configuration_id.in_(missing))
            )
            for r in rows:
                found[r.configuration_id] = self._configurations.put(
                    (resource_group, r.configuration_id), _configuration(r)
                )
        return found

    def list_configurations(
        self,
        resource_group: str,
        page: PageRequest,
        scenario_id: str = "",
        executable_id: str = "",
    ) -> Page[Configuration]:
        R = self.t.ConfigurationRow
        where = R.resource_group == resource_group
        if scenario_id:
            where &= R.scenario_id == scenario_id
        if executable_id:
            where &= R.executable_id == executable_id
        total = R.select().where(where).count()
        query = R.select().where(where)
        if page.after is not None:
            query = query.where(R.id < _int_key(page.after))
        rows = list(query.order_by(R.id.desc()).limit(page.size + 1))
        more = len(rows) > page.size
        rows = rows[: page.size]
        token = page.next_token(rows[-1].id) if more else ""
        return Page([_configuration(r) for r in rows], token, total)

    # ---------------------------------------------------------------- executions
    #
    # The execution paths are the hot ones (create, get, list, every runtime report),
    # so they use plain SQL through peewee's connection: no per-call query building.

    def _count(self, row: dict, status: str, delta: int) -> None:
        self.execute(
            "INSERT INTO execution_count (resource_group, status, scenario_id, executable_id,"
            " configuration_id, n) VALUES (?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (resource_group, status, configuration_id, scenario_id, executable_id)"
            " DO UPDATE SET n = execution_count.n + excluded.n",
            (
                row["resource_group"],
                status,
                row["scenario_id"],
                row["executable_id"],
                row["configuration_id"],
                delta,
            ),
        )

    def _add_transition(
        self,
        row: dict,
        from_status: Status | None,
        to_status: Status,
        at: int,
        cause: str,
        message: str,
    ) -> Transition:
        self.execute(
            "INSERT INTO transition (execution_id, seq, from_status, to_status, at_us, cause,"
            " message) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                row["execution_id"],
                row["history_len"],
                str(from_status) if from_status else None,
                str(to_status),
                at,
                cause,
                message,
            ),
        )
        return Transition(
            row["history_len"],
            row["execution_id"],
            from_status,
            to_status,
            to_dt(at),
            cause,
            message,
        )

    def create_execution(
        self, execution: Execution, request_id: str = ""
    ) -> tuple[Execution, bool]:
        """Insert a PENDING execution and its first history entry. Returns (execution,
        created); a known ``request_id`` returns the first execution, created False."""
        result = self.create_executions([(execution, request_id)])[0]
        if isinstance(result, BaseException):
            raise result
        return result

    def create_executions(
        self, items: Sequence[tuple[Execution, str]]
    ) -> list[tuple[Execution, bool] | DomainError]:
        """Create many executions (each with its client request id, or "") in one
        transaction: one commit, and one statement per table, for all of them.

        Each item's outcome is (execution, created) as for :meth:`create_execution`,
        or the DomainError that refused it (a request id reused for another request);
        a refused item writes nothing and does not affect the others. Any other error
        rolls the whole transaction back and is raised."""
        results: list[tuple[Execution, bool] | DomainError | None] = [None] * len(items)
        new: list[int] = []
        with self.write_lock():
            # Request ids: those of earlier items of this batch, then the stored ones.
            claimed: dict[tuple[str, str], tuple[str, int]] = {}
            for i, (execution, request_id) in enumerate(items):
                if not request_id:
                    new.append(i)
                    continue
                digest = request_digest({"configuration_id": execution.configuration_id})
                key = (execution.resource_group, request_id)
                try:
                    if key in claimed:
                        first_digest, first = claimed[key]
                        if first_digest != digest:
                            raise _request_id_reused(request_id)
                        results[i] = (items[first][0], False)
                        continue
                    existing = self._idempotent_lookup(
                        execution.resource_group, "execution", request_id, digest
                    )
                    if existing:
                        results[i] = (self.get_execution(execution.resource_group, existing), False)
                        continue
                except DomainError as exc:
                    results[i] = exc
                    continue
                claimed[key] = (digest, i)
                new.append(i)
            if new:
                self._insert_executions(items, new, claimed)
        for i in new:
            results[i] = (items[i][0], True)
        return results  # type: ignore[return-value]

    def _insert_executions(
        self,
        items: Sequence[tuple[Execution, str]],
        new: list[int],
        claimed: dict[tuple[str, str], tuple[str, int]],
    ) -> None:
        """The rows of new PENDING executions; fills in their times and first history
        entry (the objects in ``items`` become the created executions)."""
        at = now_us()
        created_at = to_dt(at)
        pending, completed = str(Status.PENDING), str(TargetStatus.COMPLETED)
        message = "execution created"
        rows, transitions, counts = [], [], {}
        for i in new:
            execution = items[i][0]
            rows.append(
                (
                    execution.resource_group,
                    execution.id,
                    execution.configuration_id,
                    execution.executable_id,
                    execution.scenario_id,
                    pending,
                    completed,
                    execution.status_message,
                    _dumps([_step_to_json(s) for s in execution.step_details]),
                    "[]",
                    at,
                    at,
                    1,
                )
            )
            transitions.append((execution.id, 1, None, pending, at, "created", message))
            key = (
                execution.resource_group,
                execution.scenario_id,
                execution.executable_id,
                execution.configuration_id,
            )
            counts[key] = counts.get(key, 0) + 1
            execution.status = Status.PENDING
            execution.target_status = TargetStatus.COMPLETED
            execution.output_artifact_ids = []
            execution.created_at = execution.modified_at = created_at
            execution.history = [
                Transition(1, execution.id, None, Status.PENDING, created_at, "created", message)
            ]
        cursor = self.db.cursor()
        sql = self.dialect.sql
        cursor.executemany(
            sql(f"INSERT INTO execution ({_EXEC_INSERT}) VALUES ({', '.join('?' * 13)})"), rows
        )
        cursor.executemany(
            sql(
                "INSERT INTO transition (execution_id, seq, from_status, to_status, at_us,"
                " cause, message) VALUES (?, ?, ?, ?, ?, ?, ?)"
            ),
            transitions,
        )
        for (group, scenario_id, executable_id, configuration_id), n in counts.items():
            self._count(
                {
                    "resource_group": group,
                    "scenario_id": scenario_id,
                    "executable_id": executable_id,
                    "configuration_id": configuration_id,
                },
                pending,
                n,
            )
        if claimed:
            cursor.executemany(
                sql(
                    "INSERT INTO idempotency_key (resource_group, kind, request_id,"
                    " resource_id, request_digest, created_us)"
                    " VALUES (?, 'execution', ?, ?, ?, ?)"
                ),
                [
                    (group, request_id, items[i][0].id, digest, at)
                    for (group, request_id), (digest, i) in claimed.items()
                ],
            )

    def _read(self, sql: str, args: Sequence[Any]):
        """A read on the raw connection: peewee's execute_sql adds a few microseconds
        (query logging, error translation) that the GetExecution path can do without."""
        return self.db.connection().execute(self.dialect.sql(sql), args)

    def _execution_row(self, resource_group: str | None, execution_id: str) -> dict:
        if resource_group is None:
            cursor = self._read(
                f"SELECT {_EXEC_COLUMNS} FROM execution WHERE execution_id = ?", (execution_id,)
            )
        else:
            cursor = self._read(
                f"SELECT {_EXEC_COLUMNS} FROM execution"
                " WHERE execution_id = ? AND resource_group = ?",
                (execution_id, resource_group),
            )
        found = cursor.fetchone()
        if found is None:
            raise NotFound.of("execution", execution_id)
        return dict(zip(_EXEC_FIELDS, found, strict=True))

    def execution_context(
        self, resource_group: str, executions: Sequence[Execution]
    ) -> tuple[dict[str, Artifact], dict[str, str]]:
        """The output artifacts (by id) and configuration names (by id) of executions
        of one group: what their messages show beside their own rows."""
        artifact_ids = [a for e in executions for a in e.output_artifact_ids]
        artifacts = {a.id: a for a in self.get_artifacts(resource_group, artifact_ids)}
        names = {
            c.id: c.name
            for c in self.get_configurations(
                resource_group, [e.configuration_id for e in executions]
            ).values()
        }
        return artifacts, names

    def get_execution(
        self, resource_group: str | None, execution_id: str, with_history: bool = True
    ) -> Execution:
        """One execution; ``resource_group`` None looks across groups (runtime use)."""
        execution = _execution_from(self._execution_row(resource_group, execution_id))
        if with_history:
            execution.history = self.history(execution_id)
        return execution

    def history(self, execution_id: str) -> list[Transition]:
        cursor = self._read(
            "SELECT seq, from_status, to_status, at_us, cause, message FROM transition"
            " WHERE execution_id = ? ORDER BY seq",
            (execution_id,),
        )
        return [
            Transition(
                seq,
                execution_id,
                STATUSES[source] if source else None,
                STATUSES[target],
                to_dt(at),
                cause,
                message,
            )
            for seq, source, target, at, cause, message in cursor.fetchall()
        ]

    def list_executions(
        self,
        resource_group: str,
        page: PageRequest,
        statuses: Sequence[Status] = (),
        scenario_id: str = "",
        executable_id: str = "",
        configuration_id: str = "",
    ) -> Page[Execution]:
        where = ["resource_group = ?"]
        args: list[Any] = [resource_group]
        if statuses:
            names = sorted({str(s) for s in statuses})
            where.append(f"status IN ({', '.join('?' * len(names))})")
            args.extend(names)
        for column, value in (
            ("scenario_id", scenario_id),
            ("executable_id", executable_id),
            ("configuration_id", configuration_id),
        ):
            if value:
                where.append(f"{column} = ?")
                args.append(value)
        condition = " AND ".join(where)
        total = self.execute(
            f"SELECT COALESCE(SUM(n), 0) FROM execution_count WHERE {condition}", args
        ).fetchone()[0]
        if page.after is not None:
            condition += " AND id < ?"
            args.append(_int_key(page.after))
        cursor = self.execute(
            f"SELECT {_EXEC_COLUMNS} FROM execution WHERE {condition} ORDER BY id DESC LIMIT ?",
            [*args, page.size + 1],
        )
        rows = [dict(zip(_EXEC_FIELDS, r, strict=True)) for r in cursor.fetchall()]
        more = len(rows) > page.size
        rows = rows[: page.size]
        token = page.next_token(rows[-1]["id"]) if more else ""
        return Page([_execution_from(r) for r in rows], token, int(total))

    def _written(self, execution_id: str) -> None:
        for hook in self.execution_write_hooks:
            hook(execution_id)

    def _save(self, row: dict, changed: Iterable[str], read: dict | None = None) -> None:
        """Write the changed columns of ``row``. With ``read`` (the status and history
        length it had when read), a compare-and-set: the row is written only if it is
        still in that state, else Conflict (the caller reads again and retries)."""
        self._written(row["execution_id"])
        columns = sorted(set(changed))
        values = [
            _dumps(row[c]) if c in ("step_details", "output_artifact_ids") else row[c]
            for c in columns
        ]
        assignments = ", ".join(f"{c} = ?" for c in columns)
        if read is None:
            self.execute(
                f"UPDATE execution SET {assignments} WHERE id = ?", [*values, row["id"]]
            )
            return
        found = self.execute(
            f"UPDATE execution SET {assignments}"
            " WHERE id = ? AND status = ? AND history_len = ? AND fence = ? RETURNING id",
            [*values, row["id"], read["status"], read["history_len"], read["fence"]],
        ).fetchall()
        if not found:
            raise _Conflict()

    def _compare_and_set(self, change: Callable[[], Any]) -> Any:
        """Run ``change`` (a read, checks, then compare-and-set writes) in a write
        transaction; when another writer changed the row between the read and the
        write (Conflict), read again and retry. Correctness rests on the conditional
        UPDATE, not on the transaction's lock, so it holds under READ COMMITTED too."""
        for _ in range(CAS_ATTEMPTS):
            try:
                with self.write_lock():
                    return change()
            except _Conflict:
                continue
        raise StoreUnavailable(
            message="the execution kept changing under this write; retry",
            metadata={"cause": "write conflict"},
        )

    def transition(
        self,
        execution_id: str,
        to_status: Status,
        cause: str,
        message: str = "",
        *,
        expected: Iterable[Status] | None = None,
        status_message: str | None = None,
        step_details: list[StepDetail] | None = None,
        target_status: TargetStatus | None = None,
        at: datetime | None = None,
        lease: Lease | None = None,
    ) -> Execution:
        """Move an execution to ``to_status`` if the lifecycle allows it, recording the
        transition in its history in the same transaction. ``expected``: the statuses
        the caller believes it is in; FailedPrecondition otherwise. ``lease``: the
        runtime's claim; LEASE_LOST when another replica has taken the execution."""

        def change() -> Execution:
            row = self._execution_row(None, execution_id)
            read = dict(row)
            _check_lease(row, lease)
            current = Status(row["status"])
            if expected is not None and current not in set(expected):
                raise FailedPrecondition(
                    message=f"execution {execution_id} is {current}",
                    reason="INVALID_TRANSITION",
                    metadata={"status": str(current)},
                )
            lifecycle.check_transition(execution_id, current, to_status)
            stamp = to_us(at) if at else now_us()
            changed = self._apply(row, to_status, status_message, stamp)
            if step_details is not None:
                row["step_details"] = [_step_to_json(s) for s in step_details]
                changed.append("step_details")
            if target_status is not None:
                row["target_status"] = str(target_status)
                changed.append("target_status")
            self._save(row, changed, read)
            self._record(row, current, to_status, stamp, cause, message)
            execution = _execution_from(row)
            execution.history = self.history(execution_id)
            return execution

        return self._compare_and_set(change)

    def _apply(
        self, row: dict, to_status: Status, status_message: str | None, stamp: int
    ) -> list[str]:
        """Set the columns a move to ``to_status`` changes; returns their names."""
        row["status"] = str(to_status)
        row["modified_us"] = stamp
        row["history_len"] += 1
        changed = ["status", "modified_us", "history_len"]
        if status_message is not None:
            row["status_message"] = status_message
            changed.append("status_message")
        if to_status == Status.RUNNING and row["started_us"] is None:
            row["started_us"] = stamp
            changed.append("started_us")
        if lifecycle.is_final(to_status):
            row["completed_us"] = stamp
            changed.append("completed_us")
        return changed

    def _record(
        self, row: dict, current: Status, to_status: Status, stamp: int, cause: str, message: str
    ) -> None:
        """The history entry and the status counts of a move that was written."""
        self._add_transition(row, current, to_status, stamp, cause, message)
        self._count(row, str(current), -1)
        self._count(row, str(to_status), 1)

    def request_stop(self, resource_group: str, execution_id: str) -> Execution:
        """The user's stop: PENDING or RUNNING -> STOPPING, target STOPPED."""

        def change() -> Execution:
            row = self._execution_row(resource_group, execution_id)
            read = dict(row)
            current = Status(row["status"])
            lifecycle.check_operation(execution_id, current, lifecycle.Operation.STOP)
            stamp = now_us()
            row["target_status"] = str(TargetStatus.STOPPED)
            changed = self._apply(row, Status.STOPPING, "stop requested", stamp)
            self._save(row, [*changed, "target_status"], read)
            self._record(
                row, current, Status.STOPPING, stamp, "stop_requested", "stop requested by user"
            )
            execution = _execution_from(row)
            execution.history = self.history(execution_id)
            return execution

        return self._compare_and_set(change)

    def delete_execution(
        self, resource_group: str, execution_id: str, keep_metrics: bool = False
    ) -> None:
        """Delete a final execution with its history (artifacts stay). Its log lines,
        of which there may be millions, are not deleted here: the execution is queued
        in ``log_purge`` in the same transaction, which hides its lines from every read
        at once, and :meth:`purge_logs` removes them later in short transactions."""

        def change() -> None:
            row = self._execution_row(resource_group, execution_id)
            current = Status(row["status"])
            lifecycle.check_operation(execution_id, current, lifecycle.Operation.DELETE)
            self._written(execution_id)
            deleted = self.execute(
                "DELETE FROM execution WHERE id = ? AND status = ? AND history_len = ?"
                " RETURNING id",
                (row["id"], row["status"], row["history_len"]),
            ).fetchall()
            if not deleted:
                raise _Conflict()
            self._count(row, str(current), -1)
            self.execute("DELETE FROM transition WHERE execution_id = ?", (execution_id,))
            self.execute(
                "INSERT INTO log_purge (execution_id, queued_us) VALUES (?, ?)"
                " ON CONFLICT (execution_id) DO NOTHING",
                (execution_id, now_us()),
            )
            for hook in self.delete_hooks:
                hook(execution_id, keep_metrics)

        self._compare_and_set(change)

    def update_execution(
        self,
        execution_id: str,
        *,
        step_details: list[StepDetail] | None = None,
        output_artifact_ids: list[str] | None = None,
        status_message: str | None = None,
        submitted: bool = False,
        lease: Lease | None = None,
    ) -> Execution:
        """Update runtime-owned fields that are not a status change (compare-and-set,
        like a transition: a concurrent stop is never written over)."""

        def change() -> Execution:
            row = self._execution_row(None, execution_id)
            read = dict(row)
            _check_lease(row, lease)
            changed = ["modified_us"]
            if step_details is not None:
                row["step_details"] = [_step_to_json(s) for s in step_details]
                changed.append("step_details")
            if output_artifact_ids is not None:
                row["output_artifact_ids"] = list(output_artifact_ids)
                changed.append("output_artifact_ids")
            if status_message is not None:
                row["status_message"] = status_message
                changed.append("status_message")
            if submitted and row["submitted_us"] is None:
                row["submitted_us"] = now_us()
                changed.append("submitted_us")
            row["modified_us"] = now_us()
            self._save(row, changed, read)
            return _execution_from(row)

        return self._compare_and_set(change)

    # ------------------------------------------------------------------- leases

    def _claim(self, where: str, args: Sequence[Any], owner: str, limit: int,
               lease_until_us: int) -> list[tuple[Execution, int, str]]:
        """Take the executions ``where`` selects (oldest first, at most ``limit``,
        skipping rows another transaction holds): owner, lease and a new fencing token.
        Returns (execution, token, previous owner) per execution taken."""
        with self.write_lock():
            found = self.execute(
                f"SELECT {_EXEC_COLUMNS} FROM execution WHERE {where} ORDER BY id LIMIT ?"
                + self.dialect.skip_locked(),
                [*args, limit],
            ).fetchall()
            if not found:
                return []
            rows = [dict(zip(_EXEC_FIELDS, r, strict=True)) for r in found]
            ids = [r["id"] for r in rows]
            self.execute(
                "UPDATE execution SET owner = ?, lease_expires_us = ?, fence = fence + 1"
                f" WHERE id IN ({', '.join('?' * len(ids))})",
                [owner, lease_until_us, *ids],
            )
        taken = []
        for row in rows:
            previous = row["owner"] or ""
            row["owner"], row["fence"] = owner, row["fence"] + 1
            self._written(row["execution_id"])
            taken.append((_execution_from(row), row["fence"], previous))
        return taken

    def claim_pending(
        self, owner: str, limit: int, lease_until_us: int
    ) -> list[tuple[Execution, Lease]]:
        """Claim up to ``limit`` PENDING executions no replica has claimed, in creation
        order; each replica's claims skip the rows another is claiming (PostgreSQL's
        SKIP LOCKED; SQLite has one writer), so every execution is claimed once."""
        taken = self._claim(
            "status = ? AND owner IS NULL", [str(Status.PENDING)], owner, limit, lease_until_us
        )
        return [(execution, Lease(owner, token)) for execution, token, _ in taken]

    def claim_for_recovery(
        self,
        owner: str,
        now_us: int,
        lease_until_us: int,
        limit: int = 1000,
        include_own: bool = True,
    ) -> list[tuple[Execution, Lease, str]]:
        """Claim what ``owner`` must reconcile: any replica's PENDING, RUNNING and
        STOPPING executions whose lease has lapsed (the replica is gone), and with
        ``include_own`` (at start) its own from before a restart and running or
        stopping ones nobody owns (a database from before leases). Returns
        (execution, lease, previous owner)."""
        active = [str(s) for s in (Status.PENDING, Status.RUNNING, Status.STOPPING)]
        where = "status IN (?, ?, ?) AND (owner <> ? AND lease_expires_us < ?"
        args: list[Any] = [*active, owner, now_us]
        if include_own:
            where += " OR owner = ? OR (owner IS NULL AND status <> ?)"
            args += [owner, str(Status.PENDING)]
        where += ")"
        taken = self._claim(where, args, owner, limit, lease_until_us)
        return [(execution, Lease(owner, token), was) for execution, token, was in taken]

    def release_claim(self, execution_id: str, lease: Lease) -> bool:
        """Give a PENDING execution back to the queue (any replica may claim it)."""
        with self.write_lock():
            done = self.execute(
                "UPDATE execution SET owner = NULL, lease_expires_us = NULL"
                " WHERE execution_id = ? AND owner = ? AND fence = ? AND status = ?"
                " RETURNING id",
                (execution_id, lease.owner, lease.token, str(Status.PENDING)),
            ).fetchall()
        return bool(done)

    def renew_leases(
        self, owner: str, lease_until_us: int, held: Sequence[str] = ()
    ) -> dict[str, int]:
        """Extend every lease ``owner`` holds on an active execution. Returns the
        fencing token of each execution of ``held`` that ``owner`` still holds, active
        or just ended: one missing was taken over by another replica, or deleted."""
        active = (str(Status.PENDING), str(Status.RUNNING), str(Status.STOPPING))
        with self.write_lock():
            self.execute(
                "UPDATE execution SET lease_expires_us = ? WHERE owner = ? AND status IN (?, ?, ?)",
                (lease_until_us, owner, *active),
            )
            rows = self._select_in(
                "SELECT execution_id, fence FROM execution WHERE owner = ? AND execution_id IN",
                held,
                [owner],
            )
        return {eid: int(fence) for eid, fence in rows}

    def queue_position(self, execution_id: str) -> int | None:
        """How many unclaimed PENDING executions were created before this one (None
        when it is not an unclaimed PENDING execution)."""
        found = self.execute(
            "SELECT id FROM execution WHERE execution_id = ? AND status = ? AND owner IS NULL",
            (execution_id, str(Status.PENDING)),
        ).fetchone()
        if found is None:
            return None
        return int(
            self.execute(
                "SELECT COUNT(*) FROM execution WHERE status = ? AND owner IS NULL AND id < ?",
                (str(Status.PENDING), found[0]),
            ).fetchone()[0]
        )

    def executions_in(self, statuses: Iterable[Status]) -> list[Execution]:
        """Executions of every group in these statuses, oldest first (runtime use)."""
        names = [str(s) for s in statuses]
        cursor = self.execute(
            f"SELECT {_EXEC_COLUMNS} FROM execution"
            f" WHERE status IN ({', '.join('?' * len(names))}) ORDER BY id",
            names,
        )
        return [_execution_from(dict(zip(_EXEC_FIELDS, r, strict=True))) for r in cursor]

    def force_status(self, execution_id: str, status: Status) -> None:
        """Put an execution straight into ``status`` (tests drive the lifecycle table
        with it). Records the jump in the history like any transition."""

        def change() -> None:
            row = self._execution_row(None, execution_id)
            read = dict(row)
            current = Status(row["status"])
            stamp = now_us()
            self._save(row, self._apply(row, status, None, stamp), read)
            self._record(row, current, status, stamp, "forced", "status set directly")

        self._compare_and_set(change)

    # ---------------------------------------------------------------------- logs

    def append_logs(self, lines: Sequence[tuple]) -> None:
        """Store log lines: tuples (execution_id, seq, at_us, step, stream_code, text).

        One transaction; the lines go in with multi-row INSERT statements of
        LOG_INSERT_ROWS rows (the rest in halving sizes, so at most a dozen distinct
        statements are ever prepared and cached). Per row, executemany returns to
        Python and takes the GIL back: about 30 % slower inline, and on the log writer
        thread each of those hand-overs can wait for the event loop's thread."""
        if not lines:
            return
        with self.db.atomic():
            cursor = self.db.cursor()
            start, total = 0, len(lines)
            while start < total:
                size = LOG_INSERT_ROWS
                while size > total - start:
                    size //= 2
                cursor.execute(
                    self.dialect.sql(_log_insert_sql(size)),
                    list(chain.from_iterable(lines[start : start + size])),
                )
                start += size

    def last_log_seq(self, execution_id: str) -> int:
        value = self.execute(
            f"SELECT MAX(seq) FROM log_line WHERE execution_id = ? {_NOT_PURGED}",
            (execution_id, execution_id),
        ).fetchone()[0]
        return int(value or 0)

    def purge_logs(self, chunk: int = PURGE_CHUNK) -> int:
        """Delete up to ``chunk`` log lines of one deleted execution (the first queued
        in ``log_purge`` that no other replica is purging), in a short transaction of
        its own; with them the queue row, once no line of the execution is left.
        Returns the lines deleted: 0 when nothing is queued.

        The lines go by key range (the ``chunk`` lowest sequence numbers), so two
        replicas that purge one execution at once only delete fewer each; PostgreSQL's
        SKIP LOCKED sends them to different executions anyway."""
        if chunk < 1:
            raise ValueError(f"chunk must be positive, got {chunk}")
        # Nothing queued (the usual case): no write transaction, no write lock.
        if self.execute("SELECT 1 FROM log_purge LIMIT 1").fetchone() is None:
            return 0
        with self.write_lock():
            while True:
                found = self.execute(
                    "SELECT execution_id FROM log_purge ORDER BY queued_us, execution_id"
                    " LIMIT 1" + self.dialect.skip_locked()
                ).fetchone()
                if found is None:
                    return 0
                execution_id = found[0]
                count, last = self.execute(
                    "SELECT COUNT(*), MAX(seq) FROM (SELECT seq FROM log_line"
                    " WHERE execution_id = ? ORDER BY seq LIMIT ?) AS head",
                    (execution_id, chunk),
                ).fetchone()
                deleted = 0
                if count:
                    deleted = self.execute(
                        "DELETE FROM log_line WHERE execution_id = ? AND seq <= ?",
                        (execution_id, last),
                    ).rowcount
                if count < chunk:
                    # That was the rest of its lines: the execution is purged.
                    self.execute("DELETE FROM log_purge WHERE execution_id = ?", (execution_id,))
                if count:
                    return deleted
                # An execution with no lines left: on to the next one.

    def read_logs(
        self,
        execution_id: str,
        *,
        after_seq: int = 0,
        before_seq: int | None = None,
        limit: int = 1000,
        descending: bool = False,
        steps: Sequence[str] = (),
        streams: Sequence[LogStream] = (),
        start_us: int | None = None,
        end_us: int | None = None,
    ) -> list[LogLine]:
        rows = self.read_log_rows(
            execution_id,
            after_seq=after_seq,
            before_seq=before_seq,
            limit=limit,
            descending=descending,
            steps=steps,
            stream_codes=[STREAM_CODES[s] for s in streams],
            start_us=start_us,
            end_us=end_us,
        )
        return [
            LogLine(execution_id, seq, to_dt(at), step, STREAM_NAMES[stream], text)
            for _, seq, at, step, stream, text in rows
        ]

    def read_log_rows(
        self,
        execution_id: str,
        *,
        after_seq: int = 0,
        upto_seq: int | None = None,
        before_seq: int | None = None,
        limit: int = 1000,
        descending: bool = False,
        steps: Sequence[str] = (),
        stream_codes: Sequence[int] = (),
        start_us: int | None = None,
        end_us: int | None = None,
    ) -> list[tuple]:
        """Log lines as the stored tuples (execution_id, seq, at_us, step, stream_code,
        text), with no object per line: the live tailers' read path."""
        sql = [
            "SELECT execution_id, seq, at_us, step, stream, text FROM log_line"
            f" WHERE execution_id = ? AND seq > ? {_NOT_PURGED}"
        ]
        args: list[Any] = [execution_id, after_seq, execution_id]
        for condition, value in (
            ("seq <= ?", upto_seq),
            ("seq < ?", before_seq),
            ("at_us >= ?", start_us),
            ("at_us < ?", end_us),
        ):
            if value is not None:
                sql.append(f"AND {condition}")
                args.append(value)
        if steps:
            sql.append(f"AND step IN ({','.join('?' * len(steps))})")
            args.extend(steps)
        if stream_codes:
            sql.append(f"AND stream IN ({','.join('?' * len(stream_codes))})")
            args.extend(stream_codes)
        sql.append(f"ORDER BY seq {'DESC' if descending else 'ASC'} LIMIT ?")
        args.append(limit)
        return self.execute(" ".join(sql), args).fetchall()

    def read_log_rows_to_end(
        self,
        execution_id: str,
        *,
        after_seq: int,
        limit: int,
        steps: Sequence[str] = (),
        stream_codes: Sequence[int] = (),
    ) -> tuple[int, list[tuple]]:
        """(the highest stored sequence number, read first; then the rows after
        ``after_seq``). A read shorter than ``limit`` has every stored line up to that
        number: a tailer that then sees no later line published may go live."""
        head = self.last_log_seq(execution_id)
        rows = self.read_log_rows(
            execution_id, after_seq=after_seq, limit=limit, steps=steps, stream_codes=stream_codes
        )
        return head, rows

    def last_transition_seqs(self, execution_ids: Sequence[str]) -> dict[str, int]:
        """The sequence number of the latest history entry of each execution."""
        rows = self._select_in(
            "SELECT execution_id, MAX(seq) FROM transition WHERE execution_id IN",
            execution_ids,
            suffix=" GROUP BY execution_id",
        )
        result = {eid: int(seq) for eid, seq in rows}
        return result

    def first_log_seq_at(self, execution_id: str, start_us: int) -> int:
        """Sequence number just before the first line at or after ``start_us``."""
        value = self.execute(
            f"SELECT MIN(seq) FROM log_line WHERE execution_id = ? AND at_us >= ? {_NOT_PURGED}",
            (execution_id, start_us, execution_id),
        ).fetchone()[0]
        if value is None:
            return self.last_log_seq(execution_id)
        return int(value) - 1
