"""Who is calling: a principal and its roles per resource group.

The API layer authenticates the caller (a bearer token, a client certificate, or
nobody when authentication is off) and hands the use cases a ``Principal``; the
domain records it on what it creates and in the audit trail."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

# Roles in increasing order: each holds every right of the ones before it.
VIEWER = "viewer"  # read, watch, tail
OPERATOR = "operator"  # plus create, stop, delete, metrics
ADMIN = "admin"  # plus executables, secrets, tokens, audit
ROLES = (VIEWER, OPERATOR, ADMIN)
RANK = {name: rank for rank, name in enumerate(ROLES, start=1)}
ALL_GROUPS = "*"


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller. ``roles`` maps a resource group (or ``*``, every
    group) to a role. A step's principal is scoped to one execution of one group
    (``execution_id``): it may write that execution's metrics and read its own
    configuration, nothing else."""

    name: str
    roles: Mapping[str, str] = field(default_factory=dict)
    # The token (or certificate mapping) this principal came from; "" when none.
    credential_id: str = ""
    # Seconds since the epoch after which the credential is no longer valid.
    expires_at: float | None = None
    execution_id: str = ""
    configuration_id: str = ""
    step_group: str = ""  # the resource group of a step's execution

    def role_in(self, resource_group: str) -> str | None:
        """The strongest role held in ``resource_group``, or None."""
        here = self.roles.get(resource_group)
        everywhere = self.roles.get(ALL_GROUPS)
        if here is None:
            return everywhere
        if everywhere is None:
            return here
        return here if RANK[here] >= RANK[everywhere] else everywhere

    def holds(self, resource_group: str, role: str) -> bool:
        held = self.role_in(resource_group)
        return held is not None and RANK[held] >= RANK[role]

    @property
    def is_step(self) -> bool:
        return bool(self.execution_id)


# The caller when authentication is off (loopback only): every right everywhere.
ANONYMOUS = Principal(name="anonymous", roles={ALL_GROUPS: ADMIN})
# Work the server does by itself (loading executables at start, recovery).
SYSTEM = Principal(name="system", roles={ALL_GROUPS: ADMIN})
