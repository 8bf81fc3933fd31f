"""AES-GCM key multi-collisions ("invisible salamanders", Dodis et al. 2018;
Len, Grubbs & Ristenpart 2021): one (nonce, ciphertext, tag) that authenticates
under TWO different keys, so it opens without error to two different plaintexts.

AES-GCM is not key-committing: the tag is GHASH_H(A, C) xor E_k(J0), linear in
the ciphertext blocks over GF(2^128), so one free ciphertext block can be solved
for to make the tags under two keys equal. Test helper for the envelope attack.
"""

from __future__ import annotations

import os

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

_R = 0xE1 << 120


def _gf_mul(x: int, y: int) -> int:
    """Multiplication in GCM's GF(2^128) (bit-reflected: the int's MSB is x^0)."""
    z, v = 0, x
    for i in range(127, -1, -1):
        if (y >> i) & 1:
            z ^= v
        v = (v >> 1) ^ _R if v & 1 else v >> 1
    return z


def _gf_pow(x: int, e: int) -> int:
    acc, base = 1 << 127, x  # 1 << 127 is the field's one
    while e:
        if e & 1:
            acc = _gf_mul(acc, base)
        base = _gf_mul(base, base)
        e >>= 1
    return acc


def _gf_inv(x: int) -> int:
    return _gf_pow(x, (1 << 128) - 2)


def _aes_block(key: bytes, block: bytes) -> bytes:
    enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return enc.update(block) + enc.finalize()


def _blocks(data: bytes) -> list[int]:
    padded = data + b"\x00" * (-len(data) % 16)
    return [int.from_bytes(padded[i : i + 16], "big") for i in range(0, len(padded), 16)]


def _ghash(h: int, ad: bytes, ct: bytes) -> int:
    y = 0
    for b in [*_blocks(ad), *_blocks(ct), (len(ad) * 8) << 64 | len(ct) * 8]:
        y = _gf_mul(y ^ b, h)
    return y


def colliding_ciphertext(k1: bytes, k2: bytes, nonce: bytes, ad: bytes, blocks: int = 2) -> bytes:
    """ciphertext || tag valid under both AES-256-GCM keys k1 and k2 (with this
    nonce and associated data). The last ciphertext block is solved for."""
    assert len(nonce) == 12 and blocks >= 1 and k1 != k2
    h1 = int.from_bytes(_aes_block(k1, b"\x00" * 16), "big")
    h2 = int.from_bytes(_aes_block(k2, b"\x00" * 16), "big")
    j0 = nonce + b"\x00\x00\x00\x01"
    e1 = int.from_bytes(_aes_block(k1, j0), "big")
    e2 = int.from_bytes(_aes_block(k2, j0), "big")
    ct = bytearray(os.urandom(16 * blocks))
    ad_blocks = _blocks(ad)
    m = len(ad_blocks) + blocks + 1  # GHASH blocks, length block last
    free = len(ad_blocks) + blocks - 1  # index of the free (last ciphertext) block
    exponent = m - free  # block i is multiplied by H^(m - i)
    ct[-16:] = b"\x00" * 16
    # tag1 == tag2  <=>  ghash1(C) ^ ghash2(C) == e1 ^ e2; linear in the free block X:
    # ghash_j(C with X) = ghash_j(C with 0) ^ X * H_j^exponent
    base = _ghash(h1, ad, bytes(ct)) ^ _ghash(h2, ad, bytes(ct)) ^ e1 ^ e2
    coefficient = _gf_pow(h1, exponent) ^ _gf_pow(h2, exponent)
    x = _gf_mul(base, _gf_inv(coefficient))
    ct[-16:] = x.to_bytes(16, "big")
    tag = (_ghash(h1, ad, bytes(ct)) ^ e1).to_bytes(16, "big")
    return bytes(ct) + tag
