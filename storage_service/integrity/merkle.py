"""RFC 6962 / RFC 9162 Merkle trees (the certificate-transparency tree).

    leaf hash  MTH({d})      = SHA-256(0x00 || d)
    node hash  MTH(D[0:n])   = SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n])),
                               k = the largest power of two smaller than n
    empty tree MTH({})       = SHA-256("")

Leaf and node hashes are domain-separated, so a leaf can never pass for an
interior node. The root of a large batch is computed level by level with the
numba kernels of `sha256` (a left-to-right level reduction with odd nodes
carried up gives exactly the RFC 6962 split). Proofs are audit paths as in
RFC 9162 §2.1.3; verification follows §2.1.3.2.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from storage_service.integrity import sha256 as _sha

EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def leaf_hashes(records: Sequence[bytes]) -> np.ndarray:
    """Leaf hashes of many records at once (n × 32 uint8), in parallel."""
    return _sha.sha256_many(records, prefix=0)


def _as_array(leaves: Sequence[bytes] | np.ndarray) -> np.ndarray:
    if isinstance(leaves, np.ndarray):
        if leaves.dtype != np.uint8 or leaves.ndim != 2 or leaves.shape[1] != 32:
            raise ValueError("leaf hashes must be an n × 32 uint8 array")
        return np.ascontiguousarray(leaves)
    if any(len(x) != 32 for x in leaves):
        raise ValueError("every leaf hash is 32 bytes")
    return np.frombuffer(b"".join(leaves), dtype=np.uint8).reshape(-1, 32).copy()


def merkle_root(leaves: Sequence[bytes] | np.ndarray) -> bytes:
    """Root of the tree whose leaf hashes are given (bytes or an n × 32 array)."""
    level = _as_array(leaves)
    n = level.shape[0]
    if n == 0:
        return EMPTY_ROOT
    _, node_level = _sha.kernels()
    while level.shape[0] > 1:
        m = level.shape[0]
        pairs = m // 2
        nxt = np.empty((pairs + (m & 1), 32), dtype=np.uint8)
        if pairs:
            node_level(level[: 2 * pairs], nxt[:pairs])  # type: ignore[operator]
        if m & 1:
            nxt[pairs] = level[m - 1]  # odd node carried up unchanged
        level = nxt
    return bytes(level[0])


def _root_py(leaves: Sequence[bytes]) -> bytes:
    n = len(leaves)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return leaves[0]
    k = 1 << ((n - 1).bit_length() - 1)
    return node_hash(_root_py(leaves[:k]), _root_py(leaves[k:]))


def merkle_root_reference(leaves: Sequence[bytes]) -> bytes:
    """The RFC 6962 recursive definition, for tests."""
    return _root_py(list(leaves))


def inclusion_proof(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """Audit path for leaf `index` in the tree of `leaves` (leaf hashes)."""
    n = len(leaves)
    if not 0 <= index < n:
        raise ValueError(f"leaf index {index} outside a tree of {n}")
    path: list[bytes] = []
    lo, hi = 0, n
    # Walk down from the root, collecting sibling subtree roots, then reverse.
    while hi - lo > 1:
        k = 1 << ((hi - lo - 1).bit_length() - 1)
        if index < lo + k:
            path.append(merkle_root(leaves[lo + k : hi]))
            hi = lo + k
        else:
            path.append(merkle_root(leaves[lo : lo + k]))
            lo = lo + k
    path.reverse()
    return path


def verify_inclusion(leaf: bytes, index: int, tree_size: int, proof: Sequence[bytes], root: bytes) -> bool:
    """RFC 9162 §2.1.3.2."""
    if not 0 <= index < tree_size or len(leaf) != 32 or len(root) != 32:
        return False
    fn, sn = index, tree_size - 1
    r = leaf
    for p in proof:
        if len(p) != 32 or sn == 0:
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


def verify_inclusions_batch(
    leaves: Sequence[bytes],
    indices: Sequence[int],
    tree_sizes: Sequence[int],
    proofs: Sequence[Sequence[bytes]],
    roots: Sequence[bytes],
) -> list[int]:
    """Verify many (leaf, index, size, proof, root) at once; returns the positions that fail."""
    return [
        i
        for i, (leaf, idx, size, proof, root) in enumerate(
            zip(leaves, indices, tree_sizes, proofs, roots, strict=True)
        )
        if not verify_inclusion(leaf, idx, size, proof, root)
    ]
