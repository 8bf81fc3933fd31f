"""Signing identities and the pure message builders of the Fabric Gateway flow.

A Fabric identity is an X.509 certificate and an ECDSA P-256 key. It appears in
messages as a `SerializedIdentity` (MSP id + certificate PEM), the "creator".
Signatures are ECDSA over SHA-256, DER-encoded, with S in the lower half of the
group order: Fabric rejects high-S signatures (they are malleable).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from ehr_common.errors import ConfigError
from storage_service.fabric_gateway.protos import (
    chaincode_pb2,
    common_pb2,
    gateway_pb2,
    identities_pb2,
    proposal_pb2,
)

P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
NONCE_BYTES = 24


def low_s(signature_der: bytes) -> bytes:
    """The same signature with S normalised to the lower half of the P-256 order."""
    r, s = decode_dss_signature(signature_der)
    if s > P256_ORDER // 2:
        s = P256_ORDER - s
    return encode_dss_signature(r, s)


def is_low_s(signature_der: bytes) -> bool:
    _, s = decode_dss_signature(signature_der)
    return s <= P256_ORDER // 2


@dataclass(frozen=True)
class SigningIdentity:
    msp_id: str
    certificate_pem: bytes
    private_key: ec.EllipticCurvePrivateKey

    def __post_init__(self) -> None:
        if not isinstance(self.private_key.curve, ec.SECP256R1):
            raise ConfigError("Fabric identities here must use ECDSA P-256 keys")
        cert = x509.load_pem_x509_certificate(self.certificate_pem)
        if cert.public_key() != self.private_key.public_key():
            raise ConfigError(f"the private key does not match the certificate ({self.msp_id})")

    def __repr__(self) -> str:  # never show the key
        return f"SigningIdentity(msp_id={self.msp_id!r})"

    @property
    def creator(self) -> bytes:
        """The serialized identity, as it appears in headers."""
        serialized = identities_pb2.SerializedIdentity(
            mspid=self.msp_id, id_bytes=self.certificate_pem
        )
        return bytes(serialized.SerializeToString())

    def sign(self, message: bytes) -> bytes:
        return low_s(self.private_key.sign(message, ec.ECDSA(hashes.SHA256())))

    @classmethod
    def from_files(cls, msp_id: str, cert_path: Path, key_path: Path) -> SigningIdentity:
        try:
            cert = cert_path.read_bytes()
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as exc:
            raise ConfigError(
                f"cannot load the Fabric identity {cert_path.name} of {msp_id}: "
                f"{type(exc).__name__}"
            ) from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ConfigError(f"{key_path} is not an ECDSA private key")
        return cls(msp_id, cert, key)


def new_nonce() -> bytes:
    return os.urandom(NONCE_BYTES)


def transaction_id(nonce: bytes, creator: bytes) -> str:
    """Fabric's rule: hex(SHA-256(nonce || creator))."""
    return hashlib.sha256(nonce + creator).hexdigest()


@dataclass(frozen=True)
class Proposal:
    tx_id: str
    channel: str
    signed: Any  # proposal_pb2.SignedProposal


def build_proposal(
    identity: SigningIdentity,
    channel: str,
    chaincode: str,
    function: str,
    args: list[str],
    *,
    nonce: bytes | None = None,
    timestamp: datetime | None = None,
) -> Proposal:
    """A signed chaincode proposal (the first message of Evaluate and Endorse)."""
    nonce = nonce if nonce is not None else new_nonce()
    creator = identity.creator
    tx_id = transaction_id(nonce, creator)
    cc_id = chaincode_pb2.ChaincodeID(name=chaincode)
    channel_header = common_pb2.ChannelHeader(
        type=common_pb2.ENDORSER_TRANSACTION,
        channel_id=channel,
        tx_id=tx_id,
        epoch=0,
        extension=proposal_pb2.ChaincodeHeaderExtension(chaincode_id=cc_id).SerializeToString(),
    )
    channel_header.timestamp.FromDatetime(timestamp or datetime.now(UTC))
    header = common_pb2.Header(
        channel_header=channel_header.SerializeToString(),
        signature_header=common_pb2.SignatureHeader(
            creator=creator, nonce=nonce
        ).SerializeToString(),
    )
    spec = chaincode_pb2.ChaincodeSpec(
        chaincode_id=cc_id,
        input=chaincode_pb2.ChaincodeInput(args=[a.encode() for a in [function, *args]]),
    )
    payload = proposal_pb2.ChaincodeProposalPayload(
        input=chaincode_pb2.ChaincodeInvocationSpec(chaincode_spec=spec).SerializeToString()
    )
    proposal_bytes = proposal_pb2.Proposal(
        header=header.SerializeToString(), payload=payload.SerializeToString()
    ).SerializeToString()
    signed = proposal_pb2.SignedProposal(
        proposal_bytes=proposal_bytes, signature=identity.sign(proposal_bytes)
    )
    return Proposal(tx_id=tx_id, channel=channel, signed=signed)


def sign_envelope(identity: SigningIdentity, envelope: Any) -> Any:
    """The endorsed transaction, signed by the submitter (over the payload bytes)."""
    return common_pb2.Envelope(payload=envelope.payload, signature=identity.sign(envelope.payload))


def commit_status_request(identity: SigningIdentity, channel: str, tx_id: str) -> Any:
    request = gateway_pb2.CommitStatusRequest(
        transaction_id=tx_id, channel_id=channel, identity=identity.creator
    ).SerializeToString()
    return gateway_pb2.SignedCommitStatusRequest(request=request, signature=identity.sign(request))
