"""The `ehr-abe` command line.

Each topic lives in its own module in this package and is registered below.
Errors are EhrAbeError subclasses: they are printed as one clear line on
stderr and turned into the exit code the class names (never a traceback).
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from ehr_abe.errors import EhrAbeError

app = typer.Typer(
    name="ehr-abe",
    help="Attribute-based encryption for IoMT health records: key authority, "
    "encryption, storage with ledger anchoring, integrity verification.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err_console = Console(stderr=True)


def _register() -> None:
    # Imported here so that `ehr-abe --help` stays fast and each topic stays separate.
    from ehr_abe.cli import registry

    registry.register(app)


def main() -> None:
    _register()
    try:
        app(standalone_mode=False)
    except EhrAbeError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, markup=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except Exception as exc:  # click's own usage errors etc.
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if isinstance(exc, click.exceptions.Exit):
            sys.exit(exc.exit_code)
        if isinstance(exc, click.exceptions.Abort):
            sys.exit(1)
        raise
