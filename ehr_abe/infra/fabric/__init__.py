"""The local Fabric 3.1.5 network of ehr-abe (two hospitals, one Raft orderer, CCaaS).

Public: `FabricNetwork(settings, state_dir)` (an `ehr_abe.infra.component.Component`),
`FabricSettings`, `fabric_installed(settings) -> (ok, reason)`, and
`identities.issue_identity`. Clients read `<state>/fabric/connection.json`
(format: `configs.connection_document`).
"""

from ehr_abe.infra.fabric.network import FabricNetwork, fabric_installed
from ehr_abe.infra.fabric.settings import FabricSettings

__all__ = ["FabricNetwork", "FabricSettings", "fabric_installed"]
