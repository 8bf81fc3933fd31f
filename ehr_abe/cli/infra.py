"""`ehr-abe infra up|down|status`: MinIO and the Fabric network on this machine."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table
from rich.text import Text

from ehr_abe.cli.common import console, err_console

if TYPE_CHECKING:
    from ehr_abe.infra.config import InfraConfig

app = typer.Typer(
    help="Local infrastructure for development and tests: MinIO, a two-organisation "
    "Fabric network and Mosquitto (MQTT over TLS for devices).",
    no_args_is_help=True,
)

ComponentsArg = Annotated[
    list[str] | None,
    typer.Argument(metavar="[COMPONENT]...", help="minio, fabric, mqtt (default: all available)."),
]
InfraConfigOption = Annotated[
    Path | None, typer.Option("--config", help="Infra TOML (state_dir, [minio], [fabric]).")
]
StateDirOption = Annotated[
    Path | None,
    typer.Option("--state-dir", help="Default $EHR_ABE_INFRA_DIR, else <state>/infra."),
]

_STATE_STYLE = {"running": "green", "stopped": "yellow", "unhealthy": "red", "not-installed": "dim"}


class _Elapsed:
    """A status line whose elapsed time keeps counting while a step (a build) runs."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.message = "starting infrastructure"

    def __rich__(self) -> Text:
        return Text(f"{self.message} ({time.monotonic() - self.started:.0f} s)")


def _config(config: Path | None, state_dir: Path | None) -> InfraConfig:
    from ehr_abe.infra.config import load_infra_config

    cfg = load_infra_config(config)
    if state_dir is not None:
        cfg.state_dir = state_dir
    return cfg


@app.command("up")
def up(
    components: ComponentsArg = None,
    config: InfraConfigOption = None,
    state_dir: StateDirOption = None,
) -> None:
    """Start (idempotent) and wait until every component answers."""
    from ehr_abe.infra import manager

    cfg = _config(config, state_dir)
    line = _Elapsed()
    with console.status(line):

        def progress(message: str) -> None:
            console.print(f"  {message}", highlight=False)
            line.message = message

        started = manager.up(cfg, components or [], progress)
    took = time.monotonic() - line.started
    console.print(
        f"[green]up[/]: {', '.join(started) or 'nothing'} in {took:.1f} s (state {cfg.state_dir})",
        highlight=False,
    )


@app.command("down")
def down(
    components: ComponentsArg = None,
    config: InfraConfigOption = None,
    state_dir: StateDirOption = None,
) -> None:
    """Stop exactly the processes `up` started (by pid file), in reverse order."""
    from ehr_abe.infra import manager

    cfg = _config(config, state_dir)
    stopped = manager.down(
        cfg, components or [], lambda m: err_console.print(f"  {m}", highlight=False)
    )
    console.print(f"[green]down[/]: {', '.join(stopped) or 'nothing'}", highlight=False)


@app.command("status")
def status(config: InfraConfigOption = None, state_dir: StateDirOption = None) -> None:
    """Each component's state, pid, endpoint and log."""
    from ehr_abe.infra import manager

    cfg = _config(config, state_dir)
    table = Table("component", "state", "pid", "endpoint", "log / detail")
    for row in manager.status(cfg):
        table.add_row(
            row.name,
            f"[{_STATE_STYLE[row.state]}]{row.state}[/]",
            str(row.pid or ""),
            row.endpoint or "",
            str(row.log) if row.log and row.state != "not-installed" else row.detail,
        )
    console.print(table)


@app.command("mqtt-identity")
def mqtt_identity(
    subject: Annotated[str, typer.Argument(help="Device id (or the edge's subject).")],
    out: Annotated[
        Path, typer.Option(help="Directory for <subject>.crt and <subject>.key (0600).")
    ],
    role: Annotated[str, typer.Option(help="Role in the certificate.")] = "device",
    config: InfraConfigOption = None,
    state_dir: StateDirOption = None,
) -> None:
    """Mint an MQTT client identity from the broker's CA (development tooling)."""
    import os

    from ehr_abe.infra.mqtt import issue_identity

    cfg = _config(config, state_dir)
    cert, key = issue_identity(cfg.state_dir / "mqtt" / "connection.json", subject, [role])
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{subject}.crt").write_bytes(cert)
    fd = os.open(
        out / f"{subject}.key", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600
    )
    with os.fdopen(fd, "wb") as f:
        f.write(key)
    console.print(f"wrote {out / (subject + '.crt')} and {subject}.key (0600)", highlight=False)
