"""The benchmarks count only their own work and say so in their rows (no timing asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def bench(script: str, *args: str) -> list[dict[str, Any]]:
    r = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    return [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]


def test_storage_bench_anchor_rows_anchor_everything_inside_the_window() -> None:
    rows = bench(
        "storage_bench.py", "--backend", "embedded", "--puts", "8", "--batched", "30",
        "--per-record", "4",
    )  # fmt: skip
    assert not [r for r in rows if "error" in r], rows
    anchors = {r["mode"]: r for r in rows if r["op"] == "anchor"}
    assert set(anchors) == {"batched", "per_record"}
    for row in anchors.values():
        assert row["anchored_in_window"] == row["records"] == row["pending_at_start"], row
        assert row["valid"] is True
    assert anchors["per_record"]["ledger_transactions"] == 4
    assert anchors["batched"]["ledger_transactions"] == 1


def test_abe_bench_rows_name_their_regime() -> None:
    rows = bench("abe_bench.py", "--sizes", "2", "--runs", "1")
    regimes = {r["op"]: r["regime"] for r in rows}
    assert regimes["encrypt"] == "warm" and regimes["encrypt_cold"] == "cold"
    assert regimes["request_encrypt_new_policy"] == "request-path"
    assert regimes["request_encrypt_same_policy"] == "request-path"


def test_ingest_rows_time_completions_from_the_first_to_the_last() -> None:
    """raw_mqtt, ingest and ward share one clock rule: the completions at the first
    instant start it (an anchored batch there took no measured time), the rest count."""
    from bench.ingest_bench import completion_rate

    assert completion_rate([]) == completion_rate([5.0]) == 0.0
    assert completion_rate([1.0, 1.0, 1.0]) == 0.0  # one batch: no span, no rate
    # a batch of 100 at t=10, then 50 at t=11 and 50 at t=12: 100 in 2 s, not 200
    assert completion_rate([10.0] * 100 + [11.0] * 50 + [12.0] * 50) == 50.0
    assert completion_rate([3.0, 1.0, 2.0]) == 1.0  # order does not matter
