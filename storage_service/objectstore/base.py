"""The object-store seam: write-once blobs addressed by key.

Implementations: `fs.FilesystemStore` (embedded, single machine) and
`minio_store.MinioStore` (MinIO with versioning + object lock). Both refuse to
overwrite or delete a stored object: records are write-once (WORM).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Protocol, runtime_checkable


@runtime_checkable
class ObjectStore(Protocol):
    def put(self, key: str, data: bytes, metadata: Mapping[str, str] | None = None) -> None:
        """Store `data` under `key` durably. Raises AlreadyExists if the key is taken
        (the stored object is left intact), InvalidArgument for a bad key,
        Unavailable if the store cannot be reached."""
        ...

    def get(self, key: str) -> bytes:
        """Return the object's bytes. Raises NotFound, Unavailable."""
        ...

    def exists(self, key: str) -> bool: ...

    def list_keys(self, prefix: str = "") -> Iterator[str]:
        """Keys under `prefix`, in lexicographic order."""
        ...

    def get_many(self, keys: Iterable[str]) -> Iterator[tuple[str, bytes | None]]:
        """(key, bytes) for each key, in order; None for a missing key. Implementations
        may fetch concurrently."""
        ...

    def get_ranges(self, refs: Iterable[tuple[str, int, int]]) -> Iterator[bytes | None]:
        """For each (key, offset, length), those bytes of the object (fewer if the
        object is shorter), in order; None for a missing object. Implementations may
        fetch concurrently."""
        ...

    def close(self) -> None: ...
