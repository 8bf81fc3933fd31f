"""Client identities for the local Fabric network, minted with an org's cryptogen CA.

`issue_identity(state_dir, org, subject, roles)` returns `(cert_pem, key_pem)`: a
P-256 key and an X.509 certificate signed by the org's identity CA with
`CN=<subject>`, `OU=client` (a client under NodeOUs) and the Fabric-CA attribute
extension (OID 1.2.3.4.5.6.7.8.1) holding
`{"attrs": {"ehr.subject": subject, "ehr.roles": "doctor,cardiology"}}`, so the
chaincode reads them with the standard ClientIdentity attribute API.
This is development tooling: in a hospital the org's Fabric CA enrolls users.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from ehr_common.certificates import mint_client_identity, mint_tls_server_cert
from ehr_common.errors import ConfigError, InvalidArgument

__all__ = ["issue_identity", "mint_client_identity", "mint_tls_server_cert", "org_ca_paths"]


def _fabric_dir(state_dir: Path) -> Path:
    """Accept the infra state dir (`<state>`) or the network's own (`<state>/fabric`)."""
    for candidate in (state_dir, state_dir / "fabric"):
        if (candidate / "connection.json").is_file():
            return candidate
    raise ConfigError(
        f"no Fabric network under {state_dir} (connection.json missing): run `ehr-abe infra up fabric`"
    )


def org_ca_paths(state_dir: Path, org: str) -> tuple[Path, Path]:
    """(ca cert, ca key) of an org named by short name (hosp1) or MSP id (Hosp1MSP)."""
    path = _fabric_dir(state_dir) / "connection.json"
    try:
        doc = json.loads(path.read_text())
        orgs = doc["organizations"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"unreadable Fabric connection file {path}: {exc}") from None
    for name, entry in orgs.items():
        if org in (name, entry.get("msp_id")):
            return Path(entry["ca"]["cert"]), Path(entry["ca"]["key"])
    raise InvalidArgument(f"no organization {org!r} in {path}; known: {', '.join(orgs)}")


def issue_identity(
    state_dir: Path, org: str, subject: str, roles: Sequence[str]
) -> tuple[bytes, bytes]:
    """A new client identity of `org` for `subject` with `roles`: (cert_pem, key_pem).

    `state_dir` is the infra state dir or `<state>/fabric`; `org` a short name or MSP id.
    The key is returned, never written or logged; callers store it (mode 0600).
    """
    cert_path, key_path = org_ca_paths(state_dir, org)
    try:
        ca_cert, ca_key = cert_path.read_bytes(), key_path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the CA of {org}: {exc.strerror} ({exc.filename})") from None
    return mint_client_identity(ca_cert, ca_key, subject, roles)
