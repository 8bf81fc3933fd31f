"""Batch SHA-256: FIPS 180-4 vectors and hashlib cross-checks on every engine."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from ehr_common.errors import ConfigError, InvalidArgument
from storage_service.integrity import _kernels, sha256
from storage_service.integrity.sha256 import (
    available_engines,
    mismatched_packed,
    pack,
    sha256_many,
    sha256_packed,
)

ENGINES = [
    pytest.param(
        e,
        marks=pytest.mark.skipif(e not in available_engines(), reason=f"{e} unavailable here"),
    )
    for e in sha256.ENGINES
]


@pytest.fixture(params=["serial", "parallel"])
def kernel_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with small batches on the calling thread (the default) and
    with every batch forced through the parallel kernels."""
    if request.param == "parallel":
        monkeypatch.setattr(_kernels, "SERIAL_BELOW_BYTES", 0)
    else:
        monkeypatch.setattr(_kernels, "SERIAL_BELOW_BYTES", 1 << 62)
    return str(request.param)


# FIPS 180-4 / NIST CSRC example messages ("SHA256.pdf", "SHA2_Additional").
FIPS_VECTORS = [
    (b"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
    (
        b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
    ),
    (
        b"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopq"
        b"klmnopqrlmnopqrsmnopqrstnopqrstu",
        "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1",
    ),
    (b"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
    (b"a" * 1_000_000, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"),
]


@pytest.mark.parametrize("engine", ENGINES)
def test_fips_180_4_vectors(engine: sha256.Engine, kernel_mode: str) -> None:
    digests = sha256_many([m for m, _ in FIPS_VECTORS], engine=engine)
    assert [bytes(d).hex() for d in digests] == [h for _, h in FIPS_VECTORS]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("prefix", [-1, 0, 1, 255])
def test_every_length_0_to_300_matches_hashlib(
    engine: sha256.Engine, prefix: int, kernel_mode: str
) -> None:
    rng = np.random.default_rng(300 + prefix)
    messages = [rng.bytes(n) for n in range(301)]
    head = b"" if prefix < 0 else bytes([prefix])
    digests = sha256_many(messages, prefix=prefix, engine=engine)
    for n, (message, digest) in enumerate(zip(messages, digests, strict=True)):
        assert bytes(digest) == hashlib.sha256(head + message).digest(), f"length {n}"


@pytest.mark.parametrize("engine", ENGINES)
def test_large_records_match_hashlib(engine: sha256.Engine) -> None:
    rng = np.random.default_rng(7)
    records = [rng.bytes(1 << 20), *(rng.bytes(4096) for _ in range(300)), rng.bytes(4097)]
    digests = sha256_many(records, engine=engine)
    assert [bytes(d) for d in digests] == [hashlib.sha256(r).digest() for r in records]


@pytest.mark.parametrize("engine", ENGINES)
def test_records_at_unaligned_offsets_in_one_buffer(engine: sha256.Engine) -> None:
    rng = np.random.default_rng(11)
    buf = rng.integers(0, 256, 50_000, dtype=np.uint8)
    cuts = np.sort(rng.integers(0, buf.shape[0], 501)).astype(np.int64)
    digests = sha256_packed(buf, cuts, engine=engine)
    for i in range(500):
        record = buf[cuts[i] : cuts[i + 1]].tobytes()
        assert bytes(digests[i]) == hashlib.sha256(record).digest()


@pytest.mark.parametrize("engine", ENGINES)
def test_mismatches_are_exactly_the_tampered_records(engine: sha256.Engine) -> None:
    rng = np.random.default_rng(5)
    records = [rng.bytes(int(n)) for n in rng.integers(0, 700, 2000)]
    expected = np.array([list(hashlib.sha256(r).digest()) for r in records], dtype=np.uint8)
    tampered = [3, 999, 1999]
    for i in tampered:
        expected[i, i % 32] ^= 0x40
    buf, offsets = pack(records)
    assert mismatched_packed(buf, offsets, expected, engine=engine).tolist() == tampered
    assert sha256.mismatches(sha256_packed(buf, offsets, engine=engine), expected).tolist() == (
        tampered
    )


def test_empty_batch_and_empty_records() -> None:
    assert sha256_many([]).shape == (0, 32)
    buf, offsets = pack([b"", b""])
    assert [bytes(d) for d in sha256_packed(buf, offsets)] == [hashlib.sha256(b"").digest()] * 2


def test_env_var_forces_an_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(sha256.ENGINE_ENV, "portable")
    assert sha256.default_engine() == "portable"
    assert bytes(sha256_many([b"abc"])[0]).hex() == FIPS_VECTORS[0][1]
    monkeypatch.setenv(sha256.ENGINE_ENV, "md5-please")
    with pytest.raises(ConfigError):
        sha256.default_engine()
    monkeypatch.delenv(sha256.ENGINE_ENV)
    assert sha256.default_engine() == available_engines()[0]


def test_sha_ni_is_preferred_when_the_cpu_has_it() -> None:
    assert available_engines()[-1] == "portable"
    assert ("sha-ni" in available_engines()) == sha256.cpu_has_sha_ni()
    if sha256.cpu_has_sha_ni():
        assert available_engines()[0] == "sha-ni"


@pytest.mark.parametrize(
    ("buf", "offsets"),
    [
        (np.zeros(10, np.int32), np.array([0, 4], np.int64)),
        (np.zeros(10, np.uint8), np.array([0, 4], np.int32)),
        (np.zeros(10, np.uint8), np.array([0, 11], np.int64)),
        (np.zeros(10, np.uint8), np.array([-1, 4], np.int64)),
        (np.zeros(10, np.uint8), np.array([0, 6, 4], np.int64)),
        (np.zeros(10, np.uint8), np.array([], np.int64)),
        (np.zeros(20, np.uint8)[::2], np.array([0, 4], np.int64)),
    ],
)
def test_malformed_packing_is_invalid_argument(buf: np.ndarray, offsets: np.ndarray) -> None:
    with pytest.raises(InvalidArgument):
        sha256_packed(buf, offsets)


def test_wrong_expected_shape_is_invalid_argument() -> None:
    buf, offsets = pack([b"a", b"b"])
    with pytest.raises(InvalidArgument):
        mismatched_packed(buf, offsets, np.zeros((3, 32), np.uint8))
    with pytest.raises(InvalidArgument):
        sha256_packed(buf, offsets, prefix=256)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("length", [0, 1, 55, 56, 63, 64, 119, 120, 128, 300])
def test_equal_length_records_hashed_in_pairs(
    engine: sha256.Engine, length: int, kernel_mode: str
) -> None:
    # Equal neighbours take the two-at-a-time path; 515 records leave odd ones
    # at the end of a parallel task and of the batch.
    rng = np.random.default_rng(length)
    records = [rng.bytes(length) for _ in range(515)]
    buf, offsets = pack(records)
    expected_list = [hashlib.sha256(r).digest() for r in records]
    assert [bytes(d) for d in sha256_packed(buf, offsets, engine=engine)] == expected_list
    expected = np.array([list(d) for d in expected_list], dtype=np.uint8).reshape(-1, 32)
    tampered = [0, 1, 254, 255, 256, 257, 514]
    for i in tampered:
        expected[i, 31] ^= 1
    assert mismatched_packed(buf, offsets, expected, engine=engine).tolist() == tampered


def test_concurrent_callers_get_their_own_correct_digests() -> None:
    from concurrent.futures import ThreadPoolExecutor

    def work(seed: int) -> bool:
        rng = np.random.default_rng(seed)
        records = [rng.bytes(int(n)) for n in rng.integers(0, 2000, 3000)]
        digests = sha256_many(records)
        return [bytes(d) for d in digests] == [hashlib.sha256(r).digest() for r in records]

    with ThreadPoolExecutor(max_workers=4) as pool:
        assert all(pool.map(work, range(8)))
