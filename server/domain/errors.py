"""Domain errors: a small hierarchy, each class names its gRPC status code.

The domain does not import grpc: ``code`` is the name of a ``grpc.StatusCode`` member,
and the API layer's interceptor (server/api/errors.py) turns the error into a status
with ``google.rpc`` details. ``reason`` is a :class:`Reason`, the mirror of the
``ErrorReason`` enum of protos/trainyard/v1/error_reason.proto (a test checks that the
two hold the same names), so no error can carry a reason the contract does not list.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Reason(StrEnum):
    """``ErrorInfo.reason`` values: the ``ErrorReason`` names without their prefix."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    CONFIGURATION_INVALID = "CONFIGURATION_INVALID"
    INVALID_PAGE_TOKEN = "INVALID_PAGE_TOKEN"
    SCENARIO_NOT_FOUND = "SCENARIO_NOT_FOUND"
    EXECUTABLE_NOT_FOUND = "EXECUTABLE_NOT_FOUND"
    ARTIFACT_NOT_FOUND = "ARTIFACT_NOT_FOUND"
    CONFIGURATION_NOT_FOUND = "CONFIGURATION_NOT_FOUND"
    EXECUTION_NOT_FOUND = "EXECUTION_NOT_FOUND"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    REQUEST_ID_REUSED = "REQUEST_ID_REUSED"
    EXECUTION_NOT_STOPPABLE = "EXECUTION_NOT_STOPPABLE"
    EXECUTION_NOT_DELETABLE = "EXECUTION_NOT_DELETABLE"
    EXECUTABLE_IN_USE = "EXECUTABLE_IN_USE"
    LIMIT_EXCEEDED = "LIMIT_EXCEEDED"
    TAILER_TOO_SLOW = "TAILER_TOO_SLOW"
    INTERNAL_ERROR = "INTERNAL_ERROR"
    UNAVAILABLE = "UNAVAILABLE"
    STORE_UNAVAILABLE = "STORE_UNAVAILABLE"
    INVALID_TRANSITION = "INVALID_TRANSITION"
    LEASE_LOST = "LEASE_LOST"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    RESOURCE_PLAN_UNKNOWN = "RESOURCE_PLAN_UNKNOWN"
    SECRET_NOT_FOUND = "SECRET_NOT_FOUND"
    SECRET_KEY_NOT_FOUND = "SECRET_KEY_NOT_FOUND"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    TOKEN_EXPIRED = "TOKEN_EXPIRED"
    RATE_LIMITED = "RATE_LIMITED"
    TOO_MANY_STREAMS = "TOO_MANY_STREAMS"
    TEMPLATE_REF_NOT_FOUND = "TEMPLATE_REF_NOT_FOUND"
    EXECUTION_NOT_RERUNNABLE = "EXECUTION_NOT_RERUNNABLE"


@dataclass(slots=True)
class FieldViolation:
    """One bad field of a request: its path (``parameter_bindings.epochs``) and why."""

    field: str
    description: str


@dataclass
class DomainError(Exception):
    """Base of every error the domain raises on purpose."""

    message: str
    reason: Reason = Reason.INTERNAL_ERROR
    metadata: dict[str, str] = field(default_factory=dict)
    code = "INTERNAL"

    def __post_init__(self) -> None:
        # A reason outside the enum is a programming error: fail where it is made.
        self.reason = Reason(self.reason)

    def __str__(self) -> str:
        return self.message


@dataclass
class InvalidArgument(DomainError):
    """The request is malformed; ``violations`` name the fields."""

    violations: list[FieldViolation] = field(default_factory=list)
    reason: Reason = Reason.INVALID_ARGUMENT
    code = "INVALID_ARGUMENT"

    @classmethod
    def of(cls, field_name: str, description: str, reason: Reason = Reason.INVALID_ARGUMENT):
        return cls(
            message=f"{field_name}: {description}",
            reason=reason,
            violations=[FieldViolation(field_name, description)],
        )


@dataclass
class NotFound(DomainError):
    """The named resource does not exist in the caller's resource group."""

    resource_type: str = ""
    resource_name: str = ""
    reason: Reason = Reason.EXECUTION_NOT_FOUND
    code = "NOT_FOUND"

    @classmethod
    def of(cls, resource_type: str, resource_name: str):
        return cls(
            message=f"{resource_type} {resource_name!r} not found",
            resource_type=resource_type,
            resource_name=resource_name,
            reason=Reason(f"{resource_type.upper()}_NOT_FOUND"),
        )


@dataclass
class AlreadyExists(DomainError):
    """A resource with this id already exists."""

    resource_type: str = ""
    resource_name: str = ""
    reason: Reason = Reason.ALREADY_EXISTS
    code = "ALREADY_EXISTS"


@dataclass
class FailedPrecondition(DomainError):
    """The operation is refused in the resource's current state (lifecycle rules)."""

    reason: Reason = Reason.FAILED_PRECONDITION
    code = "FAILED_PRECONDITION"


@dataclass
class ResourceExhausted(DomainError):
    """A limit was reached (stream buffers, concurrent streams, message sizes, a
    principal's request rate). ``retry_after`` > 0: the caller may retry after that
    many seconds (a RetryInfo detail)."""

    reason: Reason = Reason.LIMIT_EXCEEDED
    retry_after: float = 0.0
    code = "RESOURCE_EXHAUSTED"


@dataclass
class PermissionDenied(DomainError):
    """The caller is known but holds no role that allows the call."""

    reason: Reason = Reason.PERMISSION_DENIED
    code = "PERMISSION_DENIED"


@dataclass
class Unauthenticated(DomainError):
    """The call carries no valid credential (missing, malformed, unknown, expired or
    revoked)."""

    reason: Reason = Reason.UNAUTHENTICATED
    code = "UNAUTHENTICATED"


@dataclass
class Unavailable(DomainError):
    """A transient condition; the caller may retry after ``retry_after`` seconds."""

    reason: Reason = Reason.UNAVAILABLE
    retry_after: float = 1.0
    code = "UNAVAILABLE"


@dataclass
class StoreUnavailable(Unavailable):
    """The store did not do what was asked (busy beyond its timeout, locked, an I/O
    error, a lost connection); the transaction was rolled back, so nothing of the
    request was written."""

    reason: Reason = Reason.STORE_UNAVAILABLE
