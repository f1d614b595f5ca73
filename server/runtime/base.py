"""The runtime interface: what the control plane asks of whatever runs executions.

A runtime knows nothing of protobuf or of the store's tables: it receives execution
ids, reads what it needs through the control plane, and reports progress back through
``ControlPlane.transition`` / ``ControlPlane.update_execution`` and a log sink.
"""

from __future__ import annotations

import abc


class Runtime(abc.ABC):
    """Runs executions. Every method but ``start``/``close`` is called on the event loop
    and must return quickly: work happens in the runtime's own tasks."""

    name: str = "runtime"

    @abc.abstractmethod
    async def start(self) -> None:
        """Begin scheduling; reconcile executions left active by a previous server."""

    @abc.abstractmethod
    def submit(self, execution_id: str) -> None:
        """A new PENDING execution: queue it; it starts when capacity allows."""

    @abc.abstractmethod
    def stop(self, execution_id: str) -> None:
        """The execution is now STOPPING: terminate it (or drop it from the queue)."""

    @abc.abstractmethod
    def forget(self, execution_id: str) -> None:
        """The execution was deleted: drop anything still held for it."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Server shutdown: stop every process; leave nothing running."""
