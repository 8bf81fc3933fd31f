"""A StorageService apart from AbeService never sends plaintext to it: it fetches
the public parameters once, checks them against the pinned authority id, caches
them, and encrypts locally."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from abe_service.authority import KeyAuthority
from abe_service.client import AbeKeyring
from ehr_abe.server import RunningServer, start_server
from ehr_common.config import Config, load_config
from ehr_common.errors import ConfigError, IntegrityError, Unavailable
from storage_service.records import record_context
from storage_service.wiring import build_storage_core

PASS = b"remote abe passphrase"


def _abe_only(home: Path) -> tuple[RunningServer, KeyAuthority]:
    cfg = load_config(env={})
    cfg.home = str(home)
    cfg.server.listen = "127.0.0.1:0"
    cfg.server.services = ("abe",)
    auth = KeyAuthority.setup(cfg.authority_dir, passphrase=PASS)
    return start_server(cfg, passphrase=PASS), auth


def _storage_cfg(home: Path, port: int, authority_id: str) -> Config:
    cfg = load_config(env={})
    cfg.home = str(home)
    cfg.server.services = ("storage",)
    cfg.server.abe_endpoint = f"127.0.0.1:{port}"
    cfg.server.abe_authority_id = authority_id
    # A StorageService apart from AbeService holds no master secret: it gets its own
    # (index MACs, receipt signatures), from a key file outside its data directory.
    home.mkdir(parents=True, exist_ok=True)
    secret = home / "storage.secret"
    secret.write_bytes(b"a storage secret for this test")
    cfg.storage.secret_file = str(secret)
    return cfg


@pytest.fixture
def remote(tmp_path: Path) -> Iterator[tuple[RunningServer, KeyAuthority]]:
    running, auth = _abe_only(tmp_path / "abe")
    yield running, auth
    running.stop()


def test_storage_encrypts_locally_with_verified_cached_parameters(
    remote: tuple[RunningServer, KeyAuthority], tmp_path: Path
) -> None:
    running, auth = remote
    cfg = _storage_cfg(tmp_path / "storage", running.port, auth.authority_id)
    core = build_storage_core(cfg, None)
    running.stop()  # AbeService gone: encryption needs nothing from it
    ctx = record_context("p-1")
    envelope = core.encryptor.encrypt("role:doctor", b"ECG 72 bpm", ctx)
    core.close()
    ring = AbeKeyring.from_bytes(auth.issue_key("dr", ["role:doctor"]).user_key)
    assert ring.decrypt(envelope, ctx) == b"ECG 72 bpm"
    # Restarting while AbeService is down works from the cache.
    again = build_storage_core(cfg, None)
    assert again.encryptor.encrypt("role:doctor", b"x", ctx)
    again.close()


def test_a_spoofed_abe_service_is_refused(
    remote: tuple[RunningServer, KeyAuthority], tmp_path: Path
) -> None:
    running, _ = remote
    genuine = KeyAuthority.setup(tmp_path / "genuine", passphrase=PASS)
    cfg = _storage_cfg(tmp_path / "storage", running.port, genuine.authority_id)
    with pytest.raises(IntegrityError, match="not those of authority"):
        build_storage_core(cfg, None)
    # ... and a tampered cache entry is not trusted either: it is fetched again
    cache = cfg.storage_dir / "abe_public_params"
    cache.mkdir(parents=True, exist_ok=True)
    (cache / f"{genuine.authority_id}.public_params").write_bytes(b"junk")
    with pytest.raises(IntegrityError):
        build_storage_core(cfg, None)


def test_the_authority_id_must_be_pinned(tmp_path: Path) -> None:
    cfg = _storage_cfg(tmp_path, 1, "")
    with pytest.raises(ConfigError, match="abe_authority_id"):
        build_storage_core(cfg, None)
    cfg = _storage_cfg(tmp_path, 1, "ab" * 16)  # nothing listens on port 1
    with pytest.raises(Unavailable):
        build_storage_core(cfg, None)
