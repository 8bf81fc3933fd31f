"""Runs the local components: `up` in order (MinIO, the Fabric network, Mosquitto),
`down` in reverse order, stopping every component even when one fails."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from ehr_abe.infra.component import Component, ComponentStatus, InfraError
from ehr_abe.infra.config import InfraConfig
from ehr_abe.infra.minio import MinioServer
from ehr_common.errors import EhrAbeError

KNOWN = ("minio", "fabric", "mqtt")
Progress = Callable[[str], None]


def fabric_component(cfg: InfraConfig) -> tuple[Component | None, str]:
    """The Fabric network, or None and one line saying why it is unavailable."""
    try:
        # Imported lazily: the Fabric package is optional for MinIO-only use.
        from ehr_abe.infra.fabric import FabricNetwork, fabric_installed
        from ehr_abe.infra.fabric.settings import FabricSettings
    except ImportError as exc:
        return None, f"the Fabric network module is unavailable ({exc})"
    settings = FabricSettings.from_env(cfg.fabric_overrides)
    installed, why = fabric_installed(settings)
    if not installed:
        return None, why
    network: Component = FabricNetwork(settings, cfg.state_dir)
    return network, ""


def select(names: Sequence[str]) -> list[str]:
    """The requested component names in start order; all of them if none are named."""
    unknown = sorted(set(names) - set(KNOWN))
    if unknown:
        raise InfraError(", ".join(unknown), f"unknown component; known: {', '.join(KNOWN)}")
    return [name for name in KNOWN if not names or name in names]


def components(cfg: InfraConfig, names: Sequence[str], progress: Progress) -> list[Component]:
    """The components to act on, in start order. Fabric without its binaries is
    skipped with one line, or is an error if it was asked for by name."""
    out: list[Component] = []
    for name in select(names):
        if name == "minio":
            out.append(MinioServer(cfg, progress))
            continue
        if name == "mqtt":
            from ehr_abe.infra.mqtt import INSTALL_HINT, MosquittoBroker, mosquitto_binary

            if mosquitto_binary() is None and not names:
                progress(f"MQTT skipped: {INSTALL_HINT}")
                continue
            out.append(MosquittoBroker(cfg, progress))
            continue
        fabric, why = fabric_component(cfg)
        if fabric is None:
            if names:
                raise InfraError("fabric", why)
            progress(f"Fabric skipped: {why}")
            continue
        out.append(fabric)
    return out


def up(cfg: InfraConfig, names: Sequence[str], progress: Progress) -> list[str]:
    """Start each component (idempotent) and wait until it answers; the names started.

    A failure raises InfraError naming the component; what is already up stays up
    (the caller runs `down`, which stops everything whatever happened)."""
    started: list[str] = []
    for component in components(cfg, names, progress):
        progress(f"{component.name}: starting")
        try:
            component.up()
        except InfraError:
            raise
        except (EhrAbeError, OSError) as exc:
            raise InfraError(component.name, str(exc), _log_of(component)) from None
        progress(f"{component.name}: up")
        started.append(component.name)
    return started


def down(cfg: InfraConfig, names: Sequence[str], progress: Progress) -> list[str]:
    """Stop components in reverse start order; every one is tried even if another fails."""
    failures: list[str] = []
    stopped: list[str] = []
    for component in reversed(components(cfg, names, progress)):
        try:
            component.down()
            stopped.append(component.name)
        except (EhrAbeError, OSError) as exc:
            failures.append(f"{component.name}: {exc}")
    if failures:
        raise InfraError("down", "; ".join(failures))
    return stopped


def status(cfg: InfraConfig) -> list[ComponentStatus]:
    """One row per process (MinIO; orderer, peers and chaincode servers of Fabric)."""
    from ehr_abe.infra.mqtt import MosquittoBroker

    rows = list(MinioServer(cfg).status())
    fabric, why = fabric_component(cfg)
    if fabric is None:
        rows.append(ComponentStatus("fabric", "not-installed", detail=why))
    else:
        rows.extend(fabric.status())
    rows.extend(MosquittoBroker(cfg).status())
    return rows


def _log_of(component: Component) -> Path | None:
    log = getattr(component, "log", None)
    return log if isinstance(log, Path) else None
