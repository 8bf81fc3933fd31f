"""SharedPuts on its own: concurrent callers, each stored exactly once, in groups no
larger than a pack's bounds, failures confined to their group, nothing left held."""

from __future__ import annotations

import random
import threading
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from ehr_common.errors import Unavailable
from storage_service.records import RecordMeta
from storage_service.shared_puts import SharedPuts


def _meta(i: int) -> RecordMeta:
    return RecordMeta(
        record_id=f"r-{i}",
        patient_id="Hosp1MSP/p-17",
        record_type="ecg",
        author="Hosp1MSP/ecg-7",
        created_at=datetime.now(UTC),
        policy="role:doctor",
        size=10,
        content_sha256=b"\0" * 32,
    )


class _Backend:
    """Object writes that take a while (and fail when told to), and a commit that
    numbers rows in order, refusing a record id it has seen (as the index does)."""

    def __init__(self, fail_every: int = 0) -> None:
        self.lock = threading.Lock()
        self.objects: list[tuple[str, int]] = []  # (key, records in it)
        self.rows: dict[str, int] = {}
        self.writes = 0
        self.in_flight = 0
        self.most_in_flight = 0
        self.fail_every = fail_every

    def _write(self, key: str, n: int) -> None:
        with self.lock:
            self.writes += 1
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            fail = self.fail_every and self.writes % self.fail_every == 0
        time.sleep(random.uniform(0.0005, 0.003))
        with self.lock:
            self.in_flight -= 1
        if fail:
            raise Unavailable("MinIO is restarting")
        with self.lock:
            self.objects.append((key, n))

    def put_one(self, meta: RecordMeta, data: bytes) -> None:
        self._write(meta.record_id, 1)

    def put_pack(self, key: str, body: bytes, metadata: Any) -> None:
        self._write(key, int(metadata["ehr-pack"].split(";")[1]))

    def commit(self, rows: list[Any]) -> list[int | None]:
        out: list[int | None] = []
        with self.lock:
            for meta, *_ in rows:
                if meta.record_id in self.rows:
                    out.append(None)
                else:
                    self.rows[meta.record_id] = len(self.rows) + 1
                    out.append(self.rows[meta.record_id])
        return out


@pytest.mark.parametrize("writers", [1, 2])
@pytest.mark.parametrize("fail_every", [0, 3])
def test_every_caller_is_stored_once_or_told_why(writers: int, fail_every: int) -> None:
    backend = _Backend(fail_every)
    shared = SharedPuts(
        put_one=backend.put_one,
        put_pack=backend.put_pack,
        commit=backend.commit,
        max_bytes=35,  # three 10-byte records to a pack at most
        max_items=256,
        max_writers=writers,
    )

    def put(i: int) -> tuple[int, int | Exception | None]:
        try:
            return i, shared.store(_meta(i), b"x" * 10, b"leaf")
        except Unavailable as exc:
            return i, exc

    # daemon threads, joined with a deadline: a lost wake-up fails here, never hangs
    outcomes: list[tuple[int, int | Exception | None]] = []
    todo = list(range(400))

    def worker() -> None:
        while True:
            with backend.lock:
                if not todo:
                    return
                i = todo.pop()
            outcome = put(i)
            with backend.lock:
                outcomes.append(outcome)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(16)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    for t in threads:
        t.join(timeout=max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "callers left waiting"
    stored = {i for i, o in outcomes if isinstance(o, int)}
    failed = {i for i, o in outcomes if isinstance(o, Exception)}
    assert stored | failed == set(range(400)) and not stored & failed
    assert {f"r-{i}" for i in stored} == set(backend.rows)  # a row only with its bytes
    assert sorted(o for _, o in outcomes if isinstance(o, int)) == list(range(1, len(stored) + 1))
    assert bool(failed) == bool(fail_every)
    assert all(n <= 3 for _, n in backend.objects)  # the pack bounds hold
    assert len(backend.objects) < len(stored)  # callers did share objects
    assert backend.most_in_flight <= writers
    assert shared._writing == 0 and not shared._queue  # nothing left held
