"""Settings of the local Fabric network: install location, ports, names and every timing.

Everything a developer may want to change lives here, so the rest of the package
has no magic numbers. `FabricSettings.from_env` applies the `[fabric]` section of
the infra config file (flat keys named like the fields below, plus `port_offset`,
which moves every port), then `EHR_ABE_FABRIC_<FIELD>` variables (e.g.
`EHR_ABE_FABRIC_PORT_OFFSET=100`) and `FABRIC_HOME`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ehr_common.errors import ConfigError
from ehr_common.paths import cache_dir

SUPPORTED_RELEASE = "3.1.5"
ENV_PREFIX = "EHR_ABE_FABRIC_"


@dataclass(frozen=True)
class OrgSettings:
    """One peer organisation (a medical center) with its single peer."""

    name: str  # short name, also the crypto domain prefix: hosp1 -> hosp1.<domain>
    msp_id: str
    peer_port: int  # the peer's gRPC endpoint (Gateway, endorsement, gossip)
    chaincode_port: int  # the peer's own chaincode listener (unused by CCaaS, must not clash)
    operations_port: int  # /healthz over plain HTTP on loopback
    cc_server_port: int  # this org's chaincode-as-a-service server


def default_fabric_home() -> Path:
    return cache_dir() / f"fabric-{SUPPORTED_RELEASE}"


@dataclass
class FabricSettings:
    fabric_home: Path = field(default_factory=default_fabric_home)
    host: str = "127.0.0.1"
    domain: str = "ehr.local"
    channel: str = "ehr"
    chaincode: str = "ehr"
    chaincode_version: str = "1.0"
    #: bump to change the committed chaincode definition (policy, package)
    chaincode_sequence: int = 1
    orderer_port: int = 7050
    orderer_admin_port: int = 7053
    orderer_operations_port: int = 9443
    orgs: tuple[OrgSettings, ...] = (
        OrgSettings("hosp1", "Hosp1MSP", 7051, 7052, 9444, 7999),
        OrgSettings("hosp2", "Hosp2MSP", 8051, 8052, 9445, 8999),
    )
    #: Raft: a short tick so a restarted single-node cluster elects its leader in
    #: about a second instead of ~10 s (the default 500 ms tick). Written into the
    #: channel's genesis block: it applies to channels created after a change.
    raft_tick: str = "100ms"
    raft_election_tick: int = 10
    raft_heartbeat_tick: int = 1
    #: how long the orderer waits to fill a block: this bounds commit latency
    batch_timeout: str = "100ms"
    batch_max_messages: int = 500
    #: logging of the Fabric processes (never DEBUG for chaincode: it would log payloads)
    log_spec: str = "INFO"
    #: waiting for a process to answer after start
    start_timeout_s: float = 60.0
    #: waiting for the first write after a (re)start, while Raft elects a leader
    first_write_timeout_s: float = 60.0
    #: one peer/osnadmin CLI call (install builds the package: allow some time)
    cli_timeout_s: float = 120.0
    #: how often to poll while waiting
    poll_interval_s: float = 0.2
    #: SIGTERM, then SIGKILL after this long
    stop_timeout_s: float = 15.0
    #: the endorsement policy of the ehr chaincode: any one hospital's peer.
    #: With two organisations a majority means both, so a single hospital's
    #: outage would stop all anchoring; every transaction still names the
    #: endorsing organisation, and anchors are write-once.
    endorsement_policy: str = "OR('Hosp1MSP.peer','Hosp2MSP.peer')"

    @staticmethod
    def from_env(
        overrides: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None
    ) -> FabricSettings:
        env = os.environ if env is None else env
        s = FabricSettings()
        if env.get("FABRIC_HOME"):
            s.fabric_home = Path(env["FABRIC_HOME"])
        names = {f.name for f in dataclasses.fields(FabricSettings)} - {"orgs"}
        overrides = dict(overrides or {})
        # then the environment, like MinIO's: EHR_ABE_FABRIC_PORT_OFFSET=100
        for key, value in env.items():
            if key.startswith(ENV_PREFIX):
                overrides[key.removeprefix(ENV_PREFIX).lower()] = value
        offset = overrides.pop("port_offset", 0)
        for key, value in overrides.items():
            if key not in names:
                raise ConfigError(
                    f"unknown Fabric setting {key!r}; known: {', '.join(sorted(names))}"
                )
            current = getattr(s, key)
            try:
                setattr(s, key, Path(value) if isinstance(current, Path) else type(current)(value))
            except (TypeError, ValueError):
                raise ConfigError(
                    f"Fabric setting {key!r}: {value!r} is not of type {type(current).__name__}"
                ) from None
        try:
            return s.shifted(int(offset))
        except (TypeError, ValueError):
            raise ConfigError(
                f"Fabric setting 'port_offset': {offset!r} is not of type int"
            ) from None

    def shifted(self, offset: int) -> FabricSettings:
        """The same network on every port + offset (a second network beside the first)."""
        if offset == 0:
            return self
        return dataclasses.replace(
            self,
            orderer_port=self.orderer_port + offset,
            orderer_admin_port=self.orderer_admin_port + offset,
            orderer_operations_port=self.orderer_operations_port + offset,
            orgs=tuple(
                dataclasses.replace(
                    o,
                    peer_port=o.peer_port + offset,
                    chaincode_port=o.chaincode_port + offset,
                    operations_port=o.operations_port + offset,
                    cc_server_port=o.cc_server_port + offset,
                )
                for o in self.orgs
            ),
        )

    @property
    def bin(self) -> Path:
        return self.fabric_home / "bin"

    @property
    def ccaas_builder(self) -> Path:
        return self.fabric_home / "builders" / "ccaas"

    @property
    def orderer_endpoint(self) -> str:
        return f"{self.host}:{self.orderer_port}"

    @property
    def orderer_admin_endpoint(self) -> str:
        return f"{self.host}:{self.orderer_admin_port}"

    def org(self, name_or_msp: str) -> OrgSettings:
        for o in self.orgs:
            if name_or_msp in (o.name, o.msp_id):
                return o
        raise ConfigError(
            f"no organization {name_or_msp!r}; known: {', '.join(o.name for o in self.orgs)}"
        )
