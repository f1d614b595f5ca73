"""The execution lifecycle, as data.

Two tables, and nothing else in the code base decides what a status allows:

* ``TRANSITIONS``: which status may follow which.
* ``OPERATIONS``: which user operations (stop, delete) each status allows.

``check_transition`` and ``check_operation`` raise the domain error the API turns into
FAILED_PRECONDITION with a stable reason and the current status in the details.
"""

from __future__ import annotations

import enum

from server.domain.errors import FailedPrecondition, Reason
from server.domain.models import Status


class Operation(enum.StrEnum):
    STOP = "stop"
    DELETE = "delete"
    RERUN = "rerun"  # a new execution of its configuration, linked to it


FINAL_STATUSES: frozenset[Status] = frozenset(
    {Status.COMPLETED, Status.DEAD, Status.STOPPED, Status.UNKNOWN}
)

# Statuses the runtime is responsible for: the reconciler looks at these after a restart.
ACTIVE_STATUSES: frozenset[Status] = frozenset({Status.PENDING, Status.RUNNING, Status.STOPPING})

# from status -> statuses it may move to.
TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.PENDING: frozenset({Status.RUNNING, Status.STOPPING, Status.DEAD, Status.UNKNOWN}),
    Status.RUNNING: frozenset(
        {Status.COMPLETED, Status.DEAD, Status.STOPPING, Status.UNKNOWN}
    ),
    Status.STOPPING: frozenset({Status.STOPPED, Status.UNKNOWN}),
    Status.COMPLETED: frozenset(),
    Status.DEAD: frozenset(),
    Status.STOPPED: frozenset(),
    Status.UNKNOWN: frozenset(),
}

# status -> operations allowed in it (the lifecycle table of DESIGN.md).
OPERATIONS: dict[Status, frozenset[Operation]] = {
    Status.UNKNOWN: frozenset({Operation.DELETE, Operation.RERUN}),
    Status.PENDING: frozenset({Operation.STOP}),
    Status.RUNNING: frozenset({Operation.STOP}),
    Status.COMPLETED: frozenset({Operation.DELETE, Operation.RERUN}),
    Status.STOPPING: frozenset(),
    Status.STOPPED: frozenset({Operation.DELETE, Operation.RERUN}),
    Status.DEAD: frozenset({Operation.DELETE, Operation.RERUN}),
}

# Reason of the refusal of each operation (protos/trainyard/v1/error_reason.proto).
REFUSAL_REASONS: dict[Operation, Reason] = {
    Operation.STOP: Reason.EXECUTION_NOT_STOPPABLE,
    Operation.DELETE: Reason.EXECUTION_NOT_DELETABLE,
    Operation.RERUN: Reason.EXECUTION_NOT_RERUNNABLE,
}


def is_final(status: Status) -> bool:
    return status in FINAL_STATUSES


def can_transition(current: Status, new: Status) -> bool:
    return new in TRANSITIONS[current]


def allows(status: Status, operation: Operation) -> bool:
    return operation in OPERATIONS[status]


def check_transition(execution_id: str, current: Status, new: Status) -> None:
    """Raise FailedPrecondition unless ``current -> new`` is a lifecycle transition."""
    if not can_transition(current, new):
        raise FailedPrecondition(
            message=f"execution {execution_id} cannot go from {current} to {new}",
            reason=Reason.INVALID_TRANSITION,
            metadata={"status": str(current), "requested_status": str(new)},
        )


def check_operation(execution_id: str, status: Status, operation: Operation) -> None:
    """Raise FailedPrecondition unless ``operation`` is allowed in ``status``."""
    if not allows(status, operation):
        raise FailedPrecondition(
            message=f"cannot {operation} execution {execution_id}: it is {status}",
            reason=REFUSAL_REASONS[operation],
            metadata={"status": str(status), "execution_id": execution_id},
        )
