"""`ehr-abe policy`: check and evaluate attribute policies (for security teams)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from ehr_abe.cli.common import console

app = typer.Typer(help="Check, normalise and evaluate attribute policies.", no_args_is_help=True)


@app.command("check")
def check(
    policy: Annotated[
        str, typer.Argument(help="e.g. '(role:doctor and dept:cardiology) or patient:p-17'")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Parse a policy: print its normal form, the attributes it mentions and its size."""
    from abe_service.policy import attributes, compile_policy

    compiled = compile_policy(policy)
    attrs = list(attributes(policy))
    rows = len(compiled.matrix)
    cols = len(compiled.matrix[0]) if rows else 0
    if as_json:
        print(
            json.dumps(
                {
                    "normal_form": compiled.normal_form,
                    "attributes": attrs,
                    "rows": rows,
                    "columns": cols,
                }
            )
        )
        return
    console.print(f"[bold]normal form[/]  {compiled.normal_form}", highlight=False)
    console.print(f"[bold]attributes[/]   {', '.join(attrs)}", highlight=False)
    console.print(f"[bold]span program[/] {rows} rows x {cols} columns", highlight=False)


@app.command("eval")
def evaluate(
    policy: Annotated[str, typer.Argument(help="The policy.")],
    attributes_: Annotated[
        list[str],
        typer.Argument(metavar="ATTRIBUTE...", help="e.g. role:doctor dept:cardiology age=42"),
    ],
) -> None:
    """Dry run: does this attribute set satisfy the policy? Exit code 0 if yes, 3 if not."""
    from abe_service.policy import compile_policy, expand_attributes

    compiled = compile_policy(policy)
    ok = compiled.satisfied_by(expand_attributes(attributes_))
    console.print("[green]satisfied[/]" if ok else "[yellow]not satisfied[/]")
    raise typer.Exit(0 if ok else 3)
