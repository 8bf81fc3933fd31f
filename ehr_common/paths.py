"""Where ehr-abe keeps state and caches (XDG base directories, env overrides)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """Per-user cache: built MinIO binaries, the default Fabric location."""
    override = os.environ.get("EHR_ABE_CACHE")
    if override:
        return Path(override)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ehr-abe"


def state_dir() -> Path:
    """Per-user state: keys, embedded stores, infrastructure data."""
    override = os.environ.get("EHR_ABE_HOME")
    if override:
        return Path(override)
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "ehr-abe"
