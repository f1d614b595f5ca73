"""Claims, leases and fencing tokens: which replica runs which execution."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from server.domain.models import (
    Execution,
    Lease,
    Status,
)
from server.store.rows import (
    _EXEC_COLUMNS,
    _EXEC_FIELDS,
    _execution_from,
    now_us,
)

# The expiry of a lease its owner released at a graceful shutdown: long past.
RELEASED = 0


class LeaseRepository:
    """Part of :class:`server.store.repository.Store`."""

    # ------------------------------------------------------------------- leases

    def _claim(
        self,
        where: str,
        args: Sequence[Any],
        owner: str,
        limit: int,
        lease_until_us: int,
        submitted: bool = False,
    ) -> list[tuple[Execution, int, str, bool]]:
        """Take the executions ``where`` selects (oldest first, at most ``limit``,
        skipping rows another transaction holds): owner, lease and a new fencing token,
        and with ``submitted`` the time a slot took them (kept if already set). Returns
        (execution, token, previous owner, whether that owner released its lease at a
        shutdown) per execution taken."""
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
            at = now_us() if submitted else None
            self.execute(
                "UPDATE execution SET owner = ?, lease_expires_us = ?, fence = fence + 1,"
                " submitted_us = COALESCE(submitted_us, ?)"
                f" WHERE id IN ({', '.join('?' * len(ids))})",
                [owner, lease_until_us, at, *ids],
            )
        taken = []
        for row in rows:
            previous = row["owner"] or ""
            released = bool(previous) and row["lease_expires_us"] == RELEASED
            row["owner"], row["fence"] = owner, row["fence"] + 1
            if row["submitted_us"] is None:
                row["submitted_us"] = at
            self._written(row["execution_id"])
            taken.append((_execution_from(row), row["fence"], previous, released))
        return taken

    def claim_pending(
        self, owner: str, limit: int, lease_until_us: int
    ) -> list[tuple[Execution, Lease]]:
        """Claim up to ``limit`` PENDING executions no replica has claimed, in creation
        order; each replica's claims skip the rows another is claiming (PostgreSQL's
        SKIP LOCKED; SQLite has one writer), so every execution is claimed once."""
        taken = self._claim(
            "status = ? AND owner IS NULL",
            [str(Status.PENDING)],
            owner,
            limit,
            lease_until_us,
            submitted=True,
        )
        return [(execution, Lease(owner, token)) for execution, token, _, _ in taken]

    def claim_for_recovery(
        self,
        owner: str,
        now_us: int,
        lease_until_us: int,
        limit: int = 1000,
        include_own: bool = True,
    ) -> list[tuple[Execution, Lease, str, bool]]:
        """Claim what ``owner`` must reconcile: any replica's PENDING, RUNNING and
        STOPPING executions whose lease has lapsed (the replica is gone) or was
        released (:meth:`release_leases`), and with ``include_own`` (at start) its own
        from before a restart and running or stopping ones nobody owns (a database
        from before leases). Returns (execution, lease, previous owner, whether that
        owner released the lease)."""
        active = [str(s) for s in (Status.PENDING, Status.RUNNING, Status.STOPPING)]
        where = "status IN (?, ?, ?) AND (owner <> ? AND lease_expires_us < ?"
        args: list[Any] = [*active, owner, now_us]
        if include_own:
            where += " OR owner = ? OR (owner IS NULL AND status <> ?)"
            args += [owner, str(Status.PENDING)]
        where += ")"
        taken = self._claim(where, args, owner, limit, lease_until_us)
        return [
            (execution, Lease(owner, token), was, released)
            for execution, token, was, released in taken
        ]

    def release_leases(self, owner: str) -> int:
        """At the end of a graceful shutdown: end the leases ``owner`` holds on active
        executions now instead of when they would run out, so that another replica
        takes them over at its next round (its own restart reclaims them alike). The
        owner stays, for the next one to say whose they were. Returns how many."""
        active = (str(Status.PENDING), str(Status.RUNNING), str(Status.STOPPING))
        with self.write_lock():
            released = self.execute(
                "UPDATE execution SET lease_expires_us = ?"
                " WHERE owner = ? AND status IN (?, ?, ?) RETURNING id",
                (RELEASED, owner, *active),
            ).fetchall()
        return len(released)

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

