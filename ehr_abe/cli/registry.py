"""Which command modules make up the CLI."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    from ehr_abe.cli import abe, edge, policy, run

    app.add_typer(abe.authority_app, name="authority")
    app.add_typer(abe.key_app, name="key")
    app.command("encrypt")(abe.encrypt)
    app.command("decrypt")(abe.decrypt)
    app.add_typer(policy.app, name="policy")
    app.command("serve")(run.serve)
    app.command("demo")(run.demo)
    app.command("verify")(run.verify)
    app.command("edge")(edge.edge)
    app.add_typer(edge.records_app, name="records")
    try:
        from ehr_abe.cli import infra
    except ImportError:  # pragma: no cover - during development of the infra topic
        return
    app.add_typer(infra.app, name="infra")
