"""The catalog's repository: scenarios, executables, artifacts, configurations, and
the client request ids that make their creates idempotent. Executable versions and
configurations never change once written, so reads of them are cached."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict
from itertools import chain

import peewee as pw

from server.domain.audit import AuditEvent
from server.domain.errors import (
    AlreadyExists,
    NotFound,
)
from server.domain.models import (
    SHARED_GROUP,
    Artifact,
    ArtifactKind,
    Configuration,
    Executable,
    Page,
    Scenario,
)
from server.domain.paging import PageRequest
from server.store.rows import (
    _artifact,
    _configuration,
    _executable,
    _executable_definition,
    _int_key,
    _request_id_reused,
    _scenario,
    _str_key,
    now_us,
    request_digest,
)

# Request ids recorded per INSERT statement (6 parameters each).
IDEMPOTENCY_CHUNK = 256


class CatalogRepository:
    """Part of :class:`server.store.repository.Store`."""

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

    def _idempotent_claims(
        self, kind: str, claims: dict[tuple[str, str], tuple[str, str]], at: int
    ) -> set[tuple[str, str]]:
        """Record each (resource group, request id) of ``claims`` -> (request digest,
        resource id) that no stored key holds yet, and return the keys recorded; the
        others were stored before (or by another replica meanwhile: ON CONFLICT waits
        for its transaction, then leaves its key). Multi-row INSERTs of
        IDEMPOTENCY_CHUNK rows, the rest in halving sizes so that few distinct
        statements are ever prepared: no lookup for new request ids, which are nearly
        all of them, and one statement for many rather than a round trip each."""
        rows = [
            (group, kind, request_id, resource_id, digest, at)
            for (group, request_id), (digest, resource_id) in claims.items()
        ]
        recorded: set[tuple[str, str]] = set()
        start = 0
        while start < len(rows):
            size = IDEMPOTENCY_CHUNK
            while size > len(rows) - start:
                size //= 2
            recorded.update(
                (group, request_id)
                for group, request_id in self.execute(
                    "INSERT INTO idempotency_key (resource_group, kind, request_id,"
                    " resource_id, request_digest, created_us) VALUES "
                    + ", ".join(["(?, ?, ?, ?, ?, ?)"] * size)
                    + " ON CONFLICT DO NOTHING RETURNING resource_group, request_id",
                    list(chain.from_iterable(rows[start : start + size])),
                ).fetchall()
            )
            start += size
        return recorded

    def purge_idempotency_keys(self, before_us: int) -> int:
        """Delete the request ids recorded before ``before_us`` (past their retention);
        returns how many. A repeat of one of those requests is then a new request."""
        with self.write_lock():
            cursor = self.execute(
                "DELETE FROM idempotency_key WHERE created_us < ?", (before_us,)
            )
            return max(cursor.rowcount or 0, 0)

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

    def _visible(self, model, resource_group: str, *keys: pw.Field) -> pw.Expression:
        """The rows of ``model`` a group sees: its own, and the shared ones (the
        executables directory's, SHARED_GROUP) whose ``keys`` none of its own has."""
        own = model.resource_group == resource_group
        if resource_group == SHARED_GROUP:
            return own
        mine = model.alias("own")
        taken = mine.select(*(getattr(mine, k.name) for k in keys)).where(
            mine.resource_group == resource_group
        )
        key = keys[0] if len(keys) == 1 else pw.Tuple(*keys)
        return own | ((model.resource_group == SHARED_GROUP) & key.not_in(taken))

    def get_scenario(self, resource_group: str, scenario_id: str) -> Scenario:
        for group in (resource_group, SHARED_GROUP):
            row = self.t.ScenarioRow.get_or_none(
                (self.t.ScenarioRow.resource_group == group)
                & (self.t.ScenarioRow.scenario_id == scenario_id)
            )
            if row is not None:
                return _scenario(row)
        raise NotFound.of("scenario", scenario_id)

    def count_executables(self, resource_group: str, scenario_id: str) -> int:
        R = self.t.ExecutableRow
        return (
            R.select()
            .where(
                self._visible(R, resource_group, R.executable_id, R.version)
                & (R.scenario_id == scenario_id)
            )
            .count()
        )

    def list_scenarios(self, resource_group: str, page: PageRequest) -> Page[Scenario]:
        S = self.t.ScenarioRow
        where = self._visible(S, resource_group, S.scenario_id)
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

    def put_executable(
        self, exe: Executable, audit: AuditEvent | None = None
    ) -> tuple[Executable, bool]:
        """Register ``exe``; returns (stored, created). Same id + version with another
        definition is AlreadyExists: a changed definition needs a new version. A group's
        registration meets the shared versions (the executables directory's) as its own:
        the same definition is that one, another is AlreadyExists; a new version of a
        shared id is the group's, listed beside the shared ones. ``audit`` is recorded
        when it is created."""
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
            shared = None
            if exe.resource_group != SHARED_GROUP:
                shared = self.t.ExecutableRow.get_or_none(
                    (self.t.ExecutableRow.resource_group == SHARED_GROUP)
                    & (self.t.ExecutableRow.executable_id == exe.id)
                    & (self.t.ExecutableRow.version == exe.version)
                )
            if shared is not None:
                if shared.digest != exe.digest:
                    raise AlreadyExists(
                        message=(
                            f"executable {exe.id} version {exe.version} exists (from the "
                            "executables directory, shared by every group) with a different "
                            "definition; give the changed definition a new version"
                        ),
                        resource_type="executable",
                        resource_name=f"{exe.id}@{exe.version}",
                    )
                # The executables directory's, which the group sees already.
                return _executable(shared, exe.scenario_name), False
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
            self._audit((audit,))
        # A shared version this group read under its own key is hidden from now on.
        self._executables.drop((exe.resource_group, exe.id, exe.version))
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
        R = self.t.ExecutableRow
        # The group's own versions and the executables directory's (shared by every
        # group); of one version, the group's own.
        groups = [resource_group, SHARED_GROUP]
        query = R.select().where((R.executable_id == executable_id) & R.resource_group.in_(groups))
        if version:
            query = query.where(R.version == version).order_by(
                (R.resource_group == resource_group).desc()
            )
        else:
            query = query.order_by(R.id.desc())
        row = query.first()
        if row is None:
            name = f"{executable_id}@{version}" if version else executable_id
            raise NotFound.of("executable", name)
        return self._executables.put((resource_group, executable_id, row.version), _executable(row))

    def cached_executable(
        self, resource_group: str, executable_id: str, version: str
    ) -> Executable | None:
        """The exact version if it is cached, else None; no query (safe on any thread)."""
        return self._executables.peek((resource_group, executable_id, version))

    def list_executables(
        self,
        resource_group: str,
        page: PageRequest,
        scenario_id: str = "",
        all_versions: bool = False,
    ) -> Page[Executable]:
        R = self.t.ExecutableRow
        where = self._visible(R, resource_group, R.executable_id, R.version)
        if scenario_id:
            where &= R.scenario_id == scenario_id
        if not all_versions:
            newest = (
                R.select(pw.fn.MAX(R.id)).where(where).group_by(R.executable_id)
            )
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

    def create_artifact(
        self, art: Artifact, request_id: str = "", audit: AuditEvent | None = None
    ) -> Artifact:
        digest = request_digest(
            {
                k: v
                for k, v in asdict(art).items()
                if k not in ("id", "created_at", "modified_at", "created_by")
            }
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
                    created_by=art.created_by,
                )
            except pw.IntegrityError as exc:
                raise AlreadyExists(
                    message=f"artifact {art.id} already exists",
                    resource_type="artifact",
                    resource_name=art.id,
                ) from exc
            self._idempotent_record(art.resource_group, "artifact", request_id, digest, art.id)
            self._audit((audit,))
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

    def create_configuration(
        self, cfg: Configuration, request_id: str = "", audit: AuditEvent | None = None
    ) -> Configuration:
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
                created_by=cfg.created_by,
            )
            self._idempotent_record(cfg.resource_group, "configuration", request_id, digest, cfg.id)
            self._audit((audit,))
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

    def cached_configuration(
        self, resource_group: str, configuration_id: str
    ) -> Configuration | None:
        """The configuration if it is cached, else None; no query (safe on any thread)."""
        return self._configurations.peek((resource_group, configuration_id))

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

