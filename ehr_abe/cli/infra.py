"""`ehr-abe infra up|down|status`: MinIO and the Fabric network on this machine."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ehr_abe.cli.common import console, err_console

app = typer.Typer(
    help="Local infrastructure for development and tests: MinIO and a two-organisation Fabric network.",
    no_args_is_help=True,
)

ComponentsArg = Annotated[
    list[str] | None, typer.Argument(metavar="[COMPONENT]...", help="minio, fabric (default: all available).")
]
InfraConfigOption = Annotated[Path | None, typer.Option("--config", help="Infra TOML ([minio], [fabric]).")]
StateDirOption = Annotated[
    Path | None, typer.Option("--state-dir", help="Default $EHR_ABE_INFRA_DIR or <state>/infra.")
]


def _cfg(config: Path | None, state_dir: Path | None):  # type: ignore[no-untyped-def]
    from ehr_abe.infra.config import load_infra_config

    cfg = load_infra_config(config)
    if state_dir is not None:
        cfg.state_dir = state_dir
    return cfg


@app.command("up")
def up(components: ComponentsArg = None, config: InfraConfigOption = None, state_dir: StateDirOption = None) -> None:
    """Start (idempotent) and wait until every component answers."""
    from ehr_abe.infra import manager

    cfg = _cfg(config, state_dir)
    t0 = time.monotonic()
    with console.status("starting infrastructure…") as st:

        def progress(msg: str) -> None:
            st.update(f"{msg} ({time.monotonic() - t0:.0f} s)")
            console.print(f"  {msg}", highlight=False)

        started = manager.up(cfg, components or [], progress)
    console.print(f"[green]up[/]: {', '.join(started) or 'nothing'} in {time.monotonic() - t0:.1f} s (state {cfg.state_dir})")


@app.command("down")
def down(components: ComponentsArg = None, config: InfraConfigOption = None, state_dir: StateDirOption = None) -> None:
    """Stop exactly the processes `up` started."""
    from ehr_abe.infra import manager

    cfg = _cfg(config, state_dir)
    manager.down(cfg, components or [], lambda m: err_console.print(f"  {m}", highlight=False))
    console.print("[green]down[/]")


@app.command("status")
def status(config: InfraConfigOption = None, state_dir: StateDirOption = None) -> None:
    """Each component's state, pid, endpoint and log."""
    from ehr_abe.infra import manager

    cfg = _cfg(config, state_dir)
    table = Table("component", "state", "pid", "endpoint", "log / detail")
    colours = {"running": "green", "stopped": "yellow", "unhealthy": "red", "not-installed": "dim"}
    for s in manager.status(cfg):
        table.add_row(
            s.name, f"[{colours[s.state]}]{s.state}[/]", str(s.pid or ""), s.endpoint or "",
            str(s.log) if s.log and s.state != "not-installed" else s.detail,
        )
    console.print(table)
