"""Claim-once scheduling, leases and take-over, for one replica of the runtime.

The queue is the store: PENDING executions that no replica has claimed, oldest first.
A replica claims as many as it has free slots (``claim_pending``: rows another replica
is claiming are skipped, so each execution is claimed once) and runs them under the
claim's lease: its replica id and a fencing token. The runtime's writes carry the
lease; once another replica has taken the execution over, they are refused
(LEASE_LOST), so a replica that lost its lease cannot write over its successor.

Every ``lease_seconds / 3`` the scheduler renews the leases it holds. An execution
missing from the renewal was taken over (this replica stalled past its lease): the
runtime is told to let it go (``fenced``) without writing. Each round also takes over
the executions of replicas whose lease has lapsed (they died) and hands them to the
runtime's reconciliation with cause ``replica_lost``, then claims pending work.

At start, the scheduler claims what this replica must reconcile (its own executions
from before a restart, and lapsed ones of others) before it claims new work.

A replica that shuts down gracefully ends its leases as its last write (the server's
hand-over, once its runtime and log sink are closed): the others take its executions
over at their next round, with cause ``replica_shutdown``, instead of when the leases
would have run out.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import structlog

from server.domain.models import Execution, Lease
from server.domain.ports import ClaimStore

log = structlog.get_logger(__name__)

# (execution, lease, previous owner, whether it released the lease at a shutdown) of
# each execution to reconcile.
Reconcile = Callable[[list[tuple[Execution, Lease, str, bool]]], Awaitable[None]]


def _now_us() -> int:
    return time.time_ns() // 1000


class Scheduler:
    """Claims work for a runtime and keeps its leases."""

    def __init__(
        self,
        store: ClaimStore,
        replica_id: str,
        *,
        free_slots: Callable[[], int],
        launch: Callable[[Execution, Lease], None],
        reconcile: Reconcile,
        held: Callable[[], dict[str, Lease]],
        fenced: Callable[[str], None],
        lease_seconds: float = 10.0,
    ):
        self.store = store
        self.replica_id = replica_id
        self.free_slots = free_slots
        self.launch = launch
        self.reconcile = reconcile
        self.held = held
        self.fenced = fenced
        self.lease_seconds = lease_seconds
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._closing = False

    def _until(self) -> int:
        return _now_us() + int(self.lease_seconds * 1_000_000)

    async def start(self) -> None:
        """Reconcile what this replica must, then begin claiming and renewing."""
        taken = await self.store.claim_for_recovery(self.replica_id, _now_us(), self._until())
        if taken:
            await self.reconcile(taken)
        self._task = asyncio.create_task(self._run(), name="runtime-scheduler")

    def wake(self) -> None:
        """Claim now (a slot freed, an execution was created here or elsewhere)."""
        self._wake.set()

    async def close(self) -> None:
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        interval = self.lease_seconds / 3
        next_round = 0.0
        loop = asyncio.get_running_loop()
        while not self._closing:
            try:
                if loop.time() >= next_round:
                    await self._renew()
                    await self._take_over()
                    next_round = loop.time() + interval
                await self._claim()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the store failed: try again next round
                log.warning("scheduling round failed", exc_info=True)
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), max(0.0, next_round - loop.time()))
            except TimeoutError:
                pass

    async def _claim(self) -> None:
        while not self._closing:
            free = self.free_slots()
            if free <= 0:
                return
            claimed = await self.store.claim_pending(self.replica_id, free, self._until())
            for execution, lease in claimed:
                self.launch(execution, lease)
            if len(claimed) < free:
                return

    async def _renew(self) -> None:
        held = self.held()
        tokens = await self.store.renew_leases(self.replica_id, self._until(), list(held))
        for execution_id, lease in held.items():
            if lease is not None and tokens.get(execution_id) != lease.token:
                log.warning(
                    "lease lost: another replica took the execution over",
                    execution_id=execution_id,
                )
                self.fenced(execution_id)

    async def _take_over(self) -> None:
        taken = await self.store.claim_for_recovery(
            self.replica_id, _now_us(), self._until(), include_own=False
        )
        if taken:
            log.info("taking over executions of lost replicas", count=len(taken))
            await self.reconcile(taken)
