"""Benchmark of the integrity core (in memory) and of the service's VerifyRecords
over MinIO against raw MinIO GETs of the same objects.

    uv run python bench/verify_bench.py --quick          # volumes 10^3..10^5
    uv run python bench/verify_bench.py --plot           # 10^3..10^7, PNG in bench/out/

One JSON line per case on stdout:
  {"record_bytes", "records", "bytes_hashed", "distinct_bytes", "records_per_s",
   "mb_per_s", "peak_rss_mb", "vs_hashlib", "vs_openssl_x_cores", ...}
{"merkle_leaves", "seconds"} for Merkle roots from leaf hashes, and one
{"case": "verify_records_minio", ...} line (below).

How the in-memory cases are measured:
* Every case runs in a fresh subprocess (so `peak_rss_mb` is that case's own
  peak), through `StreamVerifier.verify_chunks` with `--chunk-bytes` chunks.
  The records are NOT all distinct: one chunk of records (at most
  --chunk-bytes, 64 MiB by default; `distinct_bytes`) is generated per case, a
  random buffer with each record's counter in its first 8 bytes, digests
  precomputed, and the stream yields that same chunk again and again until
  `records` records have been verified. Every record is hashed and compared
  (`bytes_hashed` = records x record size, e.g. 41 GB at 10^7 x 4 KiB), but the
  bytes come from one in-memory buffer: no storage, network or page cache.
* `vs_hashlib`: against `[hashlib.sha256(r).digest() for r in records]` over the
  same record size, measured in this run on up to 64 MiB / 10^5 records and
  extrapolated as a rate beyond that (`hashlib_sampled: true`).
* `vs_openssl_x_cores`: against OpenSSL's single-buffer SHA-256 throughput
  (hashlib on one 256 MiB buffer, MB/s, measured in this run) times the cores,
  in 64-byte blocks, divided by the padded blocks per record,
  ceil((len + 9) / 64). It is a reference rate, not a hardware bound: the
  SHA-NI engine hashes two records interleaved per core and can exceed it.

The VerifyRecords case (`--minio-records N`, skipped with a line saying why
when MinIO is not up): an in-process server on MinIO (the connection file of
`ehr-abe infra up`) with the embedded ledger stores N records (1 KiB payloads,
encrypted by the service) and anchors them; then, alternately in the same
run, `rounds` times each: raw GETs of exactly what verification reads (each
record's object, or its byte range of the object concurrent puts shared) with
the MinIO client at the service's fetch concurrency (reading every byte), and
VerifyRecords over gRPC (fetch, hash, recompute leaves, check against the
anchored roots). `ratio` = VerifyRecords records/s / raw GET records/s (best
round of each); `stages` are the verification's own stage times from one
extra pass, which say what bounds it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

RECORD_SIZES = (64, 256, 4096)
OUT_DIR = Path(__file__).resolve().parent / "out"
SAMPLE_BYTES = 64 << 20
SAMPLE_RECORDS = 100_000


def peak_rss_mb() -> float:
    """This process's peak RSS. VmHWM, not ru_maxrss: Linux carries ru_maxrss
    over fork+exec, so a child would report its parent's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def blocks_per_record(record_bytes: int) -> int:
    return math.ceil((record_bytes + 9) / 64)


def chunk_template(record_bytes: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(record_bytes)
    buf = rng.integers(0, 256, record_bytes * count, dtype=np.uint8)
    if record_bytes >= 8:
        rows = buf.reshape(count, record_bytes)
        rows[:, :8] = np.arange(count, dtype=np.uint64).view(np.uint8).reshape(count, 8)
    offsets = np.arange(count + 1, dtype=np.int64) * record_bytes
    return buf, offsets


def run_case(record_bytes: int, records: int, chunk_bytes: int) -> dict[str, object]:
    from storage_service.integrity.sha256 import default_engine, mismatched_packed, sha256_packed
    from storage_service.integrity.stream import PackedChunk, StreamVerifier

    per_chunk = max(1, min(records, chunk_bytes // record_bytes))
    buf, offsets = chunk_template(record_bytes, per_chunk)
    expected = sha256_packed(buf, offsets)
    # Compile or load the verification kernels (serial and parallel) and start
    # numba's threads outside the timing.
    mismatched_packed(buf, offsets, expected)
    mismatched_packed(buf[:record_bytes], offsets[:2], expected[:1])

    def chunks() -> Iterator[PackedChunk]:
        left = records
        while left > 0:
            n = min(left, per_chunk)
            yield PackedChunk(buf[: n * record_bytes], offsets[: n + 1], expected[:n])
            left -= n

    report = StreamVerifier(chunk_bytes=chunk_bytes).verify_chunks(chunks())
    if not report.ok or report.checked != records:
        raise SystemExit(f"benchmark data failed verification: {report.checked} checked")
    return {
        "record_bytes": record_bytes,
        "records": records,
        "bytes_hashed": records * record_bytes,
        "distinct_bytes": per_chunk * record_bytes,
        "source": "one in-memory chunk yielded again and again",
        "records_per_s": records / report.seconds,
        "mb_per_s": report.bytes / report.seconds / 1e6,
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "seconds": report.seconds,
        "engine": default_engine(),
    }


def run_merkle(leaves: int) -> dict[str, object]:
    from storage_service.integrity.merkle import merkle_root
    from storage_service.integrity.sha256 import default_engine

    merkle_root(np.zeros((1 << 16, 32), dtype=np.uint8))  # load both kernels
    hashes = np.random.default_rng(leaves).integers(0, 256, (leaves, 32), dtype=np.uint8)
    start = time.perf_counter()
    merkle_root(hashes)
    seconds = time.perf_counter() - start
    return {
        "merkle_leaves": leaves,
        "seconds": seconds,
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "engine": default_engine(),
    }


def run_first_call() -> dict[str, object]:
    start = time.perf_counter()
    from storage_service.integrity.merkle import merkle_root
    from storage_service.integrity.sha256 import (
        default_engine,
        mismatched_packed,
        pack,
        sha256_many,
    )

    imported = time.perf_counter()
    sha256_many([b"abc"])
    mismatched_packed(*pack([b"abc"]), sha256_many([b"abc"]))
    merkle_root([bytes(32)] * 3)
    done = time.perf_counter()
    return {
        "first_call": default_engine(),
        "import_seconds": imported - start,
        "first_call_seconds": done - imported,
    }


def child(args: list[str]) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, __file__, *args], check=True, capture_output=True, text=True
    ).stdout
    result: dict[str, object] = json.loads(out.strip().splitlines()[-1])
    return result


def openssl_x_cores_mb_s(cores: int) -> tuple[float, float]:
    """OpenSSL's single-buffer SHA-256 throughput (via hashlib), and that x cores."""
    data = np.random.default_rng(0).integers(0, 256, 256 << 20, dtype=np.uint8).tobytes()
    hashlib.sha256(data[: 1 << 20]).digest()
    best = math.inf
    for _ in range(3):
        start = time.perf_counter()
        hashlib.sha256(data).digest()
        best = min(best, time.perf_counter() - start)
    single = len(data) / best / 1e6
    return single, single * cores


def hashlib_rate(record_bytes: int) -> tuple[float, int]:
    count = min(SAMPLE_RECORDS, SAMPLE_BYTES // record_bytes)
    buf, _ = chunk_template(record_bytes, count)
    raw = buf.tobytes()
    records = [raw[i * record_bytes : (i + 1) * record_bytes] for i in range(count)]
    sha = hashlib.sha256
    start = time.perf_counter()
    digests = [sha(r).digest() for r in records]
    seconds = time.perf_counter() - start
    assert len(digests) == count
    return count / seconds, count


def verify_records_vs_raw_gets(records: int, rounds: int) -> dict[str, object]:
    """The service's VerifyRecords over MinIO against raw GETs of the same objects."""
    import logging
    import secrets
    import tempfile
    from concurrent.futures import ThreadPoolExecutor

    import grpc

    from abe_service.authority import KeyAuthority
    from ehr_abe.infra.config import load_infra_config
    from ehr_abe.server import start_server
    from ehr_common.api.v1 import storage_pb2, storage_pb2_grpc
    from ehr_common.config import load_config
    from ehr_common.identity import Caller
    from storage_service.records import envelope_key
    from storage_service.verification import verify_instance

    connection = load_infra_config().state_dir / "minio" / "connection.json"
    if not connection.exists():
        return {"case": "verify_records_minio", "skipped": f"{connection} missing (MinIO not up)"}
    logging.getLogger("ehr_abe.server").setLevel(logging.ERROR)  # the dev-mode banner
    passphrase = b"verify bench passphrase"
    with tempfile.TemporaryDirectory(prefix="ehr-abe-verify-bench-") as home:
        cfg = load_config(env={})
        cfg.home = home
        cfg.server.listen = "127.0.0.1:0"
        cfg.storage.object_store = "minio"
        cfg.storage.ledger = "embedded"
        cfg.storage.minio_connection = str(connection)
        cfg.storage.batch_max_age_s = 3600.0
        KeyAuthority.setup(cfg.authority_dir, passphrase=passphrase)
        running = start_server(cfg, passphrase=passphrase)
        try:
            core: Any = running.closers[0]
            device = Caller("bench-device", cfg.storage.msp_id, frozenset({"device"}))
            patient = f"p-{secrets.token_hex(4)}"
            core.assign_device(  # a device writes only for a patient it is assigned to
                Caller("bench-nurse", cfg.storage.msp_id, frozenset({"nurse"})),
                patient,
                "bench-device",
                datetime.now(UTC) + timedelta(hours=1),
            )
            payload = os.urandom(1024)

            def put(_i: int) -> str:
                return str(
                    core.put_record(
                        device,
                        patient_id=patient,
                        record_type="ecg",
                        payload=payload,
                        policy=f"role:doctor or patient:{patient}",
                    ).meta.record_id
                )

            with ThreadPoolExecutor(8) as pool:
                ids = list(pool.map(put, range(records)))
            core.flush()
            # what the verifier fetches per record: its object, or (concurrent puts
            # share one) its byte range of the shared object
            packed = core.index.pack_refs(ids)
            keys = [
                (envelope_key(rid), 0, 0)
                if rid not in packed
                else (packed[rid].key, packed[rid].offset, core.index.get(rid).meta.size)
                for rid in ids
            ]
            client, bucket = core.store.client, core.store.bucket
            workers = cfg.storage.fetch_concurrency

            def raw_get(where: tuple[str, int, int]) -> int:
                key, offset, length = where
                response = client.get_object(bucket, key, offset=offset, length=length)
                try:
                    return len(response.read())
                finally:
                    response.close()
                    response.release_conn()

            channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
            stub = storage_pb2_grpc.StorageServiceStub(channel)
            auditor = (("x-ehr-subject", "bench-auditor"), ("x-ehr-roles", "auditor"))
            raw_s: list[float] = []
            verify_s: list[float] = []
            total_bytes = 0
            for _ in range(rounds):
                start = time.perf_counter()
                with ThreadPoolExecutor(workers) as pool:
                    total_bytes = sum(pool.map(raw_get, keys))
                raw_s.append(time.perf_counter() - start)
                start = time.perf_counter()
                report = stub.VerifyRecords(
                    storage_pb2.VerifyRecordsRequest(all=True), metadata=auditor
                )
                verify_s.append(time.perf_counter() - start)
                if report.checked != records or report.failed_record_ids:
                    raise SystemExit(f"VerifyRecords checked {report.checked} of {records}")
            channel.close()
            stream = verify_instance(
                core.index, core.store, core.book.fresh(), deadline_s=core.policy.deadline_s
            )
            st = stream.stages
        finally:
            running.stop()
    raw_rps, verify_rps = records / min(raw_s), records / min(verify_s)
    return {
        "case": "verify_records_minio",
        "records": records,
        "records_in_shared_objects": len(packed),  # read as ranges by both sides
        "object_bytes_mean": round(total_bytes / records),
        "fetch_concurrency": workers,
        "rounds": rounds,
        "raw_get_records_per_s": round(raw_rps, 1),
        "verify_records_per_s": round(verify_rps, 1),
        "ratio": round(verify_rps / raw_rps, 3),
        "raw_get_seconds": [round(x, 3) for x in raw_s],
        "verify_seconds": [round(x, 3) for x in verify_s],
        "stages": {
            "fetch": round(st.fetch, 3),
            "hashing": round(st.hashing, 3),
            "proofs": round(st.proofs, 3),
            "ledger": round(st.ledger, 3),
            "index": round(st.index, 3),
        },
    }


def plot(rows: list[dict[str, object]], references: dict[int, tuple[float, float]]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for i, size in enumerate(RECORD_SIZES):
        case = [r for r in rows if r.get("record_bytes") == size]
        if not case:
            continue
        color = f"C{i}"
        xs = [float(str(r["records"])) for r in case]
        ax.plot(xs, [float(str(r["records_per_s"])) for r in case], "o-", color=color,
                label=f"{size} B records (numba)")  # fmt: skip
        hashlib_rps, bound_rps = references[size]
        ax.hlines(hashlib_rps, xs[0], xs[-1], colors=color, linestyles=":",
                  label=f"{size} B hashlib loop")  # fmt: skip
        ax.hlines(bound_rps, xs[0], xs[-1], colors=color, linestyles="--",
                  label=f"{size} B OpenSSL 1 buffer x cores")  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("records verified")
    ax.set_ylabel("records / s")
    ax.set_title("Streaming SHA-256 verification")
    ax.legend(fontsize=7, ncol=3)
    ax.grid(True, which="both", alpha=0.3)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    path = OUT_DIR / "verify_bench.png"
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="volumes up to 10^5 only")
    parser.add_argument("--plot", action="store_true", help="write bench/out/verify_bench.png")
    parser.add_argument("--chunk-bytes", type=int, default=64 << 20)
    parser.add_argument("--merkle-leaves", type=int, default=None)
    parser.add_argument("--case", nargs=2, type=int, metavar=("RECORD_BYTES", "RECORDS"))
    parser.add_argument("--merkle", type=int, metavar="LEAVES")
    parser.add_argument("--first-call", action="store_true")
    parser.add_argument(
        "--minio-records",
        type=int,
        default=2000,
        help="records for the VerifyRecords-over-MinIO case (0: skip it)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the MinIO case")
    args = parser.parse_args()

    if args.case:
        print(json.dumps(run_case(args.case[0], args.case[1], args.chunk_bytes)))
        return
    if args.merkle:
        print(json.dumps(run_merkle(args.merkle)))
        return
    if args.first_call:
        print(json.dumps(run_first_call()))
        return

    import numba

    cores = int(numba.get_num_threads())
    single, reference = openssl_x_cores_mb_s(cores)
    print(
        json.dumps(
            {
                "openssl_single_buffer_mb_per_s": single,
                "cores": cores,
                "openssl_x_cores_mb_per_s": reference,
            }
        )
    )
    print(json.dumps(child(["--first-call"])), flush=True)
    top = 5 if args.quick else 7
    rows: list[dict[str, object]] = []
    lines: dict[int, tuple[float, float]] = {}
    for size in RECORD_SIZES:
        rate, sampled = hashlib_rate(size)
        bound_rps = reference * 1e6 / 64 / blocks_per_record(size)
        lines[size] = (rate, bound_rps)
        for exponent in range(3, top + 1):
            records = 10**exponent
            row = child(["--case", str(size), str(records), "--chunk-bytes", str(args.chunk_bytes)])
            rps = float(str(row["records_per_s"]))
            row["vs_hashlib"] = rps / rate
            row["vs_openssl_x_cores"] = rps / bound_rps
            row["hashlib_records_per_s"] = rate
            row["hashlib_sampled"] = records > sampled
            rows.append(row)
            print(json.dumps(row), flush=True)
    leaves = args.merkle_leaves or (10**6 if args.quick else 10**7)
    print(json.dumps(child(["--merkle", str(leaves)])), flush=True)
    if args.minio_records > 0:
        n = args.minio_records
        print(json.dumps(verify_records_vs_raw_gets(n, args.rounds)), flush=True)
    if args.plot:
        print(json.dumps({"plot": str(plot(rows, lines))}))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    os.environ.setdefault("PYTHONPATH", str(Path(__file__).resolve().parent.parent))
    main()
