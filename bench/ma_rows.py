"""Multi-authority rows for abe_bench.py, and rabe 0.4.2 measured beside them.

Shape (the same for ours and rabe's): two authorities, N attributes split
between them (the first ceil(N/2) at authority 1), policy = AND of all N,
keygen = the keys of both authorities for one GID (summed), decrypt with a key
holding all N. Rows carry "scheme": "ma".

ops:
  keygen / encrypt / decrypt      warm: attribute and GID hashes cached, comb tables built
                                  (the authorities', and the labels' G2 tables: the labels
                                  are used LABEL_TABLE_AFTER times, untimed, first)
  keygen_cold / encrypt_cold /    one sample after clearing the hash caches (F(attr),
  decrypt_cold                    H(GID)) and the label tables; authority comb tables kept
  authority_tables                one sample: building one authority's comb tables (E, Y),
                                  paid once per authority per process (n_attrs 0)

rabe rows ("scheme": "rabe-aw11" / "rabe-bdabe") come from bench/rabe_peer (a
Rust program built with cargo, run as a subprocess in --serve mode): for each
operation its samples are interleaved with ours, one by one, so both see the
same machine load; ratio rows give rabe's best scheme per operation (its
median) divided by ours.
"""

from __future__ import annotations

import gc
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from abe_service.ma.scheme import (
    LABEL_TABLE_AFTER,
    LABEL_TABLES,
    AuthorityPublicKey,
    AuthoritySecretKey,
    MultiAuthority,
    UserKey,
    merge_keys,
)
from abe_service.pairing.base import get_backend
from abe_service.policy import compile_policy

RABE_DIR = Path(__file__).resolve().parent / "rabe_peer"
RABE_BIN = RABE_DIR / "target" / "release" / "rabe_peer"
AUTHORITIES = ("hosp1", "hosp2")
WARM = (
    "two authorities; hashes warm, comb tables built (authorities', hot labels'); "
    "median after one untimed run"
)
COLD = (
    "hash caches (F(attr), H(GID)) and label tables cleared first; "
    "authority comb tables kept; one sample"
)
PEER_NOTE = "rabe 0.4.2 on BN254, same shape; samples interleaved with ours; rabe caches nothing"


def split_labels(n: int) -> tuple[list[str], list[str]]:
    half = (n + 1) // 2
    return (
        [f"a{i:02d}@{AUTHORITIES[0]}" for i in range(half)],
        [f"a{i:02d}@{AUTHORITIES[1]}" for i in range(half, n)],
    )


def bench_ma(
    backend: str,
    sizes: tuple[int, ...],
    runs: int,
    once: Callable[[Callable[[], object]], list[float]],
    peer: RabePeer | None = None,
    after_size: Callable[[int, list[Sample]], None] | None = None,
    label_tables: int = LABEL_TABLES,
) -> list[Sample]:
    """Our rows (and the peer's, interleaved sample by sample), size by size;
    `after_size(n, samples)` runs after each size. label_tables=0: no G2 comb tables
    for hot labels (F(u)^t a full multiplication, as on first use)."""
    ma = MultiAuthority(get_backend(backend), label_tables=label_tables).prepare()
    keys = {name: ma.authority_setup(name) for name in AUTHORITIES}
    pks = {name: pk for name, (pk, _) in keys.items()}
    sk1, sk2 = keys[AUTHORITIES[0]][1], keys[AUTHORITIES[1]][1]
    out: list[Sample] = [
        Sample(
            "ma",
            "authority_tables",
            0,
            once(lambda: ma._table_uncached(*_pk_bytes(ma, pks))),
            "one authority",
        )
    ]
    out += bench_ma_envelope(ma, keys, runs)
    for n in sizes:
        k = max(3, runs // 3) if n >= 50 else runs
        rows = bench_ma_size(ma, pks, (sk1, sk2), n, k, once, peer)
        out += rows
        if after_size is not None:
            after_size(n, rows)
    return out


ENVELOPE_ATTRS = 5
ENVELOPE_PAYLOAD = 1024


def bench_ma_envelope(
    ma: MultiAuthority, keys: dict[str, tuple[AuthorityPublicKey, AuthoritySecretKey]], runs: int
) -> list[Sample]:
    """Whole multi-authority envelopes: 1 KiB payload, 5 attributes over two authorities,
    with AES-GCM, protobuf encoding and, on decryption, parsing and subgroup checks of
    the rows used (a GT check costs about one GT exponentiation)."""
    from abe_service.ma.envelope import MaEncryptor, MaKeyring, VerifiedAuthority
    from abe_service.ma.serialization import (
        IssuedKey,
        fingerprint,
        public_key_to_bytes,
    )

    l1, l2 = split_labels(ENVELOPE_ATTRS)
    verified = {}
    issued = []
    for name, labels in zip(AUTHORITIES, (l1, l2), strict=True):
        pk, sk = keys[name]
        data = public_key_to_bytes(ma.group, pk)
        verified[name] = VerifiedAuthority(name, data, fingerprint(data), pk)
        issued.append(
            IssuedKey(
                name,
                "bench-gid",
                "k",
                tuple(labels),
                fingerprint(data),
                ma.keygen(sk, "bench-gid", labels),
            )
        )
    encryptor = MaEncryptor(ma, verified)
    ring = MaKeyring(ma, issued)
    policy = " and ".join(l1 + l2)
    payload, context = bytes(ENVELOPE_PAYLOAD), b"patient:p-bench"
    envelope = encryptor.encrypt(policy, payload, context)
    if ring.decrypt(envelope, context) != payload:
        raise SystemExit("ma: envelope round trip failed")
    note = f"{ENVELOPE_PAYLOAD} B payload, {ENVELOPE_ATTRS}-attribute AND over two authorities"
    out = []
    ops: list[tuple[str, Callable[[], object]]] = [
        ("envelope_encrypt", lambda: encryptor.encrypt(policy, payload, context)),
        ("envelope_decrypt", lambda: ring.decrypt(envelope, context)),
    ]
    for op, fn in ops:
        fn()
        samples = []
        for _ in range(runs):
            t = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - t) * 1000)
        out.append(Sample("ma", op, ENVELOPE_ATTRS, samples, note))
    return out


@dataclass(frozen=True)
class Sample:
    """Timings of one (scheme, op, n): scheme "ma" (ours) or "rabe-<scheme>"."""

    scheme: str
    op: str
    n: int
    ms: list[float]
    note: str


class RabePeer:
    """bench/rabe_peer --serve: one rabe sample per request, so that its samples can be
    interleaved with ours and both see the same machine load."""

    def __init__(self, binary: Path):
        self._proc = subprocess.Popen(
            [str(binary), "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )

    def _ask(self, line: str) -> str:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(line + "\n")
        self._proc.stdin.flush()
        answer = self._proc.stdout.readline().strip()
        if not answer or answer == "error":
            raise SystemExit(f"rabe_peer: no answer to {line!r}")
        return answer

    def shape(self, n: int) -> None:
        self._ask(f"shape {n}")

    def sample(self, scheme: str, op: str) -> float:
        return float(self._ask(f"time {scheme} {op}"))

    def close(self) -> None:
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        self._proc.wait(timeout=30)


PEER_SCHEMES = ("aw11", "bdabe")


def bench_ma_size(
    ma: MultiAuthority,
    pks: dict[str, AuthorityPublicKey],
    sks: tuple[AuthoritySecretKey, AuthoritySecretKey],
    n: int,
    k: int,
    once: Callable[[Callable[[], object]], list[float]],
    peer: RabePeer | None,
) -> list[Sample]:
    l1, l2 = split_labels(n)
    policy = compile_policy(" and ".join(l1 + l2))

    def keygen() -> UserKey:
        return merge_keys([ma.keygen(sks[0], "bench-gid", l1), ma.keygen(sks[1], "bench-gid", l2)])

    key = keygen()
    for _ in range(LABEL_TABLE_AFTER):  # untimed: the labels become hot (their G2 tables)
        ma.encrypt(pks, policy)
    header, expected = ma.encrypt(pks, policy)
    if not ma.group.gt_eq(ma.decrypt(policy, header, key), expected):
        raise SystemExit(f"ma: decryption under {n} attributes is wrong")
    if peer is not None:
        peer.shape(n)
    ours: dict[str, Callable[[], object]] = {
        "keygen": keygen,
        "encrypt": lambda: ma.encrypt(pks, policy),
        "decrypt": lambda: ma.decrypt(policy, header, key),
    }
    out = []
    for op, fn in ours.items():
        fn()  # warm-up: hashes, tables
        theirs: dict[str, list[float]] = {s: [] for s in PEER_SCHEMES}
        if peer is not None:
            for s in PEER_SCHEMES:
                peer.sample(s, op)  # warm-up
        gc.collect()
        samples = []
        for _ in range(k):  # interleaved: ours, then each peer scheme, k times
            t = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - t) * 1000)
            if peer is not None:
                for s in PEER_SCHEMES:
                    theirs[s].append(peer.sample(s, op))
        out.append(Sample("ma", op, n, samples, WARM))
        if peer is not None:
            out += [Sample(f"rabe-{s}", op, n, theirs[s], PEER_NOTE) for s in PEER_SCHEMES]
    ma.clear_caches(tables=False)
    out.append(Sample("ma", "encrypt_cold", n, once(lambda: ma.encrypt(pks, policy)), COLD))
    ma.clear_caches(tables=False)
    out.append(Sample("ma", "keygen_cold", n, once(keygen), COLD))
    ma.clear_caches(tables=False)
    out.append(Sample("ma", "decrypt_cold", n, once(lambda: ma.decrypt(policy, header, key)), COLD))
    return out


def _pk_bytes(ma: MultiAuthority, pks: dict[str, AuthorityPublicKey]) -> tuple[bytes, bytes]:
    pk = pks[AUTHORITIES[0]]
    return ma.group.gt_to_bytes(pk.e_alpha), ma.group.g1_to_bytes(pk.g_y)


def build_rabe() -> Path | None:
    """Build bench/rabe_peer (cargo, release); None with a note on stderr if cargo is
    missing or the build fails (offline without the crates in cargo's cache)."""
    cargo = shutil.which("cargo")
    if cargo is None:
        print(json.dumps({"note": "cargo not found: no rabe rows"}), file=sys.stderr)
        return None
    build = subprocess.run(
        [cargo, "build", "--release", "--quiet"],
        cwd=RABE_DIR,
        capture_output=True,
        text=True,
        check=False,
    )
    if build.returncode != 0 or not RABE_BIN.exists():
        tail = build.stderr.strip().splitlines()[-3:]
        print(json.dumps({"note": "rabe_peer build failed", "stderr": tail}), file=sys.stderr)
        return None
    return RABE_BIN


def ratio_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (op, N): rabe's fastest scheme's median over ours (warm), measured interleaved."""
    out = []
    for row in rows:
        if row["scheme"] != "ma" or row["op"] not in ("keygen", "encrypt", "decrypt"):
            continue
        peers = [
            p
            for p in rows
            if p["scheme"].startswith("rabe-")
            and p["op"] == row["op"]
            and p["n_attrs"] == row["n_attrs"]
        ]
        if not peers or row["ms"] <= 0:
            continue
        best = min(peers, key=lambda p: p["ms"])
        out.append(
            {
                "op": f"ratio_{row['op']}",
                "regime": "warm",
                "n_attrs": row["n_attrs"],
                "scheme": "ma",
                "rabe_best": best["scheme"].removeprefix("rabe-"),
                "rabe_ms": best["ms"],
                "ma_ms": row["ms"],
                "speedup": round(best["ms"] / row["ms"], 2),
                # p10 over p10: less sensitive to load spikes on a shared machine
                "speedup_p10": round(best["p10_ms"] / row["p10_ms"], 2) if row["p10_ms"] else None,
                "note": "rabe 0.4.2 (BN254) best scheme's median / ours (BLS12-381), "
                "samples interleaved in this run",
            }
        )
    return out
