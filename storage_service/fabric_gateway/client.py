"""A Fabric Gateway client: Evaluate, and Endorse -> Submit -> CommitStatus.

One `GatewayConnection` is one TLS gRPC channel to one peer's Gateway service;
it is thread-safe and meant to be shared (many transactions in flight at once:
the commit wait dominates). Identities are passed per call, so one connection
serves every caller.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from storage_service.fabric_gateway.errors import (
    GatewayUnavailable,
    map_chaincode_message,
    map_rpc_error,
    map_validation_code,
)
from storage_service.fabric_gateway.protos import (
    common_pb2,
    gateway_pb2,
    gateway_pb2_grpc,
    proposal_pb2,
    proposal_response_pb2,
    transaction_pb2,
)
from storage_service.fabric_gateway.signing import (
    SigningIdentity,
    build_proposal,
    commit_status_request,
    sign_envelope,
)

MAX_MESSAGE = 64 * 1024 * 1024


@dataclass(frozen=True)
class Timeouts:
    evaluate_s: float = 10.0
    endorse_s: float = 15.0
    submit_s: float = 10.0
    commit_s: float = 60.0


@dataclass(frozen=True)
class Committed:
    tx_id: str
    block: int
    payload: bytes


class GatewayConnection:
    def __init__(
        self,
        endpoint: str,
        tls_ca_pem: bytes,
        *,
        server_name: str | None = None,
        client_cert_pem: bytes | None = None,
        client_key_pem: bytes | None = None,
        timeouts: Timeouts = Timeouts(),
    ) -> None:
        self.endpoint = endpoint
        self.timeouts = timeouts
        creds = grpc.ssl_channel_credentials(
            root_certificates=tls_ca_pem,
            private_key=client_key_pem,
            certificate_chain=client_cert_pem,
        )
        options: list[tuple[str, str | int]] = [
            ("grpc.max_receive_message_length", MAX_MESSAGE),
            ("grpc.max_send_message_length", MAX_MESSAGE),
            ("grpc.keepalive_time_ms", 60_000),
            # After an outage, reconnect within seconds of the peer's return (gRPC's
            # default backoff grows to 120 s: anchoring would stall that long).
            ("grpc.initial_reconnect_backoff_ms", 250),
            ("grpc.max_reconnect_backoff_ms", 5_000),
        ]
        if server_name:
            options.append(("grpc.ssl_target_name_override", server_name))
        self._channel = grpc.secure_channel(endpoint, creds, options=options)
        self._stub = gateway_pb2_grpc.GatewayStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def evaluate(
        self,
        identity: SigningIdentity,
        channel: str,
        chaincode: str,
        function: str,
        args: list[str],
    ) -> bytes:
        """Run a query on the gateway's peers; returns the chaincode's payload."""
        proposal = build_proposal(identity, channel, chaincode, function, args)
        request = gateway_pb2.EvaluateRequest(
            transaction_id=proposal.tx_id,
            channel_id=channel,
            proposed_transaction=proposal.signed,
        )
        try:
            response = self._stub.Evaluate(request, timeout=self.timeouts.evaluate_s)
        except grpc.RpcError as exc:
            raise map_rpc_error(exc, f"evaluate {function} at {self.endpoint}") from None
        result = response.result
        if result.status >= 400:
            raise map_chaincode_message(result.message, function)
        return bytes(result.payload)

    def submit(
        self,
        identity: SigningIdentity,
        channel: str,
        chaincode: str,
        function: str,
        args: list[str],
    ) -> Committed:
        """Endorse, order and wait until committed; raises if invalidated."""
        tx_id, payload = self.endorse_and_submit(identity, channel, chaincode, function, args)
        block = self.wait_for_commit(identity, channel, tx_id)
        return Committed(tx_id=tx_id, block=block, payload=payload)

    def endorse_and_submit(
        self,
        identity: SigningIdentity,
        channel: str,
        chaincode: str,
        function: str,
        args: list[str],
    ) -> tuple[str, bytes]:
        """Endorse and send to ordering; returns (tx id, chaincode payload). The commit
        may then be awaited on any gateway of the channel."""
        proposal = build_proposal(identity, channel, chaincode, function, args)
        tx_id = proposal.tx_id
        try:
            endorsed = self._stub.Endorse(
                gateway_pb2.EndorseRequest(
                    transaction_id=tx_id,
                    channel_id=channel,
                    proposed_transaction=proposal.signed,
                ),
                timeout=self.timeouts.endorse_s,
            )
        except grpc.RpcError as exc:
            raise map_rpc_error(exc, f"endorse {function} at {self.endpoint}") from None
        envelope = endorsed.prepared_transaction
        payload = _result_payload(envelope.payload)
        try:
            self._stub.Submit(
                gateway_pb2.SubmitRequest(
                    transaction_id=tx_id,
                    channel_id=channel,
                    prepared_transaction=sign_envelope(identity, envelope),
                ),
                timeout=self.timeouts.submit_s,
            )
        except grpc.RpcError as exc:
            raise map_rpc_error(exc, f"submit {function} at {self.endpoint}") from None
        return tx_id, payload

    def wait_for_commit(
        self,
        identity: SigningIdentity,
        channel: str,
        tx_id: str,
        *,
        timeout_s: float | None = None,
    ) -> int:
        try:
            status = self._stub.CommitStatus(
                commit_status_request(identity, channel, tx_id),
                timeout=self.timeouts.commit_s if timeout_s is None else timeout_s,
            )
        except grpc.RpcError as exc:
            raise map_rpc_error(exc, f"commit status of {tx_id} at {self.endpoint}") from None
        code = transaction_pb2.TxValidationCode.Name(status.result)
        if code != "VALID":
            raise map_validation_code(code, tx_id, int(status.block_number))
        return int(status.block_number)


def _result_payload(payload_bytes: bytes) -> bytes:
    """The chaincode's response payload inside an endorsed transaction envelope."""
    try:
        payload = common_pb2.Payload.FromString(payload_bytes)
        tx = transaction_pb2.Transaction.FromString(payload.data)
        action = transaction_pb2.ChaincodeActionPayload.FromString(tx.actions[0].payload)
        prp = proposal_response_pb2.ProposalResponsePayload.FromString(
            action.action.proposal_response_payload
        )
        cc_action = proposal_pb2.ChaincodeAction.FromString(prp.extension)
    except Exception:  # a malformed envelope from the gateway: not our caller's fault
        raise GatewayUnavailable("the gateway returned a malformed transaction") from None
    return bytes(cc_action.response.payload)
