"""The multi-authority benchmark code runs (tiny sizes, no peer) and its ratios are right.
Performance itself is measured in bench/, never asserted here."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.ma_rows import bench_ma, ratio_rows


def _once(fn: object) -> list[float]:
    fn()  # type: ignore[operator]
    return [1.0]


def test_bench_ma_rows_without_peer() -> None:
    seen: list[int] = []
    samples = bench_ma("mcl", (2,), 1, _once, None, lambda n, rows: seen.append(n))
    ops = {(s.scheme, s.op, s.n) for s in samples}
    assert seen == [2]
    for op in ("keygen", "encrypt", "decrypt", "encrypt_cold", "keygen_cold", "decrypt_cold"):
        assert ("ma", op, 2) in ops
    assert ("ma", "authority_tables", 0) in ops and ("ma", "envelope_decrypt", 5) in ops
    assert all(s.ms and all(x > 0 for x in s.ms) for s in samples)


def test_ratio_rows_take_the_fastest_peer() -> None:
    def row(scheme: str, op: str, ms: float) -> dict[str, object]:
        return {"scheme": scheme, "op": op, "n_attrs": 10, "ms": ms, "p10_ms": ms / 2}

    rows = [
        row("ma", "encrypt", 2.0),
        row("rabe-aw11", "encrypt", 30.0),
        row("rabe-bdabe", "encrypt", 12.0),
        row("ma", "keygen", 1.0),
    ]
    (ratio,) = ratio_rows(rows)  # keygen has no peer row: no ratio
    assert ratio["op"] == "ratio_encrypt" and ratio["rabe_best"] == "bdabe"
    assert ratio["speedup"] == 6.0 and ratio["speedup_p10"] == 6.0
