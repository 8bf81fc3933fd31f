"""Multi-authority in the product: authorities' files and time-bound keys, envelopes
with ledger-verified authority keys, keyrings across authorities, scheme routing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from abe_service.authority import KeyAuthority
from abe_service.envelope import AbeEncryptor
from abe_service.ma.authority import MaAuthority
from abe_service.ma.envelope import MaEncryptor, MaKeyring
from abe_service.ma.router import LedgerAuthorities, MaLedgerEncryptor, SchemeRouter
from abe_service.ma.scheme import SCHEME_ID, MultiAuthority
from abe_service.ma.validity import day_number, with_validity
from abe_service.pairing.base import get_backend
from abe_service.policy import normal_form
from ehr_common.errors import (
    AlreadyExists,
    ConfigError,
    DecodeError,
    IntegrityError,
    InvalidArgument,
    NotFound,
    PolicyNotSatisfied,
)
from ehr_common.identity import Authenticator
from storage_service.ledger.base import Caller
from storage_service.ledger.client import LedgerClient
from storage_service.ledger.embedded import EmbeddedLedger

PASS = b"correct horse battery staple"
DAY = 20500
POLICY = "role:doctor@hosp1 and role:researcher@hosp2"
KA = {
    "hosp1": Caller("ka-1", "Hosp1MSP", frozenset({"authority"})),
    "hosp2": Caller("ka-2", "Hosp2MSP", frozenset({"authority"})),
}


@pytest.fixture(scope="module")
def authorities(tmp_path_factory: pytest.TempPathFactory) -> dict[str, MaAuthority]:
    root = tmp_path_factory.mktemp("ma")
    return {
        name: MaAuthority.setup(root / name, name, passphrase=PASS) for name in ("hosp1", "hosp2")
    }


@pytest.fixture
def ledger(tmp_path: Path, authorities: dict[str, MaAuthority]) -> LedgerClient:
    client = LedgerClient(
        EmbeddedLedger(tmp_path / "ledger.sqlite"),
        Caller("storage-service", "Hosp1MSP", frozenset({"anchorer", "auditor"})),
    )
    for name, a in authorities.items():
        client.register_authority(KA[name], name, SCHEME_ID, a.public_key, a.fingerprint)
    return client


def keyring(authorities: dict[str, MaAuthority], gid: str, until: int = DAY + 30) -> MaKeyring:
    keys = [
        authorities["hosp1"].issue_key(
            gid, ["role:doctor@hosp1"], valid_from=DAY - 5, valid_until=until
        ),
        authorities["hosp2"].issue_key(
            gid, ["role:researcher@hosp2"], valid_from=DAY - 5, valid_until=until
        ),
    ]
    return MaKeyring.from_user_keys([k.user_key for k in keys])


def router(ledger: LedgerClient, day: int = DAY) -> SchemeRouter:
    auths = LedgerAuthorities(ledger, MultiAuthority(get_backend()), ttl_s=0)
    return SchemeRouter(None, MaLedgerEncryptor(auths), day=lambda: day)


def test_authority_files_round_trip(tmp_path: Path, authorities: dict[str, MaAuthority]) -> None:
    a = MaAuthority.setup(tmp_path, "hosp9", passphrase=PASS)
    with pytest.raises(AlreadyExists):
        MaAuthority.setup(tmp_path, "hosp9", passphrase=PASS)
    again = MaAuthority.open(tmp_path, passphrase=PASS)
    assert again.fingerprint == a.fingerprint and again.can_issue
    assert not MaAuthority.open(tmp_path, public_only=True).can_issue
    with pytest.raises(InvalidArgument, match="own attributes"):
        again.issue_key("alice", ["role:doctor@hosp1"], valid_from=1, valid_until=2)
    with pytest.raises(InvalidArgument, match="validity period"):
        again.issue_key("alice", ["valid_until@hosp9=5"], valid_from=1, valid_until=2)
    # a postdated key would open everything at once: periods start by tomorrow
    today = day_number(datetime.now(UTC))
    with pytest.raises(InvalidArgument, match="after tomorrow"):
        again.issue_key("alice", ["role:x@hosp9"], valid_from=today + 2, valid_until=today + 9)
    with pytest.raises(InvalidArgument, match="after tomorrow"):
        again.renew("alice", valid_from=today + 2, valid_until=today + 9)
    again.issue_key("alice", ["role:x@hosp9"], valid_from=today + 1, valid_until=today + 9)
    again.renew("alice", valid_from=today + 1, valid_until=today + 9)


def test_record_needing_both_centres(
    ledger: LedgerClient, authorities: dict[str, MaAuthority]
) -> None:
    r = router(ledger)
    env = r.encrypt(POLICY, b"both centres", b"rec-1")
    assert r.envelope_policy(env) == normal_form(with_validity(POLICY, DAY))
    assert keyring(authorities, "alice").decrypt(env, b"rec-1") == b"both centres"
    # one centre's keys alone are not enough
    only1 = MaKeyring.from_user_keys(
        [
            authorities["hosp1"]
            .issue_key("carol", ["role:doctor@hosp1"], valid_from=DAY, valid_until=DAY + 9)
            .user_key
        ]
    )
    with pytest.raises(PolicyNotSatisfied):
        only1.decrypt(env, b"rec-1")
    with pytest.raises(IntegrityError):
        keyring(authorities, "alice").decrypt(env, b"rec-2")


def test_keyring_refuses_two_gids(authorities: dict[str, MaAuthority]) -> None:
    a = authorities["hosp1"].issue_key("alice", ["x@hosp1"], valid_from=1, valid_until=2)
    b = authorities["hosp2"].issue_key("bob", ["y@hosp2"], valid_from=1, valid_until=2)
    with pytest.raises(InvalidArgument, match="different global identifiers"):
        MaKeyring.from_user_keys([a.user_key, b.user_key])


def test_expired_key_cannot_open_later_records_renewal_restores(
    ledger: LedgerClient, authorities: dict[str, MaAuthority]
) -> None:
    ring = keyring(authorities, "dave", until=DAY + 10)
    before = router(ledger, DAY + 10).encrypt(POLICY, b"old", b"r")
    after = router(ledger, DAY + 11).encrypt(POLICY, b"new", b"r")
    assert ring.decrypt(before, b"r") == b"old"  # written while the key was valid: stays readable
    with pytest.raises(PolicyNotSatisfied):
        ring.decrypt(after, b"r")
    # renewal: only the time attributes, from each authority, added to the keyring
    renewals = [
        authorities[n].renew("dave", valid_from=DAY, valid_until=DAY + 40).user_key
        for n in ("hosp1", "hosp2")
    ]
    renewed = MaKeyring.from_user_keys(
        [*(k.user_key for k in _keys(authorities, "dave")), *renewals]
    )
    assert renewed.decrypt(after, b"r") == b"new"
    # a renewal alone carries no role
    with pytest.raises(PolicyNotSatisfied):
        MaKeyring.from_user_keys(renewals).decrypt(after, b"r")
    # someone else's renewal does not extend dave's keys
    eve = [
        authorities[n].renew("eve", valid_from=DAY, valid_until=DAY + 40)
        for n in ("hosp1", "hosp2")
    ]
    with pytest.raises(InvalidArgument):
        MaKeyring.from_user_keys(
            [*(k.user_key for k in _keys(authorities, "dave")), *(e.user_key for e in eve)]
        )


def _keys(authorities: dict[str, MaAuthority], gid: str) -> list:  # type: ignore[type-arg]
    return [
        authorities["hosp1"].issue_key(
            gid, ["role:doctor@hosp1"], valid_from=DAY - 5, valid_until=DAY + 10
        ),
        authorities["hosp2"].issue_key(
            gid, ["role:researcher@hosp2"], valid_from=DAY - 5, valid_until=DAY + 10
        ),
    ]


def test_encryptors_take_verified_keys_from_the_ledger(
    ledger: LedgerClient, authorities: dict[str, MaAuthority], tmp_path: Path
) -> None:
    r = router(ledger)
    with pytest.raises(NotFound):
        r.encrypt("a@hosp3", b"x", b"")
    # a registry entry whose key names another authority is refused
    rogue = MaAuthority.setup(tmp_path / "rogue", "hosp2", passphrase=PASS)
    ledger.revoke_authority(KA["hosp2"], "hosp2", "test")
    with pytest.raises(InvalidArgument, match="revoked"):
        router(ledger).encrypt(POLICY, b"x", b"")
    ledger.rotate_authority(
        KA["hosp2"], "hosp2", authorities["hosp1"].public_key, authorities["hosp1"].fingerprint
    )
    with pytest.raises(IntegrityError, match="belongs to hosp1"):
        router(ledger).encrypt(POLICY, b"x", b"")
    ledger.rotate_authority(KA["hosp2"], "hosp2", rogue.public_key, rogue.fingerprint)
    env = router(ledger).encrypt(POLICY, b"x", b"")
    # keys issued under hosp2's earlier key do not open records made with the rotated one
    with pytest.raises(IntegrityError):
        keyring(authorities, "alice").decrypt(env, b"")


def test_envelope_tampering_and_scheme_routing(
    ledger: LedgerClient, authorities: dict[str, MaAuthority], tmp_path: Path
) -> None:
    fame_auth = KeyAuthority.setup(tmp_path / "fame", passphrase=PASS)
    r = SchemeRouter(fame_auth.encryptor, router(ledger).ma, day=lambda: DAY)
    fame_env = r.encrypt("role:doctor", b"f", b"c")
    assert r.envelope_policy(fame_env) == "role:doctor"
    ma_env = r.encrypt(POLICY, b"m", b"c")
    ring = keyring(authorities, "alice")
    with pytest.raises(DecodeError):
        ring.decrypt(fame_env, b"c")  # a FAME envelope is not a multi-authority one
    with pytest.raises(DecodeError):
        AbeEncryptor.from_public_params(fame_auth.public_params).envelope_policy(ma_env)
    for i in range(0, len(ma_env), max(1, len(ma_env) // 40)):
        bad = bytearray(ma_env)
        bad[i] ^= 0x01
        with pytest.raises((DecodeError, IntegrityError, PolicyNotSatisfied, InvalidArgument)):
            ring.decrypt(bytes(bad), b"c")
    with pytest.raises(DecodeError):
        r.envelope_policy(b"\x00garbage")


def test_validity_attaches_per_authority_subtree() -> None:
    assert with_validity("(a@h1 and b@h1) or c@h2", 7) == (
        "(a@h1 and b@h1 and valid_until@h1 >= 7) or (c@h2 and valid_until@h2 >= 7)"
    )
    from datetime import UTC, datetime

    assert day_number(datetime(1970, 1, 2, 23, tzinfo=UTC)) == 1


def test_from_public_keys_offline(authorities: dict[str, MaAuthority]) -> None:
    enc = MaEncryptor.from_public_keys([a.public_key for a in authorities.values()])
    env = enc.encrypt("role:doctor@hosp1", b"offline", b"")
    ring = MaKeyring.from_user_keys(
        [
            authorities["hosp1"]
            .issue_key("z", ["role:doctor@hosp1"], valid_from=0, valid_until=1)
            .user_key
        ]
    )
    assert ring.decrypt(env, b"") == b"offline"


@pytest.mark.parametrize(
    "ledger_kind", ["embedded", pytest.param("fabric", marks=pytest.mark.fabric)]
)
def test_storage_service_routes_both_schemes(
    ledger_kind: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    authorities: dict[str, MaAuthority],
) -> None:
    """The real wiring: one StorageService stores FAME and multi-authority records side by
    side; the multi-authority one gets the validity condition and is read with a keyring
    of both centres' keys; stored envelopes say their scheme."""
    import secrets

    from abe_service.client import AbeKeyring
    from abe_service.ma.router import envelope_scheme, today
    from ehr_common.config import load_config
    from storage_service.records import record_context
    from storage_service.wiring import build_storage_core

    cfg = load_config(env={})
    cfg.home = str(tmp_path)
    if ledger_kind == "fabric":
        cfg.storage.ledger = "fabric"
        cfg.storage.fabric_connection = str(request.getfixturevalue("fabric_connection"))
    fame = KeyAuthority.setup(cfg.authority_dir, passphrase=PASS)
    core = build_storage_core(cfg, fame, passphrase=PASS)
    try:
        for name, a in authorities.items():  # a Fabric ledger may hold an earlier run's key
            try:
                core.ledger.get_authority(name)
                core.ledger.rotate_authority(KA[name], name, a.public_key, a.fingerprint)
            except NotFound:
                core.ledger.register_authority(
                    KA[name], name, SCHEME_ID, a.public_key, a.fingerprint
                )
        patient = f"p-{secrets.token_hex(4)}"
        device = Caller("ecg-7", "Hosp1MSP", frozenset({"device"}))
        nurse = Caller("nurse-1", "Hosp1MSP", frozenset({"nurse"}))
        core.assign_device(nurse, patient, "ecg-7", datetime.now(UTC) + timedelta(hours=1))
        ma_rec = core.put_record(
            device, patient_id=patient, record_type="ecg", payload=b"joint", policy=POLICY
        )
        fame_rec = core.put_record(
            device, patient_id=patient, record_type="ecg", payload=b"local", policy="role:doctor"
        )
        reader = Caller(patient, "Hosp1MSP", frozenset({"patient"}))
        env, meta, _ = core.get_record(reader, ma_rec.meta.record_id)
        assert envelope_scheme(env) == SCHEME_ID
        assert meta.policy == normal_form(with_validity(POLICY, today()))
        ring = keyring(authorities, "alice", until=today() + 1)
        ctx = record_context(f"Hosp1MSP/{patient}")  # bound to the qualified patient id
        assert ring.decrypt(env, ctx) == b"joint"
        stale = keyring(authorities, "bob", until=today() - 1)
        with pytest.raises(PolicyNotSatisfied):
            stale.decrypt(env, ctx)
        env2, meta2, _ = core.get_record(reader, fame_rec.meta.record_id)
        assert meta2.policy == "role:doctor"
        doctor = AbeKeyring.from_bytes(fame.issue_key("dr", ["role:doctor"]).user_key)
        assert doctor.decrypt(env2, ctx) == b"local"
    finally:
        core.close()


def test_fame_time_bound_keys_when_configured(tmp_path: Path) -> None:
    """FAME keys issued with valid_from/valid_until, and a router with fame_validity:
    the whole policy gets `valid_until >= today` (one authority)."""
    from abe_service.client import AbeKeyring

    fame = KeyAuthority.setup(tmp_path, passphrase=PASS)
    r = SchemeRouter(fame.encryptor, None, fame_validity=True, day=lambda: DAY)
    env = r.encrypt("role:doctor or patient:p-1", b"fame", b"c")
    assert r.envelope_policy(env) == normal_form(
        "(role:doctor or patient:p-1) and valid_until >= 20500"
    )

    def key(until: int) -> AbeKeyring:
        attrs = ["role:doctor", f"valid_from={DAY - 9}", f"valid_until={until}"]
        return AbeKeyring.from_bytes(fame.issue_key("dr", attrs).user_key)

    assert key(DAY).decrypt(env, b"c") == b"fame"
    with pytest.raises(PolicyNotSatisfied):
        key(DAY - 1).decrypt(env, b"c")
    plain = SchemeRouter(fame.encryptor, None, day=lambda: DAY)  # default: off for FAME
    assert plain.envelope_policy(plain.encrypt("role:doctor", b"x", b"")) == "role:doctor"


def test_abe_service_encrypt_routes_both_schemes(
    ledger: LedgerClient, authorities: dict[str, MaAuthority], tmp_path: Path
) -> None:
    from abe_service.servicer import AbeServicer
    from ehr_common.api.v1 import abe_pb2

    class DevContext:  # development mode: the caller names itself in headers
        def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
            return (("x-ehr-subject", "ecg-7"), ("x-ehr-roles", "device"))

    ctx = DevContext()
    fame = KeyAuthority.setup(tmp_path, passphrase=PASS)
    dev = Authenticator(tls=False, default_msp="Hosp1MSP")
    servicer = AbeServicer(fame, dev, ledger=ledger)
    resp = servicer.Encrypt(
        abe_pb2.EncryptRequest(policy=POLICY, plaintext=b"m", context=b"c"), ctx
    )
    assert "valid_until@hosp1 >= " in resp.policy_normal_form
    assert keyring(authorities, "alice", until=10**6).decrypt(resp.envelope, b"c") == b"m"
    resp = servicer.Encrypt(
        abe_pb2.EncryptRequest(policy="role:doctor", plaintext=b"f", context=b"c"), ctx
    )
    assert resp.policy_normal_form == "role:doctor"
    alone = AbeServicer(fame, dev)  # no ledger: no registry
    with pytest.raises(ConfigError, match="multi-authority"):
        alone.Encrypt(abe_pb2.EncryptRequest(policy=POLICY, plaintext=b"m"), ctx)
