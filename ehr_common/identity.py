"""Who is calling: from the client's X.509 certificate (mutual TLS), or, in
development mode only, from plain request headers.

Certificates follow the Fabric-CA convention, so one identity serves both the
gRPC services and the ledger: subject = attribute `ehr.subject` (else the
certificate's common name), roles = attribute `ehr.roles` (comma-separated),
both in the JSON attribute extension OID 1.2.3.4.5.6.7.8.1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cryptography import x509

from ehr_common.errors import Unauthenticated
from ehr_common.fabric_ca import fabric_attributes, subject_and_roles


@dataclass(frozen=True)
class Caller:
    """Who is acting: an authenticated subject of a member organisation."""

    subject: str
    msp_id: str
    roles: frozenset[str] = field(default_factory=frozenset)


DEV_SUBJECT_HEADER = "x-ehr-subject"
DEV_ROLES_HEADER = "x-ehr-roles"


def caller_from_certificate(pem: bytes, default_msp: str) -> Caller:
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise Unauthenticated("client certificate could not be parsed") from None
    subject, roles = subject_and_roles(cert)
    if not subject:
        raise Unauthenticated("client certificate names no subject")
    msp = fabric_attributes(cert).get("ehr.msp")
    return Caller(subject=subject, msp_id=str(msp or default_msp), roles=roles)


def caller_from_context(context: Any, *, tls: bool, default_msp: str) -> Caller:
    """The authenticated caller of a gRPC request."""
    if tls:
        auth = context.auth_context()
        pems = auth.get("x509_pem_cert") or []
        if not pems:
            raise Unauthenticated("a client certificate is required")
        return caller_from_certificate(pems[0], default_msp)
    md = {k: v for k, v in (context.invocation_metadata() or ())}
    subject = str(md.get(DEV_SUBJECT_HEADER, "")).strip()
    if not subject:
        raise Unauthenticated(
            f"development mode: send the caller's id in the {DEV_SUBJECT_HEADER!r} header"
        )
    roles = frozenset(r.strip() for r in str(md.get(DEV_ROLES_HEADER, "")).split(",") if r.strip())
    return Caller(subject=subject, msp_id=default_msp, roles=roles)
