"""`ehr-abe edge` (the IoMT edge gateway) and `ehr-abe records fetch` (a patient's
device segments, decrypted client-side into FHIR Observations)."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from ehr_abe.cli.common import console, setup_logging
from ehr_common.errors import ConfigError, InvalidArgument

records_app = typer.Typer(
    help="Read records: IoMT segments as FHIR Observations.", no_args_is_help=True
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
    endpoint: Annotated[str, typer.Option(help="StorageService host:port.")] = "127.0.0.1:50051",
    ca: Annotated[Path | None, typer.Option(help="Server CA (mutual TLS).")] = None,
    cert: Annotated[Path | None, typer.Option(help="Your certificate (mutual TLS).")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="Your TLS private key (mutual TLS).")] = None,
    subject: Annotated[
        str | None, typer.Option("--as", help="Development mode only: who you are.")
    ] = None,
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
    if ca and cert and tls_key:
        creds = grpc.ssl_channel_credentials(
            ca.read_bytes(), tls_key.read_bytes(), cert.read_bytes()
        )
        channel = grpc.secure_channel(endpoint, creds)
        md: tuple[tuple[str, str], ...] = ()
    else:
        channel = grpc.insecure_channel(endpoint)
        md = (("x-ehr-subject", subject or keyring.subject_id),)
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
