"""`ehr-abe edge` (the IoMT edge gateway), `ehr-abe records fetch` (a patient's
device segments, decrypted client-side into FHIR Observations) and `ehr-abe
records anchoring` (how far the ledger covers the StorageService's records)."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from ehr_abe.cli.common import console, setup_logging
from ehr_common.errors import ConfigError, InvalidArgument

# how `records` commands reach the StorageService (see _channel)
EndpointOption = Annotated[str, typer.Option(help="StorageService host:port.")]
CaOption = Annotated[Path | None, typer.Option(help="Server CA (mutual TLS).")]
CertOption = Annotated[Path | None, typer.Option(help="Your certificate (mutual TLS).")]
TlsKeyOption = Annotated[Path | None, typer.Option(help="Your TLS private key (mutual TLS).")]
AsOption = Annotated[str | None, typer.Option("--as", help="Development mode only: who you are.")]

records_app = typer.Typer(
    help="Read records (IoMT segments as FHIR Observations) and their anchoring status.",
    no_args_is_help=True,
)


def edge(
    config: Annotated[
        Path,
        typer.Option(
            "--config",
            "-c",
            help="edge.toml: [edge], [mqtt], [storage], [policies], [devices.<id>].",
        ),
    ],
    stats: Annotated[
        bool, typer.Option("--stats", help="Print the running edge's counters and exit.")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run the IoMT edge gateway: MQTT readings in (QoS 1, acknowledged once durable),
    validated FHIR Observations sealed into segments, streamed to the StorageService."""
    from edge.config import load_edge_config

    cfg = load_edge_config(config)
    if stats:
        path = cfg.spool_dir / "stats.json"
        try:
            console.print_json(path.read_text())
        except OSError:
            raise ConfigError(f"no stats at {path}: is the edge running?") from None
        return
    import signal
    import threading

    from edge.gateway import Gateway, GrpcSegmentSink

    setup_logging(verbose)
    tls = None
    if cfg.storage_ca and cfg.storage_cert and cfg.storage_key:
        tls = (cfg.storage_ca, cfg.storage_cert, cfg.storage_key)
    sink = GrpcSegmentSink(cfg.storage_endpoint, subject=cfg.subject, tls=tls)
    gateway = Gateway(cfg, sink)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    gateway.start()
    console.print(
        f"edge {cfg.subject}: {len(cfg.devices)} devices, MQTT {cfg.mqtt_host}:{cfg.mqtt_port}, "
        f"storage {cfg.storage_endpoint}, spool {cfg.spool_dir}",
        highlight=False,
    )
    while not stop.wait(1.0) and not gateway.fatal:
        pass
    gateway.stop()
    sink.close()
    if gateway.fatal:
        from ehr_common.errors import Unavailable

        raise Unavailable(f"the edge stopped: {gateway.fatal}")


def _when(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidArgument(
            f"{text!r} is not an ISO 8601 time (e.g. 2026-12-01T10:00:00Z)"
        ) from None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _channel(
    endpoint: str, ca: Path | None, cert: Path | None, tls_key: Path | None, subject: str | None
) -> tuple[Any, tuple[tuple[str, str], ...]]:
    """A channel to the StorageService: mutual TLS when all three files are given,
    else development mode, where `subject` says who you are."""
    import grpc

    given = [f for f in (ca, cert, tls_key) if f is not None]
    if given and len(given) < 3:
        raise InvalidArgument("mutual TLS needs --ca, --cert and --tls-key together")
    if ca and cert and tls_key:
        try:
            creds = grpc.ssl_channel_credentials(
                ca.read_bytes(), tls_key.read_bytes(), cert.read_bytes()
            )
        except OSError as exc:
            raise InvalidArgument(f"cannot read TLS material: {exc}") from None
        return grpc.secure_channel(endpoint, creds), ()
    if not subject:
        raise InvalidArgument("development mode needs --as SUBJECT (or --ca, --cert, --tls-key)")
    return grpc.insecure_channel(endpoint), (("x-ehr-subject", subject),)


def anchoring_alerts(st: Any, max_pending_age: float | None) -> list[str]:
    """What in an AnchoringStatus an operator must look at (empty: all is well). A
    pending record is too old past `max_pending_age`, or by default past the
    service's own anchoring deadline (its maximum merge delay)."""
    alerts = []
    if not st.ledger_healthy:
        alerts.append("the last anchoring pass could not reach the ledger")
    if st.set_aside_batches:
        alerts.append(f"{len(st.set_aside_batches)} batches refused by the ledger (see the log)")
    limit, what = max_pending_age, "--max-pending-age"
    if limit is None and st.anchor_deadline_s > 0:
        limit, what = st.anchor_deadline_s, "the service's anchoring deadline"
    if limit is not None and st.pending_records and st.oldest_pending_age_s > limit:
        alerts.append(
            f"the oldest pending record is {st.oldest_pending_age_s:.1f} s old "
            f"(over {what}, {limit:g} s)"
        )
    return alerts


@records_app.command("anchoring")
def anchoring(
    endpoint: EndpointOption = "127.0.0.1:50051",
    ca: CaOption = None,
    cert: CertOption = None,
    tls_key: TlsKeyOption = None,
    subject: AsOption = None,
    max_pending_age: Annotated[
        float | None,
        typer.Option(
            help="Exit 1 when the oldest unanchored record is older (seconds; default: "
            "the service's anchoring deadline)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
) -> None:
    """How far the ledger covers this StorageService's records: records waiting for an
    anchor, the oldest one's age, batches the ledger refused. Exits 1 when the last
    anchoring pass could not reach the ledger, when a batch was set aside, or when
    the oldest pending record is older than --max-pending-age (default: the
    service's anchoring deadline, past which verification fails it): a check for
    monitoring."""
    import grpc

    from ehr_common.api.v1 import storage_pb2, storage_pb2_grpc
    from ehr_common.grpc_errors import error_from_rpc

    if max_pending_age is not None and not 0 <= max_pending_age < float("inf"):
        raise InvalidArgument("--max-pending-age must be a non-negative number of seconds")
    channel, md = _channel(endpoint, ca, cert, tls_key, subject)
    try:
        st = storage_pb2_grpc.StorageServiceStub(channel).GetAnchoringStatus(
            storage_pb2.GetAnchoringStatusRequest(), metadata=md, timeout=30
        )
    except grpc.RpcError as exc:
        raise error_from_rpc(exc) from None
    finally:
        channel.close()
    alerts = anchoring_alerts(st, max_pending_age)
    if as_json:
        doc = {
            "instance_id": st.instance_id,
            "pending_records": st.pending_records,
            "oldest_pending_age_s": round(st.oldest_pending_age_s, 3),
            "anchored_through_seq": st.anchored_through_seq,
            "set_aside_batches": list(st.set_aside_batches),
            "ledger_healthy": st.ledger_healthy,
            "anchor_deadline_s": st.anchor_deadline_s,
            "alerts": alerts,
        }
        sys.stdout.write(json.dumps(doc) + "\n")
    else:
        console.print(
            f"instance {st.instance_id}: {st.pending_records} records pending"
            + (f" (oldest {st.oldest_pending_age_s:.1f} s)" if st.pending_records else "")
            + f", anchored through seq {st.anchored_through_seq}, ledger "
            + ("reachable" if st.ledger_healthy else "UNREACHABLE")
            + f"; anchoring deadline {st.anchor_deadline_s:g} s",
            highlight=False,
            soft_wrap=True,  # one line per fact, whatever the terminal's width
        )
        for b in st.set_aside_batches:
            console.print(f"set aside: {b}", highlight=False, soft_wrap=True)
        for a in alerts:
            console.print(f"ALERT: {a}", highlight=False, soft_wrap=True)
    if alerts:
        raise typer.Exit(1)


@records_app.command("fetch")
def fetch(
    patient: Annotated[str, typer.Option(help="Patient id.")],
    key: Annotated[Path, typer.Option(help="Your ehr-abe user key file.")],
    since: Annotated[
        str | None, typer.Option(help="ISO 8601 start (default: the beginning).")
    ] = None,
    until: Annotated[str | None, typer.Option(help="ISO 8601 end (default: now).")] = None,
    fhir: Annotated[
        bool, typer.Option("--fhir", help="Print the FHIR Observations as NDJSON.")
    ] = False,
    endpoint: EndpointOption = "127.0.0.1:50051",
    ca: CaOption = None,
    cert: CertOption = None,
    tls_key: TlsKeyOption = None,
    subject: AsOption = None,
    limit: Annotated[int, typer.Option(help="At most this many segments.")] = 10_000,
) -> None:
    """A patient's device segments in a time range, verified against their anchors and
    decrypted here (your key never leaves this machine)."""
    import grpc

    from abe_service.client import AbeKeyring
    from ehr_abe.records import fetch_request, open_items
    from ehr_common.api.v1 import storage_pb2_grpc
    from ehr_common.grpc_errors import error_from_rpc

    keyring = AbeKeyring.from_file(key)
    channel, md = _channel(endpoint, ca, cert, tls_key, subject or keyring.subject_id)
    stub = storage_pb2_grpc.StorageServiceStub(channel)
    request = fetch_request(patient, _when(since), _when(until), limit)
    segments = observations = 0
    try:
        for seg in open_items(
            stub.FetchSegments(request, metadata=md, timeout=300), keyring, patient
        ):
            segments += 1
            observations += len(seg.observations)
            if fhir:
                for obs in seg.observations:
                    sys.stdout.write(json.dumps(obs, separators=(",", ":")) + "\n")
            else:
                console.print(
                    f"{seg.record_id}  {seg.device_id}  seq {seg.first_seq}-{seg.last_seq}  "
                    f"{len(seg.observations)} observations  "
                    f"{'anchored' if seg.anchored else 'pending'}",
                    highlight=False,
                )
    except grpc.RpcError as exc:
        raise error_from_rpc(exc) from None
    finally:
        channel.close()
    if not fhir:
        console.print(f"{segments} segments, {observations} observations", highlight=False)
