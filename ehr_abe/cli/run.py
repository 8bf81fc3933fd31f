"""`ehr-abe serve`, `ehr-abe demo`, `ehr-abe verify`."""

from __future__ import annotations

from typing import Annotated

import typer

from ehr_abe.cli.common import ConfigOption, HomeOption, config_from, console, setup_logging


def serve(
    config: ConfigOption = None,
    home: HomeOption = None,
    listen: Annotated[str | None, typer.Option(help="host:port (default 127.0.0.1:50051).")] = None,
    services: Annotated[
        str | None, typer.Option(help="Comma-separated: abe, storage (default both, one process).")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run AbeService and StorageService (gRPC, with health checking and reflection)."""
    from ehr_abe.server import serve_forever

    setup_logging(verbose)
    cfg = config_from(config, home)
    if listen:
        cfg.server.listen = listen
    if services:
        chosen = tuple(s.strip() for s in services.split(",") if s.strip())
        unknown = set(chosen) - {"abe", "storage"}
        if unknown or not chosen:
            raise typer.BadParameter(
                f"unknown service(s): {', '.join(sorted(unknown))}", param_hint="--services"
            )
        cfg.server.services = chosen
    serve_forever(cfg)


def demo(
    target: Annotated[
        str | None,
        typer.Option(
            help="host:port of a running server in development mode; default: in-process."
        ),
    ] = None,
    keep: Annotated[bool, typer.Option(help="Keep the demo's temporary state directory.")] = False,
) -> None:
    """End-to-end scenario: keys, a device streaming readings, consent, refusals, tampering, audit."""
    import logging

    from ehr_abe.demo import run_demo

    logging.basicConfig(level=logging.CRITICAL)  # the demo narrates refusals itself
    run_demo(target, keep, console)


def verify(
    config: ConfigOption = None,
    home: HomeOption = None,
    patient: Annotated[
        str | None,
        typer.Option(help="Only this patient's records (<MSP>/<subject>, or a subject of ours)."),
    ] = None,
    batch: Annotated[str | None, typer.Option(help="Only this anchored batch.")] = None,
) -> None:
    """Check every stored record against its anchored Merkle root (exit 4 if any fails)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ehr_common.identity import qualify
    from storage_service.index import RecordIndex
    from storage_service.ledger.base import Caller
    from storage_service.ledger.client import LedgerClient
    from storage_service.verification import verify_records_stream
    from storage_service.wiring import (
        SERVICE_ROLES,
        SERVICE_SUBJECT,
        build_ledger,
        build_object_store,
    )

    cfg = config_from(config, home)
    index = RecordIndex(cfg.storage_dir / "index.sqlite")
    store = build_object_store(cfg)
    ledger = LedgerClient(
        build_ledger(cfg), Caller(SERVICE_SUBJECT, cfg.storage.msp_id, SERVICE_ROLES)
    )
    total = index.count()
    try:
        with Progress(
            TextColumn("[bold]verifying"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[mb]:.1f} MB"),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            task = progress.add_task(
                "verify", total=total if not (patient or batch) else None, mb=0.0
            )
            report = verify_records_stream(
                index,
                store,
                root_of=lambda b: ledger.get_anchor(b).merkle_root,
                patient_id=qualify(patient, cfg.storage.msp_id, "patient") if patient else None,
                batch_id=batch,
                on_progress=lambda n, nbytes: progress.update(task, completed=n, mb=nbytes / 1e6),
            )
    finally:
        index.close()
        store.close()
        ledger.close()
    s = report.stages
    console.print(
        f"checked {report.checked}, passed {report.passed} ({report.pending} pending anchoring), "
        f"failed {len(report.failed_record_ids)}"
    )
    console.print(
        f"time: fetch {s.fetch:.2f} s, hashing {s.hashing:.2f} s, proofs {s.proofs:.2f} s, "
        f"ledger {s.ledger:.2f} s, index {s.index:.2f} s",
        highlight=False,
    )
    for rid in report.failed_record_ids[:50]:
        console.print(f"  [red]FAILED[/] {rid}")
    if len(report.failed_record_ids) > 50:
        console.print(f"  … and {len(report.failed_record_ids) - 50} more")
    raise typer.Exit(4 if report.failed_record_ids else 0)
