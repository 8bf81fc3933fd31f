"""Red-team attacks on the CP-ABE side, by class: a writer holding a valid key who
builds malformed envelopes and segments, scheme confusion between FAME and the
multi-authority scheme, authority-key swaps and rotation, names that mislead,
and records stored without the validity condition. Each attack must end in a
typed error (never a traceback, never a wrong plaintext)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_policy_strategies import policy_texts

from abe_service import segments as seg
from abe_service.authority import KeyAuthority
from abe_service.envelope import AbeDecryptor, envelope_policy
from abe_service.ma.authority import MaAuthority
from abe_service.ma.envelope import MaEncryptor, MaKeyring
from abe_service.ma.envelope import envelope_policy as ma_envelope_policy
from abe_service.ma.router import SchemeRouter
from abe_service.ma.validity import validity_day, with_validity
from abe_service.policy import normal_form
from ehr_common.api.v1 import formats_pb2 as fpb
from ehr_common.errors import DecodeError, IntegrityError, InvalidArgument, PolicyNotSatisfied
from storage_service.anchoring import AnchorPolicy
from storage_service.index import RecordIndex
from storage_service.keys import ServiceKeys
from storage_service.ledger.base import Caller
from storage_service.ledger.client import LedgerClient
from storage_service.ledger.embedded import EmbeddedLedger
from storage_service.objectstore.fs import FilesystemStore
from storage_service.records import record_context
from storage_service.service import StorageCore
from storage_service.wiring import SERVICE_ROLES, SERVICE_SUBJECT

PASS = b"correct horse battery staple"
DAY = 20500
KEY = b"k" * 32


@pytest.fixture(scope="module")
def fame(tmp_path_factory: pytest.TempPathFactory) -> KeyAuthority:
    return KeyAuthority.setup(tmp_path_factory.mktemp("fame"), passphrase=PASS)


@pytest.fixture(scope="module")
def hosps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, MaAuthority]:
    root = tmp_path_factory.mktemp("ma")
    return {n: MaAuthority.setup(root / n, n, passphrase=PASS) for n in ("hosp1", "hosp2")}


def _ma_key(a: MaAuthority, gid: str, attrs: list[str]) -> bytes:
    return a.issue_key(gid, attrs, valid_from=0, valid_until=DAY + 30).user_key


# -- scheme confusion: FAME envelope carrying the multi-authority fields -------------------
def test_fame_envelope_with_ma_fields_is_refused(fame: KeyAuthority) -> None:
    """Before: a FAME envelope with ma_rows/ma_authorities appended still parsed and
    opened (those fields are outside FAME's associated data): one envelope, many
    byte strings. Now DecodeError."""
    key = AbeDecryptor.from_user_key(fame.issue_key("dr", ["role:doctor"]).user_key)
    env = fame.encryptor.encrypt("role:doctor", b"secret", b"ctx")
    assert key.decrypt(env, b"ctx") == b"secret"
    for add in ("rows", "authorities"):
        m = fpb.Envelope.FromString(env)
        if add == "rows":
            m.ma_rows.add(c1=b"\0" * 576, c2=b"\0" * 48, c3=b"\0" * 48, c4=b"\0" * 96)
        else:
            m.ma_authorities.add(authority="hosp1", public_key_sha256=b"\0" * 32)
        bad = m.SerializeToString(deterministic=True)
        with pytest.raises(DecodeError, match="multi-authority fields"):
            key.decrypt(bad, b"ctx")
        with pytest.raises(DecodeError):
            envelope_policy(bad)
        with pytest.raises(DecodeError):
            SchemeRouter(None, None).envelope_policy(bad)


def test_scheme_confusion_both_ways(fame: KeyAuthority, hosps: dict[str, MaAuthority]) -> None:
    fkey = AbeDecryptor.from_user_key(fame.issue_key("dr", ["role:doctor"]).user_key)
    ring = MaKeyring.from_user_keys([_ma_key(hosps["hosp1"], "g", ["role:doctor@hosp1"])])
    fenv = fame.encryptor.encrypt("role:doctor", b"f", b"c")
    menv = MaEncryptor.from_public_keys([hosps["hosp1"].public_key]).encrypt(
        "role:doctor@hosp1", b"m", b"c"
    )
    with pytest.raises(DecodeError):
        fkey.decrypt(menv, b"c")
    with pytest.raises(DecodeError):
        ring.decrypt(fenv, b"c")
    # an MA envelope relabelled as FAME, and a FAME one relabelled as MA
    for env, scheme in ((menv, "fame-bls12381-v1"), (fenv, "ma-rw15-bls12381-v1")):
        m = fpb.Envelope.FromString(env)
        m.scheme = scheme
        bad = m.SerializeToString(deterministic=True)
        with pytest.raises(DecodeError):
            SchemeRouter(None, None).envelope_policy(bad)
        with pytest.raises(DecodeError):
            fkey.decrypt(bad, b"c")
        with pytest.raises(DecodeError):
            ring.decrypt(bad, b"c")


# -- multi-authority: fingerprint swaps and rotated authority keys --------------------------
def test_ma_fingerprint_swap_and_rotation_fail_clearly(
    hosps: dict[str, MaAuthority], tmp_path: Path
) -> None:
    """Before: IntegrityError from the key commitment after the pairings. Now an
    IntegrityError naming the authority, before any pairing."""
    ring = MaKeyring.from_user_keys([_ma_key(hosps["hosp1"], "g", ["role:doctor@hosp1"])])
    enc = MaEncryptor.from_public_keys([hosps["hosp1"].public_key, hosps["hosp2"].public_key])
    env = enc.encrypt("role:doctor@hosp1", b"m", b"c")
    assert ring.decrypt(env, b"c") == b"m"
    # the envelope names hosp1 with hosp2's fingerprint
    m = fpb.Envelope.FromString(env)
    m.ma_authorities[0].public_key_sha256 = hosps["hosp2"].fingerprint
    with pytest.raises(IntegrityError, match="another public key of authority hosp1"):
        ring.decrypt(m.SerializeToString(deterministic=True), b"c")
    # hosp1 rotated its key: envelopes under the new key, the user's key under the old
    rotated = MaAuthority.setup(tmp_path / "hosp1b", "hosp1", passphrase=PASS)
    new_env = MaEncryptor.from_public_keys([rotated.public_key]).encrypt(
        "role:doctor@hosp1", b"n", b"c"
    )
    with pytest.raises(IntegrityError, match="rotated or replaced"):
        ring.decrypt(new_env, b"c")
    # a key from the new version opens the new envelopes, not the old ones
    fresh = MaKeyring.from_user_keys([_ma_key(rotated, "g", ["role:doctor@hosp1"])])
    assert fresh.decrypt(new_env, b"c") == b"n"
    with pytest.raises(IntegrityError):
        fresh.decrypt(env, b"c")


def test_ma_keys_of_two_gids_or_two_authorities_in_one_part(
    hosps: dict[str, MaAuthority],
) -> None:
    k1 = _ma_key(hosps["hosp1"], "alice", ["role:doctor@hosp1"])
    k2 = _ma_key(hosps["hosp2"], "bob", ["role:nurse@hosp2"])
    with pytest.raises(InvalidArgument, match="different global identifiers"):
        MaKeyring.from_user_keys([k1, k2])
    # a key file claiming hosp2 but holding a hosp1 part
    m = fpb.MaUserKey.FromString(k1)
    m.authority = "hosp2"
    with pytest.raises(DecodeError):
        MaKeyring.from_user_keys([m.SerializeToString(deterministic=True)])


# -- names that mislead -------------------------------------------------------------------
@pytest.mark.parametrize(
    "subject", ["a\0b", "dr\u202eevil", " dr", "dr\n", "", "x" * 257, "tab\there"]
)
def test_fame_subject_ids_must_be_printable(fame: KeyAuthority, subject: str) -> None:
    """Before: a FAME key could be issued to 'a\\0b' or with an RTL override in its
    subject (it ends up in logs and key-issue records). Now InvalidArgument, like GIDs."""
    with pytest.raises(InvalidArgument, match="printable"):
        fame.issue_key(subject, ["role:doctor"])


@pytest.mark.parametrize("gid", ["a\0b", "dr\u202eevil", "", "x" * 257])
def test_ma_gids_must_be_printable(hosps: dict[str, MaAuthority], gid: str) -> None:
    with pytest.raises(InvalidArgument):
        hosps["hosp1"].issue_key(gid, ["role:doctor@hosp1"], valid_from=0, valid_until=1)


# -- sealed segments ----------------------------------------------------------------------
def _segment() -> bytes:
    return seg.seal_segment(KEY, seg.SegmentHeader("w", "p", "d", "ecg", 0, 1, 0, 1, 2), b"x")


def test_segment_with_unknown_or_repeated_fields_is_refused() -> None:
    """Before: bytes appended to a sealed segment (an unknown field) still opened:
    one segment, many encodings. Now DecodeError."""
    data = _segment()
    assert seg.open_segment(KEY, data)[1] == b"x"
    unknown = data + b"\xf8\x07\x01"  # field 127, varint 1
    repeated = data + fpb.SegmentEnvelope(window_id="w2").SerializeToString()
    for bad in (unknown, repeated):
        with pytest.raises(DecodeError, match="canonical"):
            seg.open_segment(KEY, bad)


def test_segment_wrong_types_and_counts_are_typed_errors() -> None:
    """Before: TypeError from a str segment or window key, struct.error from a count
    over 2^32 - 1 at sealing. Now DecodeError / InvalidArgument."""
    data = _segment()
    with pytest.raises(DecodeError):
        seg.open_segment(KEY, "not bytes")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        seg.open_segment("k" * 32, data)  # type: ignore[arg-type]
    huge = seg.SegmentHeader("w", "p", "d", "ecg", 0, 2**40, 0, 1, 2**33)
    with pytest.raises(InvalidArgument, match="count"):
        seg.seal_segment(KEY, huge, b"x")
    with pytest.raises(InvalidArgument):
        seg.seal_segment(KEY, seg.SegmentHeader("w", "p", "d", "ecg", 0, 1, 0, 1, 2), "x")  # type: ignore[arg-type]
    with pytest.raises(IntegrityError):
        seg.open_segment(b"j" * 32, data)


@given(cut=st.integers(min_value=0, max_value=200), flip=st.integers(min_value=0, max_value=255))
@settings(max_examples=150, deadline=None)
def test_segment_truncated_or_flipped_never_opens_wrong(cut: int, flip: int) -> None:
    data = _segment()
    variants = [data[: cut % len(data)], bytearray(data)]
    variants[1][cut % len(data)] ^= flip or 1
    for bad in variants:
        try:
            _, payload = seg.open_segment(KEY, bytes(bad))
        except (DecodeError, IntegrityError, InvalidArgument):
            continue
        assert payload == b"x"  # pragma: no cover - any other outcome is the bug


# -- records stored without the validity condition -----------------------------------------
@pytest.mark.parametrize(
    "policy",
    [
        "role:doctor@hosp1",
        "role:doctor@hosp1 and role:researcher@hosp2",
        "(a@hosp1 or c@hosp1) or b@hosp2",
        "(a@hosp1 and b@hosp1) or c@hosp2",
        "2 of (a@hosp1, b@hosp2, c@hosp1 and d@hosp2)",
        "a@hosp1 and (b@hosp1 or (c@hosp2 and age@hosp2 >= 18))",
    ],
)
def test_validity_day_recognises_what_the_router_attaches(policy: str) -> None:
    stamped = normal_form(with_validity(policy, DAY))
    assert validity_day(stamped, multi_authority=True) == DAY
    assert validity_day(normal_form(policy), multi_authority=True) is None
    # the condition moved to the whole policy (an `or` across authorities would then
    # demand both keys) or one authority's condition dropped: refused
    whole = normal_form(f"({policy}) and valid_until@hosp1 >= {DAY}")
    if "hosp2" in policy:
        assert validity_day(whole, multi_authority=True) is None
    # two different days
    twice = normal_form(f"({stamped}) and valid_until@hosp1 >= {DAY - 3}")
    assert validity_day(twice, multi_authority=True) is None


MA_LEAVES = ["a@hosp1", "b@hosp1", "role:x@hosp2", "c@hosp2", "age@hosp1 >= 18", "d@h3"]


@given(policy=policy_texts(MA_LEAVES, max_leaves=8), day=st.integers(1, 2**32 - 1))
@settings(max_examples=300, deadline=None)
def test_validity_day_accepts_every_policy_the_router_would_store(policy: str, day: int) -> None:
    """No false refusal: whatever with_validity makes of a policy (and the storage
    service stores), validity_day finds its day again; without it, nothing."""
    assert validity_day(normal_form(with_validity(policy, day)), multi_authority=True) == day
    assert validity_day(normal_form(policy), multi_authority=True) is None


def test_fame_validity_day() -> None:
    r = SchemeRouter(None, None, fame_validity=True, day=lambda: DAY)
    for policy in ("role:doctor", "role:doctor or patient:p-1", "a and b"):
        stamped = normal_form(r.policy_for_new_record(policy))
        assert validity_day(stamped, multi_authority=False) == DAY
        assert validity_day(normal_form(policy), multi_authority=False) is None
    assert validity_day(f"a or valid_until >= {DAY}", multi_authority=False) is None


@pytest.fixture
def ma_core(tmp_path: Path, hosps: dict[str, MaAuthority], fame: KeyAuthority) -> Iterator[Any]:
    from abe_service.ma.router import LedgerAuthorities, MaLedgerEncryptor
    from abe_service.ma.scheme import SCHEME_ID, MultiAuthority
    from abe_service.pairing.base import get_backend

    ledger = LedgerClient(
        EmbeddedLedger(tmp_path / "ledger.sqlite"),
        Caller(SERVICE_SUBJECT, "Hosp1MSP", SERVICE_ROLES),
    )
    for n, a in hosps.items():
        ka = Caller(f"ka-{n}", f"{n.capitalize()}MSP", frozenset({"authority"}))
        ledger.register_authority(ka, n, SCHEME_ID, a.public_key, a.fingerprint)
    auths = LedgerAuthorities(ledger, MultiAuthority(get_backend()), ttl_s=0)
    router = SchemeRouter(
        fame.encryptor, MaLedgerEncryptor(auths), fame_validity=True, day=lambda: DAY
    )
    keys = ServiceKeys.derive(b"storage secret for the red-team tests")
    core = StorageCore(
        store=FilesystemStore(tmp_path / "objects"),
        index=RecordIndex(tmp_path / "index.sqlite", mac_key=keys.mac_key),
        ledger=ledger,
        encryptor=router,
        service_caller=Caller(SERVICE_SUBJECT, "Hosp1MSP", SERVICE_ROLES),
        keys=keys,
        anchor_policy=AnchorPolicy(max_records=1000, max_age_s=3600, retry_s=0.2),
    )
    yield core
    with contextlib.suppress(Exception):
        core.close()


def test_storage_refuses_client_envelopes_without_validity(
    ma_core: StorageCore, hosps: dict[str, MaAuthority], fame: KeyAuthority
) -> None:
    """Before: a writer could PutRecord an envelope they sealed themselves under
    `role:doctor@hosp1` (no `valid_until@hosp1 >= today`), which a key that expired
    last year still opens. Now InvalidArgument, and nothing is stored; an envelope
    with the condition (today or yesterday) is accepted."""
    writer = Caller("ecg-7", "Hosp1MSP", frozenset({"device"}))
    patient = "p-1"
    ctx = record_context(patient)
    enc = MaEncryptor.from_public_keys([hosps["hosp1"].public_key, hosps["hosp2"].public_key])
    policy = "role:doctor@hosp1 or role:nurse@hosp2"
    bare = enc.encrypt(policy, b"m", ctx)
    stale = enc.encrypt(with_validity(policy, DAY - 2), b"m", ctx)
    whole = enc.encrypt(f"({policy}) and valid_until@hosp1 >= {DAY}", b"m", ctx)
    for env in (bare, stale):
        with pytest.raises(InvalidArgument, match="validity condition"):
            ma_core.put_record(writer, patient_id=patient, record_type="ecg", envelope=env)
    with pytest.raises(InvalidArgument):
        ma_core.put_record(writer, patient_id=patient, record_type="ecg", envelope=whole)
    fame_bare = fame.encryptor.encrypt("role:doctor", b"f", ctx)
    with pytest.raises(InvalidArgument, match="validity condition"):
        ma_core.put_record(writer, patient_id=patient, record_type="ecg", envelope=fame_bare)
    for day in (DAY, DAY - 1):
        ok = enc.encrypt(with_validity(policy, day), b"m", ctx)
        res = ma_core.put_record(writer, patient_id=patient, record_type="ecg", envelope=ok)
        assert res.meta.policy == ma_envelope_policy(ok)
    fame_ok = fame.encryptor.encrypt(f"role:doctor and valid_until >= {DAY}", b"f", ctx)
    ma_core.put_record(writer, patient_id=patient, record_type="ecg", envelope=fame_ok)
    # the service's own encryption path is unchanged
    res = ma_core.put_record(
        writer, patient_id=patient, record_type="ecg", payload=b"p", policy=policy
    )
    assert res.meta.policy == normal_form(with_validity(policy, DAY))


# -- secrets in reprs (multi-authority) ---------------------------------------------------
def test_no_ma_secret_in_any_repr(hosps: dict[str, MaAuthority]) -> None:
    """Before: repr(AuthoritySecretKey) printed alpha and y (the authority's secret),
    repr(MaIssued) the serialized user key, repr(IssuedKey/UserKey) every key part."""
    from abe_service.ma.serialization import user_key_from_bytes
    from abe_service.pairing.base import get_backend

    a = hosps["hosp1"]
    issued = a.issue_key("g", ["role:doctor@hosp1"], valid_from=0, valid_until=9)
    sk = a._sk
    assert sk is not None
    group = get_backend()
    parsed = user_key_from_bytes(group, issued.user_key)
    secrets_ = [str(sk.alpha), f"{sk.alpha:x}", str(sk.y), f"{sk.y:x}", issued.user_key.hex()[:64]]
    for part in parsed.key.parts.values():
        secrets_ += [group.g2_to_bytes(part.k).hex(), group.g1_to_bytes(part.kp).hex()]
        secrets_ += [repr(group.g2_to_bytes(part.k))[2:40]]
    shown = " ".join(
        repr(o) for o in (sk, issued, parsed, parsed.key, *parsed.key.parts.values(), a)
    )
    assert "hosp1" in shown  # the reprs are real, just without the secrets
    for s in secrets_:
        assert s not in shown


# -- a writer's byte edits of a multi-authority envelope -----------------------------------
@pytest.fixture(scope="module")
def ma_pair(hosps: dict[str, MaAuthority]) -> tuple[MaKeyring, bytes]:
    ring = MaKeyring.from_user_keys(
        [
            _ma_key(hosps["hosp1"], "g", ["role:doctor@hosp1"]),
            _ma_key(hosps["hosp2"], "g", ["role:nurse@hosp2"]),
        ]
    )
    enc = MaEncryptor.from_public_keys([hosps["hosp1"].public_key, hosps["hosp2"].public_key])
    return ring, enc.encrypt("role:doctor@hosp1 and role:nurse@hosp2", b"joint", b"c")


@given(pos=st.integers(min_value=0), flip=st.integers(min_value=1, max_value=255))
@settings(max_examples=60, deadline=None)
def test_ma_envelope_byte_edits_never_open_wrong(
    ma_pair: tuple[MaKeyring, bytes], pos: int, flip: int
) -> None:
    ring, env = ma_pair
    bad = bytearray(env)
    bad[pos % len(env)] ^= flip
    for candidate in (bytes(bad), env[: pos % len(env)], env + bytes([flip])):
        try:
            out = ring.decrypt(candidate, b"c")
        except (DecodeError, IntegrityError, InvalidArgument, PolicyNotSatisfied):
            continue
        assert out == b"joint"  # pragma: no cover - anything else is the bug


def test_key_files_with_over_long_ids_are_refused(
    fame: KeyAuthority, hosps: dict[str, MaAuthority]
) -> None:
    """Before: a user-key file could carry a subject or key id (or, multi-authority, a
    listed attribute) of any length. Now DecodeError, like every other field."""
    m = fpb.UserKey.FromString(fame.issue_key("dr", ["role:doctor"]).user_key)
    m.subject_id = "x" * 100_000
    with pytest.raises(DecodeError, match="over-long"):
        AbeDecryptor.from_user_key(m.SerializeToString(deterministic=True))
    k = fpb.MaUserKey.FromString(_ma_key(hosps["hosp1"], "g", ["role:doctor@hosp1"]))
    k.attributes.append("a" * 100_000)
    with pytest.raises(DecodeError, match="over-long"):
        MaKeyring.from_user_keys([k.SerializeToString(deterministic=True)])


def test_ma_authority_never_issues_a_key_its_parser_refuses(
    hosps: dict[str, MaAuthority],
) -> None:
    """Before: 64 integer attributes (64 x 65 labels) took ~1.7 s of keygen and gave a
    key file MaKeyring refuses (more than 4096 parts). Now InvalidArgument first."""
    attrs = [f"n{i}@hosp1={2**32 - 1 - i}" for i in range(64)]
    with pytest.raises(InvalidArgument, match="key labels"):
        hosps["hosp1"].issue_key("g", attrs, valid_from=0, valid_until=9)
    ok = hosps["hosp1"].issue_key("g", attrs[:60], valid_from=0, valid_until=9)
    assert MaKeyring.from_user_keys([ok.user_key]).gid == "g"


# -- the CLI quotes attacker-made text ----------------------------------------------------
def test_cli_error_quoting_markup_is_one_line_not_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: an envelope whose scheme is `[/oops]` made `ehr-abe decrypt` die with a
    rich MarkupError traceback (the error line is printed with markup). Now exit 2
    and the text shown literally."""
    from ehr_abe.cli import main

    env = tmp_path / "bad.env"
    env.write_bytes(
        fpb.Envelope(
            kind=fpb.OBJECT_KIND_ENVELOPE, version=2, scheme="[/oops][bold]x"
        ).SerializeToString()
    )
    (tmp_path / "k").write_bytes(b"x")
    argv = ["ehr-abe", "decrypt", "-k", str(tmp_path / "k"), str(env), "-o", str(tmp_path / "o")]
    monkeypatch.setattr("sys.argv", argv)
    with pytest.raises(SystemExit) as exit_:
        main()
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert "[/oops][bold]x" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_storage_refuses_client_envelopes_under_revoked_or_rotated_authority_keys(
    ma_core: StorageCore, hosps: dict[str, MaAuthority], tmp_path: Path
) -> None:
    """Before: an envelope a client sealed with a stale copy of a revoked or rotated
    authority key was stored as a new record (only the service's own encryption
    consulted the ledger). Now InvalidArgument naming the authority."""
    writer = Caller("ecg-7", "Hosp1MSP", frozenset({"device"}))
    ctx = record_context("p-1")
    old = MaEncryptor.from_public_keys([hosps["hosp1"].public_key, hosps["hosp2"].public_key])
    policy = with_validity("role:doctor@hosp1 or role:nurse@hosp2", DAY)
    stale = old.encrypt(policy, b"m", ctx)
    ma_core.put_record(writer, patient_id="p-1", record_type="ecg", envelope=stale)  # current
    new_h1 = MaAuthority.setup(tmp_path / "hosp1-new", "hosp1", passphrase=PASS)
    ka1 = Caller("ka-hosp1", "Hosp1MSP", frozenset({"authority"}))
    ma_core.ledger.rotate_authority(ka1, "hosp1", new_h1.public_key, new_h1.fingerprint)
    with pytest.raises(InvalidArgument, match="authority hosp1 that is not its current key"):
        ma_core.put_record(writer, patient_id="p-1", record_type="ecg", envelope=stale)
    fresh = MaEncryptor.from_public_keys([new_h1.public_key, hosps["hosp2"].public_key])
    ma_core.put_record(
        writer, patient_id="p-1", record_type="ecg", envelope=fresh.encrypt(policy, b"m", ctx)
    )
    ka2 = Caller("ka-hosp2", "Hosp2MSP", frozenset({"authority"}))
    ma_core.ledger.revoke_authority(ka2, "hosp2", "compromised")
    with pytest.raises(InvalidArgument, match="revoked"):
        ma_core.put_record(
            writer, patient_id="p-1", record_type="ecg", envelope=fresh.encrypt(policy, b"m", ctx)
        )
