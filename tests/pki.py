"""Test PKI: organisation CAs and client certificates in the Fabric-CA convention,
including certificates that claim things they should not (`extra_attrs`)."""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ehr_common.fabric_ca import FABRIC_ATTRS_OID


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@dataclass
class CA:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return _pem_key(self.key)

    def _leaf(self, name: x509.Name, key: ec.EllipticCurvePrivateKey) -> x509.CertificateBuilder:
        now = datetime.now(UTC)
        ski = self.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        return (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=1))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), False
            )
        )

    def client(
        self,
        subject: str,
        roles: list[str] | None = None,
        extra_attrs: dict[str, str] | None = None,
        *,
        signer: ec.EllipticCurvePrivateKey | None = None,
    ) -> tuple[bytes, bytes]:
        """(cert PEM, key PEM); `signer` forges the signature with another key."""
        key = ec.generate_private_key(ec.SECP256R1())
        attrs = {"ehr.subject": subject, "ehr.roles": ",".join(roles or []), **(extra_attrs or {})}
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
        cert = (
            self._leaf(name, key)
            .add_extension(
                x509.UnrecognizedExtension(FABRIC_ATTRS_OID, json.dumps({"attrs": attrs}).encode()),
                False,
            )
            .sign(signer or self.key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)

    def server(self) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
        cert = (
            self._leaf(name, key)
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                False,
            )
            .sign(self.key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)


def make_ca(common_name: str, parent: CA | None = None) -> CA:
    """An organisation CA: self-signed, or an intermediate under `parent` (several
    may share a common name: the test of an impostor CA that copies another's name)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(parent.cert.subject if parent else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(parent.key if parent else key, hashes.SHA256())
    )
    return CA(cert, key)


def write_pem(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)
