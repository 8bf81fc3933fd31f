"""What every infrastructure component (MinIO, the Fabric network) offers `ehr-abe infra`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from ehr_common.errors import FailedPrecondition

State = Literal["running", "stopped", "unhealthy", "not-installed"]


class InfraError(FailedPrecondition):
    """A component did not come up (or is not installed); the message names it and its log."""

    def __init__(self, component: str, message: str, log: Path | None = None):
        self.component = component
        self.log = log
        suffix = f" (log: {log})" if log else ""
        super().__init__(f"{component}: {message}{suffix}")


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    state: State
    pid: int | None = None
    endpoint: str | None = None
    log: Path | None = None
    detail: str = ""


class Component(Protocol):
    name: str

    def up(self) -> None:
        """Start (idempotent) and wait until it answers; raise InfraError if not."""
        ...

    def down(self) -> None:
        """Stop exactly the processes this component started (by pid)."""
        ...

    def status(self) -> list[ComponentStatus]: ...
