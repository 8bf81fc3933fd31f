"""The Fabric-CA identity convention every part of ehr-abe reads.

Enrollment attributes live in the certificate extension OID 1.2.3.4.5.6.7.8.1
as JSON `{"attrs": {...}}`. ehr-abe uses two of them: `ehr.subject` (else the
certificate's common name) and `ehr.roles` (comma-separated). The gRPC
services, the chaincode and the development identity minter
(`ehr_abe.infra.fabric.identities`) all go through this module, so they agree.
"""

from __future__ import annotations

import json

from cryptography import x509
from cryptography.x509.oid import NameOID

FABRIC_ATTRS_OID = x509.ObjectIdentifier("1.2.3.4.5.6.7.8.1")
SUBJECT_ATTR = "ehr.subject"
ROLES_ATTR = "ehr.roles"


def fabric_attributes(cert: x509.Certificate) -> dict[str, object]:
    """The certificate's Fabric-CA attributes ({} when absent or malformed)."""
    try:
        ext = cert.extensions.get_extension_for_oid(FABRIC_ATTRS_OID)
    except x509.ExtensionNotFound:
        return {}
    if not isinstance(ext.value, x509.UnrecognizedExtension):
        return {}
    try:
        parsed = json.loads(ext.value.value)
    except ValueError:
        return {}
    if isinstance(parsed, dict) and isinstance(parsed.get("attrs"), dict):
        return dict(parsed["attrs"])
    return {}


def subject_and_roles(cert: x509.Certificate) -> tuple[str, frozenset[str]]:
    """(subject, roles) of a certificate; subject '' if it names none."""
    attrs = fabric_attributes(cert)
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    subject = str(attrs.get(SUBJECT_ATTR) or (cns[0].value if cns else ""))
    roles = frozenset(r.strip() for r in str(attrs.get(ROLES_ATTR, "")).split(",") if r.strip())
    return subject, roles
