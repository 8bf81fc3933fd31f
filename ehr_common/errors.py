"""The typed exceptions of ehr-abe.

Every error a caller can see is one of these. Each class names the gRPC status
it maps to; the mapping itself lives in one place (`ehr_common.grpc_errors`), so
servicers never pick status codes by hand. Messages are for humans and must
never contain key material, plaintext or secrets.
"""

from __future__ import annotations


class EhrAbeError(Exception):
    """Base of every ehr-abe error."""

    #: Name of the grpc.StatusCode this error maps to (kept as a string so the
    #: pure core does not import grpc).
    status: str = "INTERNAL"
    #: Process exit code used by the CLI for this class of error.
    exit_code: int = 1


class InvalidArgument(EhrAbeError):
    """The caller sent something malformed or out of range."""

    status = "INVALID_ARGUMENT"
    exit_code = 2


class PolicyError(InvalidArgument):
    """A policy could not be parsed or uses an unsupported construct."""

    def __init__(self, message: str, *, position: int | None = None, text: str | None = None):
        self.position = position
        self.text = text
        if position is not None and text is not None:
            caret = " " * position + "^"
            message = f"{message} at position {position}\n  {text}\n  {caret}"
        super().__init__(message)


class DecodeError(InvalidArgument):
    """A serialized object (key, parameters, envelope, proof) is malformed."""


class IntegrityError(EhrAbeError):
    """Authenticated data failed its check: a tampered envelope or record."""

    status = "DATA_LOSS"
    exit_code = 4


class AccessDenied(EhrAbeError):
    """The caller's attributes or consent do not allow the operation."""

    status = "PERMISSION_DENIED"
    exit_code = 3


class PolicyNotSatisfied(AccessDenied):
    """The key's attributes do not satisfy the envelope's policy."""


class Unauthenticated(EhrAbeError):
    status = "UNAUTHENTICATED"
    exit_code = 3


class NotFound(EhrAbeError):
    status = "NOT_FOUND"
    exit_code = 5


class AlreadyExists(EhrAbeError):
    status = "ALREADY_EXISTS"
    exit_code = 6


class FailedPrecondition(EhrAbeError):
    status = "FAILED_PRECONDITION"
    exit_code = 7


class Unavailable(EhrAbeError):
    """A backend (object store, ledger, service) cannot be reached now."""

    status = "UNAVAILABLE"
    exit_code = 8


class DeadlineExceeded(EhrAbeError):
    status = "DEADLINE_EXCEEDED"
    exit_code = 9


class ConfigError(FailedPrecondition):
    """Configuration or installation problem; the message says how to fix it."""


class Aborted(EhrAbeError):
    """A concurrent change won (e.g. a ledger MVCC read conflict); retrying may succeed."""

    status = "ABORTED"
    exit_code = 10


class ResourceExhausted(EhrAbeError):
    """The caller holds as many of a bounded resource (open streams) as it may; retry
    once one is released."""

    status = "RESOURCE_EXHAUSTED"
    exit_code = 11
