"""The `ehr-abe` command line.

Each topic lives in its own module in this package and is registered below.
Errors are EhrAbeError subclasses: they are printed as one clear line on
stderr and turned into the exit code the class names (never a traceback).
"""

from __future__ import annotations

import os
import sys

import typer
from rich.console import Console
from rich.markup import escape

from ehr_common.errors import EhrAbeError

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
        rc = app(standalone_mode=False)
        if isinstance(rc, int) and rc:
            sys.exit(rc)
    except EhrAbeError as exc:
        # the message may quote attacker-made text (an envelope's scheme, an id): escaped,
        # so it can neither style the output nor break the markup parser (a traceback)
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, markup=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except Exception as exc:
        code = getattr(exc, "exit_code", None)
        if isinstance(code, int):  # the CLI framework's usage errors, Exit and Abort
            show = getattr(exc, "show", None)
            if callable(show):
                show()
            sys.exit(code)
        if os.environ.get("EHR_ABE_DEBUG"):
            raise
        err_console.print(
            f"[bold red]internal error:[/] {type(exc).__name__}. This is a bug; "
            "run again with EHR_ABE_DEBUG=1 for the traceback and report it.",
            highlight=False,
        )
        sys.exit(70)
