"""Pure-Python reference definitions (hashlib only), the oracle for tests.

Written from the RFC text, independently of the fast paths: the tree hash and
audit path are the recursive definitions of RFC 6962 §2.1 / §2.1.1, and proof
verification recomputes the root by the same recursion instead of RFC 9162's
bit-walking algorithm.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def leaf_hash(data: bytes) -> bytes:
    return sha256(b"\x00" + data)


def node_hash(left: bytes, right: bytes) -> bytes:
    return sha256(b"\x01" + left + right)


def split(n: int) -> int:
    """The largest power of two smaller than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def root(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH(D[n]) over precomputed leaf hashes."""
    n = len(leaf_hashes)
    if n == 0:
        return sha256(b"")
    if n == 1:
        return leaf_hashes[0]
    k = split(n)
    return node_hash(root(leaf_hashes[:k]), root(leaf_hashes[k:]))


def path(index: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """PATH(m, D[n]) of RFC 6962 §2.1.1."""
    n = len(leaf_hashes)
    if n <= 1:
        return []
    k = split(n)
    if index < k:
        return [*path(index, leaf_hashes[:k]), root(leaf_hashes[k:])]
    return [*path(index - k, leaf_hashes[k:]), root(leaf_hashes[:k])]


def _root_from_path(index: int, size: int, leaf: bytes, proof: list[bytes]) -> bytes | None:
    if size == 1:
        return leaf if not proof else None
    if not proof:
        return None
    k = split(size)
    sibling = proof[-1]
    if index < k:
        left = _root_from_path(index, k, leaf, proof[:-1])
        return None if left is None else node_hash(left, sibling)
    right = _root_from_path(index - k, size - k, leaf, proof[:-1])
    return None if right is None else node_hash(sibling, right)


def verify(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], expected_root: bytes
) -> bool:
    if not 0 <= index < size:
        return False
    return _root_from_path(index, size, leaf, list(proof)) == expected_root
