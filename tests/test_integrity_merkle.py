"""RFC 6962 Merkle trees: the certificate-transparency reference vectors, the
recursive reference definitions, and property tests for proofs."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ehr_common.errors import InvalidArgument
from storage_service.integrity import _kernels, merkle, reference
from storage_service.integrity.merkle import (
    EMPTY_ROOT,
    MerkleTree,
    inclusion_proof,
    leaf_hash,
    leaf_hashes,
    merkle_root,
    pack_proofs,
    verify_inclusion,
    verify_inclusions_batch,
)
from storage_service.integrity.sha256 import ENGINES, Engine, available_engines

ENGINE_PARAMS = [
    pytest.param(
        e,
        marks=pytest.mark.skipif(e not in available_engines(), reason=f"{e} unavailable here"),
    )
    for e in ENGINES
]

# The reference tree of the certificate-transparency merkle tests
# (cpp/merkletree/merkletree_test.cc, carried into google/trillian's and
# transparency-dev/merkle's Go tests as leafInputs / rootsAtSize / testPaths).
CT_LEAVES = [
    bytes.fromhex(h)
    for h in [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
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
# (0-based leaf index, tree size, audit path); the source numbers leaves from 1.
CT_PATHS = [
    (0, 1, []),
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]
CT_LEAF_HASHES = [leaf_hash(d) for d in CT_LEAVES]


@pytest.fixture(params=["serial", "parallel"])
def kernel_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Small batches on the calling thread (the default), or forced parallel."""
    threshold = 0 if request.param == "parallel" else 1 << 62
    monkeypatch.setattr(_kernels, "SERIAL_BELOW_BYTES", threshold)
    return str(request.param)


def test_empty_tree_is_hash_of_empty_string() -> None:
    assert merkle_root([]) == EMPTY_ROOT == hashlib.sha256(b"").digest()
    assert MerkleTree.build([]).root == EMPTY_ROOT


@pytest.mark.parametrize("engine", ENGINE_PARAMS)
def test_ct_reference_roots_for_sizes_1_to_8(engine: Engine, kernel_mode: str) -> None:
    hashes = leaf_hashes(CT_LEAVES, engine=engine)
    assert [bytes(h) for h in hashes] == CT_LEAF_HASHES
    for size in range(1, 9):
        assert merkle_root(hashes[:size], engine=engine).hex() == CT_ROOTS[size - 1]
        assert merkle_root(CT_LEAF_HASHES[:size], engine=engine).hex() == CT_ROOTS[size - 1]
        assert reference.root(CT_LEAF_HASHES[:size]).hex() == CT_ROOTS[size - 1]


@pytest.mark.parametrize(("index", "size", "path"), CT_PATHS)
def test_ct_reference_inclusion_paths(index: int, size: int, path: list[str]) -> None:
    leaves = CT_LEAF_HASHES[:size]
    assert [p.hex() for p in inclusion_proof(leaves, index)] == path
    assert [p.hex() for p in reference.path(index, leaves)] == path
    root = bytes.fromhex(CT_ROOTS[size - 1])
    proof = [bytes.fromhex(p) for p in path]
    assert verify_inclusion(leaves[index], index, size, proof, root)
    assert reference.verify(leaves[index], index, size, proof, root)
    assert verify_inclusions_batch([leaves[index]], [index], [size], [proof], [root]).size == 0


@pytest.mark.parametrize("engine", ENGINE_PARAMS)
def test_every_size_to_70_matches_the_recursive_definition(
    engine: Engine, kernel_mode: str
) -> None:
    hashes = [hashlib.sha256(bytes([i])).digest() for i in range(70)]
    for size in range(71):
        leaves = hashes[:size]
        tree = MerkleTree.build(leaves, engine=engine)
        assert tree.root == reference.root(leaves) == merkle_root(leaves, engine=engine)
        for index in range(size):
            assert tree.inclusion_proof(index) == reference.path(index, leaves)


def _path_shape(index: int, size: int) -> list[bool] | None:
    """Sides of the audit-path siblings, leaf first (True: sibling on the right)."""
    if not 0 <= index < size:
        return None
    if size == 1:
        return []
    k = reference.split(size)
    if index < k:
        return [*(_path_shape(index, k) or []), True]
    return [*(_path_shape(index - k, size - k) or []), False]


def _leaves(count: int, seed: int) -> list[bytes]:
    return [
        hashlib.sha256(seed.to_bytes(8, "big") + i.to_bytes(8, "big")).digest()
        for i in range(count)
    ]


@settings(max_examples=60, deadline=None)
@given(size=st.integers(1, 300), data=st.data())
def test_every_proof_verifies_and_every_change_fails(size: int, data: st.DataObject) -> None:
    leaves = _leaves(size, size)
    tree = MerkleTree.build(leaves)
    index = data.draw(st.integers(0, size - 1))
    proof = tree.inclusion_proof(index)
    root = tree.root
    assert verify_inclusion(leaves[index], index, size, proof, root)

    flip_byte = data.draw(st.integers(0, 31))
    flip_bit = 1 << data.draw(st.integers(0, 7))

    def flipped(b: bytes) -> bytes:
        return b[:flip_byte] + bytes([b[flip_byte] ^ flip_bit]) + b[flip_byte + 1 :]

    assert not verify_inclusion(flipped(leaves[index]), index, size, proof, root)
    assert not verify_inclusion(leaves[index], index, size, proof, flipped(root))
    if proof:
        k = data.draw(st.integers(0, len(proof) - 1))
        bad = [*proof[:k], flipped(proof[k]), *proof[k + 1 :]]
        assert not verify_inclusion(leaves[index], index, size, bad, root)
        assert not verify_inclusion(leaves[index], index, size, proof[:-1], root)
    assert not verify_inclusion(leaves[index], index, size, [*proof, root], root)
    other_index = data.draw(st.integers(0, size).filter(lambda i: i != index))
    assert not verify_inclusion(leaves[index], other_index, size, proof, root)
    other_size = data.draw(st.integers(1, 2 * size + 2).filter(lambda s: s != size))
    # The size is bound only through the root (RFC 9162: the signed tree head
    # carries both). A size whose audit path has the same shape for this index
    # recomputes the same root, so it verifies; any other shape must fail.
    same_shape = _path_shape(index, other_size) == _path_shape(index, size)
    assert verify_inclusion(leaves[index], index, other_size, proof, root) == same_shape
    assert reference.verify(leaves[index], index, other_size, proof, root) == same_shape


@settings(max_examples=25, deadline=None)
@given(size=st.integers(1, 200), seed=st.integers(0, 2**32))
def test_batch_agrees_with_single_verification(size: int, seed: int) -> None:
    leaves = _leaves(size, seed)
    tree = MerkleTree.build(leaves)
    rng = np.random.default_rng(seed)
    indices = rng.integers(0, size, 40).tolist()
    proofs = [tree.inclusion_proof(i) for i in indices]
    batch_leaves = [leaves[i] for i in indices]
    roots = [tree.root] * len(indices)
    sizes = [size] * len(indices)
    # Corrupt a few entries, each in a different way.
    broken = sorted(set(rng.integers(0, len(indices), 5).tolist()))
    for n, i in enumerate(broken):
        kind = n % 4
        if kind == 0:
            batch_leaves[i] = hashlib.sha256(batch_leaves[i]).digest()
        elif kind == 1:
            roots[i] = hashlib.sha256(roots[i]).digest()
        elif kind == 2:
            indices[i] = (indices[i] + 1) % (size + 1)
        else:
            sizes[i] = sizes[i] + 1 + (sizes[i] & (sizes[i] - 1) == 0)
    expected = [
        i
        for i in range(len(indices))
        if not verify_inclusion(batch_leaves[i], indices[i], sizes[i], proofs[i], roots[i])
    ]
    assert set(expected) <= set(broken)
    for engine in available_engines():
        got = verify_inclusions_batch(batch_leaves, indices, sizes, proofs, roots, engine=engine)
        assert got.tolist() == expected
    packed = verify_inclusions_batch(
        np.array([list(b) for b in batch_leaves], dtype=np.uint8),
        np.array(indices, dtype=np.int64),
        np.array(sizes, dtype=np.int64),
        pack_proofs(proofs),
        [bytes(r) for r in roots],
    )
    assert packed.tolist() == expected


def test_reference_verify_agrees_with_rfc9162_algorithm_on_all_small_cases() -> None:
    for size in range(1, 20):
        leaves = _leaves(size, 99)
        root = reference.root(leaves)
        for index in range(size):
            proof = reference.path(index, leaves)
            for claimed_size in range(0, 22):
                for claimed_index in range(0, 21):
                    a = verify_inclusion(leaves[index], claimed_index, claimed_size, proof, root)
                    b = reference.verify(leaves[index], claimed_index, claimed_size, proof, root)
                    assert a == b, (size, index, claimed_index, claimed_size)


def test_batch_rejects_out_of_range_and_empty_inputs() -> None:
    leaf = CT_LEAF_HASHES[0]
    root = bytes.fromhex(CT_ROOTS[0])
    got = verify_inclusions_batch(
        [leaf] * 4, [0, -1, 1, 0], [1, 1, 1, 0], [[], [], [], []], [root] * 4
    )
    assert got.tolist() == [1, 2, 3]
    assert verify_inclusions_batch([], [], [], [], []).size == 0


def test_malformed_inputs_are_invalid_argument() -> None:
    with pytest.raises(InvalidArgument):
        merkle_root([b"short"])
    with pytest.raises(InvalidArgument):
        merkle_root(np.zeros((3, 31), np.uint8))
    with pytest.raises(InvalidArgument):
        inclusion_proof(CT_LEAF_HASHES, 8)
    with pytest.raises(InvalidArgument):
        verify_inclusions_batch(CT_LEAF_HASHES[:2], [0], [2, 2], [[], []], CT_LEAF_HASHES[:2])
    with pytest.raises(InvalidArgument):
        verify_inclusions_batch(CT_LEAF_HASHES[:1], [0], [1], [[]], CT_LEAF_HASHES[:2])
    assert not verify_inclusion(b"short", 0, 1, [], CT_LEAF_HASHES[0])
    assert not verify_inclusion(CT_LEAF_HASHES[0], 0, 2, [b"short"], CT_LEAF_HASHES[0])


def test_leaf_and_node_hashes_are_domain_separated() -> None:
    a, b = CT_LEAF_HASHES[1], CT_LEAF_HASHES[2]
    assert merkle.node_hash(a, b) != leaf_hash(a + b)
    assert merkle.node_hash(a, b) == hashlib.sha256(b"\x01" + a + b).digest()


def test_root_from_array_equals_root_from_bytes(kernel_mode: str) -> None:
    array = np.random.default_rng(1).integers(0, 256, (1001, 32), dtype=np.uint8)
    as_bytes = [bytes(row) for row in array]
    assert merkle_root(array) == merkle_root(as_bytes) == reference.root(as_bytes)


@pytest.mark.parametrize("engine", ENGINE_PARAMS)
def test_batch_verification_in_both_kernel_modes(engine: Engine, kernel_mode: str) -> None:
    leaves = _leaves(1000, 3)
    tree = MerkleTree.build(leaves, engine=engine)
    indices = list(range(0, 1000, 7))
    proofs = [tree.inclusion_proof(i) for i in indices]
    claimed = [leaves[i] for i in indices]
    claimed[5] = bytes(32)
    roots = [tree.root] * len(indices)
    failed = verify_inclusions_batch(
        claimed, indices, [1000] * len(indices), proofs, roots, engine=engine
    )
    assert failed.tolist() == [5]
