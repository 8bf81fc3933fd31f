"""Assembles and runs the gRPC server: AbeService and/or StorageService in one
process, with health checking, reflection, error mapping and (mutual) TLS."""

from __future__ import annotations

import logging
import threading
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ehr_common.api.v1 import abe_pb2, abe_pb2_grpc, storage_pb2, storage_pb2_grpc
from ehr_common.config import Config
from ehr_common.errors import ConfigError
from ehr_common.grpc_errors import ErrorMappingInterceptor
from ehr_common.grpc_parsing import RequestParsers
from ehr_common.identity import build_authenticator, client_cas

log = logging.getLogger(__name__)

#: The server's RPC threads. A streaming call holds one for as long as it is open,
#: so streams get at most half of them (storage_service.stream_slots).
RPC_THREADS = 32

DEV_MODE_BANNER = (
    "\n"
    "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
    "!! DEVELOPMENT MODE: no TLS. Callers are NOT authenticated: anyone who    !!\n"
    "!! can reach this port can claim any identity (x-ehr-subject header).     !!\n"
    "!! Configure server.tls_cert, tls_key and client_ca for real deployments. !!\n"
    "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
)


@dataclass
class RunningServer:
    server: grpc.Server
    port: int
    health: health.HealthServicer
    closers: list[object]

    def stop(self, grace: float = 2.0) -> None:
        for name in ("ehr_abe.api.v1.AbeService", "ehr_abe.api.v1.StorageService", ""):
            self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        self.server.stop(grace).wait()
        for c in self.closers:
            close = getattr(c, "close", None)
            if close is not None:
                close()


def _credentials(cfg: Config) -> grpc.ServerCredentials | None:
    if not cfg.tls_enabled:
        return None
    s = cfg.server
    try:
        key = Path(s.tls_key).read_bytes()
        cert = Path(s.tls_cert).read_bytes()
        # every organisation's CA may complete a handshake; which one did decides the MSP
        ca = b"\n".join(Path(p).read_bytes().strip() for p in client_cas(cfg).values()) + b"\n"
    except OSError as exc:
        raise ConfigError(f"cannot read TLS material: {exc}") from None
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=ca, require_client_auth=True
    )


def start_server(cfg: Config, *, passphrase: bytes | None = None) -> RunningServer:
    """Start the configured services; returns once the port is bound."""
    from abe_service.servicer import AbeServicer, load_authority_for_serving
    from storage_service.servicer import REQUEST_PARSERS, StorageServicer
    from storage_service.wiring import build_storage_core

    tls = cfg.tls_enabled
    if not tls:
        log.warning(DEV_MODE_BANNER)
    authenticator = build_authenticator(cfg)
    mb = cfg.server.max_message_mb * 1024 * 1024
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=RPC_THREADS, thread_name_prefix="rpc"),
        interceptors=[ErrorMappingInterceptor(), RequestParsers(REQUEST_PARSERS)],
        options=[("grpc.max_receive_message_length", mb), ("grpc.max_send_message_length", mb)],
    )
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = [reflection.SERVICE_NAME, health.SERVICE_NAME]
    closers: list[object] = []
    authority = None
    # A StorageService that encrypts through a remote AbeService needs no local authority.
    if "abe" in cfg.server.services or not cfg.server.abe_endpoint:
        authority = load_authority_for_serving(cfg, passphrase=passphrase)
    core = None
    if "storage" in cfg.server.services:
        core = build_storage_core(cfg, authority, passphrase=passphrase)
        core.start()
        closers.append(core)
    if "abe" in cfg.server.services:
        assert authority is not None
        # Key issues are recorded on the ledger when this process also runs storage.
        ledger = core.ledger if core is not None else None
        abe_pb2_grpc.add_AbeServiceServicer_to_server(
            AbeServicer(
                authority,
                authenticator,
                ledger=ledger,
                ma_validity=cfg.storage.ma_validity,
                fame_validity=cfg.storage.fame_validity,
            ),
            server,
        )
        names.append(abe_pb2.DESCRIPTOR.services_by_name["AbeService"].full_name)
    if core is not None:
        storage_pb2_grpc.add_StorageServiceServicer_to_server(
            StorageServicer(core, authenticator, max_streams=RPC_THREADS // 2), server
        )
        names.append(storage_pb2.DESCRIPTOR.services_by_name["StorageService"].full_name)
    reflection.enable_server_reflection(names, server)
    creds = _credentials(cfg)
    try:
        if creds is None:
            port = server.add_insecure_port(cfg.server.listen)
        else:
            port = server.add_secure_port(cfg.server.listen, creds)
    except RuntimeError as exc:
        raise ConfigError(f"cannot listen on {cfg.server.listen}: {exc}") from None
    if port == 0:
        raise ConfigError(f"cannot listen on {cfg.server.listen} (in use?)")
    server.start()
    for name in names[2:]:
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    log.info("serving %s on port %d", ", ".join(cfg.server.services), port)
    return RunningServer(server, port, health_servicer, closers)


def serve_forever(cfg: Config) -> None:
    running = start_server(cfg)
    stop = threading.Event()
    import signal

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    log.info("shutting down")
    running.stop()
