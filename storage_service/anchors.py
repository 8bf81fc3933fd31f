"""What the ledger says this storage instance has anchored (the source of truth).

`AnchorBook` keeps the instance's anchors as read from the ledger
(`AnchorsByInstance`), sorted by record range, and answers "which anchor covers
record seq N?". The local index is never asked: a record the ledger covers is
anchored whatever the index says, and one it does not cover is pending at most
until its deadline.

Anchors are immutable on Fabric (`anchors_final`), so they are kept in memory.
On the embedded ledger someone with the disk can delete one, so a cached anchor
is re-read from the ledger before it is relied on, and verification lists them
afresh.
"""

from __future__ import annotations

import bisect
import threading

from ehr_common.errors import NotFound
from storage_service.ledger.client import Anchor, LedgerClient


def _sound(a: Anchor, instance: str) -> bool:
    return (
        a.instance == instance
        and 1 <= a.first_seq <= a.last_seq
        and a.tree_size == a.last_seq - a.first_seq + 1
        and len(a.merkle_root) == 32
    )


class AnchorBook:
    def __init__(self, ledger: LedgerClient, instance: str) -> None:
        self._ledger = ledger
        self.instance = instance
        self.final = bool(getattr(ledger.ledger, "anchors_final", False))
        self._lock = threading.Lock()
        self._anchors: list[Anchor] = []
        self._firsts: list[int] = []
        self._blocks: dict[str, int] = {}

    def _add(self, anchors: list[Anchor]) -> None:
        for a in anchors:
            last = self._anchors[-1].last_seq if self._anchors else 0
            if _sound(a, self.instance) and a.first_seq > last:
                self._anchors.append(a)
                self._firsts.append(a.first_seq)

    def refresh(self) -> None:
        """Read the anchors added on the ledger since the last refresh."""
        with self._lock:
            after = self._firsts[-1] if self._firsts else 0
        new = self._ledger.anchors_by_instance(self.instance, after)
        with self._lock:
            self._add(new)

    def fresh(self) -> list[Anchor]:
        """Every anchor of the instance, read from the ledger now (verification)."""
        anchors = self._ledger.anchors_by_instance(self.instance, 0)
        out: list[Anchor] = []
        for a in anchors:
            if (
                _sound(a, self.instance)
                and (not out or a.first_seq > out[-1].last_seq)
                and (self.final or self._still_there(a))
            ):
                out.append(a)
        if self.final:
            with self._lock:
                self._anchors, self._firsts = [], []
                self._add(out)
        return out

    def head(self) -> int:
        """The highest record seq the ledger covers (after a refresh)."""
        with self._lock:
            return self._anchors[-1].last_seq if self._anchors else 0

    def _find(self, seq: int) -> Anchor | None:
        with self._lock:
            i = bisect.bisect_right(self._firsts, seq) - 1
            if i >= 0 and self._anchors[i].covers(seq):
                return self._anchors[i]
        return None

    def covering(self, seq: int) -> Anchor | None:
        """The anchor covering record `seq`, or None if the ledger covers it with none."""
        a = self._find(seq)
        if a is None:
            if seq <= self.head():
                return None  # in a gap the ledger skipped: never anchored
            self.refresh()
            a = self._find(seq)
            if a is None:
                return None
        if self.final:
            return a
        return a if self._still_there(a) else None

    def _still_there(self, a: Anchor) -> bool:
        """The embedded ledger's state lives on this disk: is the anchor still stored,
        under its id, as listed?"""
        try:
            now = self._ledger.get_anchor(a.batch_id)
        except NotFound:
            return False
        return (now.merkle_root, now.first_seq, now.last_seq, now.instance) == (
            a.merkle_root,
            a.first_seq,
            a.last_seq,
            a.instance,
        )

    def block_of(self, a: Anchor) -> int:
        with self._lock:
            block = self._blocks.get(a.batch_id)
        if block is None:
            block = self._ledger.block_of(a.tx_id)
            if block >= 0:
                with self._lock:
                    self._blocks[a.batch_id] = block
        return block
