"""The runtime interface: what the control plane asks of whatever runs executions.

A runtime knows nothing of protobuf or of the store's tables: it receives execution
ids, reads what it needs through the control plane's store (its runtime-use reads), and
reports progress back through ``ControlPlane.transition`` /
``ControlPlane.update_execution`` / ``ControlPlane.register_output_artifact`` and a log
sink.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class StepProcess:
    """A running step as the runtime sees it."""

    step: str
    pid: int  # the step's first process
    process_group: int  # its process group (signals go to the whole group)


@dataclass(frozen=True, slots=True)
class ExecutionInfo:
    """What a runtime holds for one execution (see :meth:`Runtime.inspect`)."""

    execution_id: str
    state: str  # "queued": waits for capacity; "active": handed to a worker
    queue_position: int | None = None  # 0 is next, when queued
    work_dir: str = ""
    processes: tuple[StepProcess, ...] = ()


class Runtime(abc.ABC):
    """Runs executions. Every method is called on the event loop; the plain ones must
    return at once (work happens in the runtime's own tasks), the coroutines await
    only the store."""

    name: str = "runtime"

    @abc.abstractmethod
    async def start(self, server_address: str) -> None:
        """Reconcile (:meth:`recover`), then begin scheduling. ``server_address`` is
        the bound ``host:port`` of the API, handed to steps so they can call it."""

    @abc.abstractmethod
    async def recover(self) -> None:
        """Reconcile every execution a previous server left PENDING, RUNNING or
        STOPPING: pending ones queue again in creation order; the others end (DEAD,
        UNKNOWN, STOPPED, or COMPLETED when everything had finished) with cause
        ``server_restart``, and none of their processes is left. Idempotent."""

    @abc.abstractmethod
    def submit(self, execution_id: str) -> None:
        """A new PENDING execution: queue it; it starts when capacity allows."""

    @abc.abstractmethod
    async def stop(self, execution_id: str) -> None:
        """The execution is now STOPPING: terminate it (or drop it from the queue)."""

    @abc.abstractmethod
    def forget(self, execution_id: str) -> None:
        """The execution was deleted: drop anything still held for it."""

    @abc.abstractmethod
    def inspect(self, execution_id: str) -> ExecutionInfo | None:
        """What the runtime holds for the execution; None when it holds nothing (the
        execution is final, or unknown to this runtime)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Server shutdown: stop every process; leave nothing running. Executions keep
        their status for :meth:`recover` at the next start."""
