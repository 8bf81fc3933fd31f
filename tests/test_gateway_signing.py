"""The Gateway client's pure parts, without a network: identities, tx ids, proposals,
low-S signatures, and the mapping of Gateway errors to typed errors."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest
from certs import certificate, new_key
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from google.protobuf import any_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from ehr_common import errors
from storage_service.fabric_gateway import errors as gw_errors
from storage_service.fabric_gateway.client import _result_payload
from storage_service.fabric_gateway.protos import (
    chaincode_pb2,
    common_pb2,
    gateway_pb2,
    identities_pb2,
    proposal_pb2,
    proposal_response_pb2,
    transaction_pb2,
)
from storage_service.fabric_gateway.signing import (
    P256_ORDER,
    SigningIdentity,
    build_proposal,
    commit_status_request,
    is_low_s,
    low_s,
    sign_envelope,
    transaction_id,
)


def make_identity(msp: str = "Hosp1MSP", curve: ec.EllipticCurve | None = None) -> SigningIdentity:
    key = new_key(curve)
    return SigningIdentity(msp, certificate("client", key), key)


@pytest.fixture(scope="module")
def ident() -> SigningIdentity:
    return make_identity()


def verify(ident: SigningIdentity, signature: bytes, message: bytes) -> None:
    ident.private_key.public_key().verify(signature, message, ec.ECDSA(hashes.SHA256()))


def test_creator_is_a_serialized_identity(ident: SigningIdentity) -> None:
    sid = identities_pb2.SerializedIdentity.FromString(ident.creator)
    assert sid.mspid == "Hosp1MSP" and sid.id_bytes == ident.certificate_pem


def test_transaction_id_is_sha256_of_nonce_and_creator() -> None:
    assert (
        transaction_id(b"n" * 24, b"creator") == hashlib.sha256(b"n" * 24 + b"creator").hexdigest()
    )


def test_proposal_structure_and_signature(ident: SigningIdentity) -> None:
    nonce = bytes(range(24))
    at = datetime(2026, 5, 1, 8, 0, tzinfo=UTC)
    p = build_proposal(
        ident, "ehr", "ehrcc", "AnchorBatch", ["b-1", "x"], nonce=nonce, timestamp=at
    )
    assert p.tx_id == transaction_id(nonce, ident.creator)
    verify(ident, p.signed.signature, p.signed.proposal_bytes)
    assert is_low_s(p.signed.signature)
    proposal = proposal_pb2.Proposal.FromString(p.signed.proposal_bytes)
    header = common_pb2.Header.FromString(proposal.header)
    ch = common_pb2.ChannelHeader.FromString(header.channel_header)
    assert (ch.type, ch.channel_id, ch.tx_id) == (common_pb2.ENDORSER_TRANSACTION, "ehr", p.tx_id)
    assert ch.timestamp.ToDatetime(tzinfo=UTC) == at
    ext = proposal_pb2.ChaincodeHeaderExtension.FromString(ch.extension)
    assert ext.chaincode_id.name == "ehrcc"
    sh = common_pb2.SignatureHeader.FromString(header.signature_header)
    assert (sh.creator, sh.nonce) == (ident.creator, nonce)
    payload = proposal_pb2.ChaincodeProposalPayload.FromString(proposal.payload)
    spec = chaincode_pb2.ChaincodeInvocationSpec.FromString(payload.input).chaincode_spec
    assert list(spec.input.args) == [b"AnchorBatch", b"b-1", b"x"]
    # a tampered proposal no longer verifies
    with pytest.raises(InvalidSignature):
        verify(ident, p.signed.signature, p.signed.proposal_bytes + b"\x00")


def test_fresh_nonce_per_proposal(ident: SigningIdentity) -> None:
    ids = {build_proposal(ident, "ehr", "cc", "F", []).tx_id for _ in range(20)}
    assert len(ids) == 20


def test_low_s_normalises_high_s(ident: SigningIdentity) -> None:
    message = b"fabric"
    for _ in range(40):  # about half of raw ECDSA signatures have a high S
        raw = ident.private_key.sign(message, ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(raw)
        high = encode_dss_signature(r, max(s, P256_ORDER - s))
        assert not is_low_s(high)
        verify(ident, high, message)  # valid, but Fabric would reject it
        fixed = low_s(high)
        assert is_low_s(fixed) and decode_dss_signature(fixed) == (r, min(s, P256_ORDER - s))
        verify(ident, fixed, message)


@settings(max_examples=30, deadline=None)
@given(message=st.binary(max_size=512))
def test_identity_signatures_are_always_low_s_and_valid(message: bytes) -> None:
    ident = IDENT
    sig = ident.sign(message)
    assert is_low_s(sig)
    verify(ident, sig, message)


IDENT = make_identity()


def test_envelope_and_commit_status_are_signed(ident: SigningIdentity) -> None:
    env = sign_envelope(ident, common_pb2.Envelope(payload=b"endorsed-tx"))
    verify(ident, env.signature, b"endorsed-tx")
    signed = commit_status_request(ident, "ehr", "ab" * 32)
    verify(ident, signed.signature, signed.request)
    req = gateway_pb2.CommitStatusRequest.FromString(signed.request)
    assert (req.channel_id, req.transaction_id, req.identity) == ("ehr", "ab" * 32, ident.creator)


def test_identity_refuses_mismatched_or_wrong_curve_keys(ident: SigningIdentity) -> None:
    other = make_identity()
    with pytest.raises(errors.ConfigError, match="does not match"):
        SigningIdentity("Hosp1MSP", ident.certificate_pem, other.private_key)
    with pytest.raises(errors.ConfigError, match="P-256"):
        make_identity(curve=ec.SECP384R1())
    assert "PRIVATE" not in repr(ident) and "key" not in repr(ident)


def test_identity_from_files(tmp_path: Any, ident: SigningIdentity) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_bytes(ident.certificate_pem)
    key.write_bytes(
        ident.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    loaded = SigningIdentity.from_files("Hosp1MSP", cert, key)
    assert loaded.creator == ident.creator
    with pytest.raises(errors.ConfigError):
        SigningIdentity.from_files("Hosp1MSP", cert, tmp_path / "missing.pem")


def test_result_payload_is_extracted_from_the_endorsed_envelope() -> None:
    action = proposal_pb2.ChaincodeAction()
    action.response.status = 200
    action.response.payload = b'{"ok":true}'
    prp = proposal_response_pb2.ProposalResponsePayload(extension=action.SerializeToString())
    cap = transaction_pb2.ChaincodeActionPayload()
    cap.action.proposal_response_payload = prp.SerializeToString()
    tx = transaction_pb2.Transaction(
        actions=[transaction_pb2.TransactionAction(payload=cap.SerializeToString())]
    )
    payload = common_pb2.Payload(data=tx.SerializeToString())
    assert _result_payload(payload.SerializeToString()) == b'{"ok":true}'
    with pytest.raises(errors.Unavailable):
        _result_payload(b"\xff\xff")


# -- error mapping -----------------------------------------------------------------------------
class GatewayRpcError(grpc.RpcError):
    """An RpcError as grpcio raises it, with a real encoded status-details trailer."""

    def __init__(self, code: grpc.StatusCode, details: str, peer_messages: list[str]) -> None:
        self._code, self._details = code, details
        status = bytearray()
        status += b"\x08" + bytes([code.value[0]])
        msg = details.encode()
        status += b"\x12" + _varint(len(msg)) + msg
        for m in peer_messages:
            detail = gateway_pb2.ErrorDetail(address="peer0:7051", msp_id="Hosp1MSP", message=m)
            packed = any_pb2.Any()
            packed.Pack(detail)
            raw = packed.SerializeToString()
            status += b"\x1a" + _varint(len(raw)) + raw
        self._trailers = (("grpc-status-details-bin", bytes(status)),)

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> Any:
        return self._trailers


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


@pytest.mark.parametrize(
    ("code", "peer_message", "expected", "text"),
    [
        (
            grpc.StatusCode.ABORTED,
            "chaincode response 500, [ehr:ALREADY_EXISTS] batch b-1 is already anchored",
            errors.AlreadyExists,
            "batch b-1 is already anchored",
        ),
        (
            grpc.StatusCode.ABORTED,
            "chaincode response 500, [ehr:PERMISSION_DENIED] dr may not change",
            errors.AccessDenied,
            "dr may not change",
        ),
        (
            grpc.StatusCode.UNKNOWN,
            "[ehr:INVALID_ARGUMENT] batch_id must be",
            errors.InvalidArgument,
            "batch_id must be",
        ),
        (grpc.StatusCode.UNKNOWN, "[ehr:NOT_FOUND] no anchor", errors.NotFound, "no anchor"),
        (
            grpc.StatusCode.ABORTED,
            "endorsement policy not satisfied",
            gw_errors.EndorsementFailure,
            "policy",
        ),
        (grpc.StatusCode.UNAVAILABLE, "", gw_errors.GatewayUnavailable, "failed to connect"),
        (grpc.StatusCode.DEADLINE_EXCEEDED, "", gw_errors.GatewayTimeout, "in time"),
        (
            grpc.StatusCode.UNKNOWN,
            "chaincode response 500, panic",
            gw_errors.ChaincodeError,
            "panic",
        ),
    ],
)
def test_gateway_errors_are_typed(
    code: grpc.StatusCode, peer_message: str, expected: type[Exception], text: str
) -> None:
    exc = GatewayRpcError(code, "failed to connect" if not peer_message else "see details",
                          [peer_message] if peer_message else [])  # fmt: skip
    mapped = gw_errors.map_rpc_error(exc, "endorse AnchorBatch")
    assert type(mapped) is expected
    assert text in str(mapped)


def test_peer_errors_survive_garbage_trailers() -> None:
    exc = GatewayRpcError(grpc.StatusCode.ABORTED, "x", [])
    exc._trailers = (("grpc-status-details-bin", b"\x1a\xff\xff"),)
    assert gw_errors.peer_errors(exc) == []
    assert isinstance(gw_errors.map_rpc_error(exc, "endorse"), gw_errors.EndorsementFailure)


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("MVCC_READ_CONFLICT", gw_errors.MvccConflict),
        ("PHANTOM_READ_CONFLICT", gw_errors.MvccConflict),
        ("ENDORSEMENT_POLICY_FAILURE", gw_errors.EndorsementFailure),
        ("DUPLICATE_TXID", gw_errors.TransactionInvalid),
    ],
)
def test_validation_codes_are_typed(code: str, expected: type[Exception]) -> None:
    mapped = gw_errors.map_validation_code(code, "tx1", 7)
    assert type(mapped) is expected and code in str(mapped) and "block 7" in str(mapped)
    assert isinstance(gw_errors.MvccConflict("x"), errors.Aborted)
