"""Development identities for the local network, minted with an org's CA key.

`issue_identity(state_dir, org, subject, roles)` returns (cert PEM, key PEM):
CN = subject, OU = client (NodeOUs), and the Fabric-CA attribute extension
(OID 1.2.3.4.5.6.7.8.1) carrying `ehr.subject` and `ehr.roles`, which the
chaincode reads. A real deployment enrolls identities with its Fabric CA.
"""

from __future__ import annotations

import json
from pathlib import Path

from ehr_abe.errors import ConfigError


def issue_identity(state_dir: Path, org: str, subject: str, roles: list[str]) -> tuple[bytes, bytes]:
    from storage_service.ledger.fabric import mint_identity

    conn_file = state_dir / "connection.json"
    if not conn_file.exists():
        conn_file = state_dir / "fabric" / "connection.json"
    try:
        orgs = json.loads(conn_file.read_text())["organizations"]
        ca = orgs[org]["ca"]
        return mint_identity(Path(ca["cert"]).read_bytes(), Path(ca["key"]).read_bytes(), subject, roles)
    except (OSError, KeyError, ValueError) as exc:
        raise ConfigError(f"cannot mint an identity for {org}: {exc}") from None
