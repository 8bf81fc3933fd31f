"""The tests' one certificate helper.

Conventional identities are minted where the product mints them
(`ehr_common.certificates`: `mint_self_signed_ca`, `mint_client_identity`,
`mint_tls_server_cert`). `certificate()` builds the unconventional ones the
parsers must cope with: no attribute extension, foreign attributes, spaces in
role lists, self-signed leaves, other curves.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ehr_common.certificates import (
    mint_client_identity,
    mint_self_signed_ca,
    mint_tls_server_cert,
)
from ehr_common.fabric_ca import FABRIC_ATTRS_OID

__all__ = ["OrgCA", "certificate", "key_pem", "new_key", "self_signed_ca"]


def self_signed_ca(cn: str = "test CA") -> tuple[bytes, bytes]:
    """(cert_pem, key_pem) of a CA shaped like cryptogen's (P-256, with a subject key id)."""
    return mint_self_signed_ca(cn)


def new_key(curve: ec.EllipticCurve | None = None) -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(curve or ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def certificate(
    cn: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None = None,
    *,
    ca: bool = False,
    sans: Sequence[str] = (),
    attrs: dict[str, str] | None = None,
    valid: tuple[datetime, datetime] | None = None,
) -> bytes:
    """A PEM certificate for `key` named CN=`cn`, self-signed unless `issuer`
    (name, key) is given; `attrs` go verbatim into the Fabric-CA attribute extension;
    `valid` is (not before, not after), by default an hour ago to a day ahead."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    issuer_name, issuer_key = issuer or (name, key)
    now = datetime.now(UTC)
    not_before, not_after = valid or (now - timedelta(hours=1), now + timedelta(days=1))
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
    if sans:
        names: list[x509.GeneralName] = []
        for san in sans:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(san)))
            except ValueError:
                names.append(x509.DNSName(san))
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    if attrs is not None:
        raw = json.dumps({"attrs": attrs}).encode()
        builder = builder.add_extension(
            x509.UnrecognizedExtension(FABRIC_ATTRS_OID, raw), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class OrgCA:
    """An organisation's client CA: conventional identities through the product's
    minter, unconventional ones (claims a certificate should not be trusted for,
    a forged signature) through `certificate()`."""

    pem: bytes
    key_pem: bytes

    @staticmethod
    def new(cn: str, parent: OrgCA | None = None) -> OrgCA:
        """Self-signed, or an intermediate under `parent`."""
        if parent is None:
            return OrgCA(*self_signed_ca(cn))
        key = new_key()
        return OrgCA(certificate(cn, key, (parent.name, parent.key), ca=True), key_pem(key))

    @property
    def name(self) -> x509.Name:
        return x509.load_pem_x509_certificate(self.pem).subject

    @property
    def key(self) -> ec.EllipticCurvePrivateKey:
        k = serialization.load_pem_private_key(self.key_pem, None)
        assert isinstance(k, ec.EllipticCurvePrivateKey)
        return k

    def client(
        self,
        subject: str,
        roles: Sequence[str] = (),
        claims: dict[str, str] | None = None,
        *,
        signer: ec.EllipticCurvePrivateKey | None = None,
    ) -> tuple[bytes, bytes]:
        """(cert_pem, key_pem). `claims`: extra attributes (e.g. `ehr.msp`);
        `signer`: sign with another key under this CA's name."""
        if claims is None and signer is None:
            return mint_client_identity(self.pem, self.key_pem, subject, list(roles))
        key = new_key()
        attrs = {"ehr.subject": subject, "ehr.roles": ",".join(roles), **(claims or {})}
        pem = certificate(subject, key, (self.name, signer or self.key), attrs=attrs)
        return pem, key_pem(key)

    def server(self) -> tuple[bytes, bytes]:
        return mint_tls_server_cert(self.pem, self.key_pem, "localhost", ["localhost", "127.0.0.1"])
