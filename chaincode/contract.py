"""The fabric-chaincode-python layer: caller identity from the proposal's creator,
the stub as the core's state, and typed errors as tagged messages.

Implemented on the shim's low-level `Chaincode` interface (init/invoke) rather
than the contract API: the dispatch is one table (`core.FUNCTIONS`), so the
contract API's reflection and serializer add nothing but quirks.
"""

from __future__ import annotations

import logging
from datetime import UTC
from typing import Any

from cryptography import x509
from fabric_chaincode_python.fabric_shim.interfaces import Chaincode
from fabric_chaincode_python.fabric_shim.response import error, success

from chaincode import core
from ehr_common.errors import EhrAbeError, Unauthenticated
from ehr_common.fabric_ca import subject_and_roles

log = logging.getLogger("ehr.chaincode")


def identity_from_creator(msp_id: str, cert_pem: bytes) -> core.Identity:
    """Subject from attribute `ehr.subject` (else the certificate's CN), roles from
    `ehr.roles` (comma-separated), MSP id from the creator (verified by the peer)."""
    if not msp_id:
        raise Unauthenticated("the proposal's creator names no MSP")
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        raise Unauthenticated("the creator's certificate cannot be parsed") from None
    subject, roles = subject_and_roles(cert)
    if not subject:
        raise Unauthenticated("the creator's certificate names no subject")
    return core.Identity(subject=subject, msp_id=msp_id, roles=roles)


class StubState:
    """The chaincode stub as the core's key-value state."""

    def __init__(self, stub: Any) -> None:
        self._stub = stub

    async def get(self, key: str) -> bytes | None:
        value = await self._stub.get_state(key)
        return bytes(value) if value else None  # the peer answers b"" for a missing key

    async def put(self, key: str, value: bytes) -> None:
        await self._stub.put_state(key, value)

    async def scan(self, start: str, end: str, limit: int) -> list[tuple[str, bytes]]:
        iterator = await self._stub.get_state_by_range(start, end)
        rows: list[tuple[str, bytes]] = []
        try:
            async for kv in iterator:
                rows.append((str(kv.key), bytes(kv.value)))
                if len(rows) >= limit:
                    break
        finally:
            await iterator._close()  # release the peer-side iterator on early exit
        return rows


class EhrChaincode(Chaincode):  # type: ignore[misc]  # the shim is untyped
    async def init(self, stub: Any) -> Any:
        return success(b"")

    async def invoke(self, stub: Any) -> Any:
        function = "?"
        try:
            function, args = stub.get_function_and_parameters()
            creator = stub.get_creator() or {}
            caller = identity_from_creator(
                str(creator.get("mspid") or ""), bytes(creator.get("idBytes") or b"")
            )
            ts = stub.get_tx_timestamp()
            if ts is None:
                raise Unauthenticated("the proposal carries no timestamp")
            ctx = core.TxContext(tx_id=str(stub.get_txid()), timestamp=ts.ToDatetime(tzinfo=UTC))
            payload = await core.invoke(StubState(stub), caller, ctx, function, list(args))
            return success(payload)
        except EhrAbeError as exc:
            # the message goes back to the caller; the log gets no ids or payloads
            log.info("%s refused: %s", function[:60], type(exc).__name__)
            return error(core.wire_error(exc))
        except Exception as exc:
            log.error("%s failed: %s", function[:60], type(exc).__name__)
            return error(core.wire_error(exc))
