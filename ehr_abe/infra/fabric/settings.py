"""Settings of the local Fabric network, all timings and ports in one place."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ehr_abe.errors import ConfigError
from ehr_abe.paths import cache_dir

SUPPORTED_RELEASE = "3.1.5"


@dataclass(frozen=True)
class OrgSettings:
    name: str  # e.g. hosp1
    msp_id: str
    peer_port: int
    chaincode_port: int  # the peer's own chaincode listener (unused by CCaaS, must not clash)
    operations_port: int
    cc_server_port: int  # this org's chaincode-as-a-service server


@dataclass
class FabricSettings:
    fabric_home: Path = field(default_factory=lambda: cache_dir() / f"fabric-{SUPPORTED_RELEASE}")
    host: str = "127.0.0.1"
    domain: str = "ehr.local"
    channel: str = "ehr"
    chaincode: str = "ehr"
    chaincode_version: str = "1.0"
    orderer_port: int = 7050
    orderer_admin_port: int = 7053
    orderer_operations_port: int = 9443
    orgs: tuple[OrgSettings, ...] = (
        OrgSettings("hosp1", "Hosp1MSP", 7051, 7052, 9444, 7999),
        OrgSettings("hosp2", "Hosp2MSP", 8051, 8052, 9445, 8999),
    )
    #: Raft: a short tick so a restarted single-node cluster elects its leader in
    #: about a second instead of ~10 (the default 500 ms tick)
    raft_tick: str = "100ms"
    raft_election_tick: int = 10
    #: how long the orderer waits to fill a block: this bounds commit latency
    batch_timeout: str = "250ms"
    batch_max_messages: int = 500
    start_timeout_s: float = 60.0
    #: the endorsement policy of the ehr chaincode: any one hospital's peer.
    #: With two organisations a majority means both, so a single hospital's
    #: outage would stop all anchoring; every transaction still names the
    #: endorsing organisation, and anchors are write-once.
    endorsement_policy: str = "OR('Hosp1MSP.peer','Hosp2MSP.peer')"

    @staticmethod
    def from_env(overrides: dict[str, Any] | None = None, env: dict[str, str] | None = None) -> FabricSettings:
        env = dict(os.environ) if env is None else env
        s = FabricSettings()
        if env.get("FABRIC_HOME"):
            s.fabric_home = Path(env["FABRIC_HOME"])
        names = {f.name for f in dataclasses.fields(FabricSettings)} - {"orgs"}
        for key, value in (overrides or {}).items():
            if key not in names:
                raise ConfigError(f"unknown Fabric setting {key!r}")
            current = getattr(s, key)
            setattr(s, key, Path(value) if isinstance(current, Path) else type(current)(value))
        return s

    @property
    def bin(self) -> Path:
        return self.fabric_home / "bin"

    @property
    def orderer_endpoint(self) -> str:
        return f"{self.host}:{self.orderer_port}"
