"""`ehr-abe serve`, `ehr-abe demo`, `ehr-abe verify`."""

from __future__ import annotations

import time
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
    """Check every stored record, and the index, against the anchors on the ledger
    (exit 4 if anything fails; 7 if the state directory holds no storage service)."""
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ehr_common.errors import FailedPrecondition, IntegrityError
    from ehr_common.identity import qualify
    from storage_service.anchors import AnchorBook
    from storage_service.index import RecordIndex
    from storage_service.keys import ServiceKeys
    from storage_service.ledger.base import Caller
    from storage_service.ledger.client import LedgerClient
    from storage_service.service import VerifyReport, ledger_chain_problem
    from storage_service.verification import verify_instance
    from storage_service.wiring import (
        SERVICE_ROLES,
        SERVICE_SUBJECT,
        anchor_policy,
        build_ledger,
        build_object_store,
        storage_secret,
    )

    cfg = config_from(config, home)
    index_path = cfg.storage_dir / "index.sqlite"
    if not index_path.is_file():
        # never create a state directory just to report "checked 0"
        raise FailedPrecondition(
            f"{cfg.storage_dir} holds no storage service state (no index.sqlite): "
            "give the service's --home or --config"
        )
    ledger_path = cfg.storage_dir / "ledger.sqlite"
    if cfg.storage.ledger == "embedded" and not ledger_path.is_file():
        # the index says records exist; the ledger that anchors them is gone
        raise IntegrityError(f"the embedded ledger {ledger_path} is missing")
    keys = ServiceKeys.derive(storage_secret(cfg))
    index = RecordIndex(index_path, mac_key=keys.mac_key)
    store = build_object_store(cfg)
    ledger = LedgerClient(
        build_ledger(cfg, verify_chain=False),
        Caller(SERVICE_SUBJECT, cfg.storage.msp_id, SERVICE_ROLES),
    )
    total = index.count()
    started = time.perf_counter()
    try:
        chain = ledger_chain_problem(ledger)
        book = AnchorBook(ledger, index.instance_id)  # the service may be anchoring
        anchors = book.fresh()
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
            stream = verify_instance(
                index,
                store,
                anchors,
                deadline_s=anchor_policy(cfg).deadline_s,
                patient_id=qualify(patient, cfg.storage.msp_id, "patient") if patient else None,
                batch_id=batch,
                on_progress=lambda n, nbytes: progress.update(task, completed=n, mb=nbytes / 1e6),
                relist=book.fresh,
            )
        set_aside = tuple(
            b if isinstance(b, str) else b.batch_id
            for b in index.batches()
            if isinstance(b, str) or b.set_aside is not None
        )
    finally:
        index.close()
        store.close()
        ledger.close()
    report = VerifyReport.from_stream(stream, time.perf_counter() - started, set_aside, chain)
    s = stream.stages
    console.print(
        f"checked {report.checked}, passed {report.passed} ({report.pending} pending anchoring), "
        f"failed {len(report.failed_record_ids)}"
    )
    console.print(
        f"time: fetch {s.fetch:.2f} s, hashing {s.hashing:.2f} s, proofs {s.proofs:.2f} s, "
        f"ledger {s.ledger:.2f} s, index {s.index:.2f} s",
        highlight=False,
    )
    if report.ledger_chain:
        console.print(f"  [red]LEDGER[/] {escape(report.ledger_chain)}")
    for title, items in (
        ("anchors the index lost", report.lost_anchors),
        ("batches whose root differs from the ledger's", report.root_mismatches),
        ("missing on the ledger", report.missing_on_ledger),
        ("anchored but missing from the index", report.missing_in_index),
        ("batches set aside (not anchorable)", report.set_aside_batches),
    ):
        if items:
            shown = ", ".join(escape(i) for i in items[:20])
            more = f" … and {len(items) - 20} more" if len(items) > 20 else ""
            console.print(f"  [red]{title}[/] ({len(items)}): {shown}{more}")
    for rid, bid, detail in report.problems[:50]:
        what = rid or f"batch {bid}"
        console.print(f"  [red]FAILED[/] {escape(what)}: {escape(detail)}")
    if len(report.problems) > 50:
        console.print(f"  … and {len(report.problems) - 50} more")
    raise typer.Exit(0 if report.ok else 4)
