"""Streaming verification: any number of records in fixed-size chunks, flat memory.

The caller supplies the records (from MinIO, the filesystem, ...) as an
iterator; the verifier packs them into one preallocated chunk buffer, bounded
by bytes and by count, and checks each full chunk with the parallel kernel
(GIL released, so the caller's reader threads keep filling the pipe). Memory is
the chunk buffers plus the ids of the records that failed, whatever the volume.

Two inputs:
* `verify(records)`: (record_id, data, expected_sha256) triples; about a
  microsecond of Python per record for the packing.
* `verify_chunks(chunks)`: already packed `PackedChunk`s; no per-record Python.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ehr_common.errors import InvalidArgument
from storage_service.integrity.constants import DIGEST_SIZE
from storage_service.integrity.sha256 import (
    Engine,
    I64Array,
    U8Array,
    check_digests,
    check_engine,
    check_packed,
    default_engine,
    mismatched_packed,
)

DEFAULT_CHUNK_BYTES = 64 << 20
DEFAULT_CHUNK_RECORDS = 1 << 18

ProgressCallback = Callable[[int, int], None]
"""on_progress(done_records, done_bytes), called after every chunk."""


@dataclass(frozen=True)
class VerifyReport:
    checked: int
    failed_ids: tuple[Hashable, ...]
    bytes: int
    seconds: float

    @property
    def ok(self) -> bool:
        return not self.failed_ids


@dataclass(frozen=True)
class PackedChunk:
    """Records buf[offsets[i]:offsets[i+1]] with expected SHA-256 digests (n x 32).

    `ids` names the records in reports; None means their position in the stream.
    """

    buf: U8Array
    offsets: I64Array
    expected: U8Array
    ids: Sequence[Hashable] | None = None


@dataclass
class _Tally:
    checked: int = 0
    bytes: int = 0
    failed: list[Hashable] = field(default_factory=list)


class StreamVerifier:
    def __init__(
        self,
        *,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        chunk_records: int = DEFAULT_CHUNK_RECORDS,
        on_progress: ProgressCallback | None = None,
        engine: Engine | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if chunk_bytes < 1 or chunk_records < 1:
            raise InvalidArgument("chunk_bytes and chunk_records must be positive")
        self.chunk_bytes = chunk_bytes
        self.chunk_records = chunk_records
        self.on_progress = on_progress
        self.engine: Engine = check_engine(engine) if engine is not None else default_engine()
        self._clock = clock

    def _check(self, tally: _Tally, chunk: PackedChunk) -> None:
        n = chunk.offsets.shape[0] - 1
        bad = mismatched_packed(chunk.buf, chunk.offsets, chunk.expected, engine=self.engine)
        base = tally.checked
        if chunk.ids is None:
            tally.failed.extend(base + int(i) for i in bad)
        else:
            tally.failed.extend(chunk.ids[int(i)] for i in bad)
        tally.checked += n
        tally.bytes += int(chunk.offsets[-1] - chunk.offsets[0])
        if self.on_progress is not None:
            self.on_progress(tally.checked, tally.bytes)

    def verify_chunks(self, chunks: Iterable[PackedChunk]) -> VerifyReport:
        """Check packed chunks as they come."""
        start = self._clock()
        tally = _Tally()
        for chunk in chunks:
            check_packed(chunk.buf, chunk.offsets)
            n = chunk.offsets.shape[0] - 1
            check_digests(chunk.expected, n)
            if chunk.ids is not None and len(chunk.ids) != n:
                raise InvalidArgument(f"a chunk of {n} records has {len(chunk.ids)} ids")
            self._check(tally, chunk)
        return VerifyReport(tally.checked, tuple(tally.failed), tally.bytes, self._clock() - start)

    def verify(self, records: Iterable[tuple[Hashable, bytes, bytes]]) -> VerifyReport:
        """Check (record_id, data, expected_sha256) triples in chunks.

        A record larger than `chunk_bytes` is hashed on its own (OpenSSL,
        streaming from the caller's buffer) instead of growing the chunk.
        """
        start = self._clock()
        tally = _Tally()
        buf = np.empty(self.chunk_bytes, dtype=np.uint8)
        offsets = np.zeros(self.chunk_records + 1, dtype=np.int64)
        expected = np.empty((self.chunk_records, DIGEST_SIZE), dtype=np.uint8)
        ids: list[Hashable] = []

        def flush() -> None:
            count = len(ids)
            if count:
                end = int(offsets[count])
                chunk = PackedChunk(buf[:end], offsets[: count + 1], expected[:count], ids)
                self._check(tally, chunk)
                ids.clear()

        for record_id, data, digest in records:
            if len(digest) != DIGEST_SIZE:
                raise InvalidArgument(
                    f"expected digest of record {record_id!r} is {len(digest)} bytes, not 32"
                )
            size = len(data)
            if size > self.chunk_bytes:
                flush()
                if hashlib.sha256(data).digest() != bytes(digest):
                    tally.failed.append(record_id)
                tally.checked += 1
                tally.bytes += size
                if self.on_progress is not None:
                    self.on_progress(tally.checked, tally.bytes)
                continue
            count = len(ids)
            if count == self.chunk_records or int(offsets[count]) + size > self.chunk_bytes:
                flush()
                count = 0
            fill = int(offsets[count])
            if size:
                buf[fill : fill + size] = np.frombuffer(data, dtype=np.uint8)
            offsets[count + 1] = fill + size
            expected[count] = np.frombuffer(digest, dtype=np.uint8)
            ids.append(record_id)
        flush()
        return VerifyReport(tally.checked, tuple(tally.failed), tally.bytes, self._clock() - start)
