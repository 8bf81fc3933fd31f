"""The integrity core: batch SHA-256 (both engines) and RFC 6962 Merkle trees."""

from __future__ import annotations

import hashlib
import os
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storage_service.integrity import merkle
from storage_service.integrity import sha256 as S

ENGINES = ["openssl", "numba"] if S._ssl_transform is not None else ["numba"]

# FIPS 180-4 / NIST example vectors
NIST = [
    (b"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
    (b"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
    (
        b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
    ),
    (
        b"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu",
        "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1",
    ),
    (b"a" * 1_000_000, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"),
]


@pytest.mark.parametrize("engine", ENGINES)
def test_nist_vectors(engine: str) -> None:
    digests = S.sha256_many([m for m, _ in NIST], engine=engine)
    assert [bytes(d).hex() for d in digests] == [h for _, h in NIST]


@pytest.mark.parametrize("engine", ENGINES)
def test_every_length_0_to_300_and_large_against_hashlib(engine: str) -> None:
    rng = random.Random(7)
    records = [rng.randbytes(n) for n in range(301)] + [rng.randbytes(4096) for _ in range(50)]
    records += [os.urandom(1 << 20), os.urandom((1 << 20) + 63)]
    digests = S.sha256_many(records, engine=engine)
    for r, d in zip(records, digests, strict=True):
        assert bytes(d) == hashlib.sha256(r).digest()
    leaves = S.sha256_many(records[:301], prefix=0, engine=engine)
    for r, d in zip(records[:301], leaves, strict=True):
        assert bytes(d) == hashlib.sha256(b"\x00" + r).digest()


def test_mismatches_reports_the_differing_indices() -> None:
    recs = [b"a", b"b", b"c", b"d"]
    good = S.sha256_many(recs)
    bad = good.copy()
    bad[2, 5] ^= 1
    assert list(S.mismatches(good, bad)) == [2]
    with pytest.raises(ValueError):
        S.mismatches(good, good[:2])


def test_packed_input_is_validated() -> None:
    buf, off = S.pack([b"abc", b"de"])
    with pytest.raises(ValueError):
        S.sha256_packed(buf, off[::-1].copy())
    with pytest.raises(ValueError):
        S.sha256_packed(buf.astype(np.int16), off)


# RFC 6962 test tree (certificate-transparency / transparency-dev test data)
CT_LEAVES = [
    b"",
    b"\x00",
    b"\x10",
    b"\x20\x21",
    b"\x30\x31",
    b"\x40\x41\x42\x43",
    b"\x50\x51\x52\x53\x54\x55\x56\x57",
    b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
]
CT_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


def test_rfc6962_roots() -> None:
    leaves = [merkle.leaf_hash(d) for d in CT_LEAVES]
    for n in range(1, 9):
        assert merkle.merkle_root(leaves[:n]).hex() == CT_ROOTS[n - 1]
        assert merkle.merkle_root_reference(leaves[:n]).hex() == CT_ROOTS[n - 1]
    assert merkle.merkle_root([]) == hashlib.sha256(b"").digest()


def test_rfc6962_inclusion_paths() -> None:
    leaves = [merkle.leaf_hash(d) for d in CT_LEAVES]
    # leaf 0 of 8 and leaf 5 of 8, as in the transparency-dev test data
    assert [p.hex() for p in merkle.inclusion_proof(leaves, 0)] == [
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ]
    assert [p.hex() for p in merkle.inclusion_proof(leaves, 5)] == [
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ]


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 70), data=st.data())
def test_inclusion_proofs_verify_and_any_change_fails(n: int, data: st.DataObject) -> None:
    leaves = [merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(n)]
    root = merkle.merkle_root(leaves)
    assert root == merkle.merkle_root_reference(leaves)
    i = data.draw(st.integers(0, n - 1))
    proof = merkle.inclusion_proof(leaves, i)
    assert merkle.verify_inclusion(leaves[i], i, n, proof, root)
    assert not merkle.verify_inclusion(merkle.leaf_hash(b"other"), i, n, proof, root)
    if n > 1:
        assert not merkle.verify_inclusion(leaves[i], (i + 1) % n, n, proof, root)
        assert not merkle.verify_inclusion(leaves[i], i, 0, proof, root)
        assert not merkle.verify_inclusion(leaves[i], n, n, proof, root)
    if proof:
        k = data.draw(st.integers(0, len(proof) - 1))
        bad = list(proof)
        bad[k] = bytes(32)
        assert not merkle.verify_inclusion(leaves[i], i, n, bad, root)
        assert not merkle.verify_inclusion(leaves[i], i, n, proof[:-1], root)
    # a leaf hash can never pass for an interior node (domain separation)
    assert merkle.leaf_hash(b"\x01" + bytes(64)) != merkle.node_hash(bytes(32), bytes(32))


def test_batch_verification_reports_failing_positions() -> None:
    leaves = [merkle.leaf_hash(bytes([i])) for i in range(10)]
    root = merkle.merkle_root(leaves)
    proofs = [merkle.inclusion_proof(leaves, i) for i in range(10)]
    claimed = list(leaves)
    claimed[3] = merkle.leaf_hash(b"tampered")
    failed = merkle.verify_inclusions_batch(claimed, range(10), [10] * 10, proofs, [root] * 10)
    assert failed == [3]


def test_root_from_array_equals_root_from_bytes() -> None:
    arr = np.random.default_rng(1).integers(0, 256, (1001, 32), dtype=np.uint8)
    assert merkle.merkle_root(arr) == merkle.merkle_root_reference([bytes(r) for r in arr])
