"""Reading records' bytes wherever they are stored: a record's own object
(`envelope_key`), or its range of a pack object (segments, PutRecords that
arrived together: see `PackRef`).
Callers check every record's bytes against its hash; nothing here trusts them."""

from __future__ import annotations

from collections.abc import Sequence

from ehr_common.errors import InvalidArgument, Unavailable
from storage_service.index import RecordIndex
from storage_service.objectstore.base import ObjectStore
from storage_service.records import RecordMeta, envelope_key


def read_records(
    store: ObjectStore, index: RecordIndex, metas: Sequence[RecordMeta]
) -> list[bytes | None]:
    """Each record's stored bytes, in order; None where its object is missing.
    Raises what the store raises for an unreadable object (Unavailable, IntegrityError)."""
    refs = index.pack_refs([m.record_id for m in metas])
    out: list[bytes | None] = [None] * len(metas)
    whole = [(i, envelope_key(m.record_id)) for i, m in enumerate(metas) if m.record_id not in refs]
    parts = [
        (i, refs[m.record_id].key, refs[m.record_id].offset, m.size)
        for i, m in enumerate(metas)
        if m.record_id in refs
    ]
    if whole:
        for (i, _), (_, data) in zip(whole, store.get_many(k for _, k in whole), strict=True):
            out[i] = data
    if parts:
        try:
            fetched = list(store.get_ranges((k, o, n) for _, k, o, n in parts))
        except Unavailable:
            raise
        except InvalidArgument:
            # a location altered on disk into a key or range no store takes: such a
            # record's bytes are not to be found (None), the others still are
            fetched = [_one_range(store, k, o, n) for _, k, o, n in parts]
        for (i, *_), data in zip(parts, fetched, strict=True):
            out[i] = data
    return out


def _one_range(store: ObjectStore, key: str, offset: int, length: int) -> bytes | None:
    try:
        return next(iter(store.get_ranges([(key, offset, length)])))
    except InvalidArgument:
        return None
