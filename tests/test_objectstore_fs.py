"""FilesystemStore specifics: what lies on disk, crash leftovers, path safety."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ehr_common.errors import AlreadyExists, InvalidArgument
from storage_service.objectstore.fs import META_SUFFIX, FilesystemStore, validate_key


@pytest.fixture
def fs(tmp_path: Path) -> FilesystemStore:
    return FilesystemStore(tmp_path / "objects")


def test_stored_files_are_read_only_and_no_temporaries_remain(fs: FilesystemStore) -> None:
    fs.put("records/r1.env", b"data", {"k": "v"})
    with pytest.raises(AlreadyExists):
        fs.put("records/r1.env", b"other", {"k": "w"})
    directory = fs.root / "records"
    assert sorted(p.name for p in directory.iterdir()) == ["r1.env", "r1.env" + META_SUFFIX]
    for p in directory.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) & 0o222 == 0


def test_crash_leftovers_are_invisible_and_harmless(fs: FilesystemStore) -> None:
    # A writer died after writing its temporary file and after writing a sidecar
    # but before its object landed: neither is an object, and the key stays free.
    (fs.root / "records").mkdir(parents=True)
    (fs.root / "records" / ".r2.env.0123abcd.tmp").write_bytes(b"half")
    (fs.root / "records" / ("r2.env" + META_SUFFIX)).write_text('{"stale": "yes"}')
    assert list(fs.list_keys()) == []
    assert not fs.exists("records/r2.env")
    fs.put("records/r2.env", b"whole", {"fresh": "yes"})
    assert fs.get("records/r2.env") == b"whole"
    assert fs.metadata("records/r2.env") == {"fresh": "yes"}
    assert list(fs.list_keys()) == ["records/r2.env"]


def test_a_failed_write_leaves_nothing(
    fs: FilesystemStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(*_args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "link", disk_full)
    from ehr_common.errors import Unavailable

    with pytest.raises(Unavailable, match="No space left"):
        fs.put("records/r3.env", b"data", {"k": "v"})
    monkeypatch.undo()
    assert [p.name for p in (fs.root / "records").iterdir()] == []
    fs.put("records/r3.env", b"data")
    assert fs.get("records/r3.env") == b"data"


def test_reopening_sees_the_same_objects(tmp_path: Path) -> None:
    first = FilesystemStore(tmp_path / "o")
    first.put("a/b", b"1", {"x": "y"})
    first.close()
    second = FilesystemStore(tmp_path / "o")
    assert second.get("a/b") == b"1"
    assert second.metadata("a/b") == {"x": "y"}
    with pytest.raises(AlreadyExists):
        second.put("a/b", b"2")


@given(st.text(max_size=40))
def test_any_accepted_key_stays_inside_the_root(key: str) -> None:
    root = Path("/srv/objects")
    try:
        validate_key(key)
    except InvalidArgument:
        return
    resolved = Path(os.path.normpath(root / key))
    assert resolved.is_relative_to(root) and resolved != root
    assert not key.startswith("/") and ".." not in key.split("/")
    assert all(not part.startswith(".") for part in key.split("/"))


@given(st.lists(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._\-]{0,8}", fullmatch=True), min_size=1))
def test_keys_of_safe_segments_are_accepted(segments: list[str]) -> None:
    key = "/".join(segments)
    if ".." in key or len(key) > 512 or any(s.endswith(META_SUFFIX) for s in segments):
        return
    assert validate_key(key) == key
