"""Multi-authority rows for abe_bench.py, and rabe 0.4.2 measured beside them.

Shape (the same for ours and rabe's): two authorities, N attributes split
between them (the first ceil(N/2) at authority 1), policy = AND of all N,
keygen = the keys of both authorities for one GID (summed), decrypt with a key
holding all N. Rows carry "scheme": "ma".

ops:
  keygen / encrypt / decrypt      warm: attribute and GID hashes cached, comb tables built
  keygen_cold / encrypt_cold /    one sample after clearing the hash caches (F(attr),
  decrypt_cold                    H(GID)); authority comb tables kept
  authority_tables                one sample: building one authority's comb tables (E, Y),
                                  paid once per authority per process (n_attrs 0)

rabe rows ("peer": "rabe-0.4.2") come from bench/rabe_peer (a Rust program
built with cargo), run in the same process run; ratio rows give rabe's best
scheme per operation divided by ours.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from abe_service.ma.scheme import (
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
WARM = "two authorities; hashes warm, comb tables built; median after one untimed run"
COLD = "hash caches (F(attr), H(GID)) cleared first; comb tables kept; one sample"
Timed = Callable[[Callable[[], object], int], list[float]]


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
    timed: Timed,
    once: Callable[[Callable[[], object]], list[float]],
    after_size: Callable[[int, list[tuple[str, int, list[float], str]]], None] | None = None,
) -> list[tuple[str, int, list[float], str]]:
    """Our rows, size by size; `after_size(n, rows)` runs after each size (the peer
    is measured there, interleaved with ours, so both see the same machine load)."""
    ma = MultiAuthority(get_backend(backend))
    keys = {name: ma.authority_setup(name) for name in AUTHORITIES}
    pks = {name: pk for name, (pk, _) in keys.items()}
    sk1, sk2 = keys[AUTHORITIES[0]][1], keys[AUTHORITIES[1]][1]
    out: list[tuple[str, int, list[float], str]] = []
    out.append(
        (
            "authority_tables",
            0,
            once(lambda: ma._table_uncached(*_pk_bytes(ma, pks))),
            "one authority",
        )
    )
    for n in sizes:
        k = max(3, runs // 3) if n >= 50 else runs
        rows = bench_ma_size(ma, pks, (sk1, sk2), n, k, timed, once)
        out += rows
        if after_size is not None:
            after_size(n, rows)
    return out


def bench_ma_size(
    ma: MultiAuthority,
    pks: dict[str, AuthorityPublicKey],
    sks: tuple[AuthoritySecretKey, AuthoritySecretKey],
    n: int,
    k: int,
    timed: Timed,
    once: Callable[[Callable[[], object]], list[float]],
) -> list[tuple[str, int, list[float], str]]:
    l1, l2 = split_labels(n)
    policy = compile_policy(" and ".join(l1 + l2))

    def keygen() -> UserKey:
        return merge_keys([ma.keygen(sks[0], "bench-gid", l1), ma.keygen(sks[1], "bench-gid", l2)])

    key = keygen()
    header, expected = ma.encrypt(pks, policy)
    if not ma.group.gt_eq(ma.decrypt(policy, header, key), expected):
        raise SystemExit(f"ma: decryption under {n} attributes is wrong")
    out = [
        ("keygen", n, timed(keygen, k), WARM),
        ("encrypt", n, timed(lambda: ma.encrypt(pks, policy), k), WARM),
        ("decrypt", n, timed(lambda: ma.decrypt(policy, header, key), k), WARM),
    ]
    ma.clear_caches(tables=False)
    out.append(("encrypt_cold", n, once(lambda: ma.encrypt(pks, policy)), COLD))
    ma.clear_caches(tables=False)
    out.append(("keygen_cold", n, once(keygen), COLD))
    ma.clear_caches(tables=False)
    out.append(("decrypt_cold", n, once(lambda: ma.decrypt(policy, header, key)), COLD))
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


def rabe_rows(binary: Path, sizes: tuple[int, ...], runs: int) -> list[dict[str, Any]]:
    run = subprocess.run(
        [str(binary), "--sizes", ",".join(map(str, sizes)), "--runs", str(runs)],
        capture_output=True,
        text=True,
        check=False,
    )
    if run.returncode != 0:
        print(
            json.dumps({"note": "rabe_peer failed", "stderr": run.stderr[-500:]}), file=sys.stderr
        )
    return [json.loads(s) for s in run.stdout.splitlines() if s.startswith("{")]


def ratio_rows(ours: list[dict[str, Any]], rabe: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (op, N): rabe's fastest scheme's median over ours (warm), measured in this run."""
    out = []
    for row in ours:
        if row["op"] not in ("keygen", "encrypt", "decrypt"):
            continue
        peers = [p for p in rabe if p["op"] == row["op"] and p["n_attrs"] == row["n_attrs"]]
        if not peers or row["ms"] <= 0:
            continue
        best = min(peers, key=lambda p: p["ms"])
        out.append(
            {
                "op": f"ratio_{row['op']}",
                "n_attrs": row["n_attrs"],
                "scheme": "ma",
                "rabe_best": best["scheme"],
                "rabe_ms": best["ms"],
                "ma_ms": row["ms"],
                "speedup": round(best["ms"] / row["ms"], 2),
                "note": "rabe 0.4.2 (BN254) best scheme / ours (BLS12-381), same run",
            }
        )
    return out
