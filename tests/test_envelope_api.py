"""The one-call envelope API: bytes in, bytes out, context bound."""

from __future__ import annotations

from pathlib import Path

import pytest

from abe_service import envelope
from abe_service.authority import KeyAuthority
from ehr_common.errors import DecodeError, IntegrityError, PolicyError, PolicyNotSatisfied


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> KeyAuthority:
    home: Path = tmp_path_factory.mktemp("authority-api")
    return KeyAuthority.setup(home, passphrase=b"correct horse battery staple")


def test_one_call_round_trip_with_integer_attributes(authority: KeyAuthority) -> None:
    policy = "(role:doctor and age >= 18) or patient:p-17"
    sealed = envelope.encrypt(authority.public_params, policy, b"blood pressure 120/80", b"r-1")
    adult_doctor = authority.issue_key("dr-a", ["role:doctor", "age=42"]).user_key
    young_doctor = authority.issue_key("dr-b", ["role:doctor", "age=17"]).user_key
    patient = authority.issue_key("p-17", ["patient:p-17"]).user_key
    assert envelope.decrypt(adult_doctor, sealed, b"r-1") == b"blood pressure 120/80"
    assert envelope.decrypt(patient, sealed, b"r-1") == b"blood pressure 120/80"
    with pytest.raises(PolicyNotSatisfied):
        envelope.decrypt(young_doctor, sealed, b"r-1")
    with pytest.raises(IntegrityError):
        envelope.decrypt(adult_doctor, sealed, b"r-2")  # moved to another record


def test_envelope_is_not_a_key_and_a_key_is_not_an_envelope(authority: KeyAuthority) -> None:
    key = authority.issue_key("dr-a", ["role:doctor"]).user_key
    sealed = envelope.encrypt(authority.public_params, "role:doctor", b"x", b"")
    with pytest.raises(DecodeError):
        envelope.decrypt(sealed, sealed, b"")
    with pytest.raises(DecodeError):
        envelope.decrypt(key, key, b"")
    with pytest.raises(DecodeError):
        envelope.encrypt(key, "role:doctor", b"x", b"")


def test_bad_policy_is_a_policy_error(authority: KeyAuthority) -> None:
    with pytest.raises(PolicyError):
        envelope.encrypt(authority.public_params, "role:doctor and (", b"x", b"")


def test_policy_is_stored_in_normal_form(authority: KeyAuthority) -> None:
    sealed = envelope.encrypt(authority.public_params, "b:1 and a:1", b"x", b"")
    same = envelope.encrypt(authority.public_params, "a:1 and b:1", b"x", b"")
    assert envelope.envelope_policy(sealed) == envelope.envelope_policy(same)


def test_every_byte_flip_in_an_or_envelope_is_rejected(authority: KeyAuthority) -> None:
    """With an OR policy the key uses one row; bytes of the rows it does not use
    are still authenticated (associated data), so changing them fails too."""
    from abe_service.envelope import AbeDecryptor
    from ehr_common.errors import EhrAbeError

    key = AbeDecryptor.from_user_key(authority.issue_key("p-17", ["patient:p-17"]).user_key)
    sealed = envelope.encrypt(
        authority.public_params, "role:doctor or dept:cardiology or patient:p-17", b"ok", b"c"
    )
    assert key.decrypt(sealed, b"c") == b"ok"
    outcomes: set[str] = set()
    for i in range(len(sealed)):
        tampered = bytearray(sealed)
        tampered[i] ^= 0x01
        try:
            key.decrypt(bytes(tampered), b"c")
        except EhrAbeError as exc:
            outcomes.add(type(exc).__name__)
            continue
        pytest.fail(f"flipping byte {i} still decrypted")
    assert outcomes <= {"IntegrityError", "DecodeError", "PolicyNotSatisfied"}
    assert {"IntegrityError", "DecodeError"} <= outcomes
