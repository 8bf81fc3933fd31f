"""How the authority writes its files: atomic, owner-only, never clobbering."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from abe_service.authority import (
    PUBLIC_PARAMS_FILE,
    SEALED_MASTER_KEY_FILE,
    KeyAuthority,
    _write_file,
)
from ehr_common.errors import AlreadyExists

PASSPHRASE = b"correct horse battery staple"


def test_no_clobber_write_refuses_an_existing_file_and_leaves_no_temporary(
    tmp_path: Path,
) -> None:
    target = tmp_path / "file"
    target.write_bytes(b"original")
    with pytest.raises(AlreadyExists):
        _write_file(target, b"new", 0o600, overwrite=False)
    assert target.read_bytes() == b"original"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_overwrite_replaces_atomically_with_the_requested_mode(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_bytes(b"original")
    target.chmod(0o644)
    _write_file(target, b"new", 0o600, overwrite=True)
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_master_key_is_owner_only_even_with_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        KeyAuthority.setup(tmp_path, passphrase=PASSPHRASE)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / SEALED_MASTER_KEY_FILE).stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / PUBLIC_PARAMS_FILE).stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [SEALED_MASTER_KEY_FILE, PUBLIC_PARAMS_FILE]
    )


def test_force_replaces_the_authority(tmp_path: Path) -> None:
    first = KeyAuthority.setup(tmp_path, passphrase=PASSPHRASE)
    second = KeyAuthority.setup(tmp_path, passphrase=PASSPHRASE, force=True)
    assert first.authority_id != second.authority_id
    reopened = KeyAuthority.open(tmp_path, passphrase=PASSPHRASE)
    assert reopened.authority_id == second.authority_id
    assert reopened.can_issue
