"""Concurrent PutRecords share one object write and one index commit.

Eight clients each storing a 1 KiB record cost MinIO one PUT per record (about a
millisecond of its CPU, more than the record's own work in this service), and
this service one S3 request per record. Here the calls that arrive while an
earlier group is being written form the next group: one caller (the leader)
writes the group's records as one pack object, the layout WriteSegments uses
(`records/pack-<hex>.pack`, each record a byte range of it, `records.PackRef`),
commits their index rows in one transaction, and wakes the others. A caller
alone keeps an object of its own, under its record's key with its metadata
riding along, as before.

Nothing changes for readers (the index says where each record's bytes are and
each record keeps its own hash, leaf, batch and receipt) or for durability:
every call returns only once its bytes are stored and its row committed. A call
whose group fails gets the group's error and nothing of it is recorded; its
bytes may remain in an object no row points to (as a failed single put's may).

Latency: a caller that arrives while a group is being written waits for that
write and then its own group's; a group is bounded (PACK_MAX_BYTES,
PACK_MAX_ITEMS) so the wait is too.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from storage_service.index import SegmentRow
from storage_service.records import Pack, PackRef, RecordMeta

#: a row for RecordIndex.commit_group (a PutRecord has no segment row)
Row = tuple[RecordMeta, bytes, SegmentRow | None, PackRef | None]


@dataclass
class _Put:
    meta: RecordMeta
    data: bytes
    leaf: bytes
    seq: int | None = None
    error: BaseException | None = None
    taken: bool = False  # in a group being written
    done: bool = False
    wake: threading.Condition | None = None  # on the group lock, while it waits


class SharedPuts:
    """Groups concurrent single-record writes (see the module docstring)."""

    def __init__(
        self,
        *,
        put_one: Callable[[RecordMeta, bytes], None],
        put_pack: Callable[[str, bytes, Mapping[str, str]], None],
        commit: Callable[[list[Row]], list[int | None]],
        max_bytes: int,
        max_items: int,
        max_writers: int = 1,
    ) -> None:
        self._put_one = put_one
        self._put_pack = put_pack
        self._commit = commit
        self._max_bytes = max_bytes
        self._max_items = max_items
        self._lock = threading.Lock()
        self._queue: list[_Put] = []
        self._max_writers = max_writers
        self._writing = 0  # object writes in flight (at most max_writers)
        self.groups = 0  # how many object writes served these calls (tests, bench)

    def store(self, meta: RecordMeta, data: bytes, leaf: bytes) -> int | None:
        """Store one record's bytes and commit its row; its seq, or None if a row with
        its record id existed (as `RecordIndex.commit_group`). Raises what its group's
        object write or commit raised (AlreadyExists: a lone record's key is taken)."""
        me = _Put(meta, data, leaf)
        with self._lock:
            self._queue.append(me)
        while True:
            with self._lock:
                # Wait until this put is done, or it is still queued and a write slot is
                # free: then its caller writes the group at the queue's head (in arrival
                # order, so it holds this put unless the pack bounds cut it off).
                while not me.done and (me.taken or self._writing >= self._max_writers):
                    if me.wake is None:
                        me.wake = threading.Condition(self._lock)
                    me.wake.wait()
                if me.done:
                    return self._outcome(me)
                self._writing += 1
                group = self._take()
            self._write_and_commit(group)

    def _take(self) -> list[_Put]:
        """The queue's head, up to a pack's bounds (at least one); under the lock."""
        size, n = 0, 0
        for p in self._queue:
            if n and (n >= self._max_items or size + len(p.data) > self._max_bytes):
                break
            size += len(p.data)
            n += 1
        group, self._queue = self._queue[:n], self._queue[n:]
        for p in group:
            p.taken = True
        return group

    def _write_and_commit(self, group: list[_Put]) -> None:
        refs: list[PackRef | None] = []
        failure: BaseException | None = None
        try:
            refs = self._write_object(group)
        except BaseException as exc:
            failure = exc
        finally:
            # The object is written: the next group's may start while this one commits
            # (RecordIndex.commit_group joins concurrent commits into one transaction).
            with self._lock:
                self._writing -= 1
                if self._queue and self._queue[0].wake is not None:
                    self._queue[0].wake.notify()
        if failure is None:
            try:
                rows: list[Row] = [
                    (p.meta, p.leaf, None, r) for p, r in zip(group, refs, strict=True)
                ]
                for p, seq in zip(group, self._commit(rows), strict=True):
                    p.seq = seq
            except BaseException as exc:
                failure = exc
        with self._lock:
            for p in group:
                p.error = failure
                p.done = True
                if p.wake is not None:
                    p.wake.notify()

    def _write_object(self, group: list[_Put]) -> list[PackRef | None]:
        """Write the group's bytes: a lone record as its own object, more as a pack;
        where each record's bytes are (None: its own object)."""
        if len(group) == 1:
            self._put_one(group[0].meta, group[0].data)
            self.groups += 1
            return [None]
        pack = Pack()
        refs: list[PackRef | None] = [pack.add(p.data) for p in group]
        self._put_pack(pack.key, *pack.seal())
        self.groups += 1
        return refs

    @staticmethod
    def _outcome(p: _Put) -> int | None:
        if p.error is not None:
            raise p.error
        return p.seq
