"""Domain errors: a small hierarchy, each class names its gRPC status code.

The domain does not import grpc: ``code`` is the name of a ``grpc.StatusCode`` member,
and the API layer's interceptor (server/api/errors.py) turns the error into a status
with ``google.rpc`` details. ``reason`` is a stable machine-readable string
(documented in protos/trainyard/v1/error_reason.proto).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class FieldViolation:
    """One bad field of a request: its path (``parameter_bindings.epochs``) and why."""

    field: str
    description: str


@dataclass
class DomainError(Exception):
    """Base of every error the domain raises on purpose."""

    message: str
    reason: str = "INTERNAL_ERROR"
    metadata: dict[str, str] = field(default_factory=dict)
    code = "INTERNAL"

    def __str__(self) -> str:
        return self.message


@dataclass
class InvalidArgument(DomainError):
    """The request is malformed; ``violations`` name the fields."""

    violations: list[FieldViolation] = field(default_factory=list)
    reason: str = "INVALID_ARGUMENT"
    code = "INVALID_ARGUMENT"

    @classmethod
    def of(cls, field_name: str, description: str, reason: str = "INVALID_ARGUMENT"):
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
    reason: str = "NOT_FOUND"
    code = "NOT_FOUND"

    @classmethod
    def of(cls, resource_type: str, resource_name: str):
        return cls(
            message=f"{resource_type} {resource_name!r} not found",
            resource_type=resource_type,
            resource_name=resource_name,
            reason=f"{resource_type.upper()}_NOT_FOUND",
        )


@dataclass
class AlreadyExists(DomainError):
    """A resource with this id already exists."""

    resource_type: str = ""
    resource_name: str = ""
    reason: str = "ALREADY_EXISTS"
    code = "ALREADY_EXISTS"


@dataclass
class FailedPrecondition(DomainError):
    """The operation is refused in the resource's current state (lifecycle rules)."""

    reason: str = "FAILED_PRECONDITION"
    code = "FAILED_PRECONDITION"


@dataclass
class ResourceExhausted(DomainError):
    """A limit was reached (stream buffers, concurrent streams, message sizes, a
    principal's request rate). ``retry_after`` > 0: the caller may retry after that
    many seconds (a RetryInfo detail)."""

    reason: str = "RESOURCE_EXHAUSTED"
    retry_after: float = 0.0
    code = "RESOURCE_EXHAUSTED"


@dataclass
class PermissionDenied(DomainError):
    """The caller is known but holds no role that allows the call."""

    reason: str = "PERMISSION_DENIED"
    code = "PERMISSION_DENIED"


@dataclass
class Unauthenticated(DomainError):
    """The call carries no valid credential (missing, malformed, unknown, expired or
    revoked)."""

    reason: str = "UNAUTHENTICATED"
    code = "UNAUTHENTICATED"


@dataclass
class Unavailable(DomainError):
    """A transient condition; the caller may retry after ``retry_after`` seconds."""

    reason: str = "UNAVAILABLE"
    retry_after: float = 1.0
    code = "UNAVAILABLE"


@dataclass
class StoreUnavailable(Unavailable):
    """The store did not do what was asked (busy beyond its timeout, locked, an I/O
    error, a lost connection); the transaction was rolled back, so nothing of the
    request was written."""

    reason: str = "STORE_UNAVAILABLE"
