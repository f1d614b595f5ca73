"""The audit trail: who changed what, recorded in the same transaction as the change.

A use case that changes something takes the ``Caller`` (the principal and the call's
request id) and hands the store an ``AuditEvent`` for each change it writes; the store
inserts the event with the change, so the trail holds exactly the changes that were
made (nothing of a refused or rolled-back call)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from server.domain.principal import SYSTEM, Principal


@dataclass(frozen=True, slots=True)
class Caller:
    """Who makes a call, and the call's request id (for the audit trail)."""

    principal: Principal = SYSTEM
    request_id: str = ""

    @property
    def name(self) -> str:
        return self.principal.name

    def event(
        self,
        action: str,
        resource_type: str,
        resource_id: str,
        resource_group: str,
        detail: str = "",
        outcome: str = "ok",
    ) -> AuditEvent:
        return AuditEvent(
            principal=self.principal.name,
            action=action,
            resource_type=resource_type,
            resource_id=resource_id,
            resource_group=resource_group,
            outcome=outcome,
            request_id=self.request_id,
            detail=detail,
        )


SYSTEM_CALLER = Caller()


@dataclass(slots=True)
class AuditEvent:
    """One recorded change. ``action``: create, stop, delete, register (an executable),
    token.add / token.revoke, secret.*; ``outcome``: ok (a refused call records
    nothing), or what a partly applied change did."""

    principal: str
    action: str
    resource_type: str
    resource_id: str
    resource_group: str
    outcome: str = "ok"
    request_id: str = ""
    detail: str = ""
    id: int = 0
    at: datetime | None = None


@dataclass(slots=True)
class AuditFilter:
    """Which events ListAuditEvents returns ("" matches all)."""

    resource_group: str = ""
    principal: str = ""
    action: str = ""
    resource_type: str = ""
    resource_id: str = ""
    since_us: int = 0
    until_us: int = 0
    extra: dict[str, str] = field(default_factory=dict)
