"""Which command modules make up the CLI (the lead wires new topics here)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    pass
