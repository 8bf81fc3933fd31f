"""The Fabric protobuf modules, typed as Any.

hyperledger-fabric-protos ships generated modules without type stubs (their
classes are built at import time), so a type checker sees no attributes; they
are loaded here once and used untyped, at the edge.
"""

from __future__ import annotations

import importlib
from typing import Any


def _load(name: str) -> Any:
    return importlib.import_module(f"fabric_protos.{name}")


common_pb2: Any = _load("common.common_pb2")
gateway_pb2: Any = _load("gateway.gateway_pb2")
gateway_pb2_grpc: Any = _load("gateway.gateway_pb2_grpc")
identities_pb2: Any = _load("msp.identities_pb2")
chaincode_pb2: Any = _load("peer.chaincode_pb2")
proposal_pb2: Any = _load("peer.proposal_pb2")
proposal_response_pb2: Any = _load("peer.proposal_response_pb2")
transaction_pb2: Any = _load("peer.transaction_pb2")
