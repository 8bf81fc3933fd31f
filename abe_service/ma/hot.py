"""Precomputation for the keys a workload keeps using: a bounded, frequency-admitted cache.

`HotTables` counts uses of each key and builds a table for a key once it has been used
`after` times. At most `capacity` tables are kept. When full, a key displaces the
least-used table only if it has been used at least twice as often: a workload cycling
over more hot keys than fit (e.g. 50 labels, room for 32) keeps the tables it has
instead of rebuilding one on every use. Counts are halved whenever their sum reaches
`capacity · 1024` (a key that stopped being used loses its place in time) and keys
counted zero are dropped, so the count map stays bounded too.

Thread-safe: bookkeeping under a lock; tables are built outside it (two threads may
build the same table once; one result is kept).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")

#: Counted keys kept at most (beyond that the least-used are forgotten).
MAX_COUNTED = 65536


class HotTables(Generic[K, T]):
    def __init__(self, capacity: int, after: int, build: Callable[[K], T]):
        if capacity < 0 or after < 1:
            raise ValueError("capacity >= 0 and after >= 1")
        self.capacity = capacity
        self.after = after
        self._build = build
        self._counts: dict[K, int] = {}
        self._tables: dict[K, T] = {}
        self._total = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._tables)

    def clear(self) -> None:
        with self._lock:
            self._counts.clear()
            self._tables.clear()
            self._total = 0

    def use(self, key: K) -> T | None:
        """Count one use of `key`; its table if it has one (built now if it became hot)."""
        if self.capacity == 0:
            return None
        with self._lock:
            table = self._tables.get(key)
            count = self._counts.get(key, 0) + 1
            self._counts[key] = count
            self._total += 1
            if self._total >= self.capacity * 1024 or len(self._counts) > MAX_COUNTED:
                self._age()
            if table is not None or count < self.after or not self._admissible(count):
                return table
        table = self._build(key)
        with self._lock:
            kept = self._tables.get(key)
            if kept is not None:
                return kept
            if len(self._tables) >= self.capacity:
                if not self._admissible(self._counts.get(key, count)):
                    return table  # lost its place meanwhile: used once, not kept
                del self._tables[self._coldest()]
            self._tables[key] = table
            return table

    def _coldest(self) -> K:
        return min(self._tables, key=lambda k: self._counts.get(k, 0))

    def _admissible(self, count: int) -> bool:
        if len(self._tables) < self.capacity:
            return True
        return count >= 2 * self._counts.get(self._coldest(), 0)

    def _age(self) -> None:
        self._counts = {k: c // 2 for k, c in self._counts.items() if c // 2 or k in self._tables}
        if len(self._counts) > MAX_COUNTED:
            keep = sorted(self._counts, key=self._counts.__getitem__, reverse=True)[:MAX_COUNTED]
            self._counts = {k: self._counts[k] for k in keep} | {
                k: self._counts.get(k, 0) for k in self._tables
            }
        self._total = sum(self._counts.values())
