"""The local two-organisation Fabric network (see network.py)."""

from ehr_abe.infra.fabric.network import FabricNetwork, fabric_installed
from ehr_abe.infra.fabric.settings import FabricSettings

__all__ = ["FabricNetwork", "FabricSettings", "fabric_installed"]
