"""Streaming verification: chunking, failures, progress, flat memory."""

from __future__ import annotations

import hashlib
import itertools
import tracemalloc
from collections.abc import Hashable, Iterator

import numpy as np
import pytest

from ehr_common.errors import InvalidArgument
from storage_service.integrity.sha256 import available_engines, pack, sha256_packed
from storage_service.integrity.stream import PackedChunk, StreamVerifier


def _records(count: int, seed: int = 0, max_len: int = 300) -> list[tuple[str, bytes, bytes]]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        data = rng.bytes(int(rng.integers(0, max_len)))
        out.append((f"rec-{i}", data, hashlib.sha256(data).digest()))
    return out


@pytest.mark.parametrize("engine", available_engines())
@pytest.mark.parametrize(
    ("chunk_bytes", "chunk_records"), [(1, 1), (500, 7), (4096, 1000), (1 << 20, 1 << 16)]
)
def test_tampered_records_are_found_whatever_the_chunking(
    engine: str, chunk_bytes: int, chunk_records: int
) -> None:
    records = _records(400, seed=chunk_bytes)
    bad = {5, 6, 200, 399}
    stream = [
        (rid, data + b"!" if i in bad else data, digest)
        for i, (rid, data, digest) in enumerate(records)
    ]
    progress: list[tuple[int, int]] = []
    verifier = StreamVerifier(
        chunk_bytes=chunk_bytes,
        chunk_records=chunk_records,
        on_progress=lambda n, b: progress.append((n, b)),
        engine=engine,  # type: ignore[arg-type]
    )
    report = verifier.verify(iter(stream))
    assert report.failed_ids == tuple(f"rec-{i}" for i in sorted(bad))
    assert report.checked == 400
    assert report.bytes == sum(len(d) for _, d, _ in stream)
    assert not report.ok
    assert progress[-1] == (report.checked, report.bytes)
    assert all(a[0] < b[0] and a[1] <= b[1] for a, b in itertools.pairwise(progress))


def test_all_good_and_empty_streams() -> None:
    report = StreamVerifier(chunk_bytes=1000).verify(_records(50))
    assert report.ok and report.checked == 50
    empty = StreamVerifier().verify([])
    assert empty.ok and empty.checked == 0 and empty.bytes == 0


def test_records_larger_than_a_chunk_are_hashed_alone() -> None:
    big = bytes(range(256)) * 40
    stream = [
        ("small", b"x", hashlib.sha256(b"x").digest()),
        ("big-good", big, hashlib.sha256(big).digest()),
        ("big-bad", big, hashlib.sha256(big + b"?").digest()),
        ("small-2", b"y", hashlib.sha256(b"y").digest()),
    ]
    report = StreamVerifier(chunk_bytes=1024).verify(stream)
    assert report.failed_ids == ("big-bad",)
    assert report.checked == 4
    assert report.bytes == 2 + 2 * len(big)


def test_packed_chunks_with_and_without_ids() -> None:
    def chunks() -> Iterator[PackedChunk]:
        for c in range(3):
            records = [bytes([c, i]) * (i + 1) for i in range(100)]
            buf, offsets = pack(records)
            expected = sha256_packed(buf, offsets)
            expected[c * 10, 0] ^= 1
            ids: list[Hashable] | None = [f"c{c}-{i}" for i in range(100)] if c == 1 else None
            yield PackedChunk(buf, offsets, expected, ids)

    report = StreamVerifier().verify_chunks(chunks())
    assert report.failed_ids == (0, "c1-10", 220)
    assert report.checked == 300


def test_bad_inputs_are_invalid_argument() -> None:
    with pytest.raises(InvalidArgument):
        StreamVerifier(chunk_bytes=0)
    with pytest.raises(InvalidArgument):
        StreamVerifier().verify([("r", b"data", b"short digest")])
    buf, offsets = pack([b"a"])
    with pytest.raises(InvalidArgument):
        StreamVerifier().verify_chunks([PackedChunk(buf, offsets, np.zeros((2, 32), np.uint8))])
    with pytest.raises(InvalidArgument):
        StreamVerifier().verify_chunks(
            [PackedChunk(buf, offsets, sha256_packed(buf, offsets), ids=["a", "b"])]
        )


def _peak_bytes(count: int) -> int:
    def generate() -> Iterator[tuple[int, bytes, bytes]]:
        data = bytes(200)
        digest = hashlib.sha256(data).digest()
        for i in range(count):
            yield i, data, digest

    verifier = StreamVerifier(chunk_bytes=256 << 10, chunk_records=1024)
    tracemalloc.start()
    try:
        report = verifier.verify(generate())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.ok and report.checked == count
    return peak


def test_memory_does_not_grow_with_volume() -> None:
    small = _peak_bytes(5_000)
    large = _peak_bytes(100_000)
    # Twenty times the records; the peak is the chunk buffers either way.
    assert large < small * 1.5 + (64 << 10)
