"""Caps on open streams, so that one caller cannot hold the server's RPC threads.

A streaming call (WriteSegments, FetchSegments) keeps one of the server's few RPC
threads for as long as its client keeps it open: reading a slow upload, or
blocked behind a client that does not read. Without a cap, one authenticated
caller opening as many streams as there are threads would stall every RPC of
every caller. So each caller may hold `per_caller` streams, all callers together
`total` (kept below the thread count, so unary calls always find a thread);
beyond that a new stream is refused at once with ResourceExhausted, which an edge
retries with backoff like any overload.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from ehr_common.errors import InvalidArgument, ResourceExhausted


class StreamSlots:
    def __init__(self, *, per_caller: int, total: int):
        if not 1 <= per_caller <= total:
            raise InvalidArgument("stream slots need 1 <= per_caller <= total")
        self.per_caller = per_caller
        self.total = total
        self._lock = threading.Lock()
        self._held: dict[str, int] = {}
        self._open = 0

    def held(self, principal: str) -> int:
        with self._lock:
            return self._held.get(principal, 0)

    @contextlib.contextmanager
    def hold(self, principal: str, rpc: str) -> Iterator[None]:
        """One slot for `principal` while the block runs; ResourceExhausted, taking
        nothing, when the caller or the server is at its cap."""
        with self._lock:
            mine = self._held.get(principal, 0)
            if mine >= self.per_caller:
                raise ResourceExhausted(
                    f"{rpc}: {principal} already has {mine} streams open (at most "
                    f"{self.per_caller} per caller); retry when one ends"
                )
            if self._open >= self.total:
                raise ResourceExhausted(
                    f"{rpc}: the server has {self._open} streams open (its limit); retry shortly"
                )
            self._held[principal] = mine + 1
            self._open += 1
        try:
            yield
        finally:
            with self._lock:
                self._open -= 1
                left = self._held[principal] - 1
                if left:
                    self._held[principal] = left
                else:
                    del self._held[principal]
