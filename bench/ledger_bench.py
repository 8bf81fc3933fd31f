"""Ledger throughput: anchoring transactions, sequential and concurrent.

    uv run python bench/ledger_bench.py [--ledger fabric|embedded|both] [-n 300]
            [--fabric-workers 256] [--embedded-workers 64] [--plot]

One JSON line per (ledger, mode), each naming the worker count it ran with:
  {"ledger": ..., "mode": "sequential"|"concurrent", "n": ..., "workers": ...,
   "tx_per_s": ..., "p50_ms": ..., "p99_ms": ...}
Sequential rows use one worker; concurrent rows use --fabric-workers on Fabric
and --embedded-workers on the embedded ledger.
plus a "sign" line: what proposal building and ECDSA signing alone cost per transaction
(three signatures each: proposal, envelope, commit-status request).
Fabric runs through our Python Gateway client against `<infra>/fabric/connection.json`
(`<infra>` = $EHR_ABE_INFRA_DIR, else $EHR_ABE_HOME/infra, as for `ehr-abe infra up`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from storage_service.ledger.base import Caller, Ledger
from storage_service.ledger.client import LedgerClient

SERVICE = Caller("storage-service", "Hosp1MSP", frozenset({"anchorer", "auditor"}))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(label: str, mode: str, n: int, workers: int, one: Callable[[int], None]) -> dict[str, Any]:
    latencies: list[float] = []

    def timed(i: int) -> None:
        t = time.perf_counter()
        one(i)
        latencies.append(time.perf_counter() - t)

    start = time.perf_counter()
    if workers == 1:
        for i in range(n):
            timed(i)
    else:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(timed, range(n)))
    elapsed = time.perf_counter() - start
    return {
        "ledger": label,
        "mode": mode,
        "n": n,
        "workers": workers,
        "tx_per_s": round(n / elapsed, 1),
        "p50_ms": round(1000 * statistics.median(latencies), 2),
        "p99_ms": round(1000 * percentile(latencies, 0.99), 2),
    }


def bench_ledger(
    label: str, ledger: Ledger, n: int, workers: int, modes: list[str]
) -> list[dict[str, Any]]:
    client = LedgerClient(ledger, SERVICE)
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    client.anchor_batch(f"{prefix}-warm", b"\x01" * 32, 1)  # connections, identity, chaincode

    def anchor(tag: str) -> Callable[[int], None]:
        return lambda i: (
            client.anchor_batch(f"{prefix}-{tag}-{i:06d}", os.urandom(32), 1000),
            None,
        )[1]

    rows = []
    if "sequential" in modes:  # bounded by the block cutting time on Fabric: keep it short
        rows.append(run(label, "sequential", min(50, max(10, n // 5)), 1, anchor("s")))
    if "concurrent" in modes:
        rows.append(run(label, "concurrent", n, workers, anchor("c")))
    return rows


def bench_signing(n: int) -> dict[str, Any]:
    from cryptography.hazmat.primitives import serialization

    from ehr_common.certificates import mint_client_identity, mint_self_signed_ca
    from storage_service.fabric_gateway.signing import SigningIdentity, build_proposal

    ca_cert, ca_key = mint_self_signed_ca("bench CA")
    cert_pem, key_pem = mint_client_identity(ca_cert, ca_key, "bench", ["anchorer"])
    key = serialization.load_pem_private_key(key_pem, password=None)
    ident = SigningIdentity("Hosp1MSP", cert_pem, key)  # type: ignore[arg-type]
    args = ["b-1", "ab" * 32, "1000", "1000", "{}"]

    def one(i: int) -> None:
        build_proposal(ident, "ehr", "ehr", "AnchorBatch", args)
        ident.sign(b"x" * 3000)  # the endorsed envelope
        ident.sign(b"x" * 200)  # the commit-status request

    out = run("client", "sign", n, 1, one)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ledger", choices=["fabric", "embedded", "both"], default="both")
    ap.add_argument("-n", type=int, default=300, help="concurrent transactions per ledger")
    ap.add_argument(
        "--fabric-workers",
        type=int,
        default=256,
        help="concurrent submitters on Fabric (enough to fill blocks at a 250 ms batch timeout)",
    )
    ap.add_argument(
        "--embedded-workers",
        type=int,
        default=64,
        help="concurrent submitters on the embedded ledger (SQLite serialises commits)",
    )
    ap.add_argument("--modes", default="sequential,concurrent")
    ap.add_argument("--connection", default="")
    ap.add_argument("--plot", action="store_true", help="write bench/out/ledger_bench.png")
    a = ap.parse_args()
    modes = a.modes.split(",")
    rows: list[dict[str, Any]] = [bench_signing(500)]
    print(json.dumps(rows[0]), flush=True)
    if a.ledger in ("embedded", "both"):
        from storage_service.ledger.embedded import EmbeddedLedger

        with tempfile.TemporaryDirectory() as d:
            led = EmbeddedLedger(Path(d) / "bench.sqlite")
            for row in bench_ledger("embedded", led, a.n, a.embedded_workers, modes):
                rows.append(row)
                print(json.dumps(row), flush=True)
            led.close()
    if a.ledger in ("fabric", "both"):
        from ehr_abe.infra.config import load_infra_config

        # the infra dir `ehr-abe infra up` used: $EHR_ABE_INFRA_DIR, else under $EHR_ABE_HOME
        infra = load_infra_config().state_dir
        path = Path(a.connection or infra / "fabric" / "connection.json")
        if not path.exists():
            print(json.dumps({"ledger": "fabric", "skipped": f"{path} missing"}), flush=True)
        else:
            from storage_service.ledger.fabric import FabricLedger

            fab = FabricLedger.from_connection_file(path)
            for row in bench_ledger("fabric", fab, a.n, a.fabric_workers, modes):
                rows.append(row)
                print(json.dumps(row), flush=True)
            fab.close()
    if a.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        out = Path(__file__).resolve().parent / "out"
        out.mkdir(exist_ok=True)
        shown = [r for r in rows if r["mode"] != "sign"]
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.bar([f"{r['ledger']}\n{r['mode']}" for r in shown], [r["tx_per_s"] for r in shown])
        ax.set_ylabel("anchoring tx/s")
        fig.tight_layout()
        fig.savefig(out / "ledger_bench.png", dpi=120)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
