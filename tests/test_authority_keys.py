"""The key authority: setup on disk, the sealed master key, and key issuance."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from abe_service.authority import (
    MAX_ATTRIBUTES_PER_KEY,
    PUBLIC_PARAMS_FILE,
    SEALED_MASTER_KEY_FILE,
    KeyAuthority,
    WrongPassphrase,
)
from abe_service.envelope import AbeDecryptor
from abe_service.serialization import master_key_to_bytes, user_key_from_bytes
from ehr_common.api.v1 import formats_pb2 as fpb
from ehr_common.errors import (
    AccessDenied,
    AlreadyExists,
    ConfigError,
    DecodeError,
    IntegrityError,
    InvalidArgument,
    PolicyError,
    PolicyNotSatisfied,
)

PASSPHRASE = b"correct horse battery staple"
CONTEXT = b"patient:p-17"


@pytest.fixture(scope="module")
def authority_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("authority") / "auth"
    KeyAuthority.setup(directory, passphrase=PASSPHRASE, backend="mcl")
    return directory


@pytest.fixture(scope="module")
def authority(authority_dir: Path) -> KeyAuthority:
    return KeyAuthority.open(authority_dir, passphrase=PASSPHRASE, backend="mcl")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- setup ------------------------------------------------------------------------------
def test_setup_writes_the_sealed_master_key_owner_only(authority_dir: Path) -> None:
    assert _mode(authority_dir / SEALED_MASTER_KEY_FILE) == 0o600
    assert _mode(authority_dir / PUBLIC_PARAMS_FILE) & 0o022 == 0  # nobody else may rewrite it
    # Nothing else: no temporary file left behind.
    assert sorted(p.name for p in authority_dir.iterdir()) == sorted(
        [PUBLIC_PARAMS_FILE, SEALED_MASTER_KEY_FILE]
    )


def test_sealed_file_holds_no_secret_in_the_clear(
    authority_dir: Path, authority: KeyAuthority
) -> None:
    sealed = (authority_dir / SEALED_MASTER_KEY_FILE).read_bytes()
    assert PASSPHRASE not in sealed
    assert authority._msk is not None
    clear = master_key_to_bytes(authority.fame.group, authority._msk, authority.authority_id)
    for chunk in (
        authority._msk.a1.to_bytes(32, "big"),
        authority._msk.b2.to_bytes(32, "big"),
        clear[-48:],
    ):
        assert chunk not in sealed
    msg = fpb.SealedMasterKey.FromString(sealed)
    assert msg.kdf == "scrypt" and msg.authority_id == authority.authority_id


def test_setup_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    first = KeyAuthority.setup(tmp_path, passphrase=PASSPHRASE)
    before = {
        name: (tmp_path / name).read_bytes()
        for name in (PUBLIC_PARAMS_FILE, SEALED_MASTER_KEY_FILE)
    }
    with pytest.raises(AlreadyExists):
        KeyAuthority.setup(tmp_path, passphrase=PASSPHRASE)
    # untouched, byte for byte
    assert {name: (tmp_path / name).read_bytes() for name in before} == before

    old_key = first.issue_key("dr-house", ["role:doctor"]).user_key
    second = KeyAuthority.setup(tmp_path, passphrase=PASSPHRASE, force=True)
    assert second.authority_id != first.authority_id
    assert _mode(tmp_path / SEALED_MASTER_KEY_FILE) == 0o600
    # Every key of the replaced authority stops working.
    envelope = second.encryptor.encrypt("role:doctor", b"ecg", CONTEXT)
    with pytest.raises(IntegrityError):
        AbeDecryptor.from_user_key(old_key).decrypt(envelope, CONTEXT)


def test_setup_refuses_when_only_one_file_exists(tmp_path: Path) -> None:
    (tmp_path / SEALED_MASTER_KEY_FILE).write_bytes(b"somebody's master key")
    with pytest.raises(AlreadyExists):
        KeyAuthority.setup(tmp_path, passphrase=PASSPHRASE)
    assert (tmp_path / SEALED_MASTER_KEY_FILE).read_bytes() == b"somebody's master key"


@pytest.mark.parametrize("passphrase", [b"", b"short", b"x" * 11])
def test_setup_refuses_weak_or_missing_passphrases(tmp_path: Path, passphrase: bytes) -> None:
    with pytest.raises((InvalidArgument, ConfigError)):
        KeyAuthority.setup(tmp_path, passphrase=passphrase)
    assert not (tmp_path / SEALED_MASTER_KEY_FILE).exists()


def test_setup_without_any_secret_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        KeyAuthority.setup(tmp_path)
    assert not (tmp_path / SEALED_MASTER_KEY_FILE).exists()


# -- opening ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "wrong", [PASSPHRASE + b"!", PASSPHRASE[:-1], PASSPHRASE.upper(), b"x" * 40]
)
def test_wrong_passphrase(authority_dir: Path, wrong: bytes) -> None:
    with pytest.raises(WrongPassphrase) as info:
        KeyAuthority.open(authority_dir, passphrase=wrong)
    assert isinstance(info.value, AccessDenied)
    assert info.value.status == "PERMISSION_DENIED"
    assert PASSPHRASE.decode() not in str(info.value)


def test_open_without_passphrase_is_a_config_error(authority_dir: Path) -> None:
    with pytest.raises(ConfigError):
        KeyAuthority.open(authority_dir)


def test_open_where_there_is_no_authority(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        KeyAuthority.open(tmp_path, passphrase=PASSPHRASE)


def test_missing_sealed_master_key_is_a_config_error(authority_dir: Path, tmp_path: Path) -> None:
    (tmp_path / PUBLIC_PARAMS_FILE).write_bytes((authority_dir / PUBLIC_PARAMS_FILE).read_bytes())
    with pytest.raises(ConfigError):
        KeyAuthority.open(tmp_path, passphrase=PASSPHRASE)
    assert not KeyAuthority.open(tmp_path, public_only=True).can_issue


def test_corrupt_public_params_file_is_a_decode_error(tmp_path: Path) -> None:
    (tmp_path / PUBLIC_PARAMS_FILE).write_bytes(b"not public parameters")
    with pytest.raises(DecodeError):
        KeyAuthority.open(tmp_path, public_only=True)


def test_public_only_authority_cannot_issue(authority_dir: Path) -> None:
    public = KeyAuthority.open(authority_dir, public_only=True)
    assert not public.can_issue
    with pytest.raises(AccessDenied):
        public.issue_key("dr-house", ["role:doctor"])
    # but it encrypts for keys of the full authority
    full = KeyAuthority.open(authority_dir, passphrase=PASSPHRASE)
    key = AbeDecryptor.from_user_key(full.issue_key("dr-house", ["role:doctor"]).user_key)
    assert key.decrypt(public.encryptor.encrypt("role:doctor", b"ok", CONTEXT), CONTEXT) == b"ok"


def test_tampered_sealed_file_does_not_open(authority_dir: Path, tmp_path: Path) -> None:
    (tmp_path / PUBLIC_PARAMS_FILE).write_bytes((authority_dir / PUBLIC_PARAMS_FILE).read_bytes())
    msg = fpb.SealedMasterKey.FromString((authority_dir / SEALED_MASTER_KEY_FILE).read_bytes())
    tampered = []
    for field, value in (
        ("authority_id", "0" * 32),
        ("scrypt_r", msg.scrypt_r + 1),
        ("salt", bytes(16)),
    ):
        copy = fpb.SealedMasterKey()
        copy.CopyFrom(msg)
        setattr(copy, field, value)
        tampered.append(copy.SerializeToString())
    body = bytearray(msg.ciphertext)
    body[5] ^= 1
    copy = fpb.SealedMasterKey()
    copy.CopyFrom(msg)
    copy.ciphertext = bytes(body)
    tampered.append(copy.SerializeToString())
    for data in tampered:
        (tmp_path / SEALED_MASTER_KEY_FILE).write_bytes(data)
        with pytest.raises((WrongPassphrase, DecodeError)):
            KeyAuthority.open(tmp_path, passphrase=PASSPHRASE)


def test_master_key_of_another_authority_is_refused(authority_dir: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    KeyAuthority.setup(other, passphrase=PASSPHRASE)
    (other / SEALED_MASTER_KEY_FILE).write_bytes(
        (authority_dir / SEALED_MASTER_KEY_FILE).read_bytes()
    )
    with pytest.raises(DecodeError):
        KeyAuthority.open(other, passphrase=PASSPHRASE)


# -- key files instead of passphrases -------------------------------------------------------------------
@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "master.key"
    path.write_bytes(os.urandom(32))
    path.chmod(0o600)
    return path


def test_key_file_sealing(tmp_path: Path, key_file: Path) -> None:
    directory = tmp_path / "auth"
    created = KeyAuthority.setup(directory, key_file=key_file)
    sealed = (directory / SEALED_MASTER_KEY_FILE).read_bytes()
    assert fpb.SealedMasterKey.FromString(sealed).kdf == "keyfile"
    assert key_file.read_bytes() not in sealed
    assert _mode(directory / SEALED_MASTER_KEY_FILE) == 0o600

    reopened = KeyAuthority.open(directory, key_file=key_file)
    assert reopened.authority_id == created.authority_id
    key = AbeDecryptor.from_user_key(reopened.issue_key("dr-house", ["role:doctor"]).user_key)
    assert key.decrypt(created.encryptor.encrypt("role:doctor", b"ok", CONTEXT), CONTEXT) == b"ok"

    # No passphrase opens it, not even the key file's own bytes given as one.
    for passphrase in (PASSPHRASE, key_file.read_bytes()):
        with pytest.raises((ConfigError, WrongPassphrase)):
            KeyAuthority.open(directory, passphrase=passphrase)
    # Another key file does not open it.
    other = tmp_path / "other.key"
    other.write_bytes(os.urandom(64))
    with pytest.raises(WrongPassphrase):
        KeyAuthority.open(directory, key_file=other)


def test_passphrase_sealed_key_does_not_open_with_a_key_file(
    authority_dir: Path, key_file: Path
) -> None:
    with pytest.raises(ConfigError):
        KeyAuthority.open(authority_dir, key_file=key_file)


def test_key_file_problems_are_config_errors(tmp_path: Path) -> None:
    short = tmp_path / "short.key"
    short.write_bytes(os.urandom(31))
    with pytest.raises(ConfigError):
        KeyAuthority.setup(tmp_path / "a", key_file=short)
    with pytest.raises(ConfigError):
        KeyAuthority.setup(tmp_path / "b", key_file=tmp_path / "missing.key")
    assert not (tmp_path / "a" / SEALED_MASTER_KEY_FILE).exists()
    assert not (tmp_path / "b" / SEALED_MASTER_KEY_FILE).exists()


# -- issuing keys -------------------------------------------------------------------------------------------
def test_issue_key_needs_attributes(authority: KeyAuthority) -> None:
    with pytest.raises(InvalidArgument):
        authority.issue_key("dr-house", [])


def test_issue_key_caps_the_number_of_attributes(authority: KeyAuthority) -> None:
    too_many = [f"ward:w{i}" for i in range(MAX_ATTRIBUTES_PER_KEY + 1)]
    with pytest.raises(InvalidArgument):
        authority.issue_key("dr-house", too_many)


@pytest.mark.parametrize("subject", ["", "s" * 257])
def test_issue_key_validates_the_subject(authority: KeyAuthority, subject: str) -> None:
    with pytest.raises(InvalidArgument):
        authority.issue_key(subject, ["role:doctor"])


@pytest.mark.parametrize(
    "attribute",
    [
        "",
        "role doctor",
        "1role:doctor",
        "and",
        "role:doc tor",
        "role:",
        "age=-1",
        "age=1x",
        "role:doctor;drop",
        "a#1=1",
    ],
)
def test_issue_key_rejects_bad_attribute_syntax(authority: KeyAuthority, attribute: str) -> None:
    with pytest.raises(PolicyError):
        authority.issue_key("dr-house", ["role:doctor", attribute])


def test_issue_key_rejects_a_bare_string(authority: KeyAuthority) -> None:
    with pytest.raises(InvalidArgument):
        authority.issue_key("dr-house", "role:doctor")  # type: ignore[arg-type]


def test_issued_key_decrypts_what_it_should(authority: KeyAuthority) -> None:
    attributes = ["role:doctor", "dept:cardiology", "clearance=3"]
    issued = authority.issue_key("dr-house", attributes)
    key = AbeDecryptor.from_user_key(issued.user_key)
    assert key.subject_id == "dr-house"
    assert key.key.attributes == tuple(attributes)
    assert key.key.key_id == issued.key_id and issued.key_id.startswith("k-")
    assert key.key.authority_id == authority.authority_id

    allowed = [
        "role:doctor",
        "role:doctor and dept:cardiology",
        "(role:nurse and dept:cardiology) or role:doctor",
        "clearance >= 2",
        "clearance == 3",
        "2 of (role:doctor, dept:oncology, clearance > 2)",
    ]
    refused = [
        "role:nurse",
        "role:doctor and dept:oncology",
        "clearance > 3",
        "clearance < 3",
        "2 of (role:nurse, dept:oncology, clearance > 2)",
    ]
    for policy in allowed:
        envelope = authority.encryptor.encrypt(policy, policy.encode(), CONTEXT)
        assert key.decrypt(envelope, CONTEXT) == policy.encode(), policy
    for policy in refused:
        envelope = authority.encryptor.encrypt(policy, b"secret", CONTEXT)
        with pytest.raises(PolicyNotSatisfied):
            key.decrypt(envelope, CONTEXT)


def test_issued_key_is_fresh_each_time_but_names_the_same_attribute_set(
    authority: KeyAuthority,
) -> None:
    a = authority.issue_key("dr-house", ["role:doctor", "dept:cardiology"])
    b = authority.issue_key("dr-house", ["dept:cardiology", "role:doctor"])
    assert a.key_id != b.key_id
    assert a.user_key != b.user_key
    assert a.attribute_set_hmac == b.attribute_set_hmac
    c = authority.issue_key("dr-house", ["role:doctor"])
    assert c.attribute_set_hmac != a.attribute_set_hmac
    group = authority.fame.group
    assert set(user_key_from_bytes(group, a.user_key).secret.sk) == {
        "role:doctor",
        "dept:cardiology",
    }


def test_key_from_a_reopened_authority_decrypts_earlier_envelopes(
    authority_dir: Path, authority: KeyAuthority
) -> None:
    envelope = authority.encryptor.encrypt("role:doctor", b"before restart", CONTEXT)
    reopened = KeyAuthority.open(authority_dir, passphrase=PASSPHRASE, backend="pymcl")
    key = AbeDecryptor.from_user_key(
        reopened.issue_key("dr-house", ["role:doctor"]).user_key, "pymcl"
    )
    assert key.decrypt(envelope, CONTEXT) == b"before restart"
