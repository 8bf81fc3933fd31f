"""RFC 6962 / RFC 9162 Merkle trees (the certificate-transparency tree).

    leaf hash  MTH({d})      = SHA-256(0x00 || d)
    node hash  MTH(D[0:n])   = SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n])),
                               k = the largest power of two smaller than n
    empty tree MTH({})       = SHA-256("")

Leaf and node hashes are domain-separated, so a leaf can never pass for an
interior node. Trees are built level by level with the numba kernels: pairing
nodes left to right and carrying an odd last node up unchanged yields exactly
the RFC 6962 split, so level j of a tree of n leaves holds the roots of the
aligned 2^j-leaf subtrees. Proofs are audit paths (RFC 9162 §2.1.3.1);
verification follows §2.1.3.2. `reference` has the recursive definitions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from ehr_common.errors import InvalidArgument
from storage_service.integrity import _kernels
from storage_service.integrity.constants import DIGEST_SIZE
from storage_service.integrity.sha256 import (
    Engine,
    I64Array,
    U8Array,
    check_digests,
    engine_tag,
    sha256_many,
    sha256_packed,
)

EMPTY_ROOT: Final = hashlib.sha256(b"").digest()
LEAF_PREFIX: Final = 0x00
NODE_PREFIX: Final = 0x01

LeafHashes = Sequence[bytes] | U8Array


def leaf_hash(data: bytes) -> bytes:
    """RFC 6962 leaf hash of one record's leaf bytes."""
    return hashlib.sha256(b"\x00" + bytes(data)).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def leaf_hashes(records: Sequence[bytes], *, engine: Engine | None = None) -> U8Array:
    """Leaf hashes (n x 32 uint8) of many records' leaf bytes, in parallel."""
    return sha256_many(records, prefix=LEAF_PREFIX, engine=engine)


def leaf_hashes_packed(buf: U8Array, offsets: I64Array, *, engine: Engine | None = None) -> U8Array:
    """Leaf hashes of records packed as in `sha256.sha256_packed`."""
    return sha256_packed(buf, offsets, prefix=LEAF_PREFIX, engine=engine)


def as_hash_array(hashes: LeafHashes, what: str = "leaf hashes") -> U8Array:
    """hashes as a contiguous n x 32 uint8 array; InvalidArgument if malformed."""
    if isinstance(hashes, np.ndarray):
        check_digests(hashes, hashes.shape[0] if hashes.ndim == 2 else -1, what)
        return np.ascontiguousarray(hashes)
    if any(not isinstance(h, bytes | bytearray) or len(h) != DIGEST_SIZE for h in hashes):
        raise InvalidArgument(f"every one of the {what} must be {DIGEST_SIZE} bytes")
    joined = b"".join(hashes)
    return np.frombuffer(joined, dtype=np.uint8).reshape(-1, DIGEST_SIZE).copy()


def _next_level(level: U8Array, tag: npt.NDArray[np.generic]) -> U8Array:
    m = level.shape[0]
    pairs = m // 2
    parent = np.empty((pairs + (m & 1), DIGEST_SIZE), dtype=np.uint8)
    if pairs:
        _kernels.run(_kernels.node_level, 128 * pairs, tag, level, parent[:pairs])
    if m & 1:
        parent[pairs] = level[m - 1]  # the odd last node is carried up unchanged
    return parent


def merkle_root(leaves: LeafHashes, *, engine: Engine | None = None) -> bytes:
    """Root of the tree whose leaf hashes are given (bytes or an n x 32 array)."""
    level = as_hash_array(leaves)
    if level.shape[0] == 0:
        return EMPTY_ROOT
    tag = engine_tag(engine)
    while level.shape[0] > 1:
        level = _next_level(level, tag)
    return bytes(level[0])


@dataclass(frozen=True)
class MerkleTree:
    """Every level of a tree, for many audit paths at O(log n) each.

    Holds about twice the leaf hashes in memory; for the root alone use
    `merkle_root`, which keeps only two levels.
    """

    levels: tuple[U8Array, ...]

    @classmethod
    def build(cls, leaves: LeafHashes, *, engine: Engine | None = None) -> MerkleTree:
        level = as_hash_array(leaves)
        levels = [level]
        if level.shape[0] > 0:
            tag = engine_tag(engine)
            while level.shape[0] > 1:
                level = _next_level(level, tag)
                levels.append(level)
        return cls(tuple(levels))

    @property
    def size(self) -> int:
        return int(self.levels[0].shape[0])

    @property
    def root(self) -> bytes:
        return EMPTY_ROOT if self.size == 0 else bytes(self.levels[-1][0])

    def inclusion_proof(self, index: int) -> list[bytes]:
        """Audit path of leaf `index`, leaf side first (RFC 9162 §2.1.3.1)."""
        if not 0 <= index < self.size:
            raise InvalidArgument(f"leaf index {index} is outside a tree of {self.size} leaves")
        path: list[bytes] = []
        position = index
        for level in self.levels[:-1]:
            sibling = position ^ 1
            if sibling < level.shape[0]:  # no sibling: this node is carried up
                path.append(bytes(level[sibling]))
            position >>= 1
        return path


def inclusion_proof(leaves: LeafHashes, index: int, *, engine: Engine | None = None) -> list[bytes]:
    """Audit path for leaf `index` in the tree of `leaves` (leaf hashes)."""
    return MerkleTree.build(leaves, engine=engine).inclusion_proof(index)


def verify_inclusion(
    leaf: bytes, index: int, tree_size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """RFC 9162 §2.1.3.2: does `proof` take leaf hash `leaf` at `index` to `root`?"""
    if len(leaf) != DIGEST_SIZE or len(root) != DIGEST_SIZE or not 0 <= index < tree_size:
        return False
    fn, sn = index, tree_size - 1
    r = bytes(leaf)
    for p in proof:
        if len(p) != DIGEST_SIZE or sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def pack_proofs(proofs: Sequence[Sequence[bytes]]) -> tuple[U8Array, I64Array]:
    """Proofs as (nodes m x 32, offsets n+1): proof i is nodes[offsets[i]:offsets[i+1]]."""
    lengths = np.fromiter((len(p) for p in proofs), dtype=np.int64, count=len(proofs))
    offsets = np.zeros(len(proofs) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    nodes = as_hash_array([node for proof in proofs for node in proof], "proof nodes")
    return nodes, offsets


def _as_int64(values: Sequence[int] | I64Array, n: int, what: str) -> I64Array:
    try:
        array = np.ascontiguousarray(values, dtype=np.int64)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidArgument(f"{what} must be integers") from exc
    if array.shape != (n,):
        raise InvalidArgument(f"{what} must have {n} entries")
    return array


def verify_inclusions_batch(
    leaves: LeafHashes,
    indices: Sequence[int] | I64Array,
    tree_sizes: Sequence[int] | I64Array,
    proofs: Sequence[Sequence[bytes]] | tuple[U8Array, I64Array],
    roots: LeafHashes,
    *,
    engine: Engine | None = None,
) -> I64Array:
    """Verify many (leaf, index, tree size, proof, root) at once, in parallel.

    `proofs` is a list of audit paths or `pack_proofs` output. Returns the
    positions (ascending) whose proof does not verify; empty means all hold.
    """
    leaf_array = as_hash_array(leaves)
    n = leaf_array.shape[0]
    root_array = as_hash_array(roots, "roots")
    if root_array.shape[0] != n:
        raise InvalidArgument(f"{n} leaves but {root_array.shape[0]} roots")
    index_array = _as_int64(indices, n, "indices")
    size_array = _as_int64(tree_sizes, n, "tree sizes")
    if isinstance(proofs, tuple) and len(proofs) == 2 and isinstance(proofs[0], np.ndarray):
        nodes = as_hash_array(proofs[0], "proof nodes")
        offsets = _as_int64(proofs[1], n + 1, "proof offsets")
        if offsets[0] != 0 or offsets[-1] != nodes.shape[0] or np.any(offsets[1:] < offsets[:-1]):
            raise InvalidArgument("proof offsets must run from 0 to the number of proof nodes")
    else:
        if len(proofs) != n:
            raise InvalidArgument(f"{n} leaves but {len(proofs)} proofs")
        nodes, offsets = pack_proofs(proofs)
    if nodes.shape[0] == 0:
        nodes = np.zeros((1, DIGEST_SIZE), dtype=np.uint8)  # numba needs a data pointer
    ok = np.empty(n, dtype=np.uint8)
    _kernels.run(
        _kernels.verify_proofs,
        128 * int(nodes.shape[0]),
        engine_tag(engine),
        leaf_array,
        index_array,
        size_array,
        nodes,
        offsets,
        root_array,
        ok,
    )
    return np.flatnonzero(ok == 0).astype(np.int64)


def merkle_root_or_none(leaves: Sequence[bytes]) -> bytes | None:
    """The root, or None when a leaf is not a 32-byte hash (leaves read from a place
    someone may have edited: a bad one is a mismatch, not an error)."""
    if not leaves or any(not isinstance(x, bytes) or len(x) != DIGEST_SIZE for x in leaves):
        return None
    return merkle_root(list(leaves))
