"""The audit trail's rows: written inside the transaction of the change they record
(``_audit``, called by the write methods with the events the use case gave them),
read newest first with keyset paging."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from server.domain.audit import AuditEvent, AuditFilter
from server.domain.models import Page
from server.domain.paging import PageRequest
from server.store.rows import _int_key, now_us, to_dt

_COLUMNS = (
    "id",
    "at_us",
    "resource_group",
    "principal",
    "action",
    "resource_type",
    "resource_id",
    "outcome",
    "request_id",
    "detail",
)


class AuditRepository:
    def _audit(self, events: Iterable[AuditEvent | None]) -> None:
        """Insert the events (None: nothing) in the current transaction."""
        at = now_us()
        rows = [
            (
                at,
                e.resource_group,
                e.principal,
                e.action,
                e.resource_type,
                e.resource_id,
                e.outcome,
                e.request_id,
                e.detail,
            )
            for e in events
            if e is not None
        ]
        if not rows:
            return
        self.dialect.insert_rows(self.db, "audit_event", _COLUMNS[1:], rows)

    def record_audit(self, events: list[AuditEvent]) -> None:
        """Events of changes made outside the store (token file edits), in a
        transaction of their own."""
        with self.write_lock():
            self._audit(events)

    def list_audit_events(self, where: AuditFilter, page: PageRequest) -> Page[AuditEvent]:
        conditions: list[str] = []
        args: list[Any] = []
        for column in ("resource_group", "principal", "action", "resource_type", "resource_id"):
            value = getattr(where, column)
            if value:
                conditions.append(f"{column} = ?")
                args.append(value)
        if where.since_us:
            conditions.append("at_us >= ?")
            args.append(where.since_us)
        if where.until_us:
            conditions.append("at_us < ?")
            args.append(where.until_us)
        if page.after is not None:
            conditions.append("id < ?")
            args.append(_int_key(page.after))
        clause = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        rows = self.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM audit_event{clause} ORDER BY id DESC LIMIT ?",
            [*args, page.size + 1],
        ).fetchall()
        more = len(rows) > page.size
        rows = rows[: page.size]
        events = [
            AuditEvent(
                id=int(r[0]),
                at=to_dt(r[1]),
                resource_group=r[2],
                principal=r[3],
                action=r[4],
                resource_type=r[5],
                resource_id=r[6],
                outcome=r[7],
                request_id=r[8],
                detail=r[9],
            )
            for r in rows
        ]
        token = page.next_token(events[-1].id) if more else ""
        return Page(events, token, -1)
