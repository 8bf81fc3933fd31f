"""Our Python Fabric Gateway client (hyperledger-fabric-protos + grpcio +
cryptography): signed proposals, Evaluate, Endorse/Submit/CommitStatus, and
Gateway errors as typed ehr-abe errors."""

from storage_service.fabric_gateway.client import Committed, GatewayConnection, Timeouts
from storage_service.fabric_gateway.signing import SigningIdentity

__all__ = ["Committed", "GatewayConnection", "SigningIdentity", "Timeouts"]
