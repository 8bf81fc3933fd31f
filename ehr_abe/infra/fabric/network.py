"""The local two-hospital Fabric network: start, stop, status (the imperative shell).

`up` brings up, on loopback, one Raft orderer (OrdererMSP), one peer for each of
two hospitals (Hosp1MSP, Hosp2MSP), TLS everywhere, and the `ehr` chaincode served
as a service by one `python -m chaincode` process per hospital, with mutual TLS
between each peer and its org's chaincode server. It is idempotent: crypto
material, the channel and the committed chaincode are reused, and only what is not
running is started. It returns once a real transaction (a read-only invoke of the
chaincode's ListAnchors, ordered and committed: one block) has gone through,
so a caller's first write after a restart does not meet "no Raft leader".

The chaincode's endorsement policy is `OR('Hosp1MSP.peer','Hosp2MSP.peer')`
(`FabricSettings.endorsement_policy`): with two organisations a majority is both,
and anchoring must keep working while one hospital's peer is down.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ehr_abe.infra import process
from ehr_abe.infra.component import ComponentStatus, InfraError, State
from ehr_abe.infra.fabric import configs
from ehr_abe.infra.fabric.identities import mint_tls_server_cert
from ehr_abe.infra.fabric.layout import Layout, layout_for, single_file
from ehr_abe.infra.fabric.settings import SUPPORTED_RELEASE, FabricSettings, OrgSettings

BINARIES = ("peer", "orderer", "configtxgen", "osnadmin", "cryptogen")
BUILDER_STEPS = ("detect", "build", "release")
#: environment variables of a caller that would silently change a Fabric process
_FABRIC_ENV = re.compile(r"^(CORE_|ORDERER_|FABRIC_|CHAINCODE_|EHR_CC_)")

#: the first transaction after a start: a read-only call of the ehr contract,
#: submitted (not just evaluated) so it is ordered and committed (one block)
PROBE_CALL = {"function": "ListAnchors", "Args": ["", "", "1", ""]}

INSTALL_HINT = (
    "install the official hyperledger-fabric-linux-amd64-{release} release archive "
    "(bin/, config/, builders/ccaas/) into {home}, or set FABRIC_HOME to where it is"
)


def fabric_installed(settings: FabricSettings) -> tuple[bool, str]:
    """(True, "Fabric 3.1.5 at ...") or (False, what is missing and what to install)."""
    home = settings.fabric_home
    hint = INSTALL_HINT.format(release=SUPPORTED_RELEASE, home=home)
    missing = [f"bin/{b}" for b in BINARIES if not os.access(settings.bin / b, os.X_OK)]
    missing += [
        f"builders/ccaas/bin/{s}"
        for s in BUILDER_STEPS
        if not os.access(settings.ccaas_builder / "bin" / s, os.X_OK)
    ]
    missing += [
        f"config/{c}" for c in ("core.yaml", "orderer.yaml") if not (home / "config" / c).is_file()
    ]
    if missing:
        what = (
            "nothing of it is there"
            if not settings.bin.is_dir()
            else f"{', '.join(missing)} missing"
        )
        return False, f"Fabric {SUPPORTED_RELEASE} not found at {home} ({what}): {hint}"
    try:
        out = subprocess.run(
            [str(settings.bin / "peer"), "version"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        ).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"`{settings.bin / 'peer'} version` failed ({exc}): {hint}"
    match = re.search(r"Version:\s*(\S+)", out)
    version = match.group(1) if match else "unknown"
    if version != SUPPORTED_RELEASE:
        return (
            False,
            f"{home} holds Fabric {version}, this project supports {SUPPORTED_RELEASE}: {hint}",
        )
    return True, f"Fabric {SUPPORTED_RELEASE} at {home}"


@dataclass(frozen=True)
class _Proc:
    """One process started by `up`: its name (as `status` reports it), pid file, log."""

    name: str
    pid_file: Path
    log: Path
    marker: str  # must appear in /proc/<pid>/cmdline before we signal it
    endpoint: str


class FabricNetwork:
    """`Component` for the Fabric network; state under `<state_dir>/fabric/`:
    `crypto/` (cryptogen, NodeOUs), `channel/genesis.block`, `orderer/` and `peers/`
    (ledgers), `chaincode/` (package, chaincode servers' TLS), `config/core.yaml`,
    `logs/<process>.log`, `run/<process>.pid`, and `connection.json` for clients.

    One Raft orderer rather than SmartBFT: BFT needs four orderers to survive one
    fault, which on a two-core machine quadruples ordering work and buys nothing
    when every node shares one host. Each `up` appends one probe block per org.
    """

    name = "fabric"

    def __init__(
        self,
        settings: FabricSettings,
        state_dir: Path,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.layout: Layout = layout_for(settings, state_dir)
        self._progress = progress or (lambda _msg: None)
        self._package = configs.ccaas_package(self._label)
        self.package_id = configs.package_id(self._label, self._package)

    # -- the processes ---------------------------------------------------------------
    @property
    def _label(self) -> str:
        return f"{self.settings.chaincode}_{self.settings.chaincode_version}"

    def _proc(self, name: str, marker: str, endpoint: str) -> _Proc:
        return _Proc(
            name,
            self.layout.run / f"{name}.pid",
            self.layout.logs / f"{name}.log",
            marker,
            endpoint,
        )

    @property
    def _orderer(self) -> _Proc:
        return self._proc(
            "orderer", str(self.settings.bin / "orderer"), self.settings.orderer_endpoint
        )

    def _peer(self, org: OrgSettings) -> _Proc:
        return self._proc(
            f"peer-{org.name}",
            str(self.settings.bin / "peer"),
            f"{self.settings.host}:{org.peer_port}",
        )

    def _cc_server(self, org: OrgSettings) -> _Proc:
        return self._proc(
            f"chaincode-{org.name}", "chaincode", f"{self.settings.host}:{org.cc_server_port}"
        )

    def _all(self) -> list[_Proc]:
        return [
            self._orderer,
            *(self._peer(o) for o in self.settings.orgs),
            *(self._cc_server(o) for o in self.settings.orgs),
        ]

    # -- Component -------------------------------------------------------------------
    def up(self) -> None:
        ok, why = fabric_installed(self.settings)
        if not ok:
            raise InfraError(self.name, why)
        if not self.layout.root.exists():
            # holds the orgs' CA keys: private to this user
            self.layout.root.mkdir(parents=True, mode=0o700)
        for d in (self.layout.logs, self.layout.run, self.layout.config):
            d.mkdir(parents=True, exist_ok=True)
        self._ensure_crypto()
        self._write_peer_config()
        self._ensure_genesis()
        self._start_orderer()
        self._ensure_orderer_channel()
        for org in self.settings.orgs:
            self._start_peer(org)
        for org in self.settings.orgs:
            self._ensure_peer_joined(org)
            self._ensure_installed(org)
        for org in self.settings.orgs:
            self._start_cc_server(org)
        self._ensure_committed()
        self._write_connection_file()
        self.probe_write()

    def down(self) -> None:
        # reverse order: chaincode servers, peers, orderer
        for p in reversed(self._all()):
            if process.stop(p.pid_file, p.marker, self.settings.stop_timeout_s):
                self._progress(f"stopped {p.name}")

    def status(self) -> list[ComponentStatus]:
        out: list[ComponentStatus] = []
        health: dict[str, Callable[[], str | None]] = {
            self._orderer.name: self._orderer_health,
            **{self._peer(o).name: self._peer_health(o) for o in self.settings.orgs},
            **{
                self._cc_server(o).name: self._tcp_health(o.cc_server_port)
                for o in self.settings.orgs
            },
        }
        for p in self._all():
            pid = process.running(p.pid_file, p.marker)
            name = f"fabric-{p.name}"
            if pid is None:
                out.append(ComponentStatus(name, "stopped", endpoint=p.endpoint, log=p.log))
                continue
            problem = health[p.name]()
            state: State = "running" if problem is None else "unhealthy"
            out.append(ComponentStatus(name, state, pid, p.endpoint, p.log, problem or ""))
        return out

    def ledger_height(self, org: str | None = None) -> int:
        """The channel's block height as an org's peer (default: the first) sees it."""
        o = self.settings.org(org) if org else self.settings.orgs[0]
        out = self._run(
            f"peer channel getinfo ({o.name})",
            [self._peer_cli(), "channel", "getinfo", "-c", self.settings.channel],
            self._admin_env(o),
        )
        match = re.search(r"Blockchain info: (\{.*\})", out)
        if match is None:
            raise InfraError(
                f"fabric-peer-{o.name}", f"unexpected `peer channel getinfo` output: {out[-200:]!r}"
            )
        return int(json.loads(match.group(1))["height"])

    # -- crypto and configuration ----------------------------------------------------
    def _ensure_crypto(self) -> None:
        if not self.layout.crypto.is_dir():
            self._progress("generating crypto material (cryptogen)")
            spec = self.layout.root / "crypto-config.yaml"
            spec.write_text(json.dumps(configs.cryptogen_config(self.settings), indent=2))
            staging = self.layout.root / "crypto.partial"
            shutil.rmtree(staging, ignore_errors=True)
            self._run(
                "cryptogen",
                [
                    str(self.settings.bin / "cryptogen"),
                    "generate",
                    f"--config={spec}",
                    f"--output={staging}",
                ],
            )
            staging.rename(self.layout.crypto)  # all or nothing: a half-made tree is never reused
        for org in self.settings.orgs:
            self._ensure_cc_tls(org)

    def _ensure_cc_tls(self, org: OrgSettings) -> None:
        """The chaincode server's certificate, from the org's TLS CA; the peer dials it
        with its own TLS certificate (cryptogen gives it clientAuth), verified by the
        same CA. Another org's peer is refused: its certificate has another CA."""
        tls = self.layout.cc_tls(org)
        if (tls / "server.crt").is_file() and (tls / "server.key").is_file():
            return
        tls.mkdir(parents=True, exist_ok=True)
        ca_cert = self.layout.org_tls_ca(org).read_bytes()
        cert, key = mint_tls_server_cert(
            ca_cert,
            self.layout.org_tls_ca_key(org).read_bytes(),
            f"chaincode.{self.layout.org_domain(org)}",
            configs.TLS_SANS,
        )
        key_file = tls / "server.key"
        key_file.touch(mode=0o600)
        key_file.write_bytes(key)
        (tls / "server.crt").write_bytes(cert)
        (tls / "client-ca.crt").write_bytes(ca_cert)

    def _write_peer_config(self) -> None:
        stock = (self.settings.fabric_home / "config" / "core.yaml").read_text()
        try:
            text = configs.peer_core_yaml(stock, self.settings)
        except ValueError as exc:
            raise InfraError(self.name, f"{exc}: reinstall {self.settings.fabric_home}") from None
        (self.layout.config / "core.yaml").write_text(text)

    def _ensure_genesis(self) -> None:
        block = self.layout.genesis_block
        baked = configs.channel_fingerprint(self.settings)
        recorded = block.with_name("settings.json")
        if block.is_file():
            before = json.loads(recorded.read_text()) if recorded.is_file() else baked
            changed = sorted(
                k for k in baked.keys() | before.keys() if baked.get(k) != before.get(k)
            )
            if changed:
                raise InfraError(
                    self.name,
                    f"the channel in {self.layout.root} was created with other settings "
                    f"({', '.join(changed)}); they are fixed in its genesis block: use the "
                    "old values, another state dir, or remove that directory to start afresh",
                )
            return
        self._progress(f"creating the genesis block of channel {self.settings.channel}")
        (self.layout.config / "configtx.yaml").write_text(
            json.dumps(configs.configtx(self.settings, self.layout), indent=2)
        )
        block.parent.mkdir(parents=True, exist_ok=True)
        partial = block.with_suffix(".partial")
        self._run(
            "configtxgen",
            [
                str(self.settings.bin / "configtxgen"),
                "-profile",
                configs.PROFILE,
                "-channelID",
                self.settings.channel,
                "-outputBlock",
                str(partial),
                "-configPath",
                str(self.layout.config),
            ],
        )
        recorded.write_text(json.dumps(baked, indent=2))
        partial.rename(block)

    # -- environments ----------------------------------------------------------------
    def _base_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not _FABRIC_ENV.match(k)}
        env["FABRIC_LOGGING_SPEC"] = self.settings.log_spec
        return env

    def _orderer_env(self) -> dict[str, str]:
        s, lay = self.settings, self.layout
        tls = lay.orderer_node / "tls"
        ca = str(lay.orderer_tls_ca)
        return {
            **self._base_env(),
            "FABRIC_CFG_PATH": str(s.fabric_home / "config"),
            "ORDERER_GENERAL_LISTENADDRESS": s.host,
            "ORDERER_GENERAL_LISTENPORT": str(s.orderer_port),
            "ORDERER_GENERAL_LOCALMSPID": "OrdererMSP",
            "ORDERER_GENERAL_LOCALMSPDIR": str(lay.orderer_node / "msp"),
            "ORDERER_GENERAL_TLS_ENABLED": "true",
            "ORDERER_GENERAL_TLS_PRIVATEKEY": str(tls / "server.key"),
            "ORDERER_GENERAL_TLS_CERTIFICATE": str(tls / "server.crt"),
            "ORDERER_GENERAL_TLS_ROOTCAS": f"[{ca}]",
            "ORDERER_GENERAL_CLUSTER_CLIENTCERTIFICATE": str(tls / "server.crt"),
            "ORDERER_GENERAL_CLUSTER_CLIENTPRIVATEKEY": str(tls / "server.key"),
            "ORDERER_GENERAL_CLUSTER_ROOTCAS": f"[{ca}]",
            "ORDERER_GENERAL_BOOTSTRAPMETHOD": "none",
            "ORDERER_CHANNELPARTICIPATION_ENABLED": "true",
            "ORDERER_ADMIN_LISTENADDRESS": s.orderer_admin_endpoint,
            "ORDERER_ADMIN_TLS_ENABLED": "true",
            "ORDERER_ADMIN_TLS_PRIVATEKEY": str(tls / "server.key"),
            "ORDERER_ADMIN_TLS_CERTIFICATE": str(tls / "server.crt"),
            "ORDERER_ADMIN_TLS_ROOTCAS": f"[{ca}]",
            "ORDERER_ADMIN_TLS_CLIENTAUTHREQUIRED": "true",
            "ORDERER_ADMIN_TLS_CLIENTROOTCAS": f"[{ca}]",
            "ORDERER_OPERATIONS_LISTENADDRESS": f"{s.host}:{s.orderer_operations_port}",
            "ORDERER_METRICS_PROVIDER": "disabled",
            "ORDERER_FILELEDGER_LOCATION": str(lay.orderer_data / "ledger"),
            "ORDERER_CONSENSUS_WALDIR": str(lay.orderer_data / "etcdraft" / "wal"),
            "ORDERER_CONSENSUS_SNAPDIR": str(lay.orderer_data / "etcdraft" / "snapshot"),
        }

    def _peer_env(self, org: OrgSettings) -> dict[str, str]:
        s, lay = self.settings, self.layout
        tls = lay.peer_node(org) / "tls"
        address = f"{s.host}:{org.peer_port}"
        cc_tls = lay.cc_tls(org)
        builder = configs.builder_config(
            address=f"{s.host}:{org.cc_server_port}",
            client_key=(tls / "server.key").read_text(),
            client_cert=(tls / "server.crt").read_text(),
            root_cert=(cc_tls / "client-ca.crt").read_text(),
        )
        return {
            **self._base_env(),
            "FABRIC_CFG_PATH": str(lay.config),
            "CORE_PEER_ID": lay.peer_id(org),
            "CORE_PEER_ADDRESS": address,
            "CORE_PEER_LISTENADDRESS": address,
            "CORE_PEER_CHAINCODEADDRESS": f"{s.host}:{org.chaincode_port}",
            "CORE_PEER_CHAINCODELISTENADDRESS": f"{s.host}:{org.chaincode_port}",
            "CORE_PEER_GOSSIP_BOOTSTRAP": address,
            "CORE_PEER_GOSSIP_EXTERNALENDPOINT": address,
            "CORE_PEER_LOCALMSPID": org.msp_id,
            "CORE_PEER_MSPCONFIGPATH": str(lay.peer_node(org) / "msp"),
            "CORE_PEER_TLS_ENABLED": "true",
            "CORE_PEER_TLS_CERT_FILE": str(tls / "server.crt"),
            "CORE_PEER_TLS_KEY_FILE": str(tls / "server.key"),
            "CORE_PEER_TLS_ROOTCERT_FILE": str(tls / "ca.crt"),
            "CORE_PEER_FILESYSTEMPATH": str(lay.peer_data(org)),
            "CORE_OPERATIONS_LISTENADDRESS": f"{s.host}:{org.operations_port}",
            "CORE_METRICS_PROVIDER": "disabled",
            "CHAINCODE_AS_A_SERVICE_BUILDER_CONFIG": builder,
        }

    def _admin_env(self, org: OrgSettings) -> dict[str, str]:
        """The peer CLI acting as the org's admin against its peer."""
        s, lay = self.settings, self.layout
        return {
            **self._base_env(),
            "FABRIC_CFG_PATH": str(lay.config),
            "CORE_PEER_ADDRESS": f"{s.host}:{org.peer_port}",
            "CORE_PEER_LOCALMSPID": org.msp_id,
            "CORE_PEER_MSPCONFIGPATH": str(lay.user_msp(org, "Admin")),
            "CORE_PEER_TLS_ENABLED": "true",
            "CORE_PEER_TLS_ROOTCERT_FILE": str(lay.org_tls_ca(org)),
            # the CLI's gRPC INFO lines would bury the one error line that matters
            "FABRIC_LOGGING_SPEC": "WARNING",
        }

    def _cc_env(self, org: OrgSettings) -> dict[str, str]:
        tls = self.layout.cc_tls(org)
        return {
            **self._base_env(),
            "CHAINCODE_ID": self.package_id,
            "CHAINCODE_SERVER_ADDRESS": f"{self.settings.host}:{org.cc_server_port}",
            "EHR_CC_TLS_KEY": str(tls / "server.key"),
            "EHR_CC_TLS_CERT": str(tls / "server.crt"),
            "EHR_CC_TLS_CLIENT_CA": str(tls / "client-ca.crt"),
        }

    # -- starting and waiting --------------------------------------------------------
    def _start(
        self, p: _Proc, args: Sequence[str], env: Mapping[str, str], cwd: Path | None = None
    ) -> bool:
        """Start p unless it runs; True if it was started now."""
        if process.running(p.pid_file, p.marker) is not None:
            return False
        port = int(p.endpoint.rsplit(":", 1)[1])
        if self._tcp_health(port)() is None:
            raise InfraError(
                f"fabric-{p.name}",
                f"port {port} is already in use by a process this network did not start "
                "(another Fabric network?): stop it, or move this one with the port_offset setting",
            )
        self._progress(f"starting {p.name}")
        process.start(args, pid_file=p.pid_file, log_file=p.log, env=env, cwd=cwd)
        return True

    def _wait(
        self, p: _Proc, probe: Callable[[], str | None], timeout_s: float | None = None
    ) -> None:
        """Until probe() returns None (healthy); fail naming p and its log."""
        deadline = time.monotonic() + (timeout_s or self.settings.start_timeout_s)
        problem: str | None = "not checked"
        while time.monotonic() < deadline:
            if process.running(p.pid_file, p.marker) is None:
                raise InfraError(f"fabric-{p.name}", "exited during start", p.log)
            problem = probe()
            if problem is None:
                return
            time.sleep(self.settings.poll_interval_s)
        raise InfraError(f"fabric-{p.name}", f"did not answer at {p.endpoint}: {problem}", p.log)

    def _http_health(self, port: int) -> str | None:
        try:
            with urllib.request.urlopen(
                f"http://{self.settings.host}:{port}/healthz", timeout=3
            ) as r:
                return None if r.status == 200 else f"/healthz answered {r.status}"
        except urllib.error.HTTPError as exc:
            return f"/healthz answered {exc.code}"
        except OSError as exc:
            return f"/healthz: {exc}"

    def _orderer_health(self) -> str | None:
        """/healthz, and both listeners: the admin one opens a little after /healthz."""
        s = self.settings
        return (
            self._http_health(s.orderer_operations_port)
            or self._tcp_health(s.orderer_port)()
            or self._tcp_health(s.orderer_admin_port)()
        )

    def _peer_health(self, org: OrgSettings) -> Callable[[], str | None]:
        return lambda: self._http_health(org.operations_port) or self._tcp_health(org.peer_port)()

    def _tcp_health(self, port: int) -> Callable[[], str | None]:
        def probe() -> str | None:
            try:
                with socket.create_connection((self.settings.host, port), timeout=2):
                    return None
            except OSError as exc:
                return str(exc)

        return probe

    def _start_orderer(self) -> None:
        p = self._orderer
        self._start(p, [str(self.settings.bin / "orderer")], self._orderer_env())
        self._wait(p, self._orderer_health)

    def _start_peer(self, org: OrgSettings) -> None:
        p = self._peer(org)
        self.layout.peer_data(org).mkdir(parents=True, exist_ok=True)
        self._start(p, [str(self.settings.bin / "peer"), "node", "start"], self._peer_env(org))
        self._wait(p, self._peer_health(org))

    def _start_cc_server(self, org: OrgSettings) -> None:
        p = self._cc_server(org)
        self._start(p, [sys.executable, "-m", "chaincode"], self._cc_env(org), cwd=_project_root())
        self._wait(p, self._tcp_health(org.cc_server_port))

    # -- channel and chaincode -------------------------------------------------------
    def _run(
        self,
        what: str,
        args: Sequence[str],
        env: Mapping[str, str] | None = None,
        ok: Sequence[str] = (),
    ) -> str:
        """Run a Fabric CLI; its output, or InfraError with the tail of its output.
        A failure whose output contains one of `ok` counts as success (already done)."""
        try:
            r = subprocess.run(
                list(args),
                capture_output=True,
                text=True,
                env=dict(env) if env is not None else self._base_env(),
                timeout=self.settings.cli_timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise InfraError(
                f"fabric {what}", f"timed out after {self.settings.cli_timeout_s:.0f} s"
            ) from None
        output = r.stdout + r.stderr
        if r.returncode != 0 and not any(marker in output for marker in ok):
            tail = "\n".join(output.strip().splitlines()[-6:])
            raise InfraError(f"fabric {what}", f"failed (exit {r.returncode}):\n{tail}")
        return r.stdout if r.returncode == 0 else output

    def _osnadmin(self, *args: str) -> list[str]:
        tls = self.layout.orderer_admin_tls
        return [
            str(self.settings.bin / "osnadmin"),
            "channel",
            *args,
            "-o",
            self.settings.orderer_admin_endpoint,
            "--ca-file",
            str(self.layout.orderer_tls_ca),
            "--client-cert",
            str(tls / "client.crt"),
            "--client-key",
            str(tls / "client.key"),
        ]

    def _ensure_orderer_channel(self) -> None:
        ch = self.settings.channel
        listed = self._run(
            "osnadmin channel list", self._osnadmin("list", f"--channelID={ch}"), ok=["Status: 404"]
        )
        if "Status: 200" in listed:
            return
        self._progress(f"orderer joins channel {ch}")
        self._run(
            "osnadmin channel join",
            self._osnadmin(
                "join", f"--channelID={ch}", f"--config-block={self.layout.genesis_block}"
            ),
            ok=["already exists"],
        )

    def _peer_cli(self) -> str:
        return str(self.settings.bin / "peer")

    def _ensure_peer_joined(self, org: OrgSettings) -> None:
        env = self._admin_env(org)
        listed = self._run(
            f"peer channel list ({org.name})", [self._peer_cli(), "channel", "list"], env
        )
        if re.search(rf"^{re.escape(self.settings.channel)}$", listed, re.MULTILINE):
            return
        self._progress(f"{org.name} peer joins channel {self.settings.channel}")
        self._run(
            f"peer channel join ({org.name})",
            [self._peer_cli(), "channel", "join", "-b", str(self.layout.genesis_block)],
            env,
            ok=["LedgerID already exists"],
        )

    def _ensure_installed(self, org: OrgSettings) -> None:
        env = self._admin_env(org)
        installed = self._run(
            f"chaincode queryinstalled ({org.name})",
            [self._peer_cli(), "lifecycle", "chaincode", "queryinstalled"],
            env,
        )
        if self.package_id in installed:
            return
        pkg = self.layout.chaincode_package
        pkg.parent.mkdir(parents=True, exist_ok=True)
        pkg.write_bytes(self._package)
        self._progress(f"installing chaincode {self._label} on {org.name}")
        self._run(
            f"chaincode install ({org.name})",
            [self._peer_cli(), "lifecycle", "chaincode", "install", str(pkg)],
            env,
            ok=["chaincode already successfully installed"],
        )

    def _orderer_tls_args(self) -> list[str]:
        return [
            "-o",
            self.settings.orderer_endpoint,
            "--tls",
            "--cafile",
            str(self.layout.orderer_tls_ca),
        ]

    def _definition_args(self) -> list[str]:
        s = self.settings
        return [
            "--channelID",
            s.channel,
            "--name",
            s.chaincode,
            "--version",
            s.chaincode_version,
            "--sequence",
            str(s.chaincode_sequence),
            "--signature-policy",
            s.endorsement_policy,
        ]

    def _committed_sequence(self) -> int:
        org = self.settings.orgs[0]
        out = self._run(
            "chaincode querycommitted",
            [
                self._peer_cli(),
                "lifecycle",
                "chaincode",
                "querycommitted",
                "--channelID",
                self.settings.channel,
                "--name",
                self.settings.chaincode,
                "--output",
                "json",
            ],
            self._admin_env(org),
            ok=["is not defined"],
        )
        try:
            return int(json.loads(out).get("sequence", 0))
        except ValueError:
            return 0

    def _ensure_committed(self) -> None:
        if self._committed_sequence() >= self.settings.chaincode_sequence:
            return
        for org in self.settings.orgs:
            self._progress(f"{org.name} approves chaincode {self._label}")
            self._retry_until_leader(
                lambda org=org: self._run(  # type: ignore[misc]
                    f"chaincode approveformyorg ({org.name})",
                    [
                        self._peer_cli(),
                        "lifecycle",
                        "chaincode",
                        "approveformyorg",
                        *self._orderer_tls_args(),
                        *self._definition_args(),
                        "--package-id",
                        self.package_id,
                    ],
                    self._admin_env(org),
                    ok=["unchanged content"],
                ),
            )
        peers: list[str] = []
        for org in self.settings.orgs:
            peers += [
                "--peerAddresses",
                f"{self.settings.host}:{org.peer_port}",
                "--tlsRootCertFiles",
                str(self.layout.org_tls_ca(org)),
            ]
        self._progress(f"committing chaincode {self._label}")
        self._retry_until_leader(
            lambda: self._run(
                "chaincode commit",
                [
                    self._peer_cli(),
                    "lifecycle",
                    "chaincode",
                    "commit",
                    *self._orderer_tls_args(),
                    *self._definition_args(),
                    *peers,
                ],
                self._admin_env(self.settings.orgs[0]),
            )
        )

    def _retry_until_leader(self, action: Callable[[], object]) -> None:
        """Run action, retrying while the orderer has no Raft leader yet (after a start)
        or while a concurrent transaction wins a read conflict."""
        deadline = time.monotonic() + self.settings.first_write_timeout_s
        waited = False
        while True:
            try:
                action()
                return
            except InfraError as exc:
                transient = any(
                    m in str(exc)
                    for m in (
                        "no Raft leader",
                        "SERVICE_UNAVAILABLE",
                        "not found leader",
                        # a concurrent transaction committed first: retry the probe
                        "PHANTOM_READ_CONFLICT",
                        "MVCC_READ_CONFLICT",
                    )
                )
                if not transient or time.monotonic() > deadline:
                    raise
                if not waited:
                    self._progress("waiting for the orderer's Raft leader")
                    waited = True
            time.sleep(self.settings.poll_interval_s)

    def probe_write(self, orgs: Sequence[str] | None = None) -> None:
        """One transaction through endorsement, ordering and commit, endorsed by each
        named org's peer alone (default: every org), so each org's chaincode server
        must answer its own peer and one org suffices under the endorsement policy."""
        s = self.settings
        for org in [s.org(o) for o in orgs] if orgs is not None else s.orgs:
            logs = f"{self._peer(org).log}, {self._cc_server(org).log}, {self._orderer.log}"
            self._retry_until_leader(
                lambda org=org, logs=logs: self._run(  # type: ignore[misc]
                    f"first transaction via {org.name} (logs: {logs})",
                    [
                        self._peer_cli(),
                        "chaincode",
                        "invoke",
                        *self._orderer_tls_args(),
                        "-C",
                        s.channel,
                        "-n",
                        s.chaincode,
                        "--peerAddresses",
                        f"{s.host}:{org.peer_port}",
                        "--tlsRootCertFiles",
                        str(self.layout.org_tls_ca(org)),
                        "--waitForEvent",
                        "-c",
                        json.dumps(PROBE_CALL),
                    ],
                    self._admin_env(org),
                )
            )

    def _write_connection_file(self) -> None:
        doc = configs.connection_document(self.settings, self.layout)
        tmp = self.layout.connection_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=2) + "\n")
        tmp.replace(self.layout.connection_file)


def _project_root() -> Path:
    """The directory holding the `chaincode` package (`python -m chaincode` runs there)."""
    import importlib.util

    spec = importlib.util.find_spec("chaincode")
    if spec is None or spec.origin is None:
        raise InfraError("fabric", "the `chaincode` package is not importable from this Python")
    return Path(spec.origin).parent.parent


__all__ = ["FabricNetwork", "fabric_installed", "single_file"]
