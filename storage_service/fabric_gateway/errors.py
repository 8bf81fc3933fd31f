"""Gateway failures as typed ehr-abe errors.

The Gateway reports a failed endorsement or evaluation as a gRPC status whose
details (`grpc-status-details-bin`, a google.rpc.Status) carry one
`gateway.ErrorDetail` per peer, with the chaincode's own message. The ehr
chaincode tags its refusals (`[ehr:ALREADY_EXISTS] ...`, see
`chaincode.core.wire_error`), so they come back as the same typed errors the
embedded ledger raises.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError as ProtoDecodeError

from chaincode.core import parse_wire_error
from ehr_common import errors
from storage_service.fabric_gateway.protos import gateway_pb2


class EndorsementFailure(errors.FailedPrecondition):
    """Peers did not endorse (policy not met, peers disagree, chaincode crashed)."""


class ChaincodeError(errors.FailedPrecondition):
    """The chaincode refused with a message that maps to no more specific error."""


class MvccConflict(errors.Aborted):
    """Another transaction changed what this one read; resubmitting may succeed."""


class TransactionInvalid(errors.FailedPrecondition):
    """The transaction was ordered but the peers marked it invalid."""

    def __init__(self, message: str, *, code: str, block: int) -> None:
        super().__init__(message)
        self.code = code
        self.block = block


class GatewayUnavailable(errors.Unavailable):
    """The gateway peer cannot be reached (or cannot reach what it needs)."""


class GatewayTimeout(errors.DeadlineExceeded):
    pass


@dataclass(frozen=True)
class PeerError:
    address: str
    msp_id: str
    message: str


def _fields(buf: bytes) -> Iterator[tuple[int, int, Any]]:
    """Fields of a protobuf message: (number, wire type, int or bytes)."""
    i = 0

    def varint() -> int:
        nonlocal i
        shift = value = 0
        while True:
            b = buf[i]
            i += 1
            value |= (b & 0x7F) << shift
            if b < 0x80:
                return value
            shift += 7

    while i < len(buf):
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            yield number, wire, varint()
        elif wire == 2:
            n = varint()
            yield number, wire, buf[i : i + n]
            i += n
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        else:
            raise ValueError("unsupported wire type")


def peer_errors(exc: grpc.RpcError) -> list[PeerError]:
    """The per-peer ErrorDetails of a Gateway error (google.rpc.Status.details)."""
    trailers: Any = exc.trailing_metadata() if hasattr(exc, "trailing_metadata") else None
    raw = next((v for k, v in (trailers or ()) if k == "grpc-status-details-bin"), None)
    if not isinstance(raw, bytes):
        return []
    out: list[PeerError] = []
    try:
        for number, wire, value in _fields(raw):
            if number != 3 or wire != 2:  # Status.details: repeated Any
                continue
            any_fields = {n: v for n, w, v in _fields(value) if w == 2}
            if not bytes(any_fields.get(1, b"")).endswith(b"gateway.ErrorDetail"):
                continue
            detail = gateway_pb2.ErrorDetail.FromString(bytes(any_fields.get(2, b"")))
            out.append(PeerError(detail.address, detail.msp_id, detail.message))
    except (ValueError, IndexError, ProtoDecodeError):
        return out
    return out


_TYPED: dict[str, type[errors.EhrAbeError]] = {
    "INVALID_ARGUMENT": errors.InvalidArgument,
    "PERMISSION_DENIED": errors.AccessDenied,
    "ALREADY_EXISTS": errors.AlreadyExists,
    "NOT_FOUND": errors.NotFound,
}


def map_rpc_error(exc: grpc.RpcError, action: str) -> errors.EhrAbeError:
    """The typed error for a failed Gateway call."""
    code = exc.code() if hasattr(exc, "code") else None
    details = str(exc.details() if hasattr(exc, "details") else "") or ""
    peers = peer_errors(exc)
    for text in [p.message for p in peers] + [details]:
        tagged = parse_wire_error(text)
        if tagged is not None:
            status, message = tagged
            return _TYPED.get(status, ChaincodeError)(message)
    where = "; ".join(f"{p.msp_id or p.address}: {p.message}" for p in peers)
    summary = f"{action}: {details}" + (f" ({where})" if where else "")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return GatewayTimeout(f"{action}: the gateway did not answer in time")
    if code == grpc.StatusCode.UNAVAILABLE or "Raft leader" in summary:
        return GatewayUnavailable(summary)  # e.g. the orderer is still electing after a restart
    if code == grpc.StatusCode.ABORTED:
        if "MVCC_READ_CONFLICT" in summary or "PHANTOM_READ_CONFLICT" in summary:
            return MvccConflict(summary)
        return EndorsementFailure(summary)
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return errors.AccessDenied(summary)
    if code == grpc.StatusCode.NOT_FOUND:
        return ChaincodeError(summary)
    if peers:
        return ChaincodeError(summary)
    return GatewayUnavailable(summary)


def map_validation_code(code_name: str, tx_id: str, block: int) -> errors.EhrAbeError:
    message = f"transaction {tx_id} was invalidated in block {block}: {code_name}"
    if code_name in ("MVCC_READ_CONFLICT", "PHANTOM_READ_CONFLICT"):
        return MvccConflict(message)
    if code_name == "ENDORSEMENT_POLICY_FAILURE":
        return EndorsementFailure(message)
    return TransactionInvalid(message, code=code_name, block=block)


def map_chaincode_message(message: str, action: str) -> errors.EhrAbeError:
    """The typed error for a chaincode's error response message."""
    tagged = parse_wire_error(message)
    if tagged is not None:
        return _TYPED.get(tagged[0], ChaincodeError)(tagged[1])
    return ChaincodeError(f"{action}: {message}")
