"""One behavioural suite for every ObjectStore: the filesystem store always,
MinIO (the server `ehr-abe infra up` started) when it runs.

Keys live under a fresh prefix per test, since MinIO objects are locked and
outlive the test run.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ehr_common.errors import AlreadyExists, InvalidArgument, NotFound
from storage_service.objectstore.base import ObjectStore
from storage_service.objectstore.fs import FilesystemStore


@pytest.fixture(params=["filesystem", pytest.param("minio", marks=pytest.mark.minio)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "filesystem":
        fs = FilesystemStore(tmp_path / "objects")
        yield fs
        fs.close()
    else:
        yield request.getfixturevalue("minio_store")


@pytest.fixture
def ns(unique_prefix: str) -> str:
    return unique_prefix


BAD_KEYS = [
    "",
    "/abs/path",
    "../escape",
    "a/../../b",
    "a/./b",
    "a//b",
    "trailing/",
    ".hidden",
    "a/.hidden",
    "sp ace",
    "new\nline",
    "nul\x00byte",
    "back\\slash",
    "ünïcode",
    "x" * 513,
    "record.meta~",
]


def test_implements_the_protocol(store: Any) -> None:
    assert isinstance(store, ObjectStore)


def test_put_get_exists_roundtrip(store: Any, ns: str) -> None:
    key = ns + "records/r-1/envelope"
    assert not store.exists(key)
    store.put(key, b"ciphertext \x00\xff bytes")
    assert store.exists(key)
    assert store.get(key) == b"ciphertext \x00\xff bytes"


def test_empty_object(store: Any, ns: str) -> None:
    store.put(ns + "empty", b"")
    assert store.get(ns + "empty") == b""
    assert store.exists(ns + "empty")


def test_metadata_roundtrip(store: Any, ns: str) -> None:
    store.put(ns + "m", b"x", {"Device": "pump-7", "sha256": "ab" * 32})
    assert store.metadata(ns + "m") == {"device": "pump-7", "sha256": "ab" * 32}
    store.put(ns + "plain", b"y")
    assert store.metadata(ns + "plain") == {}


def test_overwrite_is_refused_and_original_intact(store: Any, ns: str) -> None:
    key = ns + "worm"
    store.put(key, b"original", {"v": "1"})
    with pytest.raises(AlreadyExists):
        store.put(key, b"replacement", {"v": "2"})
    with pytest.raises(AlreadyExists):
        store.put(key, b"original", {"v": "1"})  # even identical bytes
    assert store.get(key) == b"original"
    assert store.metadata(key) == {"v": "1"}
    assert list(store.list_keys(ns)) == [key]


def test_concurrent_writers_of_one_key_exactly_one_wins(store: Any, ns: str) -> None:
    key = ns + "race"
    payloads = [bytes([i]) * 1000 for i in range(8)]
    outcomes: list[str] = []
    barrier = threading.Barrier(len(payloads))

    def write(data: bytes) -> None:
        barrier.wait()
        try:
            store.put(key, data, {"writer": str(data[0])})
            outcomes.append("stored")
        except AlreadyExists:
            outcomes.append("refused")

    threads = [threading.Thread(target=write, args=(p,)) for p in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["refused"] * 7 + ["stored"]
    stored = store.get(key)
    assert stored in payloads
    # The metadata belongs to the object that won, never to a loser.
    assert store.metadata(key) == {"writer": str(stored[0])}


@pytest.mark.parametrize("key", BAD_KEYS)
def test_bad_keys_are_invalid_arguments(store: Any, key: str) -> None:
    with pytest.raises(InvalidArgument):
        store.put(key, b"x")
    with pytest.raises(InvalidArgument):
        store.get(key)
    with pytest.raises(InvalidArgument):
        store.exists(key)
    with pytest.raises(InvalidArgument):
        list(store.get_many([key]))


@pytest.mark.parametrize("metadata", [{"bad name": "v"}, {"n": "new\nline"}, {"n": "ünï"}])
def test_bad_metadata_is_refused_and_nothing_stored(
    store: Any, ns: str, metadata: dict[str, str]
) -> None:
    with pytest.raises(InvalidArgument):
        store.put(ns + "k", b"x", metadata)
    assert not store.exists(ns + "k")


def test_keys_that_are_path_prefixes_of_one_another_are_refused(store: Any, ns: str) -> None:
    # MinIO would store both but list only the shorter one; both stores refuse.
    store.put(ns + "a", b"1")
    with pytest.raises(InvalidArgument, match="prefix"):
        store.put(ns + "a/b", b"2")
    store.put(ns + "c/d", b"3")
    with pytest.raises(InvalidArgument, match="prefix"):
        store.put(ns + "c", b"4")
    assert not store.exists(ns + "a/b")
    assert not store.exists(ns + "c")
    store.put(ns + "ab", b"5")  # a string prefix that is not a path prefix is fine
    assert list(store.list_keys(ns)) == [ns + "a", ns + "ab", ns + "c/d"]


def test_missing_key(store: Any, ns: str) -> None:
    with pytest.raises(NotFound):
        store.get(ns + "absent")
    with pytest.raises(NotFound):
        store.metadata(ns + "absent")
    assert not store.exists(ns + "absent")


def test_list_keys_sorted_under_prefix(store: Any, ns: str) -> None:
    keys = [ns + k for k in ("b/2", "a/1", "a/10", "a/2", "c", "ab")]
    for k in keys:
        store.put(k, k.encode(), {"k": "v"})
    assert list(store.list_keys(ns)) == sorted(keys)
    assert list(store.list_keys(ns + "a/")) == sorted([ns + "a/1", ns + "a/10", ns + "a/2"])
    assert list(store.list_keys(ns + "a")) == sorted(
        [ns + "a/1", ns + "a/10", ns + "a/2", ns + "ab"]
    )
    assert list(store.list_keys(ns + "zzz")) == []


def test_get_many_in_order_with_missing(store: Any, ns: str) -> None:
    present = [ns + f"many/{i:03d}" for i in range(40)]
    for k in present:
        store.put(k, k.encode() * 3)
    wanted = [present[5], ns + "many/missing", *reversed(present), present[5]]
    got = list(store.get_many(wanted))
    assert [k for k, _ in got] == wanted
    for k, data in got:
        assert data == (None if k.endswith("missing") else k.encode() * 3)
    assert list(store.get_many([])) == []


def test_get_ranges_in_order_short_and_missing(store: Any, ns: str) -> None:
    data = bytes(range(256)) * 40
    store.put(ns + "pack", data)
    refs = [
        (ns + "pack", 0, 10),
        (ns + "pack", 5000, 300),
        (ns + "missing", 0, 10),
        (ns + "pack", len(data) - 4, 10),  # past the end: only what is there
        (ns + "pack", len(data) + 100, 10),  # wholly past the end: nothing
        (ns + "pack", 7, 0),
    ]
    assert list(store.get_ranges(refs)) == [
        data[:10],
        data[5000:5300],
        None,
        data[-4:],
        b"",
        b"",
    ]
    assert list(store.get_ranges([])) == []
    for bad in ((ns + "pack", -1, 5), (ns + "pack", 0, -5), ("../escape", 0, 5)):
        with pytest.raises(InvalidArgument):
            list(store.get_ranges([bad]))


def test_large_object(store: Any, ns: str) -> None:
    data = os.urandom(6 * 1024 * 1024 + 17)  # past S3's multipart threshold
    store.put(ns + "large", data)
    assert store.get(ns + "large") == data


_segment = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_\-]{0,11}", fullmatch=True)
_keys = st.lists(_segment, min_size=1, max_size=4).map("/".join)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rel_key=_keys, data=st.binary(max_size=2048))
def test_property_roundtrip_and_write_once(store: Any, ns: str, rel_key: str, data: bytes) -> None:
    key = ns + "prop/" + rel_key
    try:
        store.put(key, data)
    except AlreadyExists:
        return  # an earlier example took this key
    except InvalidArgument as exc:
        # an earlier key is a path prefix of this one or the other way round
        assert "prefix" in str(exc)
        return
    assert store.get(key) == data
    with pytest.raises(AlreadyExists):
        store.put(key, data + b"!")
    assert store.get(key) == data
    assert key in set(store.list_keys(ns + "prop/"))
