"""Identity is (organisation, subject): the organisation comes from the configured
client CA that issued the certificate, never from a claim inside it; privileged
roles only from organisations configured to grant them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from certs import OrgCA
from hypothesis import given
from hypothesis import strategies as st

from ehr_common.config import load_config
from ehr_common.errors import ConfigError, InvalidArgument, Unauthenticated
from ehr_common.identity import (
    PRIVILEGED_ROLES,
    Authenticator,
    Caller,
    build_authenticator,
    load_trusted_orgs,
    qualify,
    split_principal,
)

HOSP1 = OrgCA.new("Hosp1 CA")
HOSP2 = OrgCA.new("Hosp2 CA")
GRANTS = {"Hosp1MSP": PRIVILEGED_ROLES, "Hosp2MSP": frozenset({"device"})}


def two_orgs() -> Authenticator:
    orgs = load_trusted_orgs({"Hosp1MSP": HOSP1.pem, "Hosp2MSP": HOSP2.pem}, GRANTS)
    return Authenticator(orgs, tls=True, default_msp="Hosp1MSP")


def test_the_organisation_is_the_issuing_cas_never_a_claim() -> None:
    """The reproduced attack: Hosp2's CA issues `p-17` with ehr.msp=Hosp1MSP."""
    auth = two_orgs()
    forged, _ = HOSP2.client("p-17", ["patient"], {"ehr.msp": "Hosp1MSP"})
    caller = auth.from_certificate(forged)
    assert (caller.msp_id, caller.subject) == ("Hosp2MSP", "p-17")
    assert caller.principal == "Hosp2MSP/p-17" != "Hosp1MSP/p-17"
    real, _ = HOSP1.client("p-17", ["patient"])
    assert auth.from_certificate(real).principal == "Hosp1MSP/p-17"


def test_certificates_are_checked_once_and_refusals_every_time() -> None:
    auth = two_orgs()
    pem, _ = HOSP1.client("p-17", ["patient"])
    first = auth.from_certificate(pem)
    assert auth.from_certificate(pem) == first
    assert auth._from_certificate.cache_info().hits == 1  # memoised: no second signature check
    stranger = OrgCA.new("Hosp1 CA").client("p-17", ["patient"])[0]
    for _ in range(2):  # a refusal is never cached as an answer
        with pytest.raises(Unauthenticated):
            auth.from_certificate(stranger)
    assert auth._from_certificate.cache_info().currsize == 1


def test_privileged_roles_only_from_organisations_that_grant_them() -> None:
    auth = two_orgs()
    every = sorted(PRIVILEGED_ROLES | {"doctor", "patient"})
    hosp2 = auth.from_certificate(HOSP2.client("x", every)[0])
    assert hosp2.roles == {"device", "doctor", "patient"}
    hosp1 = auth.from_certificate(HOSP1.client("y", every)[0])
    assert hosp1.roles == set(every)


def test_a_certificate_no_configured_ca_issued_is_refused() -> None:
    auth = two_orgs()
    stranger = OrgCA.new("Hosp1 CA")  # copies Hosp1's CA name, has its own key
    for pem in (
        stranger.client("p-17", ["patient"])[0],
        # Hosp1's name and key id, but not Hosp1's signature
        HOSP1.client("p-17", ["consent-admin"], signer=stranger.key)[0],
    ):
        with pytest.raises(Unauthenticated, match="not issued by a trusted client CA"):
            auth.from_certificate(pem)
    with pytest.raises(Unauthenticated, match="parsed"):
        auth.from_certificate(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    with pytest.raises(Unauthenticated, match="subject"):
        auth.from_certificate(HOSP1.client("bad/subject", claims={})[0])


def test_an_organisations_intermediate_ca_issues_for_it() -> None:
    intermediate = OrgCA.new("Hosp1 issuing CA", parent=HOSP1)
    orgs = load_trusted_orgs(
        {"Hosp1MSP": HOSP1.pem + intermediate.pem, "Hosp2MSP": HOSP2.pem}, GRANTS
    )
    auth = Authenticator(orgs, tls=True, default_msp="Hosp1MSP")
    caller = auth.from_certificate(intermediate.client("dr-a", ["doctor"])[0])
    assert caller.principal == "Hosp1MSP/dr-a"
    # Hosp2's root does not make Hosp1's intermediate Hosp2's
    other = load_trusted_orgs({"Hosp2MSP": HOSP2.pem}, {})
    with pytest.raises(Unauthenticated):
        Authenticator(other, tls=True, default_msp="Hosp2MSP").from_certificate(
            intermediate.client("dr-a", ["doctor"])[0]
        )


def test_one_ca_for_two_organisations_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="both"):
        load_trusted_orgs({"Hosp1MSP": HOSP1.pem, "Hosp2MSP": HOSP1.pem}, {})
    with pytest.raises(ConfigError, match="not privileged"):
        load_trusted_orgs({"Hosp1MSP": HOSP1.pem}, {"Hosp1MSP": ["doctor"]})


def test_configuration_of_client_cas_and_role_grants(tmp_path: Path) -> None:
    toml = tmp_path / "ehr.toml"
    ca1 = _write(tmp_path / "ca1.pem", HOSP1.pem)
    ca2 = _write(tmp_path / "ca2.pem", HOSP2.pem)
    toml.write_text(
        "[server]\n"
        'tls_cert = "s.pem"\ntls_key = "s.key"\n'
        f'client_cas = {{"Hosp1MSP" = "{ca1}", "Hosp2MSP" = "{ca2}"}}\n'
        'org_roles = {"Hosp1MSP" = ["consent-admin", "auditor"], "Hosp2MSP" = ["device"]}\n'
    )
    cfg = load_config(toml, env={})
    assert cfg.server.client_cas == {"Hosp1MSP": ca1, "Hosp2MSP": ca2}
    assert cfg.server.org_roles == {
        "Hosp1MSP": ("consent-admin", "auditor"),
        "Hosp2MSP": ("device",),
    }
    assert cfg.tls_enabled
    auth = build_authenticator(cfg)
    c = auth.from_certificate(HOSP2.client("ecg-1", ["device", "auditor"])[0])
    assert (c.principal, c.roles) == ("Hosp2MSP/ecg-1", {"device"})
    cfg.server.org_roles["Hosp3MSP"] = ("device",)
    with pytest.raises(ConfigError, match="no client CA"):
        build_authenticator(cfg)
    # environment overrides take JSON for tables
    env = {"EHR_ABE_SERVER_CLIENT_CAS": f'{{"Hosp2MSP": "{ca2}"}}'}
    assert load_config(toml, env=env).server.client_cas == {"Hosp2MSP": ca2}
    # one organisation: client_ca belongs to client_ca_msp (default storage.msp_id)
    one = load_config(env={})
    one.server.tls_cert, one.server.tls_key, one.server.client_ca = "s.pem", "s.key", ca2
    one.server.client_ca_msp = "Hosp2MSP"
    assert build_authenticator(one).from_certificate(HOSP2.client("n", ["auditor"])[0]) == Caller(
        "n", "Hosp2MSP", frozenset()
    )  # Hosp2 is not this service's organisation (Hosp1MSP): no privileged roles by default
    one.server.client_ca_msp = ""
    assert build_authenticator(one).from_certificate(HOSP2.client("n", ["auditor"])[0]) == Caller(
        "n", "Hosp1MSP", frozenset({"auditor"})
    )


class _Context:
    def __init__(self, md: dict[str, str]) -> None:
        self._md = md

    def invocation_metadata(self) -> Any:
        return tuple(self._md.items())


def test_development_headers_follow_the_same_role_rule() -> None:
    auth = Authenticator(tls=False, default_msp="Hosp1MSP")
    ours = auth.from_context(_Context({"x-ehr-subject": "a", "x-ehr-roles": "auditor,doctor"}))
    assert (ours.principal, ours.roles) == ("Hosp1MSP/a", {"auditor", "doctor"})
    theirs = auth.from_context(
        _Context({"x-ehr-subject": "a", "x-ehr-roles": "auditor,doctor", "x-ehr-msp": "Hosp2MSP"})
    )
    assert (theirs.principal, theirs.roles) == ("Hosp2MSP/a", {"doctor"})
    with pytest.raises(Unauthenticated):
        auth.from_context(_Context({}))
    with pytest.raises(Unauthenticated):
        auth.from_context(_Context({"x-ehr-subject": "a", "x-ehr-msp": "Hosp/2"}))


_subject = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._@:-]{0,20}", fullmatch=True)
_msp = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,10}", fullmatch=True)


@given(msp=_msp, other=_msp, subject=_subject)
def test_qualified_ids_round_trip(msp: str, other: str, subject: str) -> None:
    q = qualify(subject, msp)
    assert q == f"{msp}/{subject}" and split_principal(q) == (msp, subject)
    assert qualify(q, other) == q  # an explicit organisation is kept
    with pytest.raises(InvalidArgument):
        qualify(f"{q}/x", other)


def _write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)
