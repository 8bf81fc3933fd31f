"""No secret in any repr; master-key sealing cost; keys sealed the old way still open."""

from __future__ import annotations

from pathlib import Path

import pytest

from abe_service.authority import (
    SEALED_MASTER_KEY_FILE,
    KeyAuthority,
    WrongPassphrase,
    seal_master_key,
    unseal_master_key,
)
from abe_service.client import AbeKeyring
from abe_service.envelope import AbeDecryptor
from abe_service.fame import MasterKey, SecretKey
from abe_service.serialization import master_key_to_bytes, user_key_from_bytes
from ehr_common.api.v1 import formats_pb2 as fpb
from ehr_common.errors import DecodeError

PASSPHRASE = b"correct horse battery staple"


def _secret_strings(group: object, msk: MasterKey, sk: SecretKey) -> list[str]:
    """Every rendering of every secret element an object could leak."""
    g = group
    out: list[str] = []
    for k in (msk.a1, msk.a2, msk.b1, msk.b2):
        out += [str(k), hex(k)[2:], f"{k:x}"]
    points = [msk.g_d1, msk.g_d2, msk.g_d3, *sk.sk_prime]
    points += [p for part in sk.sk.values() for p in (part.sk1, part.sk2, part.sk3)]
    for p in points:
        out += [str(p), repr(p), g.g1_to_bytes(p).hex(), repr(g.g1_to_bytes(p))[2:40]]  # type: ignore[attr-defined]
    for p in sk.sk0:
        out += [str(p), repr(p), g.g2_to_bytes(p).hex()]  # type: ignore[attr-defined]
    # a point's repr may be generic ("<G1Point object at 0x..>"): only specific ones count
    return [s for s in out if len(s) >= 16 and "object at" not in s]


@pytest.mark.parametrize("backend", ["mcl", "pymcl"])
def test_no_secret_in_any_repr(tmp_path: Path, backend: str) -> None:
    auth = KeyAuthority.setup(tmp_path / "a", passphrase=PASSPHRASE, backend=backend)
    issued = auth.issue_key("dr-house", ["role:doctor", "age=42"])
    user_key = user_key_from_bytes(auth.fame.group, issued.user_key)
    decryptor = AbeDecryptor.from_user_key(issued.user_key, backend)
    keyring = AbeKeyring.from_bytes(issued.user_key, backend)
    assert auth._msk is not None
    msk = auth._msk
    secrets = _secret_strings(auth.fame.group, msk, user_key.secret)
    assert secrets  # the check below can fail
    sealed = (tmp_path / "a" / SEALED_MASTER_KEY_FILE).read_bytes()
    msk_bytes = master_key_to_bytes(auth.fame.group, msk, auth.authority_id)
    for obj in (
        auth,
        msk,
        user_key,
        user_key.secret,
        next(iter(user_key.secret.sk.values())),
        issued,
        decryptor,
        keyring,
    ):
        text = repr(obj) + str(obj)
        for s in secrets:
            assert s not in text, f"{type(obj).__name__} prints a secret"
        assert repr(issued.user_key)[2:60] not in text
        assert repr(sealed)[2:40] not in text and repr(msk_bytes)[2:40] not in text
        assert repr(PASSPHRASE) not in text and PASSPHRASE.decode() not in text
    assert "dr-house" in repr(user_key)  # what is not secret still shows


def test_new_master_keys_use_scrypt_n_2_17(tmp_path: Path) -> None:
    KeyAuthority.setup(tmp_path, passphrase=PASSPHRASE)
    msg = fpb.SealedMasterKey.FromString((tmp_path / SEALED_MASTER_KEY_FILE).read_bytes())
    assert msg.kdf == "scrypt" and msg.scrypt_log2_n >= 17 and msg.scrypt_r == 8


def test_master_keys_sealed_the_old_way_still_open(tmp_path: Path) -> None:
    auth = KeyAuthority.setup(tmp_path, passphrase=PASSPHRASE)
    assert auth._msk is not None
    msk = master_key_to_bytes(auth.fame.group, auth._msk, auth.authority_id)
    old = seal_master_key(msk, auth.authority_id, PASSPHRASE, None, log2_n=15)
    assert fpb.SealedMasterKey.FromString(old).scrypt_log2_n == 15
    (tmp_path / SEALED_MASTER_KEY_FILE).write_bytes(old)
    reopened = KeyAuthority.open(tmp_path, passphrase=PASSPHRASE)
    assert reopened.can_issue and reopened.authority_id == auth.authority_id
    with pytest.raises(WrongPassphrase):
        KeyAuthority.open(tmp_path, passphrase=b"not the passphrase at all")


@pytest.mark.parametrize(("log2_n", "r"), [(14, 8), (21, 8), (20, 16), (23, 1)])
def test_sealed_files_cannot_ask_for_weak_or_huge_scrypt_costs(
    tmp_path: Path, log2_n: int, r: int
) -> None:
    """Weaker than the oldest format (N = 2^15), or more than 1 GiB of memory: a
    planted file must not make unsealing exhaust the machine."""
    auth = KeyAuthority.setup(tmp_path, passphrase=PASSPHRASE)
    msg = fpb.SealedMasterKey.FromString((tmp_path / SEALED_MASTER_KEY_FILE).read_bytes())
    msg.scrypt_log2_n, msg.scrypt_r = log2_n, r
    with pytest.raises(DecodeError, match="scrypt"):
        unseal_master_key(msg.SerializeToString(deterministic=True), PASSPHRASE, None)
    assert auth.can_issue
