"""Options and helpers shared by the CLI topics."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from ehr_common.config import Config, load_config

console = Console()
err_console = Console(stderr=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="TOML configuration file (else $EHR_ABE_CONFIG, else defaults).",
        exists=False,
    ),
]
HomeOption = Annotated[
    Path | None,
    typer.Option(
        "--home", help="State directory (default $EHR_ABE_HOME or ~/.local/state/ehr-abe)."
    ),
]


def config_from(config: Path | None, home: Path | None = None) -> Config:
    cfg = load_config(config)
    if home is not None:
        cfg.home = str(home)
    return cfg


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # Third-party libraries must not log request or record contents.
    for noisy in ("urllib3", "minio", "numba", "grpc"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def read_passphrase(env_name: str, prompt: bool, confirm: bool = False) -> bytes:
    """The authority passphrase: from the named environment variable, else a prompt."""
    value = os.environ.get(env_name)
    if value:
        return value.encode()
    if not prompt or not sys.stdin.isatty():
        from ehr_common.errors import ConfigError

        raise ConfigError(
            f"the master-key passphrase is needed: set ${env_name} or run interactively"
        )
    text: str = typer.prompt("Master-key passphrase", hide_input=True, confirmation_prompt=confirm)
    return text.encode()
