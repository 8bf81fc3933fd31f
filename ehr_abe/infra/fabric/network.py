"""A two-organisation Fabric 3.1.5 network on one machine, without Docker.

* one orderer organisation with ONE Raft orderer. SmartBFT needs four
  orderers to tolerate one fault; four more processes on two cores buy no
  real fault tolerance on a single machine, so Raft it is;
* two peer organisations (two medical centers, Hosp1MSP and Hosp2MSP), one
  peer each, anchor peers in the channel's genesis block so the Gateway
  discovers both;
* TLS everywhere (cryptogen material, SANs localhost and 127.0.0.1), mutual
  TLS on the orderer's admin endpoint and between peers and chaincode;
* the channel created through the channel participation API (osnadmin);
* the ehr chaincode (`python -m chaincode`) installed, approved by both orgs,
  committed, and served as chaincode-as-a-service: one server per org.

Everything lives under <state>/fabric; `up` is idempotent, `down` stops
exactly the processes recorded in pid files.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ehr_abe.infra import process
from ehr_abe.infra.component import ComponentStatus, InfraError
from ehr_abe.infra.fabric.settings import SUPPORTED_RELEASE, FabricSettings, OrgSettings

REPO_ROOT = Path(__file__).resolve().parents[3]
BINARIES = ("peer", "orderer", "configtxgen", "osnadmin", "cryptogen")


def fabric_installed(s: FabricSettings) -> tuple[bool, str]:
    """Whether release binaries of the supported version are where we look, and if not why."""
    home = s.fabric_home
    hint = (
        f"install the official hyperledger-fabric-linux-amd64-{SUPPORTED_RELEASE} release "
        f"(bin/, config/, builders/ccaas/) in {home} or point FABRIC_HOME at it"
    )
    missing = [b for b in BINARIES if not (home / "bin" / b).is_file()]
    missing += [f"builders/ccaas/bin/{b}" for b in ("detect", "build", "release") if not (home / "builders" / "ccaas" / "bin" / b).is_file()]
    missing += [f"config/{c}" for c in ("core.yaml", "orderer.yaml") if not (home / "config" / c).is_file()]
    if missing:
        return False, f"Fabric binaries not found ({', '.join(missing[:3])}{'…' if len(missing) > 3 else ''} missing): {hint}"
    try:
        out = subprocess.run([str(home / "bin" / "peer"), "version"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"cannot run {home}/bin/peer: {exc}"
    m = re.search(r"Version:\s*v?(\S+)", out)
    version = m.group(1) if m else "unknown"
    if version != SUPPORTED_RELEASE:
        return False, f"Fabric {version} found in {home}, but ehr-abe supports {SUPPORTED_RELEASE}: {hint}"
    return True, ""


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class FabricNetwork:
    name = "fabric"

    def __init__(self, settings: FabricSettings, state_dir: Path):
        self.s = settings
        self.dir = state_dir / "fabric"
        self.crypto = self.dir / "crypto"
        self.logs = self.dir / "logs"
        self.run = self.dir / "run"

    # -- paths ----------------------------------------------------------------------
    def _org_domain(self, org: OrgSettings) -> str:
        return f"{org.name}.{self.s.domain}"

    def _peer_dir(self, org: OrgSettings) -> Path:
        d = self._org_domain(org)
        return self.crypto / "peerOrganizations" / d / "peers" / f"peer0.{d}"

    def _org_dir(self, org: OrgSettings) -> Path:
        return self.crypto / "peerOrganizations" / self._org_domain(org)

    def _admin_msp(self, org: OrgSettings) -> Path:
        d = self._org_domain(org)
        return self._org_dir(org) / "users" / f"Admin@{d}" / "msp"

    @property
    def _orderer_dir(self) -> Path:
        return self.crypto / "ordererOrganizations" / self.s.domain / "orderers" / f"orderer.{self.s.domain}"

    @property
    def _orderer_tls_ca(self) -> Path:
        return self._orderer_dir / "tls" / "ca.crt"

    def _bin(self, name: str) -> str:
        return str(self.s.bin / name)

    # -- generation -------------------------------------------------------------------
    def _run(self, args: list[str], what: str, env: dict[str, str] | None = None, ok_codes: tuple[int, ...] = (0,)) -> str:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / "setup.log"
        proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)
        with open(log, "a") as f:
            f.write(f"$ {' '.join(args)}\n{proc.stdout}{proc.stderr}\n")
        if proc.returncode not in ok_codes:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise InfraError("fabric", f"{what} failed: {' | '.join(tail)}", log)
        return proc.stdout if proc.stdout.strip() else proc.stderr

    def _generate_crypto(self) -> None:
        if (self.crypto / "peerOrganizations").exists():
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        sans = "        SANS:\n          - localhost\n          - 127.0.0.1\n"
        orgs = "".join(
            f"  - Name: {o.msp_id}\n    Domain: {self._org_domain(o)}\n    EnableNodeOUs: true\n"
            f"    Template:\n      Count: 1\n{sans.replace('        ', '      ')}    Users:\n      Count: 1\n"
            for o in self.s.orgs
        )
        spec = (
            "OrdererOrgs:\n"
            f"  - Name: Orderer\n    Domain: {self.s.domain}\n    EnableNodeOUs: true\n"
            f"    Specs:\n      - Hostname: orderer\n{sans}"
            f"PeerOrgs:\n{orgs}"
        )
        (self.dir / "crypto-config.yaml").write_text(spec)
        self._run(
            [self._bin("cryptogen"), "generate", f"--config={self.dir / 'crypto-config.yaml'}", f"--output={self.crypto}"],
            "cryptogen",
        )

    def _configtx(self) -> str:
        s = self.s
        od = self.crypto / "ordererOrganizations" / s.domain
        tls = self._orderer_dir / "tls" / "server.crt"
        orgs = ""
        for o in s.orgs:
            m = o.msp_id
            orgs += f"""
  - &{m}
    Name: {m}
    ID: {m}
    MSPDir: {self._org_dir(o) / 'msp'}
    Policies:
      Readers: {{Type: Signature, Rule: "OR('{m}.admin', '{m}.peer', '{m}.client')"}}
      Writers: {{Type: Signature, Rule: "OR('{m}.admin', '{m}.client')"}}
      Admins: {{Type: Signature, Rule: "OR('{m}.admin')"}}
      Endorsement: {{Type: Signature, Rule: "OR('{m}.peer')"}}
    AnchorPeers:
      - Host: {s.host}
        Port: {o.peer_port}
"""
        app_orgs = "\n".join(f"        - *{o.msp_id}" for o in s.orgs)
        return f"""Organizations:
  - &OrdererOrg
    Name: OrdererOrg
    ID: OrdererMSP
    MSPDir: {od / 'msp'}
    Policies:
      Readers: {{Type: Signature, Rule: "OR('OrdererMSP.member')"}}
      Writers: {{Type: Signature, Rule: "OR('OrdererMSP.member')"}}
      Admins: {{Type: Signature, Rule: "OR('OrdererMSP.admin')"}}
    OrdererEndpoints:
      - {s.orderer_endpoint}
{orgs}
Capabilities:
  Channel: &ChannelCapabilities
    V3_0: true
  Orderer: &OrdererCapabilities
    V2_0: true
  Application: &ApplicationCapabilities
    V2_5: true

Application: &ApplicationDefaults
  Organizations:
  Policies:
    Readers: {{Type: ImplicitMeta, Rule: "ANY Readers"}}
    Writers: {{Type: ImplicitMeta, Rule: "ANY Writers"}}
    Admins: {{Type: ImplicitMeta, Rule: "MAJORITY Admins"}}
    LifecycleEndorsement: {{Type: ImplicitMeta, Rule: "MAJORITY Endorsement"}}
    Endorsement: {{Type: ImplicitMeta, Rule: "MAJORITY Endorsement"}}
  Capabilities:
    <<: *ApplicationCapabilities

Orderer: &OrdererDefaults
  OrdererType: etcdraft
  BatchTimeout: {s.batch_timeout}
  BatchSize:
    MaxMessageCount: {s.batch_max_messages}
    AbsoluteMaxBytes: 10 MB
    PreferredMaxBytes: 2 MB
  EtcdRaft:
    Consenters:
      - Host: {s.host}
        Port: {s.orderer_port}
        ClientTLSCert: {tls}
        ServerTLSCert: {tls}
    Options:
      TickInterval: {s.raft_tick}
      ElectionTick: {s.raft_election_tick}
      HeartbeatTick: 1
      MaxInflightBlocks: 5
      SnapshotIntervalSize: 16 MB
  Organizations:
  Policies:
    Readers: {{Type: ImplicitMeta, Rule: "ANY Readers"}}
    Writers: {{Type: ImplicitMeta, Rule: "ANY Writers"}}
    Admins: {{Type: ImplicitMeta, Rule: "MAJORITY Admins"}}
    BlockValidation: {{Type: ImplicitMeta, Rule: "ANY Writers"}}
  Capabilities:
    <<: *OrdererCapabilities

Channel: &ChannelDefaults
  Policies:
    Readers: {{Type: ImplicitMeta, Rule: "ANY Readers"}}
    Writers: {{Type: ImplicitMeta, Rule: "ANY Writers"}}
    Admins: {{Type: ImplicitMeta, Rule: "MAJORITY Admins"}}
  Capabilities:
    <<: *ChannelCapabilities

Profiles:
  EhrChannel:
    <<: *ChannelDefaults
    Orderer:
      <<: *OrdererDefaults
      Organizations:
        - *OrdererOrg
      Capabilities: *OrdererCapabilities
    Application:
      <<: *ApplicationDefaults
      Organizations:
{app_orgs}
      Capabilities: *ApplicationCapabilities
"""

    def _genesis_block(self) -> Path:
        block = self.dir / "channel" / f"{self.s.channel}.block"
        if block.exists():
            return block
        cfg_dir = self.dir / "channel"
        cfg_dir.mkdir(parents=True, exist_ok=True)
        (cfg_dir / "configtx.yaml").write_text(self._configtx())
        env = dict(os.environ, FABRIC_CFG_PATH=str(cfg_dir))
        self._run(
            [self._bin("configtxgen"), "-profile", "EhrChannel", "-outputBlock", str(block), "-channelID", self.s.channel],
            "configtxgen",
            env,
        )
        return block

    def _peer_config(self, org: OrgSettings) -> Path:
        """A core.yaml per peer: the stock one with the ccaas builder path and no Docker."""
        out = self.dir / "config" / org.name
        out.mkdir(parents=True, exist_ok=True)
        text = (self.s.fabric_home / "config" / "core.yaml").read_text()
        text = text.replace("path: /opt/hyperledger/ccaas_builder", f"path: {self.s.fabric_home / 'builders' / 'ccaas'}")
        text = re.sub(r"endpoint: unix:///var/run/docker.sock", 'endpoint: ""', text)
        (out / "core.yaml").write_text(text)
        return out

    # -- chaincode TLS ----------------------------------------------------------------
    def _cc_tls(self, org: OrgSettings) -> Path:
        """A server certificate for the org's chaincode server, from the org's TLS CA."""
        d = self.dir / "chaincode" / org.name
        if (d / "server.crt").exists():
            return d
        d.mkdir(parents=True, exist_ok=True)
        tlsca_dir = self._org_dir(org) / "tlsca"
        ca_cert = x509.load_pem_x509_certificate(next(tlsca_dir.glob("*-cert.pem")).read_bytes())
        ca_key = serialization.load_pem_private_key((tlsca_dir / "priv_sk").read_bytes(), password=None)
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"ehr-cc.{self._org_domain(org)}")]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=3650))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(__import__("ipaddress").ip_address(self.s.host))]), False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), False)
            .sign(ca_key, hashes.SHA256())
        )
        fd = os.open(d / "server.key", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        (d / "server.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        shutil.copy(next(tlsca_dir.glob("*-cert.pem")), d / "ca.crt")
        return d

    def _package(self) -> tuple[Path, str]:
        """The CCaaS package (its connection.json is a template filled per peer)."""
        pkg = self.dir / "chaincode" / f"{self.s.chaincode}.tar.gz"
        label = f"{self.s.chaincode}_{self.s.chaincode_version}"
        if not pkg.exists():
            pkg.parent.mkdir(parents=True, exist_ok=True)
            conn = {
                "address": "{{.address}}",
                "dial_timeout": "10s",
                "tls_required": True,
                "client_auth_required": True,
                "root_cert": "{{.root_cert}}",
                "client_key": "{{.client_key}}",
                "client_cert": "{{.client_cert}}",
            }

            def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                info.mtime = 0
                tar.addfile(info, io.BytesIO(data))

            code = io.BytesIO()
            with tarfile.open(fileobj=code, mode="w:gz") as t:
                add(t, "connection.json", json.dumps(conn, indent=2).encode())
            outer = io.BytesIO()
            with tarfile.open(fileobj=outer, mode="w:gz") as t:
                add(t, "metadata.json", json.dumps({"type": "ccaas", "label": label}).encode())
                add(t, "code.tar.gz", code.getvalue())
            pkg.write_bytes(outer.getvalue())
        out = self._run([self._bin("peer"), "lifecycle", "chaincode", "calculatepackageid", str(pkg)], "calculatepackageid", self._peer_env(self.s.orgs[0], admin=True))
        return pkg, out.strip().splitlines()[-1]

    # -- environments -------------------------------------------------------------------
    def _peer_env(self, org: OrgSettings, *, admin: bool) -> dict[str, str]:
        pd = self._peer_dir(org)
        env = dict(
            os.environ,
            FABRIC_CFG_PATH=str(self._peer_config(org)),
            CORE_PEER_LOCALMSPID=org.msp_id,
            CORE_PEER_ADDRESS=f"{self.s.host}:{org.peer_port}",
            CORE_PEER_TLS_ENABLED="true",
            CORE_PEER_TLS_ROOTCERT_FILE=str(pd / "tls" / "ca.crt"),
            FABRIC_LOGGING_SPEC="INFO",
        )
        if admin:
            env["CORE_PEER_MSPCONFIGPATH"] = str(self._admin_msp(org))
            return env
        cc = self._cc_tls(org)
        builder_cfg = {
            "address": f"{self.s.host}:{org.cc_server_port}",
            "root_cert": (cc / "ca.crt").read_text(),
            "client_cert": (pd / "tls" / "server.crt").read_text(),
            "client_key": (pd / "tls" / "server.key").read_text(),
        }
        data = self.dir / "peers" / org.name
        env.update(
            CORE_PEER_ID=f"peer0.{self._org_domain(org)}",
            CORE_PEER_LISTENADDRESS=f"{self.s.host}:{org.peer_port}",
            CORE_PEER_CHAINCODEADDRESS=f"{self.s.host}:{org.chaincode_port}",
            CORE_PEER_CHAINCODELISTENADDRESS=f"{self.s.host}:{org.chaincode_port}",
            CORE_PEER_GOSSIP_BOOTSTRAP=f"{self.s.host}:{org.peer_port}",
            CORE_PEER_GOSSIP_EXTERNALENDPOINT=f"{self.s.host}:{org.peer_port}",
            CORE_PEER_MSPCONFIGPATH=str(pd / "msp"),
            CORE_PEER_TLS_CERT_FILE=str(pd / "tls" / "server.crt"),
            CORE_PEER_TLS_KEY_FILE=str(pd / "tls" / "server.key"),
            CORE_PEER_FILESYSTEMPATH=str(data),
            CORE_LEDGER_SNAPSHOTS_ROOTDIR=str(data / "snapshots"),
            CORE_OPERATIONS_LISTENADDRESS=f"{self.s.host}:{org.operations_port}",
            CORE_METRICS_PROVIDER="disabled",
            CHAINCODE_AS_A_SERVICE_BUILDER_CONFIG=json.dumps(builder_cfg),
        )
        return env

    def _orderer_env(self) -> dict[str, str]:
        od = self._orderer_dir
        tls = od / "tls"
        data = self.dir / "orderer"
        return dict(
            os.environ,
            FABRIC_CFG_PATH=str(self.s.fabric_home / "config"),
            FABRIC_LOGGING_SPEC="INFO",
            ORDERER_GENERAL_LISTENADDRESS=self.s.host,
            ORDERER_GENERAL_LISTENPORT=str(self.s.orderer_port),
            ORDERER_GENERAL_LOCALMSPID="OrdererMSP",
            ORDERER_GENERAL_LOCALMSPDIR=str(od / "msp"),
            ORDERER_GENERAL_TLS_ENABLED="true",
            ORDERER_GENERAL_TLS_PRIVATEKEY=str(tls / "server.key"),
            ORDERER_GENERAL_TLS_CERTIFICATE=str(tls / "server.crt"),
            ORDERER_GENERAL_TLS_ROOTCAS=f"[{tls / 'ca.crt'}]",
            ORDERER_GENERAL_CLUSTER_CLIENTCERTIFICATE=str(tls / "server.crt"),
            ORDERER_GENERAL_CLUSTER_CLIENTPRIVATEKEY=str(tls / "server.key"),
            ORDERER_GENERAL_CLUSTER_ROOTCAS=f"[{tls / 'ca.crt'}]",
            ORDERER_GENERAL_BOOTSTRAPMETHOD="none",
            ORDERER_CHANNELPARTICIPATION_ENABLED="true",
            ORDERER_ADMIN_LISTENADDRESS=f"{self.s.host}:{self.s.orderer_admin_port}",
            ORDERER_ADMIN_TLS_ENABLED="true",
            ORDERER_ADMIN_TLS_CERTIFICATE=str(tls / "server.crt"),
            ORDERER_ADMIN_TLS_PRIVATEKEY=str(tls / "server.key"),
            ORDERER_ADMIN_TLS_ROOTCAS=f"[{tls / 'ca.crt'}]",
            ORDERER_ADMIN_TLS_CLIENTAUTHREQUIRED="true",
            ORDERER_ADMIN_TLS_CLIENTROOTCAS=f"[{tls / 'ca.crt'}]",
            ORDERER_FILELEDGER_LOCATION=str(data / "ledger"),
            ORDERER_CONSENSUS_WALDIR=str(data / "etcdraft" / "wal"),
            ORDERER_CONSENSUS_SNAPDIR=str(data / "etcdraft" / "snapshot"),
            ORDERER_OPERATIONS_LISTENADDRESS=f"{self.s.host}:{self.s.orderer_operations_port}",
            ORDERER_METRICS_PROVIDER="disabled",
        )

    # -- processes ------------------------------------------------------------------------
    def _components(self) -> list[tuple[str, Path, str]]:
        """(name, pid file, marker in its command line)."""
        out = [("orderer", self.run / "orderer.pid", self._bin("orderer"))]
        for o in self.s.orgs:
            out.append((f"peer0.{o.name}", self.run / f"peer-{o.name}.pid", self._bin("peer")))
            out.append((f"chaincode.{o.name}", self.run / f"cc-{o.name}.pid", "chaincode"))
        return out

    def _wait(self, what: str, check, log: Path, pid_file: Path, marker: str) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + self.s.start_timeout_s
        while not check():
            if process.running(pid_file, marker) is None:
                raise InfraError("fabric", f"{what} exited during start-up", log)
            if time.monotonic() > deadline:
                raise InfraError("fabric", f"{what} did not answer within {self.s.start_timeout_s:.0f} s", log)
            time.sleep(0.2)

    def _healthz(self, port: int) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.s.host}:{port}/healthz", timeout=2) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def _start_orderer(self) -> None:
        pid_file, log = self.run / "orderer.pid", self.logs / "orderer.log"
        if process.running(pid_file, self._bin("orderer")):
            return
        offset = log.stat().st_size if log.exists() else 0
        process.start([self._bin("orderer")], pid_file=pid_file, log_file=log, env=self._orderer_env())
        self._wait("the orderer", lambda: self._healthz(self.s.orderer_operations_port), log, pid_file, self._bin("orderer"))
        self._orderer_log_offset = offset

    def _osnadmin(self, *args: str, ok_codes: tuple[int, ...] = (0,)) -> str:
        tls = self._orderer_dir / "tls"
        return self._run(
            [self._bin("osnadmin"), "channel", *args, "-o", f"{self.s.host}:{self.s.orderer_admin_port}",
             "--ca-file", str(tls / "ca.crt"), "--client-cert", str(tls / "server.crt"), "--client-key", str(tls / "server.key")],
            f"osnadmin channel {args[0]}",
            ok_codes=ok_codes,
        )

    def _join_orderer(self, block: Path) -> None:
        listing = self._osnadmin("list")
        if f'"name": "{self.s.channel}"' in listing or f'"name":"{self.s.channel}"' in listing:
            return
        self._osnadmin("join", "--channelID", self.s.channel, "--config-block", str(block))

    def _wait_raft_leader(self) -> None:
        """A write after a (re)start succeeds only once Raft has a leader: wait for it."""
        log = self.logs / "orderer.log"
        offset = getattr(self, "_orderer_log_offset", None)
        if offset is None:
            return  # the orderer was already running
        deadline = time.monotonic() + self.s.start_timeout_s
        pattern = re.compile(r"Raft leader changed: \d+ -> [1-9]|became leader at term")
        while time.monotonic() < deadline:
            with open(log, errors="replace") as f:
                f.seek(offset)
                if pattern.search(f.read()):
                    return
            time.sleep(0.1)
        raise InfraError("fabric", "the orderer elected no Raft leader", log)

    def _start_peer(self, org: OrgSettings) -> None:
        pid_file, log = self.run / f"peer-{org.name}.pid", self.logs / f"peer-{org.name}.log"
        if not process.running(pid_file, self._bin("peer")):
            process.start([self._bin("peer"), "node", "start"], pid_file=pid_file, log_file=log, env=self._peer_env(org, admin=False))
        self._wait(f"peer0.{org.name}", lambda: self._healthz(org.operations_port) and _port_open(self.s.host, org.peer_port), log, pid_file, self._bin("peer"))

    def _join_peer(self, org: OrgSettings, block: Path) -> None:
        env = self._peer_env(org, admin=True)
        out = self._run([self._bin("peer"), "channel", "list"], f"peer0.{org.name} channel list", env)
        if re.search(rf"^{re.escape(self.s.channel)}$", out, re.M):
            return
        self._run([self._bin("peer"), "channel", "join", "-b", str(block)], f"peer0.{org.name} joins {self.s.channel}", env)

    def _orderer_flags(self) -> list[str]:
        return ["-o", self.s.orderer_endpoint, "--tls", "--cafile", str(self._orderer_tls_ca)]

    def _deploy_chaincode(self, pkg: Path, package_id: str) -> None:
        s = self.s
        for org in s.orgs:
            env = self._peer_env(org, admin=True)
            installed = self._run([self._bin("peer"), "lifecycle", "chaincode", "queryinstalled"], "queryinstalled", env)
            if package_id not in installed:
                self._run([self._bin("peer"), "lifecycle", "chaincode", "install", str(pkg)], f"install on peer0.{org.name}", env)
        committed = self._run(
            [self._bin("peer"), "lifecycle", "chaincode", "querycommitted", "-C", s.channel, "-n", s.chaincode],
            "querycommitted", self._peer_env(s.orgs[0], admin=True), ok_codes=(0, 1),
        )
        if f"Version: {s.chaincode_version}, Sequence: 1" in committed:
            return
        common = ["-C", s.channel, "-n", s.chaincode, "-v", s.chaincode_version, "--sequence", "1",
                  "--signature-policy", s.endorsement_policy]
        for org in s.orgs:
            env = self._peer_env(org, admin=True)
            ready = self._run(
                [self._bin("peer"), "lifecycle", "chaincode", "checkcommitreadiness", *common, "--output", "json"],
                "checkcommitreadiness", env,
            )
            if json.loads(ready)["approvals"].get(org.msp_id):
                continue
            self._run(
                [self._bin("peer"), "lifecycle", "chaincode", "approveformyorg", *common, "--package-id", package_id,
                 *self._orderer_flags(), "--waitForEvent"],
                f"approve for {org.msp_id}", env,
            )
        peers: list[str] = []
        for org in s.orgs:
            peers += ["--peerAddresses", f"{s.host}:{org.peer_port}", "--tlsRootCertFiles", str(self._peer_dir(org) / "tls" / "ca.crt")]
        self._run(
            [self._bin("peer"), "lifecycle", "chaincode", "commit", *common, *self._orderer_flags(), *peers],
            "chaincode commit", self._peer_env(s.orgs[0], admin=True),
        )

    def _start_chaincode(self, org: OrgSettings, package_id: str) -> None:
        pid_file, log = self.run / f"cc-{org.name}.pid", self.logs / f"chaincode-{org.name}.log"
        if not process.running(pid_file, "chaincode"):
            cc = self._cc_tls(org)
            env = dict(
                os.environ,
                CHAINCODE_ID=package_id,
                CHAINCODE_SERVER_ADDRESS=f"{self.s.host}:{org.cc_server_port}",
                EHR_CC_TLS_KEY=str(cc / "server.key"),
                EHR_CC_TLS_CERT=str(cc / "server.crt"),
                EHR_CC_TLS_CLIENT_CA=str(cc / "ca.crt"),
                PYTHONPATH=str(REPO_ROOT),
            )
            process.start([sys.executable, "-m", "chaincode"], pid_file=pid_file, log_file=log, env=env, cwd=REPO_ROOT)
        self._wait(f"chaincode.{org.name}", lambda: _port_open(self.s.host, org.cc_server_port), log, pid_file, "chaincode")

    def _write_connection(self) -> None:
        orgs = {}
        for o in self.s.orgs:
            od = self._org_dir(o)
            d = self._org_domain(o)
            user = od / "users" / f"User1@{d}" / "msp"
            orgs[o.name] = {
                "msp_id": o.msp_id,
                "gateway": {"endpoint": f"{self.s.host}:{o.peer_port}", "tls_ca": str(self._peer_dir(o) / "tls" / "ca.crt")},
                "client": {"cert": str(next((user / "signcerts").glob("*.pem"))), "key": str(next((user / "keystore").glob("*")))},
                "admin": {"cert": str(next((self._admin_msp(o) / "signcerts").glob("*.pem"))), "key": str(next((self._admin_msp(o) / "keystore").glob("*")))},
                "ca": {"cert": str(next((od / "ca").glob("*-cert.pem"))), "key": str(od / "ca" / "priv_sk")},
            }
        doc = {"channel": self.s.channel, "chaincode": self.s.chaincode, "state_dir": str(self.dir), "organizations": orgs}
        tmp = self.dir / "connection.json.tmp"
        tmp.write_text(json.dumps(doc, indent=2))
        os.replace(tmp, self.dir / "connection.json")

    # -- Component protocol ------------------------------------------------------------------
    def up(self) -> None:
        ok, why = fabric_installed(self.s)
        if not ok:
            raise InfraError("fabric", why)
        for d in (self.logs, self.run):
            d.mkdir(parents=True, exist_ok=True)
        self._orderer_log_offset = None
        self._generate_crypto()
        block = self._genesis_block()
        self._start_orderer()
        self._join_orderer(block)
        for org in self.s.orgs:
            self._start_peer(org)
        for org in self.s.orgs:
            self._join_peer(org, block)
        pkg, package_id = self._package()
        for org in self.s.orgs:
            env = self._peer_env(org, admin=True)
            installed = self._run([self._bin("peer"), "lifecycle", "chaincode", "queryinstalled"], "queryinstalled", env)
            if package_id not in installed:
                self._run([self._bin("peer"), "lifecycle", "chaincode", "install", str(pkg)], f"install on peer0.{org.name}", env)
        for org in self.s.orgs:
            self._start_chaincode(org, package_id)
        self._wait_raft_leader()
        self._deploy_chaincode(pkg, package_id)
        self._write_connection()

    def down(self) -> None:
        for name, pid_file, marker in reversed(self._components()):
            process.stop(pid_file, marker)

    def status(self) -> list[ComponentStatus]:
        out = []
        ports = {"orderer": self.s.orderer_port}
        for o in self.s.orgs:
            ports[f"peer0.{o.name}"] = o.peer_port
            ports[f"chaincode.{o.name}"] = o.cc_server_port
        for name, pid_file, marker in self._components():
            pid = process.running(pid_file, marker)
            log = self.logs / (name.replace("peer0.", "peer-").replace("chaincode.", "chaincode-") + ".log")
            endpoint = f"{self.s.host}:{ports[name]}"
            if pid is None:
                out.append(ComponentStatus(name, "stopped", None, endpoint, log))
            else:
                state = "running" if _port_open(self.s.host, ports[name]) else "unhealthy"
                out.append(ComponentStatus(name, state, pid, endpoint, log))  # type: ignore[arg-type]
        return out
