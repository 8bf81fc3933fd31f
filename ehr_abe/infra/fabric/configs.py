"""The configuration documents of the local Fabric network (pure: values in, text/bytes out).

cryptogen and configtxgen read YAML; JSON is YAML, so the documents are built as
dicts and written as JSON (no YAML library needed).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from typing import Any

from ehr_abe.infra.fabric.layout import ORDERER_HOST, Layout, single_file
from ehr_abe.infra.fabric.settings import FabricSettings, OrgSettings

#: TLS certificates must name what clients dial: loopback by name and by address
TLS_SANS = ["localhost", "127.0.0.1"]


def cryptogen_config(settings: FabricSettings) -> dict[str, Any]:
    """One orderer, one peer per org, an admin and one client user per org; NodeOUs on
    so that `OU=client` / `OU=peer` / `OU=admin` decide roles in policies."""
    return {
        "OrdererOrgs": [
            {
                "Name": "Orderer",
                "Domain": settings.domain,
                "EnableNodeOUs": True,
                "Specs": [{"Hostname": ORDERER_HOST, "SANS": TLS_SANS}],
            }
        ],
        "PeerOrgs": [
            {
                "Name": org.msp_id.removesuffix("MSP"),
                "Domain": f"{org.name}.{settings.domain}",
                "EnableNodeOUs": True,
                "Template": {"Count": 1, "SANS": TLS_SANS},
                "Users": {"Count": 1},
            }
            for org in settings.orgs
        ],
    }


def _signature(rule: str) -> dict[str, str]:
    return {"Type": "Signature", "Rule": rule}


def _implicit(rule: str) -> dict[str, str]:
    return {"Type": "ImplicitMeta", "Rule": rule}


def configtx(settings: FabricSettings, layout: Layout) -> dict[str, Any]:
    """The channel's genesis configuration (profile `EhrChannel`).

    Raft with a single orderer rather than SmartBFT: BFT needs 3f+1 = 4 orderers to
    tolerate one fault, which on a two-core development machine quadruples the
    ordering load for no safety gain (every node runs on the same host anyway).
    Anchor peers are set here, in each org's definition, so the Gateway's discovery
    sees both organisations from the first block without a config update.
    """
    orderer_tls = layout.orderer_node / "tls" / "server.crt"
    orderer_org = {
        "Name": "OrdererOrg",
        "ID": "OrdererMSP",
        "MSPDir": str(layout.orderer_org / "msp"),
        "OrdererEndpoints": [settings.orderer_endpoint],
        "Policies": {
            "Readers": _signature("OR('OrdererMSP.member')"),
            "Writers": _signature("OR('OrdererMSP.member')"),
            "Admins": _signature("OR('OrdererMSP.admin')"),
        },
    }

    def peer_org(org: OrgSettings) -> dict[str, Any]:
        m = org.msp_id
        return {
            "Name": m,
            "ID": m,
            "MSPDir": str(layout.org_dir(org) / "msp"),
            "Policies": {
                "Readers": _signature(f"OR('{m}.admin','{m}.peer','{m}.client')"),
                "Writers": _signature(f"OR('{m}.admin','{m}.client')"),
                "Admins": _signature(f"OR('{m}.admin')"),
                "Endorsement": _signature(f"OR('{m}.peer')"),
            },
            "AnchorPeers": [{"Host": settings.host, "Port": org.peer_port}],
        }

    profile = {
        "Policies": {
            "Readers": _implicit("ANY Readers"),
            "Writers": _implicit("ANY Writers"),
            "Admins": _implicit("MAJORITY Admins"),
        },
        "Capabilities": {"V3_0": True},
        "Orderer": {
            "OrdererType": "etcdraft",
            "BatchTimeout": settings.batch_timeout,
            "BatchSize": {
                "MaxMessageCount": settings.batch_max_messages,
                "AbsoluteMaxBytes": "99 MB",
                "PreferredMaxBytes": "512 KB",
            },
            "EtcdRaft": {
                "Consenters": [
                    {
                        "Host": settings.host,
                        "Port": settings.orderer_port,
                        "ClientTLSCert": str(orderer_tls),
                        "ServerTLSCert": str(orderer_tls),
                    }
                ],
                "Options": {
                    "TickInterval": settings.raft_tick,
                    "ElectionTick": settings.raft_election_tick,
                    "HeartbeatTick": settings.raft_heartbeat_tick,
                    "MaxInflightBlocks": 5,
                    "SnapshotIntervalSize": "16 MB",
                },
            },
            "Organizations": [orderer_org],
            "Policies": {
                "Readers": _implicit("ANY Readers"),
                "Writers": _implicit("ANY Writers"),
                "Admins": _implicit("MAJORITY Admins"),
                "BlockValidation": _implicit("ANY Writers"),
            },
            "Capabilities": {"V2_0": True},
        },
        "Application": {
            "Organizations": [peer_org(o) for o in settings.orgs],
            "Policies": {
                "Readers": _implicit("ANY Readers"),
                "Writers": _implicit("ANY Writers"),
                "Admins": _implicit("MAJORITY Admins"),
                "LifecycleEndorsement": _implicit("MAJORITY Endorsement"),
                "Endorsement": _implicit("MAJORITY Endorsement"),
            },
            "Capabilities": {"V2_5": True},
        },
    }
    return {"Profiles": {"EhrChannel": profile}}


PROFILE = "EhrChannel"


def channel_fingerprint(settings: FabricSettings) -> dict[str, Any]:
    """The settings baked into the genesis block and crypto material: an existing
    network cannot follow a change of these (`up` refuses with a clear message)."""
    return {
        "domain": settings.domain,
        "channel": settings.channel,
        "host": settings.host,
        "orderer_port": settings.orderer_port,
        "orgs": [[o.name, o.msp_id, o.peer_port] for o in settings.orgs],
        "raft_tick": settings.raft_tick,
        "raft_election_tick": settings.raft_election_tick,
        "raft_heartbeat_tick": settings.raft_heartbeat_tick,
        "batch_timeout": settings.batch_timeout,
        "batch_max_messages": settings.batch_max_messages,
    }


def peer_core_yaml(stock: str, settings: FabricSettings) -> str:
    """The stock core.yaml with the ccaas external builder and no Docker.

    Lists of structures cannot be set through CORE_* variables, hence a file; the
    rest of the per-peer settings are environment variables (`peer_env`)."""
    builder = "      path: /opt/hyperledger/ccaas_builder"
    docker = "  endpoint: unix:///var/run/docker.sock"
    for needle in (builder, docker):
        if stock.count(needle) != 1:
            raise ValueError(
                f"core.yaml is not the 3.1.5 sample config (no unique {needle.strip()!r})"
            )
    return stock.replace(builder, f"      path: {settings.ccaas_builder}").replace(
        docker, '  endpoint: ""'
    )


def ccaas_connection_template() -> dict[str, Any]:
    """connection.json inside the package. The ccaas builder fills these templates
    from each peer's CHAINCODE_AS_A_SERVICE_BUILDER_CONFIG, so one package serves
    both orgs, each with its own server, address and TLS material."""
    return {
        "address": "{{.address}}",
        "dial_timeout": "10s",
        "tls_required": True,
        "client_auth_required": True,
        "client_key": "{{.client_key}}",
        "client_cert": "{{.client_cert}}",
        "root_cert": "{{.root_cert}}",
    }


def builder_config(address: str, client_key: str, client_cert: str, root_cert: str) -> str:
    """CHAINCODE_AS_A_SERVICE_BUILDER_CONFIG for one peer (PEM contents, not paths)."""
    return json.dumps(
        {
            "address": address,
            "client_key": client_key,
            "client_cert": client_cert,
            "root_cert": root_cert,
        }
    )


def _tar_gz(files: dict[str, bytes]) -> bytes:
    """A reproducible tar.gz (fixed mtimes and owners): same inputs, same package id."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as gz:
        gz.write(raw.getvalue())
    return out.getvalue()


def ccaas_package(label: str) -> bytes:
    code = _tar_gz({"connection.json": json.dumps(ccaas_connection_template(), indent=2).encode()})
    metadata = json.dumps({"type": "ccaas", "label": label}).encode()
    return _tar_gz({"metadata.json": metadata, "code.tar.gz": code})


def package_id(label: str, package: bytes) -> str:
    """The id the peer gives an installed package: label and SHA-256 of its bytes."""
    return f"{label}:{hashlib.sha256(package).hexdigest()}"


def connection_document(settings: FabricSettings, layout: Layout) -> dict[str, Any]:
    """`<state>/fabric/connection.json`, for clients (format 1; keys only ever added).

    ```
    {"format": 1, "channel": "ehr", "chaincode": "ehr", "state_dir": <abs fabric dir>,
     "orderer": {"endpoint": "127.0.0.1:7050", "tls_ca": <path>},
     "organizations": {
       "hosp1": {"msp_id": "Hosp1MSP",
                 "gateway": {"endpoint": "127.0.0.1:7051", "tls_ca": <path>},
                 "admin":  {"cert": <path>, "key": <path>},
                 "client": {"cert": <path>, "key": <path>},
                 "ca":     {"cert": <path>, "key": <path>}},   # development CA
       "hosp2": {...}}}
    ```
    Paths are absolute. `ca` is the org's identity CA (cryptogen material), which
    `identities.issue_identity` uses to mint client identities.
    """

    def identity(org: OrgSettings, user: str) -> dict[str, str]:
        msp = layout.user_msp(org, user)
        return {
            "cert": str(single_file(msp / "signcerts")),
            "key": str(single_file(msp / "keystore")),
        }

    return {
        "format": 1,
        "channel": settings.channel,
        "chaincode": settings.chaincode,
        "state_dir": str(layout.root),
        "orderer": {"endpoint": settings.orderer_endpoint, "tls_ca": str(layout.orderer_tls_ca)},
        "organizations": {
            org.name: {
                "msp_id": org.msp_id,
                "gateway": {
                    "endpoint": f"{settings.host}:{org.peer_port}",
                    "tls_ca": str(layout.org_tls_ca(org)),
                },
                "admin": identity(org, "Admin"),
                "client": identity(org, "User1"),
                "ca": {"cert": str(layout.org_ca_cert(org)), "key": str(layout.org_ca_key(org))},
            }
            for org in settings.orgs
        },
    }
