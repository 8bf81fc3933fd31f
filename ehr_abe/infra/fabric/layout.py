"""Where everything of the local Fabric network lives under `<state>/fabric/` (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ehr_abe.infra.fabric.settings import FabricSettings, OrgSettings

#: cryptogen's names for the orderer organisation's node and the peers
ORDERER_HOST = "orderer"
PEER_HOST = "peer0"


@dataclass(frozen=True)
class Layout:
    root: Path  # <state>/fabric
    domain: str

    @property
    def crypto(self) -> Path:
        return self.root / "crypto"

    @property
    def config(self) -> Path:  # core.yaml for peers and the peer CLI; configtx.yaml
        return self.root / "config"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def genesis_block(self) -> Path:
        return self.root / "channel" / "genesis.block"

    @property
    def chaincode_package(self) -> Path:
        return self.root / "chaincode" / "ehr-ccaas.tar.gz"

    @property
    def connection_file(self) -> Path:
        return self.root / "connection.json"

    # -- orderer organisation --------------------------------------------------------
    @property
    def orderer_org(self) -> Path:
        return self.crypto / "ordererOrganizations" / self.domain

    @property
    def orderer_node(self) -> Path:
        return self.orderer_org / "orderers" / f"{ORDERER_HOST}.{self.domain}"

    @property
    def orderer_tls_ca(self) -> Path:
        return self.orderer_org / "tlsca" / f"tlsca.{self.domain}-cert.pem"

    @property
    def orderer_admin_tls(self) -> Path:
        return self.orderer_org / "users" / f"Admin@{self.domain}" / "tls"

    @property
    def orderer_data(self) -> Path:
        return self.root / "orderer"

    # -- peer organisations ----------------------------------------------------------
    def org_domain(self, org: OrgSettings) -> str:
        return f"{org.name}.{self.domain}"

    def org_dir(self, org: OrgSettings) -> Path:
        return self.crypto / "peerOrganizations" / self.org_domain(org)

    def peer_id(self, org: OrgSettings) -> str:
        return f"{PEER_HOST}.{self.org_domain(org)}"

    def peer_node(self, org: OrgSettings) -> Path:
        return self.org_dir(org) / "peers" / self.peer_id(org)

    def org_tls_ca(self, org: OrgSettings) -> Path:
        return self.org_dir(org) / "tlsca" / f"tlsca.{self.org_domain(org)}-cert.pem"

    def org_tls_ca_key(self, org: OrgSettings) -> Path:
        return self.org_dir(org) / "tlsca" / "priv_sk"

    def org_ca_cert(self, org: OrgSettings) -> Path:
        return self.org_dir(org) / "ca" / f"ca.{self.org_domain(org)}-cert.pem"

    def org_ca_key(self, org: OrgSettings) -> Path:
        return self.org_dir(org) / "ca" / "priv_sk"

    def user_msp(self, org: OrgSettings, user: str) -> Path:
        return self.org_dir(org) / "users" / f"{user}@{self.org_domain(org)}" / "msp"

    def peer_data(self, org: OrgSettings) -> Path:
        return self.root / "peers" / org.name

    def cc_tls(self, org: OrgSettings) -> Path:
        """The chaincode server's TLS key, certificate and client CA for this org."""
        return self.root / "chaincode" / org.name / "tls"


def layout_for(settings: FabricSettings, state_dir: Path) -> Layout:
    return Layout(state_dir / "fabric", settings.domain)


def single_file(directory: Path) -> Path:
    """cryptogen's msp/signcerts and msp/keystore hold one file each."""
    files = sorted(p for p in directory.iterdir() if p.is_file())
    if len(files) != 1:
        raise FileNotFoundError(f"expected one file in {directory}, found {len(files)}")
    return files[0]
