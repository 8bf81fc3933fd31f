"""Key-committing envelopes: one envelope can never open to two different
plaintexts for two authorised readers.

The attack (issue 11): a writer who also holds a key satisfying the policy (a
patient writing under `role:doctor or patient:p-17`) shifts the header row of
their own attribute by a G1 element. The doctor's key uses the honest row and
derives K; the patient's key uses the shifted row and derives another K', which
the patient can compute with their own key. AES-GCM is not key-committing, so
one ciphertext and tag can be solved for that authenticate under both derived
AES keys (tests/gcm_collision.py): with envelope format 1 both readers opened it
without error, to different plaintexts. Format 2 stores a commitment to the key
and every reader checks it before decrypting.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from gcm_collision import colliding_ciphertext
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from abe_service import hybrid
from abe_service.authority import KeyAuthority
from abe_service.envelope import AbeDecryptor, envelope_binding
from abe_service.fame import SCHEME_ID, Ciphertext
from abe_service.policy import compile_policy
from abe_service.serialization import EnvelopeData, envelope_to_bytes
from ehr_common.api.v1 import formats_pb2 as fpb
from ehr_common.errors import DecodeError, EhrAbeError, IntegrityError

PASSPHRASE = b"correct horse battery staple"
POLICY = "role:doctor or patient:p-17"
CONTEXT = b"patient:p-17"


@dataclass(frozen=True)
class World:
    authority: KeyAuthority
    doctor: AbeDecryptor
    patient: AbeDecryptor  # the malicious writer
    patient_phone: AbeDecryptor  # another key of the same patient (other randomness)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    home: Path = tmp_path_factory.mktemp("authority")
    auth = KeyAuthority.setup(home / "a", passphrase=PASSPHRASE)

    def key(subject: str, attrs: list[str]) -> AbeDecryptor:
        return AbeDecryptor.from_user_key(auth.issue_key(subject, attrs).user_key)

    return World(
        auth,
        key("dr-house", ["role:doctor"]),
        key("p-17", ["patient:p-17"]),
        key("p-17", ["patient:p-17"]),
    )


def _outcome(reader: AbeDecryptor, envelope: bytes) -> bytes | str:
    try:
        return reader.decrypt(envelope, CONTEXT)
    except EhrAbeError as exc:
        return type(exc).__name__


def _split_envelope(w: World, shift: int, *, commit_to_writer: bool) -> bytes:
    """The attacker's best envelope: the writer's own row shifted by g^shift, one
    GCM ciphertext valid under both derived AES keys, and a key commitment to the
    doctor's key (or to the writer's own)."""
    fame, G = w.patient.fame, w.patient.fame.group
    compiled = compile_policy(POLICY)
    header, K_honest = fame.encrypt(w.authority.pk, compiled)
    i = compiled.row_labels.index("patient:p-17")
    delta = G.g1_mul(G.g1_generator(), shift)
    ct = list(header.ct)
    ct[i] = (G.g1_add(ct[i][0], delta), G.g1_add(ct[i][1], delta), G.g1_add(ct[i][2], delta))
    bad = Ciphertext(header.ct0, tuple(ct))
    K_writer = fame.decrypt(compiled, bad, w.patient.key.secret)  # the writer's own key
    assert not G.gt_eq(K_writer, K_honest)
    header_bytes = (
        tuple(G.g2_to_bytes(p) for p in bad.ct0),
        *(tuple(G.g1_to_bytes(p) for p in row) for row in bad.ct),
    )
    binding = envelope_binding(
        SCHEME_ID, w.authority.authority_id, compiled.normal_form, header_bytes, CONTEXT
    )
    secret_doctor, secret_writer = G.gt_to_bytes(K_honest), G.gt_to_bytes(K_writer)
    assert secret_doctor != secret_writer
    enc_doctor, commit_doctor = hybrid._keys(secret_doctor, binding)
    enc_writer, commit_writer = hybrid._keys(secret_writer, binding)
    nonce = os.urandom(hybrid.NONCE_BYTES)
    commitment = hybrid._commitment(
        commit_writer if commit_to_writer else commit_doctor, binding, nonce
    )
    sealed = colliding_ciphertext(
        enc_doctor, enc_writer, nonce, hybrid._aead_ad(binding, commitment)
    )
    return envelope_to_bytes(
        EnvelopeData(
            w.authority.authority_id,
            compiled.normal_form,
            bad,
            nonce,
            sealed,
            header_bytes,
            commitment,
        )
    )


@pytest.mark.parametrize("commit_to_writer", [False, True])
def test_one_envelope_never_opens_to_two_plaintexts(world: World, commit_to_writer: bool) -> None:
    envelope = _split_envelope(world, 12345, commit_to_writer=commit_to_writer)
    outcomes = {
        "doctor": _outcome(world.doctor, envelope),
        "writer": _outcome(world.patient, envelope),
        "phone": _outcome(world.patient_phone, envelope),
    }
    plaintexts = {v for v in outcomes.values() if isinstance(v, bytes)}
    assert len(plaintexts) <= 1, f"one envelope opened to different plaintexts: {outcomes}"
    # Exactly the reader whose derived key was committed to opens it; the others
    # get an integrity error (not a wrong plaintext, not a crash).
    opener = "writer" if commit_to_writer else "doctor"
    assert isinstance(outcomes[opener], bytes)
    assert {k: v for k, v in outcomes.items() if k != opener} == {
        k: "IntegrityError" for k in outcomes if k != opener
    }


@settings(
    max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(shift=st.integers(min_value=1, max_value=2**64))
def test_split_envelopes_are_consistent_for_every_reader(world: World, shift: int) -> None:
    envelope = _split_envelope(world, shift, commit_to_writer=False)
    readers = (world.doctor, world.patient, world.patient_phone)
    plaintexts = {o for o in (_outcome(r, envelope) for r in readers) if isinstance(o, bytes)}
    assert len(plaintexts) <= 1


def test_key_commitment_is_bound_and_checked(world: World) -> None:
    enc = world.authority.encryptor
    envelope = enc.encrypt(POLICY, b"ecg", CONTEXT)
    msg = fpb.Envelope.FromString(envelope)
    assert len(msg.key_commitment) == hybrid.COMMITMENT_BYTES
    assert msg.version == 2
    for i in (0, 31):
        bad = bytearray(msg.key_commitment)
        bad[i] ^= 1
        msg2 = fpb.Envelope.FromString(envelope)
        msg2.key_commitment = bytes(bad)
        with pytest.raises(IntegrityError, match="key commitment"):
            world.doctor.decrypt(msg2.SerializeToString(deterministic=True), CONTEXT)
    msg3 = fpb.Envelope.FromString(envelope)
    msg3.ClearField("key_commitment")
    with pytest.raises(DecodeError, match="key commitment"):
        world.doctor.decrypt(msg3.SerializeToString(deterministic=True), CONTEXT)


def test_version_1_envelopes_are_refused_with_a_reason(world: World) -> None:
    msg = fpb.Envelope.FromString(world.authority.encryptor.encrypt(POLICY, b"x", CONTEXT))
    msg.version = 1
    msg.ClearField("key_commitment")
    with pytest.raises(DecodeError, match="version 1 is no longer read: it is not key-committing"):
        world.doctor.decrypt(msg.SerializeToString(deterministic=True), CONTEXT)


def test_every_header_row_is_validated_not_only_the_rows_used(world: World) -> None:
    """The doctor's key uses only the doctor row; an invalid point in the patient row
    still makes the envelope malformed for the doctor."""
    envelope = world.authority.encryptor.encrypt(POLICY, b"x", CONTEXT)
    msg = fpb.Envelope.FromString(envelope)
    i = compile_policy(POLICY).row_labels.index("patient:p-17")
    not_on_curve = bytes([0x80 | 0x1F]) + b"\xff" * 47  # compressed flag, x >= p
    msg.rows[i].ct2 = not_on_curve
    with pytest.raises(DecodeError):
        world.doctor.decrypt(msg.SerializeToString(deterministic=True), CONTEXT)


def test_hybrid_layer_is_scheme_agnostic_and_committing() -> None:
    secret, other = os.urandom(64), os.urandom(64)
    binding = b"any-scheme/header-bytes"
    sealed = hybrid.seal(secret, binding, b"payload")
    assert hybrid.open_sealed(secret, binding, sealed) == b"payload"
    with pytest.raises(IntegrityError, match="key commitment"):
        hybrid.open_sealed(other, binding, sealed)
    with pytest.raises(IntegrityError):
        hybrid.open_sealed(secret, binding + b"!", sealed)
    # A GCM ciphertext valid under both derived AES keys still opens for one only.
    enc1, _ = hybrid._keys(secret, binding)
    enc2, _ = hybrid._keys(other, binding)
    both = colliding_ciphertext(
        enc1, enc2, sealed.nonce, hybrid._aead_ad(binding, sealed.commitment)
    )
    forged = hybrid.Sealed(sealed.nonce, sealed.commitment, both)
    hybrid.open_sealed(secret, binding, forged)
    with pytest.raises(IntegrityError):
        hybrid.open_sealed(other, binding, forged)
    with pytest.raises(Exception, match="session secret"):
        hybrid.seal(b"short", binding, b"x")


@settings(max_examples=60, deadline=None)
@given(
    secret=st.binary(min_size=32, max_size=64),
    binding=st.binary(max_size=64),
    plaintext=st.binary(max_size=64),
    where=st.sampled_from(["nonce", "commitment", "ciphertext"]),
    bit=st.integers(min_value=0, max_value=10_000),
)
def test_hybrid_layer_any_flipped_bit_fails(
    secret: bytes, binding: bytes, plaintext: bytes, where: str, bit: int
) -> None:
    sealed = hybrid.seal(secret, binding, plaintext)
    assert hybrid.open_sealed(secret, binding, sealed) == plaintext
    parts = {
        "nonce": sealed.nonce,
        "commitment": sealed.commitment,
        "ciphertext": sealed.ciphertext,
    }
    data = bytearray(parts[where])
    data[(bit // 8) % len(data)] ^= 1 << (bit % 8)
    parts[where] = bytes(data)
    with pytest.raises(IntegrityError):
        hybrid.open_sealed(
            secret, binding, hybrid.Sealed(parts["nonce"], parts["commitment"], parts["ciphertext"])
        )
