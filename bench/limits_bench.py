"""Worst cases the limits allow (POLICY_LANGUAGE.md, "Limits"), and refusals.

    uv run python bench/limits_bench.py [--runs 3] [--plot [PNG]]

One JSON line per case:
  {"case": ..., "op": ..., "ms": median, "cold_ms": first run, "runs": K,
   "rows": R, "columns": C, "nonzero": Z, "refused": bool, "peak_mib": ...}

Cases are the most expensive inputs each limit still accepts (widest threshold,
densest span program, largest `and`, most comparison rows, most key labels,
most EvaluatePolicy attributes), and, beside them in the same run, the inputs
just past the limit (refused before any expensive step). `cold_ms` is the first
run with the hash-to-G1 and row-base caches cleared; `ms` the median of the
warm runs after it. peak_mib: Python allocations during one run (tracemalloc).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from abe_service.authority import KeyAuthority
from abe_service.policy import compile_policy, expand_attributes
from abe_service.servicer import _check_attributes
from ehr_common.errors import EhrAbeError

DEFAULT_PLOT = Path(__file__).resolve().parent / "out" / "limits_bench.png"


def _threshold(k: int, n: int, prefix: str = "a") -> str:
    return f"{k} of (" + ", ".join(f"{prefix}{i}" for i in range(n)) + ")"


def policies() -> list[tuple[str, str]]:
    dense = "3 of (" + ", ".join(_threshold(62, 63, f"g{j}x") for j in range(3)) + ")"
    return [
        ("threshold 63 of 64 (widest)", _threshold(63, 64)),
        ("threshold 128 of 256 (issue 11's policy)", _threshold(128, 256)),
        ("and of 256 (most cells)", " and ".join(f"a{i}" for i in range(256))),
        ("nested thresholds (dense rows)", dense),
        ("60 comparisons (1020 rows)", " and ".join(f"x{i} >= 1431655765" for i in range(60))),
        (
            "65 comparisons (past the row cap)",
            " and ".join(f"x{i} >= 1431655765" for i in range(65)),
        ),
    ]


def _time(fn: Callable[[], Any], runs: int, reset: Callable[[], None]) -> dict[str, Any]:
    reset()
    tracemalloc.start()
    t0 = time.perf_counter()
    refused = False
    try:
        fn()
    except EhrAbeError:
        refused = True
    cold = (time.perf_counter() - t0) * 1000
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    warm = []
    for _ in range(0 if refused else runs):
        t0 = time.perf_counter()
        fn()
        warm.append((time.perf_counter() - t0) * 1000)
    return {
        "ms": round(statistics.median(warm), 2) if warm else round(cold, 2),
        "cold_ms": round(cold, 2),
        "runs": len(warm),
        "refused": refused,
        "peak_mib": round(peak / 2**20, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--plot", nargs="?", const=str(DEFAULT_PLOT), default=None)
    args = ap.parse_args()
    auth = KeyAuthority.setup(Path(tempfile.mkdtemp()) / "a", passphrase=b"limits bench passphrase")
    enc = auth.encryptor
    reset = enc.fame.clear_hash_cache
    rows: list[dict[str, Any]] = []
    for name, policy in policies():
        shape: dict[str, int | None]
        try:
            c = compile_policy(policy)
            shape = {"rows": c.rows, "columns": c.columns, "nonzero": c.nonzero_entries}
        except EhrAbeError:
            shape = {"rows": None, "columns": None, "nonzero": None}
        r: dict[str, Any] = {"case": name, "op": "encrypt", **shape}

        def encrypt(p: str = policy) -> None:
            enc.encrypt(p, b"x" * 1024)

        r.update(_time(encrypt, args.runs, reset))
        rows.append(r)
    for n, label in (
        (63, "63 integer attributes (4095 labels, the most)"),
        (64, "64 integer attributes (past the label cap)"),
    ):
        attrs = [f"n{i}=4294967295" for i in range(n)]

        def keygen(a: list[str] = attrs) -> None:
            auth.issue_key("x", a)

        r = {"case": label, "op": "keygen"}
        r.update(_time(keygen, 1, reset))
        rows.append(r)
    for n, label in (
        (256, "256 integer attributes (the most)"),
        (24000, "24000 attributes (issue 11's 360 KiB request)"),
    ):
        attrs = [f"n{i}=4294967295" for i in range(n)]

        def evaluate(a: list[str] = attrs) -> None:
            compile_policy("n1 >= 5").satisfied_by(expand_attributes(_check_attributes(a)))

        r = {"case": label, "op": "evaluate"}
        r.update(_time(evaluate, args.runs, reset))
        rows.append(r)
    for r in rows:
        print(json.dumps(r))
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(9, 0.5 * len(rows) + 1.5))
        labels = [f"{r['op']}: {r['case']}" for r in rows]
        ax.barh(labels, [r["cold_ms"] for r in rows], label="cold (first run)", alpha=0.5)
        ax.barh(labels, [r["ms"] for r in rows], label="warm (median)")
        for i, r in enumerate(rows):
            if r["refused"]:
                ax.text(float(r["cold_ms"]), i, " refused", va="center")
        ax.set_xscale("log")
        ax.set_xlabel("ms (log)")
        ax.invert_yaxis()
        ax.legend()
        fig.tight_layout()
        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.plot)


if __name__ == "__main__":
    main()
