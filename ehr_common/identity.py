"""Who is calling: an (organisation, subject) pair, from the client's X.509
certificate (mutual TLS) or, in development mode only, from plain request headers.

Identity is (MSP id, subject). The subject and roles come from the certificate
(Fabric-CA convention: attributes `ehr.subject`, else the common name, and
`ehr.roles`, in extension 1.2.3.4.5.6.7.8.1). The organisation never does: it
is the MSP configured for the trusted client CA that issued the certificate
(the leaf's issuer name and authority key id match that CA and its signature
verifies under that CA's key). A claim such as `ehr.msp` inside a certificate
is ignored, so one organisation's CA cannot speak for another's people.

Privileged roles (`PRIVILEGED_ROLES`) are kept only when the caller's
organisation is configured to grant them (`TrustedOrg.grants`); other roles
pass through, because what they allow is limited to the caller's own
organisation's patients by the authorisation rules.

Principals are written `<MSP id>/<subject>` everywhere an id names a person
or device across organisations (patients, grantees, authors, devices):
service, index, ledger and chaincode use the same qualified form.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ehr_common.config import Config
from ehr_common.errors import ConfigError, InvalidArgument, Unauthenticated
from ehr_common.fabric_ca import subject_and_roles

#: Roles that reach beyond the caller's own records, accepted only from
#: organisations configured to grant them.
PRIVILEGED_ROLES = frozenset(
    {
        "consent-admin",
        "auditor",
        "admin",
        "authority",
        "anchorer",
        "device",
        "edge-gateway",
        "record-writer",
    }
)

SEPARATOR = "/"
_MSP_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_SUBJECT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@:-]{0,127}")


@dataclass(frozen=True)
class Caller:
    """Who is acting: an authenticated subject of a member organisation."""

    subject: str
    msp_id: str
    roles: frozenset[str] = field(default_factory=frozenset)

    @property
    def principal(self) -> str:
        """The organisation-qualified id, `<MSP id>/<subject>`."""
        return f"{self.msp_id}{SEPARATOR}{self.subject}"


# -- organisation-qualified ids ------------------------------------------------------
def validate_msp(value: str) -> str:
    if not isinstance(value, str) or not _MSP_RE.fullmatch(value):
        raise InvalidArgument(
            f"MSP id {str(value)[:70]!r} is not valid: 1-64 letters, digits and . _ -"
        )
    return value


def split_principal(value: str) -> tuple[str, str]:
    """(MSP id, subject) of a qualified id `<MSP>/<subject>`; InvalidArgument otherwise."""
    msp, sep, subject = str(value).partition(SEPARATOR)
    if not sep or not _MSP_RE.fullmatch(msp) or not _SUBJECT_RE.fullmatch(subject):
        raise InvalidArgument(
            f"{str(value)[:200]!r} is not an organisation-qualified id "
            "(<MSP id>/<subject>, e.g. Hosp1MSP/p-17)"
        )
    return msp, subject


def qualify(value: str, default_msp: str, what: str = "id") -> str:
    """The qualified form of `value`: `<MSP>/<subject>` as given, or a bare subject
    taken to be of `default_msp` (the caller's own organisation)."""
    value = str(value)
    if SEPARATOR in value:
        msp, subject = split_principal(value)
    else:
        msp, subject = default_msp, value
        if not _SUBJECT_RE.fullmatch(subject):
            raise InvalidArgument(
                f"{what} {value[:200]!r} is not valid: 1-128 characters from letters, digits "
                "and . _ @ : - (optionally prefixed by '<MSP id>/')"
            )
        validate_msp(msp)
    return f"{msp}{SEPARATOR}{subject}"


# -- trusted organisations -----------------------------------------------------------
@dataclass(frozen=True)
class TrustedOrg:
    """A client CA and the organisation (MSP) it issues identities for."""

    msp_id: str
    ca: x509.Certificate
    #: the privileged roles this organisation may grant its members
    grants: frozenset[str] = frozenset()

    def issued(self, leaf: x509.Certificate) -> bool:
        """Did this CA issue `leaf`? Issuer name, authority key id (when both carry
        one) and the signature under the CA's public key must all match."""
        if leaf.issuer != self.ca.subject:
            return False
        aki = _authority_key_id(leaf)
        ski = _subject_key_id(self.ca)
        if aki is not None and ski is not None and aki != ski:
            return False
        try:
            leaf.verify_directly_issued_by(self.ca)
        except (ValueError, TypeError, InvalidSignature):
            return False
        return True


def _authority_key_id(cert: x509.Certificate) -> bytes | None:
    try:
        ext = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    except x509.ExtensionNotFound:
        return None
    return ext.value.key_identifier


def _subject_key_id(cert: x509.Certificate) -> bytes | None:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return None


def load_trusted_orgs(
    cas: Mapping[str, bytes], grants: Mapping[str, Iterable[str]]
) -> tuple[TrustedOrg, ...]:
    """Trusted organisations from {MSP id: CA PEM} and {MSP id: privileged roles}.
    A PEM may hold several CAs (all of that organisation). ConfigError on a CA
    that cannot be read or that two organisations share."""
    orgs: list[TrustedOrg] = []
    seen: dict[bytes, str] = {}
    for msp, pem in cas.items():
        try:
            validate_msp(msp)
        except InvalidArgument as exc:
            raise ConfigError(f"client CA organisation: {exc}") from None
        try:
            certs = x509.load_pem_x509_certificates(pem)
        except ValueError:
            raise ConfigError(f"the client CA of {msp} is not a PEM certificate") from None
        granted = frozenset(grants.get(msp, ()))
        unknown = granted - PRIVILEGED_ROLES
        if unknown:
            raise ConfigError(
                f"org_roles of {msp}: {', '.join(sorted(unknown))} are not privileged roles "
                f"(those are: {', '.join(sorted(PRIVILEGED_ROLES))})"
            )
        for ca in certs:
            # a CA key trusted for two organisations would make the MSP ambiguous
            key = ca.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
            if key in seen and seen[key] != msp:
                raise ConfigError(f"one client CA is configured for both {seen[key]} and {msp}")
            seen[key] = msp
            orgs.append(TrustedOrg(msp, ca, granted))
    return tuple(orgs)


# -- authentication ----------------------------------------------------------------
DEV_SUBJECT_HEADER = "x-ehr-subject"
DEV_ROLES_HEADER = "x-ehr-roles"
DEV_MSP_HEADER = "x-ehr-msp"


def _keep_granted(roles: frozenset[str], grants: frozenset[str]) -> frozenset[str]:
    return frozenset(r for r in roles if r not in PRIVILEGED_ROLES or r in grants)


def _checked_subject(subject: str) -> str:
    if not subject:
        raise Unauthenticated("the client certificate names no subject")
    if not _SUBJECT_RE.fullmatch(subject):
        raise Unauthenticated(
            "the client certificate's subject is not a valid id "
            "(1-128 letters, digits and . _ @ : -)"
        )
    return subject


class Authenticator:
    """Turns a gRPC request into its `Caller`.

    With TLS: from the verified client certificate, the organisation being the
    one whose configured CA issued it. Without TLS (development mode): from
    the x-ehr-subject / x-ehr-roles / x-ehr-msp headers, anyone can claim
    anything; the privileged-role rule still applies, so the two modes
    authorise alike."""

    def __init__(
        self,
        orgs: Iterable[TrustedOrg] = (),
        *,
        tls: bool,
        default_msp: str,
        dev_grants: Mapping[str, frozenset[str]] | None = None,
    ) -> None:
        self.orgs = tuple(orgs)
        self.tls = tls
        self._from_certificate = lru_cache(maxsize=4096)(self._from_certificate_uncached)
        self.default_msp = validate_msp(default_msp)
        if tls and not self.orgs:
            raise ConfigError("mutual TLS needs at least one trusted client CA")
        # development mode: which organisation grants what (default: ours grants all)
        self._dev_grants = (
            dict(dev_grants) if dev_grants is not None else {default_msp: PRIVILEGED_ROLES}
        )

    def from_certificate(self, pem: bytes) -> Caller:
        """The caller a client certificate names. A pure function of the certificate
        and the configured CAs, so it is memoised: a signature check per request was
        a fifth of a PutRecord's Python time. (The TLS handshake checks the chain
        and validity dates on every connection; refusals are never cached.)"""
        return self._from_certificate(bytes(pem))

    def _from_certificate_uncached(self, pem: bytes) -> Caller:
        try:
            leaf = x509.load_pem_x509_certificate(pem)
        except ValueError:
            raise Unauthenticated("the client certificate could not be parsed") from None
        issuers = {o.msp_id: o for o in self.orgs if o.issued(leaf)}
        if len(issuers) != 1:
            # none: not issued by a configured CA (e.g. via an intermediate we do not know)
            raise Unauthenticated("the client certificate was not issued by a trusted client CA")
        org = next(iter(issuers.values()))
        subject, roles = subject_and_roles(leaf)
        return Caller(_checked_subject(subject), org.msp_id, _keep_granted(roles, org.grants))

    def from_context(self, context: Any) -> Caller:
        """The authenticated caller of a gRPC request."""
        if self.tls:
            pems = context.auth_context().get("x509_pem_cert") or []
            if not pems:
                raise Unauthenticated("a client certificate is required")
            return self.from_certificate(pems[0])
        md = {k: v for k, v in (context.invocation_metadata() or ())}
        subject = str(md.get(DEV_SUBJECT_HEADER, "")).strip()
        if not subject:
            raise Unauthenticated(
                f"development mode: send the caller's id in the {DEV_SUBJECT_HEADER!r} header"
            )
        if not _SUBJECT_RE.fullmatch(subject):
            raise Unauthenticated(f"development mode: {DEV_SUBJECT_HEADER!r} is not a valid id")
        msp = str(md.get(DEV_MSP_HEADER, "") or self.default_msp).strip()
        if not _MSP_RE.fullmatch(msp):
            raise Unauthenticated(f"development mode: {DEV_MSP_HEADER!r} is not a valid MSP id")
        roles = frozenset(
            r.strip() for r in str(md.get(DEV_ROLES_HEADER, "")).split(",") if r.strip()
        )
        return Caller(subject, msp, _keep_granted(roles, self._dev_grants.get(msp, frozenset())))


def role_grants(cfg: Config) -> dict[str, frozenset[str]]:
    """Which privileged roles each organisation may grant: `server.org_roles`, or by
    default every privileged role for this service's own organisation only."""
    if cfg.server.org_roles:
        return {msp: frozenset(roles) for msp, roles in cfg.server.org_roles.items()}
    return {cfg.storage.msp_id: PRIVILEGED_ROLES}


def client_cas(cfg: Config) -> dict[str, str]:
    """{MSP id: CA file}: `server.client_cas`, plus `server.client_ca` for
    `server.client_ca_msp` (default: this service's organisation)."""
    cas = dict(cfg.server.client_cas)
    if cfg.server.client_ca:
        msp = cfg.server.client_ca_msp or cfg.storage.msp_id
        if msp in cas and cas[msp] != cfg.server.client_ca:
            raise ConfigError(f"{msp} has a CA in both server.client_ca and server.client_cas")
        cas[msp] = cfg.server.client_ca
    return cas


def build_authenticator(cfg: Config) -> Authenticator:
    """The `Authenticator` the configuration describes (reads the CA files)."""
    grants = role_grants(cfg)
    if not cfg.tls_enabled:
        return Authenticator(tls=False, default_msp=cfg.storage.msp_id, dev_grants=grants)
    cas = client_cas(cfg)
    for msp in cfg.server.org_roles:
        if msp not in cas:
            raise ConfigError(f"server.org_roles names {msp}, which has no client CA configured")
    pems: dict[str, bytes] = {}
    for msp, path in cas.items():
        try:
            with open(path, "rb") as f:
                pems[msp] = f.read()
        except OSError as exc:
            raise ConfigError(f"cannot read the client CA of {msp} ({path}): {exc}") from None
    return Authenticator(load_trusted_orgs(pems, grants), tls=True, default_msp=cfg.storage.msp_id)
