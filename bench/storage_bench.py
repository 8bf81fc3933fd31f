"""StorageService benchmark: PutRecord throughput, GetRecord latency, and anchoring
with batching versus one ledger transaction per record, side by side in one run.

    uv run python bench/storage_bench.py [--backend embedded|minio+fabric|both] [--puts N] [--plot]

One JSON line per case:
    {"backend": ..., "op": "put"|"get"|"anchor"|"verify", "mode": ..., "records_per_s": ..., ...}
PutRecord and GetRecord go through real gRPC to an in-process server (1 KiB
payloads, a 5-attribute policy, the service encrypting). Anchoring is timed on
the storage core with its background anchorer stopped, so the timed flush does
all of the anchoring: "batched" anchors N pending records in batches of 1000
(one transaction each), "per_record" gives each record its own transaction
(batch size 1). Anchor rows carry "records" (written and pending before the
timer starts) and "anchored_in_window" (anchored by the timed flush); the row
is valid ("valid": true) only when they are equal.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc

from abe_service.authority import KeyAuthority
from ehr_abe.server import start_server
from ehr_common.api.v1 import storage_pb2, storage_pb2_grpc
from ehr_common.config import load_config
from storage_service.anchoring import AnchorPolicy

POLICY = "role:doctor and dept:cardiology and site:hosp1 and clearance:2 and shift:day"
PASS = b"storage bench passphrase"
DEVICE = (("x-ehr-subject", "bench-device"), ("x-ehr-roles", "device"))
PATIENT = "p-bench"
READER = (("x-ehr-subject", PATIENT), ("x-ehr-roles", "patient"))


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


def emit(**kv: Any) -> dict[str, Any]:
    print(json.dumps(kv), flush=True)
    return kv


def run_backend(
    backend: str, puts: int, workers: int, per_record_n: int, batched_n: int
) -> list[dict[str, Any]]:
    home = Path(tempfile.mkdtemp(prefix="ehr-bench-"))
    cfg = load_config(env={})
    cfg.home = str(home)
    cfg.server.listen = "127.0.0.1:0"
    cfg.storage.batch_max_records = 1000
    cfg.storage.batch_max_age_s = 3600  # anchoring is timed separately below
    if backend == "minio+fabric":
        from ehr_common.paths import state_dir

        infra = Path(os.environ.get("EHR_ABE_INFRA_DIR") or state_dir() / "infra")
        cfg.storage.object_store = "minio"
        cfg.storage.ledger = "fabric"
        cfg.storage.minio_connection = str(infra / "minio" / "connection.json")
        cfg.storage.fabric_connection = str(infra / "fabric" / "connection.json")
    KeyAuthority.setup(cfg.authority_dir, passphrase=PASS)
    running = start_server(cfg, passphrase=PASS)
    out: list[dict[str, Any]] = []
    try:
        core: Any = running.closers[0]
        channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
        stub = storage_pb2_grpc.StorageServiceStub(channel)
        payload = os.urandom(1024)

        def put(i: int) -> tuple[float, str]:
            t0 = time.perf_counter()
            r = stub.PutRecord(
                storage_pb2.PutRecordRequest(
                    patient_id=PATIENT,
                    record_type="ecg",
                    plain=storage_pb2.PlainContent(payload=payload, policy=POLICY),
                ),
                metadata=DEVICE,
            )
            return time.perf_counter() - t0, r.record_id

        for i in range(20):
            put(i)  # warm-up: attribute hashes, connections
        t0 = time.perf_counter()
        with ThreadPoolExecutor(workers) as pool:
            results = list(pool.map(put, range(puts)))
        wall = time.perf_counter() - t0
        lat = [r[0] * 1000 for r in results]
        out.append(
            emit(
                backend=backend,
                op="put",
                mode=f"{workers}_clients",
                records_per_s=round(puts / wall, 1),
                p50_ms=round(pct(lat, 50), 2),
                p99_ms=round(pct(lat, 99), 2),
            )
        )

        core.flush()  # anchor them so reads verify against the ledger
        ids = [r[1] for r in results[: min(300, len(results))]]
        lat = []
        for rid in ids:
            t1 = time.perf_counter()
            stub.GetRecord(storage_pb2.GetRecordRequest(record_id=rid), metadata=READER)
            lat.append((time.perf_counter() - t1) * 1000)
        out.append(
            emit(
                backend=backend,
                op="get",
                mode="sequential_verified",
                records_per_s=round(1000 / statistics.mean(lat), 1),
                p50_ms=round(pct(lat, 50), 2),
                p99_ms=round(pct(lat, 99), 2),
            )
        )

        # Anchoring, timed on the same storage core. The background anchorer is
        # stopped first: every put wakes it, and it would anchor the pending
        # records before the timer starts, leaving the timed flush nothing to do.
        # Then everything already queued (the reads' access events) is flushed
        # untimed, so the timed window holds only the anchoring of the N records.
        core.anchorer.stop()
        core.flush()
        device = core.service_caller.__class__(
            "bench-device", cfg.storage.msp_id, frozenset({"device"})
        )

        def pending(n: int) -> None:
            for _i in range(n):
                core.put_record(
                    device,
                    patient_id=PATIENT,
                    record_type="ecg",
                    envelope=None,
                    payload=b"x" * 64,
                    policy="a or b",
                )

        for mode, n, size in (("batched", batched_n, 1000), ("per_record", per_record_n, 1)):
            core.anchorer._policy = AnchorPolicy(max_records=size, max_age_s=3600)
            pending(n)
            waiting, _ = core.index.pending_count_and_oldest()
            t1 = time.perf_counter()
            got = core.flush()  # closes every pending batch and anchors each: all timed
            wall = time.perf_counter() - t1
            out.append(
                emit(
                    backend=backend,
                    op="anchor",
                    mode=mode,
                    records_per_s=round(got.records / wall, 1),
                    seconds=round(wall, 3),
                    records=n,
                    pending_at_start=waiting,
                    anchored_in_window=got.records,
                    ledger_transactions=got.batches,
                    batch_size=size,
                    valid=got.records == n == waiting,
                )
            )
        # end-to-end verification of everything stored (issue: where does the time go)
        t1 = time.perf_counter()
        report = core.verify_records(core.service_caller)
        wall = time.perf_counter() - t1
        from storage_service.verification import verify_instance

        stream = verify_instance(
            core.index, core.store, core.book.fresh(), deadline_s=core.policy.deadline_s
        )
        st = stream.stages
        out.append(
            emit(
                backend=backend,
                op="verify",
                mode="all_records",
                records_per_s=round(report.checked / wall, 1),
                records=report.checked,
                failed=len(report.failed_record_ids),
                seconds={
                    "fetch": round(st.fetch, 3),
                    "hashing": round(st.hashing, 3),
                    "proofs": round(st.proofs, 3),
                    "ledger": round(st.ledger, 3),
                    "index": round(st.index, 3),
                },
            )
        )
        channel.close()
    finally:
        running.stop()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--backend", choices=["embedded", "minio+fabric", "both"], default="both")
    ap.add_argument("--puts", type=int, default=500)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument(
        "--per-record", type=int, default=40, help="records anchored one transaction each"
    )
    ap.add_argument("--batched", type=int, default=2000, help="records anchored in batches of 1000")
    ap.add_argument("--plot", nargs="?", const="bench/out/storage_bench.png", default=None)
    args = ap.parse_args()
    import logging

    logging.basicConfig(level=logging.ERROR)
    backends = ["embedded", "minio+fabric"] if args.backend == "both" else [args.backend]
    rows: list[dict[str, Any]] = []
    for b in backends:
        try:
            rows += run_backend(b, args.puts, args.workers, args.per_record, args.batched)
        except Exception as exc:  # e.g. MinIO/Fabric not running: say so, keep the others
            print(json.dumps({"backend": b, "error": f"{type(exc).__name__}: {exc}"}), flush=True)
    if args.plot and rows:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        labels = [f"{r['backend']} {r['op']} ({r['mode'].replace('_', ' ')})" for r in rows]
        fig, ax = plt.subplots(figsize=(10, 4.5))
        bars = ax.bar(
            range(len(rows)),
            [r["records_per_s"] for r in rows],
            color=["#4c72b0" if r["backend"] == "embedded" else "#dd8452" for r in rows],
        )
        ax.set_yscale("log")
        ax.set_xticks(range(len(rows)), labels, fontsize=7, rotation=35, ha="right")
        ax.set_ylabel("records per second (log)")
        ax.set_title("ehr-abe storage: PutRecord, GetRecord, anchoring batched vs per record")
        for b, r in zip(bars, rows, strict=True):
            ax.annotate(
                f"{r['records_per_s']:.0f}",
                (b.get_x() + b.get_width() / 2, b.get_height()),
                ha="center",
                va="bottom",
                fontsize=7,
            )
        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
        print(json.dumps({"plot": args.plot}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
