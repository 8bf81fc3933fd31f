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
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ehr_common.certificates import mint_self_signed_ca
from ehr_common.fabric_ca import FABRIC_ATTRS_OID

__all__ = ["certificate", "key_pem", "new_key", "self_signed_ca"]


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
) -> bytes:
    """A PEM certificate for `key` named CN=`cn`, self-signed unless `issuer`
    (name, key) is given; `attrs` go verbatim into the Fabric-CA attribute extension."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    issuer_name, issuer_key = issuer or (name, key)
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
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
