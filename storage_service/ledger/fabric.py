"""The Fabric ledger: the ehr chaincode through the Fabric Gateway.

Each `Caller` acts with a Fabric signing identity whose certificate carries its
subject and roles (Fabric-CA attributes `ehr.subject`, `ehr.roles`), so the
chaincode authorises it exactly as the embedded ledger does. Where identities
come from is an interface (`IdentitySource`): development mints them on demand
with the local network's CA (`DevIdentityIssuer`); a deployment supplies its
own (`StaticIdentities`).

Gateways: one connection per organisation's peer. A call goes to the caller's
own organisation first and fails over to the others when a gateway is
unreachable. A submitted transaction whose commit wait is cut off is awaited
again on another gateway (same transaction id), never resubmitted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ehr_common.certificates import mint_client_identity
from ehr_common.errors import ConfigError, EhrAbeError, Unavailable
from storage_service.fabric_gateway.client import GatewayConnection, Timeouts
from storage_service.fabric_gateway.errors import GatewayTimeout, GatewayUnavailable, MvccConflict
from storage_service.fabric_gateway.protos import common_pb2
from storage_service.fabric_gateway.signing import SigningIdentity
from storage_service.ledger.base import Caller, TxResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OrgGateway:
    org: str  # the organisation's name in the connection file
    msp_id: str
    endpoint: str  # host:port of a peer's Gateway service
    tls_ca: Path
    server_name: str | None = None
    client_cert: Path | None = None  # a client identity of this org (CLI tools, bench)
    client_key: Path | None = None
    ca_cert: Path | None = None  # development only: the org's CA, to mint identities
    ca_key: Path | None = None


@dataclass(frozen=True)
class FabricConnection:
    channel: str
    chaincode: str
    orgs: tuple[OrgGateway, ...]
    state_dir: Path

    @classmethod
    def load(cls, path: Path) -> FabricConnection:
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read the Fabric connection file {path}: {exc}") from None
        return parse_connection(doc, path.parent)


def _pick(d: Any, *names: str) -> Any:
    if not isinstance(d, Mapping):
        return None
    for n in names:
        if n in d and d[n] not in (None, ""):
            return d[n]
    return None


def parse_connection(doc: Mapping[str, Any], base: Path) -> FabricConnection:
    """The connection file written by `ehr-abe infra up fabric` (tolerant of key spellings)."""

    def path_of(value: Any) -> Path | None:
        if value is None:
            return None
        p = Path(str(value))
        return p if p.is_absolute() else base / p

    raw_orgs = _pick(doc, "organizations", "orgs")
    items: list[tuple[str, Mapping[str, Any]]]
    if isinstance(raw_orgs, Mapping):
        items = [(str(k), v) for k, v in raw_orgs.items()]
    elif isinstance(raw_orgs, list):
        items = [
            (str(_pick(o, "name", "org", "msp_id", "mspid") or i), o)
            for i, o in enumerate(raw_orgs)
        ]
    else:
        raise ConfigError("the Fabric connection file lists no organizations")
    orgs = []
    for name, o in items:
        gw = o.get("gateway") if isinstance(o.get("gateway"), Mapping) else o
        peer = o.get("peer") if isinstance(o.get("peer"), Mapping) else {}
        client = _pick(o, "client", "user", "admin")
        client = client if isinstance(client, Mapping) else {}
        endpoint = _pick(gw, "endpoint", "gateway_endpoint", "peer_endpoint", "address") or _pick(
            peer, "endpoint", "address"
        )
        tls_ca = _pick(gw, "tls_ca", "tls_ca_path", "tls_ca_cert", "tlsCACert", "ca") or _pick(
            peer, "tls_ca", "tls_ca_path"
        )
        msp_id = _pick(o, "msp_id", "mspid", "mspId") or name
        if not endpoint or not tls_ca:
            raise ConfigError(f"organization {name}: the connection file lacks endpoint or tls_ca")
        orgs.append(
            OrgGateway(
                org=str(name),
                msp_id=str(msp_id),
                endpoint=str(endpoint),
                tls_ca=path_of(tls_ca) or Path(),
                server_name=_pick(gw, "server_name", "ssl_target_name_override", "host_name"),
                client_cert=path_of(_pick(client, "cert", "cert_path", "certificate")),
                client_key=path_of(_pick(client, "key", "key_path", "private_key")),
                ca_cert=path_of(_pick(o.get("ca"), "cert", "cert_path", "certificate")),
                ca_key=path_of(_pick(o.get("ca"), "key", "key_path", "private_key")),
            )
        )
    return FabricConnection(
        channel=str(_pick(doc, "channel", "channel_id", "channel_name") or "ehr"),
        chaincode=str(_pick(doc, "chaincode", "chaincode_name", "chaincode_id") or "ehr"),
        orgs=tuple(orgs),
        state_dir=path_of(_pick(doc, "state_dir", "dir")) or base,
    )


# -- identities --------------------------------------------------------------------------
class IdentitySource(Protocol):
    def identity_for(self, caller: Caller) -> SigningIdentity:
        """A signing identity whose certificate names this caller's subject and roles."""
        ...


class StaticIdentities:
    """Identities supplied by the deployment, looked up by (MSP id, subject)."""

    def __init__(self, identities: Mapping[tuple[str, str], SigningIdentity]) -> None:
        self._ids = dict(identities)

    def identity_for(self, caller: Caller) -> SigningIdentity:
        ident = self._ids.get((caller.msp_id, caller.subject))
        if ident is None:
            raise ConfigError(
                f"no Fabric identity is configured for {caller.subject} ({caller.msp_id})"
            )
        return ident


Issuer = Callable[[Path, str, str, list[str]], Any]


class _CachedIdentities:
    """Memory and on-disk cache of minted identities: one certificate per
    (MSP, subject, roles), kept across restarts under `cache_dir` (key files 0600)."""

    def __init__(self, cache_dir: Path, orgs: tuple[OrgGateway, ...]) -> None:
        self._dir = cache_dir
        self._ca_of = {o.msp_id: o.ca_cert for o in orgs}
        self._cache: dict[tuple[str, str, frozenset[str]], SigningIdentity] = {}
        self._lock = threading.Lock()

    def _ca_fingerprint(self, msp_id: str) -> str:
        """Part of the cache key, so that a re-created network (new CA) gets new identities."""
        path = self._ca_of.get(msp_id)
        try:
            return hashlib.sha256(path.read_bytes()).hexdigest() if path else ""
        except OSError:
            return ""

    def _mint(self, caller: Caller, roles: list[str]) -> tuple[bytes, bytes]:
        raise NotImplementedError

    def identity_for(self, caller: Caller) -> SigningIdentity:
        roles = sorted(caller.roles)
        key = (caller.msp_id, caller.subject, frozenset(roles))
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                return cached
            parts = [self._ca_fingerprint(caller.msp_id), caller.subject, *roles]
            tag = hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:16]
            where = self._dir / caller.msp_id / tag
            cert_path, key_path = where / "cert.pem", where / "key.pem"
            if not (cert_path.exists() and key_path.exists()):
                cert, pkey = self._mint(caller, roles)
                where.mkdir(parents=True, exist_ok=True)
                key_path.touch(mode=0o600)
                key_path.write_bytes(pkey)
                cert_path.write_bytes(cert)
            ident = SigningIdentity.from_files(caller.msp_id, cert_path, key_path)
            self._cache[key] = ident
            return ident


class DevIdentityIssuer(_CachedIdentities):
    """Development: mint identities on demand with an injected issuer
    (`issue(state_dir, org, subject, roles)`, e.g. the local network's), cached
    under the state dir. Used when the connection file names no CA keys."""

    def __init__(
        self,
        state_dir: Path,
        orgs: tuple[OrgGateway, ...],
        issue: Issuer | None = None,
        *,
        cache_dir: Path | None = None,
    ) -> None:
        super().__init__(cache_dir or state_dir / "identities", orgs)
        self._state_dir = state_dir
        self._org_of = {o.msp_id: o.org for o in orgs}
        self._issue = issue

    def _issuer(self) -> Issuer:
        if self._issue is None:
            raise ConfigError(
                "the Fabric connection file names no CA to mint identities with; "
                "configure the ledger's identities (StaticIdentities)"
            )
        return self._issue

    def _mint(self, caller: Caller, roles: list[str]) -> tuple[bytes, bytes]:
        org = self._org_of.get(caller.msp_id)
        if org is None:
            raise ConfigError(f"{caller.msp_id} is not an organization of this Fabric network")
        issued = self._issuer()(self._state_dir, org, caller.subject, roles)
        return _as_pems(issued)


class CaKeyIssuer(_CachedIdentities):
    """Development: mint identities with each organisation's CA key (named in the
    connection file under "ca"), cached under `cache_dir`."""

    def __init__(self, cache_dir: Path, orgs: tuple[OrgGateway, ...]) -> None:
        super().__init__(cache_dir, orgs)
        self._orgs = {o.msp_id: o for o in orgs}

    def _mint(self, caller: Caller, roles: list[str]) -> tuple[bytes, bytes]:
        org = self._orgs.get(caller.msp_id)
        if org is None or org.ca_cert is None or org.ca_key is None:
            raise ConfigError(f"no development CA for {caller.msp_id} in the connection file")
        return mint_client_identity(
            org.ca_cert.read_bytes(), org.ca_key.read_bytes(), caller.subject, roles
        )


def default_identity_source(connection: FabricConnection) -> IdentitySource:
    """The network's own issuer when installed, else the CAs named in the file."""
    if all(o.ca_cert and o.ca_key for o in connection.orgs):
        return CaKeyIssuer(connection.state_dir / "identities", connection.orgs)
    return DevIdentityIssuer(connection.state_dir, connection.orgs)


def _as_pems(issued: Any) -> tuple[bytes, bytes]:
    """What an issuer returns: (cert, key) as PEM bytes or paths, or an object with
    cert/key attributes."""
    if isinstance(issued, tuple) and len(issued) == 2:
        cert, key = issued
    else:
        cert = _pick_attr(issued, "cert_pem", "cert", "certificate", "cert_path")
        key = _pick_attr(issued, "key_pem", "key", "private_key", "key_path")
    if cert is None or key is None:
        raise ConfigError("the identity issuer returned no certificate or key")
    return _read_pem(cert), _read_pem(key)


def _read_pem(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    try:
        return Path(str(value)).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read an issued identity file: {exc.strerror}") from None


def _pick_attr(obj: Any, *names: str) -> Any:
    for n in names:
        v = obj.get(n) if isinstance(obj, Mapping) else getattr(obj, n, None)
        if v is not None:
            return v
    return None


# -- the ledger ----------------------------------------------------------------------------
_FAILOVER = (GatewayUnavailable, GatewayTimeout)
MVCC_RETRIES = 3
#: how long a committed transaction waits for the other organisations' peers
SYNC_WAIT_S = 5.0


class FabricLedger:
    #: Anchors are write-once in the chaincode and no single host can rewrite them, so
    #: the storage service may keep the anchors it has read in memory.
    anchors_final = True

    def __init__(
        self,
        connection: FabricConnection,
        identities: IdentitySource | None = None,
        *,
        timeouts: Timeouts | None = None,
    ) -> None:
        if not connection.orgs:
            raise ConfigError("the Fabric connection names no organizations")
        self.connection = connection
        self.identities = identities or default_identity_source(connection)
        self._gateways: dict[str, GatewayConnection] = {}
        self._reader: SigningIdentity | None = None  # for lookups that have no caller
        for org in connection.orgs:
            try:
                ca = org.tls_ca.read_bytes()
            except OSError as exc:
                raise ConfigError(f"TLS CA of {org.org} ({org.tls_ca}): {exc.strerror}") from None
            self._gateways[org.org] = GatewayConnection(
                org.endpoint, ca, server_name=org.server_name, timeouts=timeouts or Timeouts()
            )

    @classmethod
    def from_connection_file(
        cls, path: str | Path, identities: IdentitySource | None = None
    ) -> FabricLedger:
        return cls(FabricConnection.load(Path(path)), identities)

    def _order(self, msp_id: str) -> list[tuple[OrgGateway, GatewayConnection]]:
        """The caller's own organisation first, then the others."""
        orgs = sorted(self.connection.orgs, key=lambda o: o.msp_id != msp_id)
        return [(o, self._gateways[o.org]) for o in orgs]

    def submit(self, caller: Caller, function: str, args: list[str]) -> TxResult:
        """Like the embedded ledger, a transaction that lost an MVCC race is run again,
        so the contract decides on the state that won (e.g. AlreadyExists)."""
        for attempt in range(MVCC_RETRIES + 1):
            try:
                return self._submit_once(caller, function, args)
            except MvccConflict:
                if attempt == MVCC_RETRIES:
                    raise
        raise AssertionError("unreachable")

    def _submit_once(self, caller: Caller, function: str, args: list[str]) -> TxResult:
        ident = self.identities.identity_for(caller)
        self._reader = ident
        c = self.connection
        order = self._order(caller.msp_id)
        last: Exception | None = None
        for i, (_, gw) in enumerate(order):
            try:
                tx_id, payload = gw.endorse_and_submit(
                    ident, c.channel, c.chaincode, function, args
                )
            except _FAILOVER as exc:
                last = exc
                continue
            # Ordered: wait for the commit here, else on the other gateways; never resubmit.
            waiters = order[i:] + order[:i]
            for j, (_, waiter) in enumerate(waiters):
                try:
                    block = waiter.wait_for_commit(ident, c.channel, tx_id)
                except _FAILOVER as exc:
                    last = exc
                    continue
                self._sync_others(ident, tx_id, [w for _, w in waiters[j + 1 :]])
                return TxResult(tx_id=tx_id, block=block, payload=payload)
            raise Unavailable(
                f"transaction {tx_id} ({function}) was sent for ordering but no gateway "
                f"confirmed its commit: {last}"
            )
        raise Unavailable(f"no Fabric gateway could take {function}: {last}")

    def _sync_others(
        self, ident: SigningIdentity, tx_id: str, others: list[GatewayConnection]
    ) -> None:
        """Read your writes: a later evaluate may go to another organisation's peer
        (its caller's), which must not answer from before this commit (a revoked
        consent still granting). Wait, briefly and best-effort, until the other
        reachable peers hold the block too; an unreachable one is skipped (reads
        fail over past it) rather than failing a committed transaction."""
        for gw in others:
            try:
                gw.wait_for_commit(ident, self.connection.channel, tx_id, timeout_s=SYNC_WAIT_S)
            except EhrAbeError as exc:
                log.warning("peer %s did not confirm %s in time: %s", gw.endpoint, tx_id, exc)

    def evaluate(self, caller: Caller, function: str, args: list[str]) -> bytes:
        ident = self.identities.identity_for(caller)
        self._reader = ident
        return self._evaluate(ident, caller.msp_id, self.connection.chaincode, function, args)

    def _evaluate(
        self, ident: SigningIdentity, msp_id: str, chaincode: str, function: str, args: list[str]
    ) -> bytes:
        last: Exception | None = None
        for _, gw in self._order(msp_id):
            try:
                return gw.evaluate(ident, self.connection.channel, chaincode, function, args)
            except _FAILOVER as exc:
                last = exc
        raise Unavailable(f"no Fabric gateway could evaluate {function}: {last}")

    def evaluate_at(self, org: str, caller: Caller, function: str, args: list[str]) -> bytes:
        """Evaluate on one organisation's gateway only (no failover): to check that
        every organisation's peers hold the same state."""
        gw = self._gateways.get(org)
        if gw is None:
            raise ConfigError(f"no organization {org} in the Fabric connection")
        ident = self.identities.identity_for(caller)
        c = self.connection
        return gw.evaluate(ident, c.channel, c.chaincode, function, args)

    def block_of(self, tx_id: str) -> int:
        """The block holding a committed transaction (system chaincode qscc)."""
        ident = self._reader
        if ident is None:
            org = self.connection.orgs[0]
            ident = self.identities.identity_for(Caller("ledger-reader", org.msp_id))
        raw = self._evaluate(
            ident, ident.msp_id, "qscc", "GetBlockByTxID", [self.connection.channel, tx_id]
        )
        return int(common_pb2.Block.FromString(raw).header.number)

    def close(self) -> None:
        for gw in self._gateways.values():
            gw.close()


__all__ = [
    "CaKeyIssuer",
    "DevIdentityIssuer",
    "FabricConnection",
    "FabricLedger",
    "IdentitySource",
    "OrgGateway",
    "StaticIdentities",
    "default_identity_source",
]
