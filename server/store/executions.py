"""The executions' repository: rows, history, counts, and the compare-and-set
writes of the lifecycle (a status changes only if it still is what was read, with
its history entry in the same transaction)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

from server.domain import lifecycle
from server.domain.audit import AuditEvent
from server.domain.errors import (
    DomainError,
    FailedPrecondition,
    NotFound,
    Reason,
    StoreUnavailable,
)
from server.domain.models import (
    Artifact,
    Execution,
    Lease,
    Page,
    Status,
    StepDetail,
    StoredEvent,
    TargetStatus,
    Transition,
)
from server.domain.paging import PageRequest
from server.store.rows import (
    _EVENT_INSERT,
    _EXEC_COLUMNS,
    _EXEC_FIELDS,
    _EXEC_INSERT,
    _TRANSITION_INSERT,
    STATUSES,
    _dumps,
    _execution_from,
    _int_key,
    _request_id_reused,
    _step_to_json,
    now_us,
    request_digest,
    to_dt,
    to_us,
)

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
            reason=Reason.LEASE_LOST,
            metadata={"execution_id": row["execution_id"], "owner": row["owner"] or ""},
        )


def _check_expected(execution_id: str, current: Status, expected: Iterable[Status]) -> None:
    """Refuse a runtime write made for a status the execution has since left."""
    if current not in set(expected):
        raise FailedPrecondition(
            message=f"execution {execution_id} is {current}",
            reason=Reason.INVALID_TRANSITION,
            metadata={"status": str(current)},
        )


def _as_of(history: list[Transition], row: dict) -> list[Transition]:
    """The history of ``row`` as it was read. The row and the history are read by two
    statements, so a move committed between them is in the history only: the row's
    ``history_len`` (written in the move's transaction) says where its own history
    ends. Transitions are numbered 1, 2, ... and never change once written."""
    length = row["history_len"]
    return history[:length] if len(history) > length else history


class ExecutionRepository:
    """Part of :class:`server.store.repository.Store`."""

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

    # ------------------------------------------------------------ change events
    #
    # Every change a watcher hears (a creation, a transition, a step's change, a
    # deletion) is also a row of execution_event, numbered in its resource group, in
    # the transaction of the change. The number comes from the group's counter row,
    # which the transaction updates last and holds locked until it ends: the numbers
    # of one group follow the order the changes committed, on every backend and with
    # any number of replicas, so a read of the rows after a number misses nothing that
    # a later read would find before the last row it returns. Set-watch cursors are
    # these numbers (server/streams/watch.py).

    def _record_events(self, events: Iterable[tuple[str, str, str, int, str]]) -> None:
        """Inside a write transaction: number and store changes given as (resource
        group, execution id, kind, history seq or 0, detail)."""
        by_group: dict[str, list[tuple[str, str, str, int, str]]] = {}
        for event in events:
            by_group.setdefault(event[0], []).append(event)
        if not by_group:
            return
        at = now_us()
        rows = []
        # Groups in a fixed order: two transactions never wait on each other's counters.
        for group in sorted(by_group):
            items = by_group[group]
            (last,) = self.execute(
                "INSERT INTO execution_event_counter (resource_group, number) VALUES (?, ?)"
                " ON CONFLICT (resource_group) DO UPDATE"
                " SET number = execution_event_counter.number + excluded.number"
                " RETURNING number",
                (group, len(items)),
            ).fetchone()
            first = int(last) - len(items) + 1
            rows.extend(
                (group, first + n, execution_id, kind, seq, detail, at)
                for n, (_, execution_id, kind, seq, detail) in enumerate(items)
            )
        self.dialect.insert_rows(self.db, "execution_event", _EVENT_INSERT, rows)

    def last_event_number(self, resource_group: str) -> int:
        """The number of the last change recorded in the group (0: none yet)."""
        found = self._read(
            "SELECT number FROM execution_event_counter WHERE resource_group = ?",
            (resource_group,),
        ).fetchone()
        return int(found[0]) if found else 0

    def read_events(
        self, resource_group: str, after: int, limit: int
    ) -> tuple[int, list[StoredEvent], dict[str, Execution]]:
        """The group's changes numbered after ``after``, at most ``limit``, in order:
        (the group's last number, read before them; the changes; the executions they
        name that still exist, as they are now, with their history). The last number
        tells a caller whether the changes right after ``after`` are still stored: they
        are unless the first one returned is not ``after + 1``, or none is returned
        while the last number is above ``after``."""
        last = self.last_event_number(resource_group)
        found = self._read(
            "SELECT number, execution_id, kind, seq, detail FROM execution_event"
            " WHERE resource_group = ? AND number > ? ORDER BY number LIMIT ?",
            (resource_group, after, limit),
        ).fetchall()
        events = [StoredEvent(int(n), eid, kind, seq, text) for n, eid, kind, seq, text in found]
        ids = sorted({e.execution_id for e in events if e.kind != "deleted"})
        executions: dict[str, Execution] = {}
        rows: dict[str, dict] = {}
        if ids:
            for row in self._select_in(
                f"SELECT {_EXEC_COLUMNS} FROM execution WHERE resource_group = ?"
                " AND execution_id IN",
                ids,
                (resource_group,),
            ):
                fields = dict(zip(_EXEC_FIELDS, row, strict=True))
                execution = _execution_from(fields)
                executions[execution.id] = execution
                rows[execution.id] = fields
            histories = self._histories(sorted(executions))
            for execution_id, execution in executions.items():
                execution.history = _as_of(histories.get(execution_id, []), rows[execution_id])
        return max(last, events[-1].number if events else 0), events, executions

    def purge_events(self, before_us: int) -> int:
        """Delete the changes recorded before ``before_us``; returns how many. A set
        watch resuming from a number before the rows kept starts over."""
        with self.write_lock():
            cursor = self.execute("DELETE FROM execution_event WHERE at_us < ?", (before_us,))
            return max(cursor.rowcount or 0, 0)

    def create_execution(
        self, execution: Execution, request_id: str = "", audit: AuditEvent | None = None
    ) -> tuple[Execution, bool]:
        """Insert a PENDING execution and its first history entry. Returns (execution,
        created); a known ``request_id`` returns the first execution, created False.
        ``audit``: the event recorded with it (only if it is created)."""
        result = self.create_executions([(execution, request_id)], [audit])[0]
        if isinstance(result, BaseException):
            raise result
        return result

    def create_executions(
        self,
        items: Sequence[tuple[Execution, str]],
        audit: Sequence[AuditEvent | None] | None = None,
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
            # The first item of each request id claims it, unless a stored key holds it.
            digests = [
                request_digest(
                    {"configuration_id": execution.configuration_id}
                    | ({"rerun_of": execution.rerun_of} if execution.rerun_of else {})
                )
                if request_id
                else ""
                for execution, request_id in items
            ]
            first: dict[tuple[str, str], int] = {}
            for i, (execution, request_id) in enumerate(items):
                if request_id:
                    first.setdefault((execution.resource_group, request_id), i)
            claimed = self._idempotent_claims(
                "execution",
                {key: (digests[i], items[i][0].id) for key, i in first.items()},
                now_us(),
            )
            for i, (execution, request_id) in enumerate(items):
                if not request_id:
                    new.append(i)
                    continue
                key = (execution.resource_group, request_id)
                try:
                    if key in claimed:
                        if first[key] == i:
                            new.append(i)
                        elif digests[first[key]] != digests[i]:
                            raise _request_id_reused(request_id)
                        else:
                            results[i] = (items[first[key]][0], False)
                        continue
                    existing = self._idempotent_lookup(
                        execution.resource_group, "execution", request_id, digests[i]
                    )
                    results[i] = (self.get_execution(execution.resource_group, existing), False)
                except DomainError as exc:
                    results[i] = exc
            if new:
                self._insert_executions(items, new)
                if audit:
                    self._audit(audit[i] for i in new)
                self._record_events(
                    (items[i][0].resource_group, items[i][0].id, "created", 1, "") for i in new
                )
        for i in new:
            results[i] = (items[i][0], True)
        return results  # type: ignore[return-value]

    def _insert_executions(self, items: Sequence[tuple[Execution, str]], new: list[int]) -> None:
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
                    execution.created_by,
                    execution.rerun_of or None,
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
        self.dialect.insert_rows(self.db, "execution", _EXEC_INSERT, rows)
        self.dialect.insert_rows(self.db, "transition", _TRANSITION_INSERT, transitions)
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

    def execution_with_context(
        self, resource_group: str, execution_id: str
    ) -> tuple[Execution, dict[str, Artifact], dict[str, str]]:
        """One execution with its history, and what its message shows beside them."""
        execution = self.get_execution(resource_group, execution_id)
        return (execution, *self.execution_context(resource_group, [execution]))

    def get_execution(
        self, resource_group: str | None, execution_id: str, with_history: bool = True
    ) -> Execution:
        """One execution; ``resource_group`` None looks across groups (runtime use)."""
        row = self._execution_row(resource_group, execution_id)
        execution = _execution_from(row)
        if with_history:
            execution.history = _as_of(self.history(execution_id), row)
        return execution

    def _histories(self, execution_ids: Sequence[str]) -> dict[str, list[Transition]]:
        """The history of each of the executions (those with none are left out)."""
        histories: dict[str, list[Transition]] = {}
        for eid, seq, source, target, at_us, cause, message in self._select_in(
            "SELECT execution_id, seq, from_status, to_status, at_us, cause, message"
            " FROM transition WHERE execution_id IN",
            execution_ids,
            suffix=" ORDER BY execution_id, seq",
        ):
            histories.setdefault(eid, []).append(
                Transition(
                    seq,
                    eid,
                    STATUSES[source] if source else None,
                    STATUSES[target],
                    to_dt(at_us),
                    cause,
                    message,
                )
            )
        return histories

    def executions_with_context(
        self, keys: Sequence[tuple[str, str]]
    ) -> list[tuple[Execution, dict[str, Artifact], dict[str, str]] | NotFound]:
        """:meth:`execution_with_context` of many (resource group, execution id) at
        once, in one statement per table: each key's result, or NotFound for it."""
        rows: dict[str, dict] = {}
        for found in self._select_in(
            f"SELECT {_EXEC_COLUMNS} FROM execution WHERE execution_id IN",
            sorted({execution_id for _, execution_id in keys}),
        ):
            row = dict(zip(_EXEC_FIELDS, found, strict=True))
            rows[row["execution_id"]] = row
        histories = self._histories(sorted(rows))
        executions: list[Execution | NotFound] = []
        by_group: dict[str, list[Execution]] = {}
        for group, execution_id in keys:
            row = rows.get(execution_id)
            if row is None or row["resource_group"] != group:
                executions.append(NotFound.of("execution", execution_id))
                continue
            execution = _execution_from(dict(row))
            execution.history = _as_of(list(histories.get(execution_id, ())), row)
            executions.append(execution)
            by_group.setdefault(group, []).append(execution)
        contexts = {
            group: self.execution_context(group, members) for group, members in by_group.items()
        }
        return [
            e if isinstance(e, NotFound) else (e, *contexts[e.resource_group])
            for e in executions
        ]

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
        rerun_of: str = "",
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
        if rerun_of:
            # The re-runs of one execution are few: counted where they are, by index.
            condition += " AND rerun_of = ?"
            args.append(rerun_of)
            total = self.execute(
                f"SELECT COUNT(*) FROM execution WHERE {condition}", args
            ).fetchone()[0]
        else:
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
            if expected is not None:
                _check_expected(execution_id, current, expected)
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

    def record_unchanged(
        self,
        execution_id: str,
        cause: str,
        message: str,
        *,
        expected: Iterable[Status],
        lease: Lease | None = None,
    ) -> Execution:
        """Record in the history an event that keeps the status (from and to are the
        current one), announced to watchers as a transition: a replica that took the
        execution over, or a restarted server, going on with steps that outlived their
        server. ``expected`` and ``lease`` as in :meth:`transition`."""

        def change() -> Execution:
            row = self._execution_row(None, execution_id)
            read = dict(row)
            _check_lease(row, lease)
            current = Status(row["status"])
            _check_expected(execution_id, current, expected)
            stamp = now_us()
            row["modified_us"] = stamp
            row["history_len"] += 1
            self._save(row, ["modified_us", "history_len"], read)
            self._add_transition(row, current, current, stamp, cause, message)
            self._record_events(
                [(row["resource_group"], execution_id, "transition", row["history_len"], "")]
            )
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
        self._record_events(
            [(row["resource_group"], row["execution_id"], "transition", row["history_len"], "")]
        )

    def request_stop(
        self, resource_group: str, execution_id: str, audit: AuditEvent | None = None
    ) -> Execution:
        """The user's stop: PENDING or RUNNING -> STOPPING, target STOPPED; ``audit``
        is recorded with it."""

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
            self._audit((audit,))
            execution = _execution_from(row)
            execution.history = self.history(execution_id)
            return execution

        return self._compare_and_set(change)

    def delete_execution(
        self,
        resource_group: str,
        execution_id: str,
        keep_metrics: bool = False,
        audit: AuditEvent | None = None,
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
            self._audit((audit,))
            # As the execution was: filtered watches match a deletion on these.
            detail = ",".join(
                (row["status"], row["scenario_id"], row["configuration_id"], row["executable_id"])
            )
            self._record_events([(row["resource_group"], execution_id, "deleted", 0, detail)])

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
        changed_step: str = "",
    ) -> Execution:
        """Update runtime-owned fields that are not a status change (compare-and-set,
        like a transition: a concurrent stop is never written over). ``changed_step``:
        the step whose change watchers hear of, recorded as a change event."""

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
            if changed_step:
                self._record_events(
                    [(row["resource_group"], execution_id, "step", 0, changed_step)]
                )
            return _execution_from(row)

        return self._compare_and_set(change)

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

