"""Hybrid envelopes: round trips, and every kind of tampering fails loudly.

An envelope must either decrypt to exactly what was sealed or raise a typed
error; no modified, truncated or misdirected envelope may ever yield a plaintext.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_policy_strategies import policy_texts

from abe_service.authority import KeyAuthority
from abe_service.envelope import AbeDecryptor, AbeEncryptor, envelope_policy
from abe_service.policy import compile_policy, normal_form
from ehr_common.api.v1 import formats_pb2 as fpb
from ehr_common.errors import DecodeError, EhrAbeError, IntegrityError, PolicyNotSatisfied

PASSPHRASE = b"correct horse battery staple"
POLICY = "role:doctor and dept:cardiology"
CONTEXT = b"patient:p-17/record:r-0001"


@dataclass(frozen=True)
class World:
    authority: KeyAuthority
    encryptor: AbeEncryptor
    doctor: AbeDecryptor  # satisfies POLICY
    nurse: AbeDecryptor  # does not
    foreign: AbeDecryptor  # satisfies POLICY, but from another authority


@pytest.fixture(scope="module", params=["mcl", "pymcl"])
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> World:
    backend: str = request.param
    home: Path = tmp_path_factory.mktemp(f"authority-{backend}")
    authority = KeyAuthority.setup(home / "a", passphrase=PASSPHRASE, backend=backend)
    other = KeyAuthority.setup(home / "b", passphrase=PASSPHRASE, backend=backend)
    attrs = ["role:doctor", "dept:cardiology", "ward:7"]

    def decryptor(auth: KeyAuthority, subject: str, attributes: list[str]) -> AbeDecryptor:
        return AbeDecryptor.from_user_key(auth.issue_key(subject, attributes).user_key, backend)

    return World(
        authority=authority,
        encryptor=AbeEncryptor.from_public_params(authority.public_params, backend),
        doctor=decryptor(authority, "dr-house", attrs),
        nurse=decryptor(authority, "nurse-joy", ["role:nurse", "dept:cardiology"]),
        foreign=decryptor(other, "dr-other", attrs),
    )


def _outcome(decryptor: AbeDecryptor, envelope: bytes, context: bytes = CONTEXT) -> str:
    """What decryption did: 'plaintext' or the name of the typed error it raised.
    Any other exception type propagates and fails the test."""
    try:
        decryptor.decrypt(envelope, context)
    except EhrAbeError as exc:
        return type(exc).__name__
    return "plaintext"


@pytest.mark.parametrize("size", [0, 1, 1024, 1 << 20])
def test_round_trip_payload_sizes(world: World, size: int) -> None:
    payload = os.urandom(size)
    envelope = world.encryptor.encrypt(POLICY, payload, CONTEXT)
    assert world.doctor.decrypt(envelope, CONTEXT) == payload
    # The payload costs its length plus the 16-byte GCM tag, nothing more.
    msg = fpb.Envelope.FromString(envelope)
    assert len(msg.ciphertext) == size + 16
    if size >= 1024:  # long enough that a chance match is impossible
        assert payload[:32] not in envelope


def test_encryption_is_randomised(world: World) -> None:
    a = world.encryptor.encrypt(POLICY, b"same", CONTEXT)
    b = world.encryptor.encrypt(POLICY, b"same", CONTEXT)
    assert a != b
    assert world.doctor.decrypt(a, CONTEXT) == world.doctor.decrypt(b, CONTEXT) == b"same"


def _policy_span(envelope: bytes) -> range:
    policy = fpb.Envelope.FromString(envelope).policy.encode()
    start = envelope.find(policy)
    assert start > 0 and envelope.count(policy) == 1
    return range(start, start + len(policy))


@pytest.mark.parametrize("mask", [0x01, 0x80, 0xFF])
def test_every_single_byte_change_is_rejected(world: World, mask: int) -> None:
    envelope = world.encryptor.encrypt(POLICY, b"heart rate 72", CONTEXT)
    assert world.doctor.decrypt(envelope, CONTEXT) == b"heart rate 72"
    policy_bytes = _policy_span(envelope)
    outcomes: dict[str, int] = {}
    for i in range(len(envelope)):
        tampered = bytearray(envelope)
        tampered[i] ^= mask
        outcome = _outcome(world.doctor, bytes(tampered))
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        allowed = {"IntegrityError", "DecodeError"}
        # A changed policy string can name attributes the key lacks; the key cannot
        # authenticate the policy before decapsulating, so refusing it is right too.
        if i in policy_bytes:
            allowed.add("PolicyNotSatisfied")
        assert outcome in allowed, f"byte {i} ^ {mask:#x}: {outcome}"
    # Both checks are exercised: structural rejection and the AEAD tag.
    assert outcomes.get("IntegrityError", 0) > 0 and outcomes.get("DecodeError", 0) > 0


def test_every_truncation_is_rejected(world: World) -> None:
    envelope = world.encryptor.encrypt(POLICY, b"spo2 98%", CONTEXT)
    for n in range(len(envelope)):
        outcome = _outcome(world.doctor, envelope[:n])
        assert outcome in {"IntegrityError", "DecodeError"}, f"prefix of {n} bytes: {outcome}"


def test_appended_bytes_are_rejected(world: World) -> None:
    envelope = world.encryptor.encrypt(POLICY, b"bp 120/80", CONTEXT)
    for suffix in (
        b"\x00",
        b"\xff" * 7,
        bytes([0x4A, 0x01, 0x00]),
    ):  # the last: ciphertext field again
        assert _outcome(world.doctor, envelope + suffix) in {"IntegrityError", "DecodeError"}


def test_wrong_context_is_an_integrity_error(world: World) -> None:
    envelope = world.encryptor.encrypt(POLICY, b"ecg", CONTEXT)
    for context in (b"", b"patient:p-18/record:r-0001", CONTEXT + b"\x00", CONTEXT[:-1]):
        with pytest.raises(IntegrityError):
            world.doctor.decrypt(envelope, context)


def test_key_of_another_authority_is_an_integrity_error(world: World) -> None:
    envelope = world.encryptor.encrypt(POLICY, b"glucose 5.4", CONTEXT)
    with pytest.raises(IntegrityError):
        world.foreign.decrypt(envelope, CONTEXT)


def test_authority_id_relabelled_is_still_rejected(world: World) -> None:
    """Claiming the foreign key's authority passes the id check; the AEAD must still fail."""
    envelope = world.encryptor.encrypt(POLICY, b"glucose 5.4", CONTEXT)
    msg = fpb.Envelope.FromString(envelope)
    msg.authority_id = world.foreign.key.authority_id
    with pytest.raises(IntegrityError):
        world.foreign.decrypt(msg.SerializeToString(), CONTEXT)


def test_key_not_satisfying_the_policy_is_refused(world: World) -> None:
    envelope = world.encryptor.encrypt(POLICY, b"x-ray", CONTEXT)
    with pytest.raises(PolicyNotSatisfied):
        world.nurse.decrypt(envelope, CONTEXT)


def test_policy_swapped_for_one_the_key_satisfies_is_rejected(world: World) -> None:
    """An attacker rewrites the policy to one the nurse satisfies: the header no
    longer matches (DecodeError) or, with the same shape, the AEAD fails."""
    envelope = world.encryptor.encrypt(POLICY, b"x-ray", CONTEXT)
    msg = fpb.Envelope.FromString(envelope)
    for policy in ("dept:cardiology and role:nurse", "dept:cardiology"):
        msg.policy = policy
        outcome = _outcome(world.nurse, msg.SerializeToString())
        assert outcome in {"IntegrityError", "DecodeError"}, (policy, outcome)


def test_rows_from_another_envelope_are_rejected(world: World) -> None:
    """Splicing the header of one envelope onto the body of another fails."""
    a = fpb.Envelope.FromString(world.encryptor.encrypt(POLICY, b"first", CONTEXT))
    b = fpb.Envelope.FromString(world.encryptor.encrypt(POLICY, b"second", CONTEXT))
    spliced = fpb.Envelope()
    spliced.CopyFrom(a)
    del spliced.rows[:]
    spliced.rows.extend(b.rows)
    with pytest.raises(IntegrityError):
        world.doctor.decrypt(spliced.SerializeToString(), CONTEXT)
    spliced.CopyFrom(a)
    spliced.nonce, spliced.ciphertext = b.nonce, b.ciphertext
    with pytest.raises(IntegrityError):
        world.doctor.decrypt(spliced.SerializeToString(), CONTEXT)


def test_not_bytes_is_a_decode_error(world: World) -> None:
    with pytest.raises(DecodeError):
        world.doctor.decrypt(b"", CONTEXT)
    with pytest.raises(DecodeError):
        world.doctor.decrypt("an envelope".encode("utf-16"), CONTEXT)


UNIVERSE = ["role:doctor", "role:nurse", "dept:cardiology", "ward:7", "patient:p-17"]


def _policies() -> st.SearchStrategy[str]:
    return policy_texts([*UNIVERSE, "clearance >= 3", "clearance < 2"])


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(policy=_policies(), attrs=st.sets(st.sampled_from(UNIVERSE)), clearance=st.integers(0, 7))
def test_envelope_decrypts_iff_the_key_satisfies(
    world: World, policy: str, attrs: set[str], clearance: int
) -> None:
    """Through the full envelope: the policy is stored in normal form and recompiled on
    decryption, so its span program must come out identical to the encryptor's."""
    assert compile_policy(normal_form(policy)).matrix == compile_policy(policy).matrix
    assert compile_policy(normal_form(policy)).row_labels == compile_policy(policy).row_labels
    issued = world.authority.issue_key("subject", [*sorted(attrs), f"clearance={clearance}"])
    key = AbeDecryptor.from_user_key(issued.user_key, world.encryptor.fame.group.name)
    envelope = world.encryptor.encrypt(policy, b"payload", CONTEXT)
    assert envelope_policy(envelope) == normal_form(policy)
    if compile_policy(policy).satisfied_by(key.key.secret.sk.keys()):
        assert key.decrypt(envelope, CONTEXT) == b"payload"
    else:
        with pytest.raises(PolicyNotSatisfied):
            key.decrypt(envelope, CONTEXT)
