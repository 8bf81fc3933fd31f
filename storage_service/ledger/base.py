"""The ledger seam.

The contract logic lives once, in `chaincode.core` (pure, over a key-value
state). A ledger executes contract functions on behalf of a caller identity:
- `embedded.EmbeddedLedger` runs `chaincode.core` in-process over an append-only,
  hash-chained SQLite log (single machine);
- `fabric.FabricLedger` sends the same function names and arguments to the ehr
  chaincode through the Fabric Gateway.
`LedgerClient` (in `client.py`) is the typed facade the storage service uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ehr_common.identity import Caller

__all__ = ["Caller", "Ledger", "TxResult"]


@dataclass(frozen=True)
class TxResult:
    tx_id: str
    block: int
    payload: bytes


@runtime_checkable
class Ledger(Protocol):
    def submit(self, caller: Caller, function: str, args: list[str]) -> TxResult:
        """Execute and commit a state-changing contract function.
        Raises AlreadyExists / AccessDenied / InvalidArgument as the contract
        decides, Unavailable when the ledger cannot be reached."""
        ...

    def evaluate(self, caller: Caller, function: str, args: list[str]) -> bytes:
        """Run a read-only contract function and return its payload."""
        ...

    def close(self) -> None: ...
