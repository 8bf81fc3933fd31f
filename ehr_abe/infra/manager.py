"""Runs the local components in order: MinIO, then the Fabric network."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ehr_abe.infra.component import Component, ComponentStatus, InfraError
from ehr_abe.infra.config import InfraConfig
from ehr_abe.infra.minio import MinioServer

KNOWN = ("minio", "fabric")


def fabric_component(cfg: InfraConfig) -> tuple[Component | None, str]:
    """The Fabric network, or None and the reason it is unavailable."""
    try:
        from ehr_abe.infra.fabric import FabricNetwork, fabric_installed
        from ehr_abe.infra.fabric.settings import FabricSettings
    except ImportError as exc:
        return None, f"the Fabric network module is unavailable ({exc})"
    settings = FabricSettings.from_env(cfg.fabric_overrides)
    ok, why = fabric_installed(settings)
    if not ok:
        return None, why
    return FabricNetwork(settings, cfg.state_dir), ""


def components(
    cfg: InfraConfig, names: Sequence[str], progress: Callable[[str], None]
) -> list[Component]:
    unknown = set(names) - set(KNOWN)
    if unknown:
        raise InfraError(", ".join(sorted(unknown)), f"unknown component; known: {', '.join(KNOWN)}")
    chosen = list(names) or list(KNOWN)
    out: list[Component] = []
    for name in KNOWN:
        if name not in chosen:
            continue
        if name == "minio":
            out.append(MinioServer(cfg, progress))
        else:
            fabric, why = fabric_component(cfg)
            if fabric is None:
                if names:  # asked for explicitly: that is an error
                    raise InfraError("fabric", why)
                progress(f"Fabric skipped: {why}")
                continue
            out.append(fabric)
    return out


def up(cfg: InfraConfig, names: Sequence[str], progress: Callable[[str], None]) -> list[str]:
    started: list[str] = []
    for comp in components(cfg, names, progress):
        progress(f"starting {comp.name}")
        comp.up()
        started.append(comp.name)
    return started


def down(cfg: InfraConfig, names: Sequence[str], progress: Callable[[str], None]) -> None:
    errors: list[str] = []
    for comp in reversed(components(cfg, names, progress)):
        try:
            comp.down()
        except Exception as exc:  # keep stopping the others
            errors.append(f"{comp.name}: {exc}")
    if errors:
        raise InfraError("down", "; ".join(errors))


def status(cfg: InfraConfig) -> list[ComponentStatus]:
    out = list(MinioServer(cfg).status())
    fabric, why = fabric_component(cfg)
    if fabric is None:
        out.append(ComponentStatus("fabric", "not-installed", detail=why))
    else:
        out.extend(fabric.status())
    return out
