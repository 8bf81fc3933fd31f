"""The CCaaS gRPC server for the ehr chaincode.

Built here rather than with the library's `server.start` because the library's
stream handler writes to the peer stream from concurrent tasks (one per
transaction), which grpc.aio refuses under load ("TOO_MANY_OPERATIONS": one
write at a time per stream). Writes are serialised per stream below; the
protocol handling itself stays the library's.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from typing import Any

import grpc
from fabric_chaincode_python.fabric_shim.handler import Handler

from chaincode.contract import EhrChaincode

log = logging.getLogger("ehr.chaincode")
# generated without type information: used untyped, here only
chaincode_shim_pb2_grpc: Any = importlib.import_module("fabric_protos.peer.chaincode_shim_pb2_grpc")


class SerialisedWrites:
    """A servicer context whose write() never overlaps another on the same stream."""

    def __init__(self, context: Any) -> None:
        self._context = context
        self._lock = asyncio.Lock()

    async def write(self, message: Any) -> None:
        async with self._lock:
            await self._context.write(message)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


class ChaincodeService(chaincode_shim_pb2_grpc.ChaincodeServicer):  # type: ignore[misc]
    def __init__(self, chaincode_id: str) -> None:
        self._id = chaincode_id
        self._chaincode = EhrChaincode()

    async def Connect(self, request_iterator: Any, context: Any) -> None:
        handler = Handler(self._id, self._chaincode)
        try:
            await handler.chat_with_peer(request_iterator, SerialisedWrites(context))
        except asyncio.CancelledError:
            log.info("peer stream closed")


async def serve(
    chaincode_id: str,
    address: str,
    *,
    key: bytes | None = None,
    cert: bytes | None = None,
    client_ca: bytes | None = None,
) -> None:
    """Serve until cancelled. With key, cert and client_ca: mutual TLS (required)."""
    server = grpc.aio.server()
    chaincode_shim_pb2_grpc.add_ChaincodeServicer_to_server(ChaincodeService(chaincode_id), server)
    if key is not None and cert is not None and client_ca is not None:
        creds = grpc.ssl_server_credentials(
            [(key, cert)], root_certificates=client_ca, require_client_auth=True
        )
        server.add_secure_port(address, creds)
    else:
        server.add_insecure_port(address)
    await server.start()
    try:
        await server.wait_for_termination()
    finally:
        await server.stop(3)
