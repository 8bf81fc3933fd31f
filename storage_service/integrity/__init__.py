"""The integrity core: batch SHA-256 (numba, SHA-NI), RFC 6962 Merkle trees,
streaming verification. Pure functions over bytes and numpy arrays; no I/O."""

from storage_service.integrity.merkle import (
    EMPTY_ROOT,
    MerkleTree,
    inclusion_proof,
    leaf_hash,
    leaf_hashes,
    leaf_hashes_packed,
    merkle_root,
    pack_proofs,
    verify_inclusion,
    verify_inclusions_batch,
)
from storage_service.integrity.sha256 import (
    available_engines,
    default_engine,
    mismatched_packed,
    pack,
    sha256_many,
    sha256_packed,
)
from storage_service.integrity.stream import PackedChunk, StreamVerifier, VerifyReport

__all__ = [
    "EMPTY_ROOT",
    "MerkleTree",
    "PackedChunk",
    "StreamVerifier",
    "VerifyReport",
    "available_engines",
    "default_engine",
    "inclusion_proof",
    "leaf_hash",
    "leaf_hashes",
    "leaf_hashes_packed",
    "merkle_root",
    "mismatched_packed",
    "pack",
    "pack_proofs",
    "sha256_many",
    "sha256_packed",
    "verify_inclusion",
    "verify_inclusions_batch",
]
