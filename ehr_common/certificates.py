"""X.509 identities in the Fabric-CA convention, minted with a CA's key (pure
apart from randomness).

`mint_client_identity` gives a P-256 key and a certificate signed by the CA
with `CN=<subject>`, `OU=client` (a client under NodeOUs) and the Fabric-CA
attribute extension holding `{"attrs": {"ehr.subject": ..., "ehr.roles": ...}}`;
`mint_tls_server_cert` a TLS server certificate. The local Fabric network, the
development ledger identities, device certificates and the tests all mint here.
In a hospital the organisation's Fabric CA enrolls users.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ehr_common.errors import ConfigError, InvalidArgument
from ehr_common.fabric_ca import FABRIC_ATTRS_OID, ROLES_ATTR, SUBJECT_ATTR

#: X.509 upper bound for a common name
MAX_SUBJECT_LEN = 64
VALIDITY = timedelta(days=365)
CLOCK_SKEW = timedelta(minutes=5)


def _check_subject(subject: str) -> None:
    if not subject or len(subject) > MAX_SUBJECT_LEN:
        raise InvalidArgument(f"subject must be 1 to {MAX_SUBJECT_LEN} characters")
    if not subject.isprintable() or subject != subject.strip():
        raise InvalidArgument("subject must be printable, without surrounding spaces")


def _roles_value(roles: Sequence[str]) -> str:
    if isinstance(roles, str):
        raise InvalidArgument("roles must be a list of role names, not one string")
    seen: list[str] = []
    for role in roles:
        if not role or "," in role or not role.isprintable() or role != role.strip():
            raise InvalidArgument(
                f"invalid role name {role!r} (non-empty, no commas or spaces around)"
            )
        if role not in seen:
            seen.append(role)
    return ",".join(seen)


def _load_ca(
    cert_pem: bytes, key_pem: bytes
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
    except ValueError as exc:
        raise ConfigError(f"unreadable CA material: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError("the CA key is not an ECDSA key")
    return cert, key


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _builder(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    name: x509.Name,
    key: ec.EllipticCurvePrivateKey,
) -> x509.CertificateBuilder:
    now = datetime.now(UTC)
    # The authority key id must equal the CA's own subject key id when it has one
    # (cryptogen's are SHA-256 based); a CA without one gets the standard derivation.
    try:
        ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski)
    except x509.ExtensionNotFound:
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        # Never before the CA's own start (nor after its end): Fabric checks a chain at
        # the leaf's notBefore, so a leaf backdated past a CA made minutes ago (a fresh
        # network's cryptogen CA) is "not yet valid" there and its org "unknown".
        .not_valid_before(max(now - CLOCK_SKEW, ca_cert.not_valid_before_utc))
        .not_valid_after(min(now + VALIDITY, ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(aki, critical=False)
    )


def mint_client_identity(
    ca_cert_pem: bytes, ca_key_pem: bytes, subject: str, roles: Sequence[str]
) -> tuple[bytes, bytes]:
    """(cert_pem, key_pem) for a client of the CA's org (pure apart from randomness)."""
    _check_subject(subject)
    roles_value = _roles_value(roles)
    ca_cert, ca_key = _load_ca(ca_cert_pem, ca_key_pem)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "client"),
            x509.NameAttribute(NameOID.COMMON_NAME, subject),
        ]
    )
    attrs = {"attrs": {SUBJECT_ATTR: subject, ROLES_ATTR: roles_value}}
    cert = (
        _builder(ca_cert, ca_key, name, key)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False),
            critical=True,
        )
        .add_extension(
            x509.UnrecognizedExtension(
                FABRIC_ATTRS_OID, json.dumps(attrs, separators=(",", ":")).encode()
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def mint_tls_server_cert(
    ca_cert_pem: bytes, ca_key_pem: bytes, common_name: str, sans: Sequence[str]
) -> tuple[bytes, bytes]:
    """(cert_pem, key_pem) for a TLS server (the chaincode servers), signed by a TLS CA."""
    ca_cert, ca_key = _load_ca(ca_cert_pem, ca_key_pem)
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for san in sans:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(san)))
        except ValueError:
            names.append(x509.DNSName(san))
    cert = (
        _builder(
            ca_cert, ca_key, x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]), key
        )
        .add_extension(
            x509.KeyUsage(True, False, True, False, False, False, False, False, False),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def mint_self_signed_ca(common_name: str, validity: timedelta = VALIDITY) -> tuple[bytes, bytes]:
    """(cert_pem, key_pem) of a self-signed P-256 CA with a subject key id, the
    shape cryptogen gives an organisation's CA: for development networks,
    benchmarks and tests. In a hospital the organisation's Fabric CA is the CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)
