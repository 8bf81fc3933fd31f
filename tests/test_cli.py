"""The `ehr-abe` command line: exit codes scripts can rely on, no tracebacks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from conftest import free_port

PASS = "cli test passphrase"


def run(
    *args: str, home: Path, input_: bytes | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    e = {**os.environ, "EHR_ABE_HOME": str(home), "EHR_ABE_MASTER_PASSPHRASE": PASS, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "ehr_abe", *args],
        capture_output=True,
        input=input_,
        env=e,
        timeout=120,
    )


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    h = tmp_path_factory.mktemp("clihome")
    r = run("authority", "setup", home=h)
    assert r.returncode == 0, r.stderr
    return h


def test_help_lists_the_commands(tmp_path: Path) -> None:
    r = run("--help", home=tmp_path)
    assert r.returncode == 0
    for cmd in (
        b"authority",
        b"key",
        b"encrypt",
        b"decrypt",
        b"policy",
        b"serve",
        b"demo",
        b"verify",
        b"infra",
    ):
        assert cmd in r.stdout


def test_encrypt_decrypt_and_exit_codes(home: Path, tmp_path: Path) -> None:
    doc, nurse = tmp_path / "doc.key", tmp_path / "nurse.key"
    assert (
        run(
            "key", "issue", "dr-a", "role:doctor", "dept:cardiology", "-o", str(doc), home=home
        ).returncode
        == 0
    )
    assert oct(doc.stat().st_mode & 0o777) == "0o600"
    assert run("key", "issue", "nurse-b", "role:nurse", "-o", str(nurse), home=home).returncode == 0
    (tmp_path / "in.txt").write_bytes(b"ECG 72 bpm")
    r = run(
        "encrypt",
        "-p",
        "role:doctor and dept:cardiology",
        "--context",
        "r-1",
        str(tmp_path / "in.txt"),
        "-o",
        str(tmp_path / "e.env"),
        home=home,
    )
    assert r.returncode == 0, r.stderr
    r = run(
        "decrypt", "-k", str(doc), "--context", "r-1", str(tmp_path / "e.env"), "-o", "-", home=home
    )
    assert r.returncode == 0 and r.stdout == b"ECG 72 bpm"
    r = run(
        "decrypt",
        "-k",
        str(nurse),
        "--context",
        "r-1",
        str(tmp_path / "e.env"),
        "-o",
        "-",
        home=home,
    )
    assert r.returncode == 3 and b"does not satisfy" in r.stderr and b"Traceback" not in r.stderr
    data = bytearray((tmp_path / "e.env").read_bytes())
    data[-3] ^= 1
    (tmp_path / "bad.env").write_bytes(bytes(data))
    r = run(
        "decrypt",
        "-k",
        str(doc),
        "--context",
        "r-1",
        str(tmp_path / "bad.env"),
        "-o",
        "-",
        home=home,
    )
    assert r.returncode == 4 and b"Traceback" not in r.stderr


def test_policy_check_and_eval(tmp_path: Path) -> None:
    r = run(
        "policy", "check", "--json", "patient:p-1 OR (role:doctor AND age >= 18)", home=tmp_path
    )
    assert (
        r.returncode == 0
        and b'"normal_form": "(age >= 18 and role:doctor) or patient:p-1"' in r.stdout
    )
    r = run("policy", "check", "role:doctor and (", home=tmp_path)
    assert r.returncode == 2 and b"position" in r.stderr and b"Traceback" not in r.stderr
    assert run("policy", "eval", "age >= 18", "age=40", home=tmp_path).returncode == 0
    assert run("policy", "eval", "age >= 18", "age=17", home=tmp_path).returncode == 3


def test_errors_are_one_line_not_tracebacks(tmp_path: Path) -> None:
    r = run("key", "issue", "x", "role:a", "-o", str(tmp_path / "k"), home=tmp_path / "nowhere")
    assert r.returncode == 7 and b"authority setup" in r.stderr and b"Traceback" not in r.stderr
    r = run(
        "authority", "setup", home=tmp_path / "weak", env={"EHR_ABE_MASTER_PASSPHRASE": "short"}
    )
    assert r.returncode == 2 and b"at least" in r.stderr


def test_wrong_passphrase_and_refusal_to_overwrite(home: Path, tmp_path: Path) -> None:
    r = run(
        "key",
        "issue",
        "x",
        "role:a",
        "-o",
        str(tmp_path / "k"),
        home=home,
        env={"EHR_ABE_MASTER_PASSPHRASE": "not the passphrase"},
    )
    assert r.returncode == 3 and b"wrong passphrase" in r.stderr
    r = run("authority", "setup", home=home)
    assert r.returncode == 6 and b"refusing to overwrite" in r.stderr


def test_verify_refuses_a_directory_without_service_state(tmp_path: Path) -> None:
    r = run("verify", home=tmp_path / "nothing-here")
    assert r.returncode == 7, r.stderr
    assert b"holds no storage service state" in r.stderr and b"Traceback" not in r.stderr
    assert not (tmp_path / "nothing-here" / "storage" / "index.sqlite").exists()


def test_verify_exit_codes_on_clean_and_corrupted_state(tmp_path: Path) -> None:
    """0 when everything checks out; 4, with what failed and no traceback, for a flipped
    object, a malformed index cell, a deleted index row and a broken ledger chain."""
    import sqlite3

    from abe_service.authority import KeyAuthority
    from ehr_common.config import load_config
    from storage_service.ledger.base import Caller
    from storage_service.records import envelope_key
    from storage_service.wiring import build_storage_core

    home = tmp_path / "h"
    cfg = load_config(env={"EHR_ABE_HOME": str(home)})
    authority = KeyAuthority.setup(cfg.authority_dir, passphrase=PASS.encode())
    core = build_storage_core(cfg, authority, passphrase=PASS.encode())
    device = Caller("nurse-7", "Hosp1MSP", frozenset({"nurse"}))  # a writer of p-1's organisation
    rids = [
        core.put_record(
            device, patient_id="p-1", record_type="ecg", payload=b"%d" % i, policy="patient:p-1"
        ).meta.record_id
        for i in range(4)
    ]
    core.flush()
    core.close()
    r = run("verify", home=home)
    assert r.returncode == 0, r.stdout + r.stderr
    assert b"checked 4, passed 4" in r.stdout

    path = cfg.storage_dir / "objects" / envelope_key(rids[0])
    path.chmod(0o600)
    path.write_bytes(path.read_bytes() + b"!")
    db = sqlite3.connect(cfg.storage_dir / "index.sqlite", isolation_level=None)
    db.execute(
        "UPDATE records SET leaf_index='x', created_at='garbage' WHERE record_id=?", (rids[1],)
    )
    db.execute("DELETE FROM records WHERE record_id=?", (rids[2],))
    db.close()
    r = run("verify", home=home)
    assert r.returncode == 4, r.stdout + r.stderr
    assert b"Traceback" not in r.stderr
    out = r.stdout.replace(b"\n", b"")
    assert rids[0].encode() in out and rids[1].encode() in out
    assert b"missing from the index" in out

    ledger = sqlite3.connect(cfg.storage_dir / "ledger.sqlite", isolation_level=None)
    ledger.execute("DELETE FROM state WHERE key LIKE 'anchor/%'")
    ledger.close()
    r = run("verify", home=home)
    assert r.returncode == 4 and b"LEDGER" in r.stdout, r.stdout + r.stderr


def test_multi_authority_flow(tmp_path: Path) -> None:
    """Two centres set up their authorities (registered on the embedded ledger), each
    issues its attribute to one GID; the keyring of both keys opens a record that needs
    both; one key alone exits 3; a revoked authority takes no new records (exit 2)."""
    h = tmp_path / "home"
    for org in ("hosp1", "hosp2"):
        r = run("authority", "setup", "--org", org, home=h)
        assert r.returncode == 0, r.stderr
    r = run("authority", "list", home=h)
    assert b"hosp1" in r.stdout and b"hosp2" in r.stdout and b"active" in r.stdout
    k1, k2, renewal = tmp_path / "k1", tmp_path / "k2", tmp_path / "r1"
    assert (
        run(
            "key", "issue", "alice", "role:doctor@hosp1", "--org", "hosp1", "-o", str(k1), home=h
        ).returncode
        == 0
    )
    assert (
        run(
            "key",
            "issue",
            "alice",
            "role:researcher@hosp2",
            "--org",
            "hosp2",
            "-o",
            str(k2),
            home=h,
        ).returncode
        == 0
    )
    r = run(
        "key",
        "issue",
        "alice",
        "role:doctor@hosp2",
        "--org",
        "hosp1",
        "-o",
        str(tmp_path / "x"),
        home=h,
    )
    assert r.returncode == 2 and b"own attributes" in r.stderr
    assert (
        run("key", "renew", "alice", "--org", "hosp1", "-o", str(renewal), home=h).returncode == 0
    )
    (tmp_path / "in").write_bytes(b"joint study")
    env = tmp_path / "e"
    policy = "role:doctor@hosp1 and role:researcher@hosp2"
    r = run("encrypt", "-p", policy, str(tmp_path / "in"), "-o", str(env), home=h)
    assert r.returncode == 0, r.stderr
    r = run(
        "decrypt", "-k", str(k1), "-k", str(k2), "-k", str(renewal), str(env), "-o", "-", home=h
    )
    assert r.returncode == 0 and r.stdout == b"joint study", r.stderr
    assert run("decrypt", "-k", str(k1), str(env), "-o", "-", home=h).returncode == 3
    assert run("authority", "revoke", "--org", "hosp2", "--reason", "test", home=h).returncode == 0
    r = run("encrypt", "-p", policy, str(tmp_path / "in"), "-o", str(env), home=h)
    assert r.returncode == 2 and b"revoked" in r.stderr


def test_demo_plays_the_scenario(tmp_path: Path) -> None:
    r = run("demo", home=tmp_path, env={"COLUMNS": "200"})
    out = r.stdout.decode()
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    assert "Traceback" not in out + r.stderr.decode()
    # the anchoring step reports what really happened: all twelve readings, one batch
    assert "this flush anchored 12 records in 1 batch(es)" in out
    assert "the 12 records now sit in 1 batch(es) (1 transaction(s))" in out
    assert "leaf 3 of 12" in out
    assert "failed: r-" in out  # the tampered object was found by VerifyRecords
    assert "demo complete" in out


def _wait_serving(port: int, proc: subprocess.Popen[bytes], seconds: float = 90) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + seconds
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        health = health_pb2_grpc.HealthStub(ch)
        while True:
            assert proc.poll() is None, f"serve exited with {proc.returncode}"
            try:
                status = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            assert time.monotonic() < deadline, "serve did not start serving"
            time.sleep(0.2)


def test_serve_then_verify(home: Path) -> None:
    """`ehr-abe serve` as a subprocess on a free port: called over gRPC, stopped by
    its pid; then `ehr-abe verify` checks what it stored, and finds a tampered object."""
    from datetime import UTC, datetime, timedelta

    from google.protobuf.timestamp_pb2 import Timestamp

    from ehr_common.api.v1 import storage_pb2, storage_pb2_grpc
    from storage_service.records import envelope_key

    port = free_port()
    env = {**os.environ, "EHR_ABE_HOME": str(home), "EHR_ABE_MASTER_PASSPHRASE": PASS}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ehr_abe", "serve", "--listen", f"127.0.0.1:{port}"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_serving(port, proc)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            st = storage_pb2_grpc.StorageServiceStub(ch)
            device = (("x-ehr-subject", "pump-1"), ("x-ehr-roles", "device"))
            until = Timestamp()
            until.FromDatetime(datetime.now(UTC) + timedelta(hours=1))
            st.AssignDevice(  # a device writes only for a patient it is assigned to
                storage_pb2.AssignDeviceRequest(
                    patient_id="p-5", device_id="pump-1", expires_at=until
                ),
                metadata=(("x-ehr-subject", "nurse-5"), ("x-ehr-roles", "nurse")),
            )
            ids = [
                st.PutRecord(
                    storage_pb2.PutRecordRequest(
                        patient_id="p-5",
                        record_type="infusion",
                        plain=storage_pb2.PlainContent(
                            payload=b"%d ml/h" % i, policy="role:doctor"
                        ),
                    ),
                    metadata=device,
                ).record_id
                for i in range(3)
            ]
            assert st.FlushAnchors(storage_pb2.FlushAnchorsRequest(), metadata=device).records == 3
        # the anchoring status, for people and for monitoring
        r = run(
            "records", "anchoring", "--endpoint", f"127.0.0.1:{port}", "--as", "pump-1", home=home
        )
        assert r.returncode == 0, r.stderr
        assert b"0 records pending" in r.stdout and b"ledger reachable" in r.stdout
        r = run(
            "records", "anchoring", "--endpoint", f"127.0.0.1:{port}", "--as", "pump-1",
            "--json", "--max-pending-age", "0", home=home,
        )  # fmt: skip
        doc = json.loads(r.stdout)
        assert r.returncode == 0 and doc["pending_records"] == 0 and doc["alerts"] == [], doc
        assert doc["anchored_through_seq"] >= 3 and doc["ledger_healthy"] is True
        assert doc["anchor_deadline_s"] == 302.0  # batch age 2 s + 300 s of grace
        r = run("records", "anchoring", "--endpoint", f"127.0.0.1:{port}", home=home)
        assert r.returncode == 2 and b"--as" in r.stderr and b"Traceback" not in r.stderr
    finally:
        proc.send_signal(signal.SIGTERM)  # the pid we started, nothing else
        try:
            rc = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    assert rc == 0, stderr[-2000:]
    assert "DEVELOPMENT MODE" in stderr and "Traceback" not in stderr

    r = run("verify", home=home, env={"COLUMNS": "200"})
    assert r.returncode == 0, r.stderr
    assert b"checked 3, passed 3 (0 pending anchoring), failed 0" in r.stdout
    # the service is gone: one line and the Unavailable exit code
    r = run("records", "anchoring", "--endpoint", f"127.0.0.1:{port}", "--as", "x", home=home)
    assert r.returncode == 8 and b"Traceback" not in r.stderr, r.stderr

    path = home / "storage" / "objects" / envelope_key(ids[1])
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.chmod(0o600)
    path.write_bytes(bytes(data))
    r = run("verify", home=home, env={"COLUMNS": "200"})
    assert r.returncode == 4 and b"Traceback" not in r.stderr
    assert b"failed 1" in r.stdout and f"FAILED {ids[1]}".encode() in r.stdout


# -- outputs: atomic, owner-only for secrets, never through a link, --force to replace ---------
def _names(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


def test_key_output_refuses_to_replace_an_existing_file_without_force(
    home: Path, tmp_path: Path
) -> None:
    target = tmp_path / "k.key"
    target.write_bytes(b"an older key")
    target.chmod(0o644)
    r = run("key", "issue", "dr-f", "role:doctor", "-o", str(target), home=home)
    assert r.returncode == 6 and b"--force" in r.stderr and b"Traceback" not in r.stderr
    assert target.read_bytes() == b"an older key"
    r = run("key", "issue", "dr-f", "role:doctor", "-o", str(target), "--force", home=home)
    assert r.returncode == 0, r.stderr
    # Replaced by rename: the new key is 0600 although the old file was 0644.
    assert target.read_bytes() != b"an older key"
    assert oct(target.stat().st_mode & 0o777) == "0o600"
    assert _names(tmp_path) == ["k.key"]  # no temporary left behind


def test_outputs_never_follow_a_symbolic_link(home: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"not yours")
    victim.chmod(0o644)
    link = tmp_path / "out.key"
    link.symlink_to(victim)
    for force in ((), ("--force",)):
        r = run("key", "issue", "dr-s", "role:doctor", "-o", str(link), *force, home=home)
        assert r.returncode == 2 and b"symbolic link" in r.stderr, r.stderr
    dangling = tmp_path / "dangling.key"
    dangling.symlink_to(tmp_path / "elsewhere")
    r = run("key", "issue", "dr-s", "role:doctor", "-o", str(dangling), home=home)
    assert r.returncode == 2
    assert victim.read_bytes() == b"not yours" and not (tmp_path / "elsewhere").exists()
    assert oct(victim.stat().st_mode & 0o777) == "0o644"


def test_plaintext_is_written_owner_only_whatever_existed(home: Path, tmp_path: Path) -> None:
    key = tmp_path / "d.key"
    assert run("key", "issue", "dr-p", "role:doctor", "-o", str(key), home=home).returncode == 0
    (tmp_path / "in.txt").write_bytes(b"HR 80")
    env = tmp_path / "e.env"
    r = run("encrypt", "-p", "role:doctor", str(tmp_path / "in.txt"), "-o", str(env), home=home)
    assert r.returncode == 0, r.stderr
    assert oct(env.stat().st_mode & 0o777) == "0o644"  # an envelope is not secret
    out = tmp_path / "plain.txt"
    out.write_bytes(b"old")
    out.chmod(0o644)
    r = run("decrypt", "-k", str(key), str(env), "-o", str(out), home=home)
    assert r.returncode == 6 and out.read_bytes() == b"old"
    r = run("decrypt", "-k", str(key), str(env), "-o", str(out), "--force", home=home)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == b"HR 80" and oct(out.stat().st_mode & 0o777) == "0o600"
    fresh = tmp_path / "fresh.txt"
    r = run("decrypt", "-k", str(key), str(env), "-o", str(fresh), home=home, env={})
    assert r.returncode == 0 and oct(fresh.stat().st_mode & 0o777) == "0o600"


def test_anchoring_alerts_name_what_an_operator_must_look_at() -> None:
    from ehr_abe.cli.edge import anchoring_alerts
    from ehr_common.api.v1 import storage_pb2

    def status(
        *,
        ledger_healthy: bool = True,
        pending_records: int = 0,
        oldest_pending_age_s: float = 0.0,
        set_aside_batches: tuple[str, ...] = (),
        anchor_deadline_s: float = 0.0,
    ) -> storage_pb2.AnchoringStatus:
        return storage_pb2.AnchoringStatus(
            ledger_healthy=ledger_healthy,
            pending_records=pending_records,
            oldest_pending_age_s=oldest_pending_age_s,
            set_aside_batches=set_aside_batches,
            anchor_deadline_s=anchor_deadline_s,
        )

    assert anchoring_alerts(status(), 0) == []
    # pending but young enough, or no threshold given: fine
    assert anchoring_alerts(status(pending_records=5, oldest_pending_age_s=3.0), 10) == []
    assert anchoring_alerts(status(pending_records=5, oldest_pending_age_s=3.0), None) == []
    (old,) = anchoring_alerts(status(pending_records=5, oldest_pending_age_s=30.0), 10)
    assert "30.0 s old" in old
    # by default the service's own promise is the limit; the operator's wins if given
    late = status(pending_records=1, oldest_pending_age_s=400.0, anchor_deadline_s=302.0)
    (past,) = anchoring_alerts(late, None)
    assert "anchoring deadline, 302 s" in past
    assert anchoring_alerts(late, 500) == []
    assert anchoring_alerts(status(pending_records=1, oldest_pending_age_s=300.0,
                                   anchor_deadline_s=302.0), None) == []  # fmt: skip
    (down,) = anchoring_alerts(status(ledger_healthy=False), None)
    assert "could not reach the ledger" in down
    (refused,) = anchoring_alerts(status(set_aside_batches=("b-1", "b-2")), None)
    assert refused.startswith("2 batches refused")
