"""CP-ABE timings: FAME and multi-authority (RW15) on BLS12-381, rabe beside them.

    uv run python bench/abe_bench.py [--backend mcl|pymcl|auto|both] [--sizes 2,5,10,20,50]
                                     [--runs 15] [--schemes fame,ma] [--no-peer]
                                     [--no-request-path] [--ma-label-tables N]
                                     [--plot [PNG]]

Rows carry "scheme": "fame" or "ma"; the multi-authority rows, the rabe 0.4.2
peer rows and the ratio rows are described in bench/ma_rows.py (rabe runs when
cargo is available, unless --no-peer).

One JSON line per (backend, op, N):
  {"op": ..., "n_attrs": N, "ms": median, "backend": ..., "runs": K, "p10_ms": ..., "p90_ms": ...,
   "note": ...}

ops:
  setup                 authority setup (does not depend on N; n_attrs 0)
  keygen                a key for N attributes
  encrypt / decrypt     FAME key encapsulation under the AND of N attributes
                        (`a00 and a01 and ...`: N span-program rows; decrypt uses all N)
  keygen_cold /         one run with the hash-to-G1 cache cleared first: what the first
  encrypt_cold          use of N new attributes costs (single sample: noisy)
  envelope_encrypt /    the full hybrid envelope: FAME + HKDF + AES-256-GCM of a 1 KiB
  envelope_decrypt      payload under a 5-attribute AND policy, with protobuf encoding and,
                        on decryption, parsing and subgroup checks of every header point
  request_encrypt_*     AbeService.Encrypt over gRPC to an in-process server (1 KiB,
                        `(role:doctor and dept:cardiology and site:hosp1 and shift:day) or
                        patient:<id>`): `same_policy` repeats one patient; `new_policy`
                        names a new patient on every call, so that attribute's hash and
                        the policy's cached bases are cold on every call, as for a
                        service writing for many patients (the other four stay warm)

Every row says its "regime": "warm" (median of K runs after one untimed warm-up,
attribute and column hashes cached per `Fame` instance), "cold" (one run with the
hash cache cleared first; noisy), or "request-path" (the gRPC rows above). K is
--runs, a third of it (at least 3) for N >= 50. The machine may be shared:
compare medians taken in the same run, not single runs.

FAME's peer figures (charm-crypto, CIRCL, rabe AC17) are not measured here: they
live in bench/peers.json with what was run, when and on what machine. The
multi-authority rows' peer (rabe 0.4.2's AW11 and BDABE) IS measured in the same
run, interleaved with ours (bench/ma_rows.py). --plot draws
median ms against N per operation, with the charm-crypto FAME (MNT224) marks
from that file.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from abe_service.envelope import AbeDecryptor, AbeEncryptor
from abe_service.fame import Fame, MasterKey, PublicKey
from abe_service.ma.scheme import LABEL_TABLES
from abe_service.pairing.base import get_backend
from abe_service.policy import compile_policy
from abe_service.serialization import UserKey, authority_id, public_params_to_bytes
from bench.ma_rows import RabePeer, Sample, bench_ma, build_rabe, ratio_rows

DEFAULT_SIZES = (2, 5, 10, 20, 50)
DEFAULT_RUNS = 15
DEFAULT_PLOT = Path(__file__).resolve().parent / "out" / "abe_bench.png"
WARM = "attribute hashes warm (cached hash-to-G1); median after one untimed run"
COLD = "hash-to-G1 cache cleared first; one sample"
ENVELOPE_ATTRS = 5
ENVELOPE_PAYLOAD = 1024
PEERS_FILE = Path(__file__).resolve().parent / "peers.json"
#: the caller of the request-path rows (development-mode identity headers)
DEVICE = (("x-ehr-subject", "bench-device"), ("x-ehr-roles", "device"))
REQUEST_POLICY = "(role:doctor and dept:cardiology and site:hosp1 and shift:day) or patient:{}"


def peer_figures() -> list[dict[str, Any]]:
    """The peer libraries' figures with their provenance (bench/peers.json)."""
    figures: list[dict[str, Any]] = json.loads(PEERS_FILE.read_text())["figures"]
    return figures


def charm_mnt224_at_10() -> dict[str, float]:
    for f in peer_figures():
        if f["library"] == "charm-crypto" and f["curve"] == "MNT224":
            return {op: float(f[f"{op}_ms"]) for op in ("keygen", "encrypt", "decrypt")}
    raise SystemExit(f"{PEERS_FILE}: no charm-crypto MNT224 figures")


def timed(fn: Callable[[], object], runs: int) -> list[float]:
    fn()  # warm-up: caches, lazy initialisation
    gc.collect()
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def once(fn: Callable[[], object]) -> list[float]:
    t = time.perf_counter()
    fn()
    return [(time.perf_counter() - t) * 1000]


def regime_of(op: str) -> str:
    if op.startswith("request_"):
        return "request-path"
    return "cold" if op.endswith("_cold") else "warm"


def line(
    backend: str, op: str, n: int, samples: list[float], note: str, scheme: str = "fame"
) -> dict[str, Any]:
    ordered = sorted(samples)
    return {
        "scheme": scheme,
        "op": op,
        "regime": regime_of(op),
        "n_attrs": n,
        "ms": round(statistics.median(ordered), 3),
        "backend": backend,
        "runs": len(ordered),
        "p10_ms": round(ordered[len(ordered) // 10], 3),
        "p90_ms": round(ordered[(len(ordered) * 9) // 10], 3),
        "note": note,
    }


def labels_for(n: int) -> list[str]:
    return [f"a{i:02d}" for i in range(n)]


def bench_size(
    fame: Fame, pk: PublicKey, msk: MasterKey, n: int, runs: int
) -> list[tuple[str, list[float], str]]:
    """keygen for n attributes; encrypt / decrypt under the AND of n attributes."""
    labels = labels_for(n)
    policy = compile_policy(" and ".join(labels))
    key = fame.keygen(pk, msk, labels)
    header, expected = fame.encrypt(pk, policy)
    if not fame.group.gt_eq(fame.decrypt(policy, header, key), expected):
        raise SystemExit(f"{fame.group.name}: decryption under {n} attributes is wrong")
    out = [
        ("keygen", timed(lambda: fame.keygen(pk, msk, labels), runs), WARM),
        ("encrypt", timed(lambda: fame.encrypt(pk, policy), runs), WARM),
        ("decrypt", timed(lambda: fame.decrypt(policy, header, key), runs), WARM),
    ]
    fame.clear_hash_cache()
    out.append(("encrypt_cold", once(lambda: fame.encrypt(pk, policy)), COLD))
    fame.clear_hash_cache()
    out.append(("keygen_cold", once(lambda: fame.keygen(pk, msk, labels)), COLD))
    return out


def bench_envelope(
    fame: Fame, pk: PublicKey, msk: MasterKey, runs: int
) -> list[tuple[str, list[float], str]]:
    pp = public_params_to_bytes(fame.group, pk)
    auth = authority_id(pp)
    labels = labels_for(ENVELOPE_ATTRS)
    encryptor = AbeEncryptor(fame, pk, pp, auth)
    decryptor = AbeDecryptor(
        fame, UserKey("bench", "k-bench", tuple(labels), auth, pp, fame.keygen(pk, msk, labels))
    )
    policy = " and ".join(labels)
    payload, context = os.urandom(ENVELOPE_PAYLOAD), b"patient:p-bench"
    envelope = encryptor.encrypt(policy, payload, context)
    if decryptor.decrypt(envelope, context) != payload:
        raise SystemExit(f"{fame.group.name}: envelope round trip failed")
    note = f"{ENVELOPE_PAYLOAD} B payload, {ENVELOPE_ATTRS}-attribute AND policy; {WARM}"
    return [
        (
            "envelope_encrypt",
            timed(lambda: encryptor.encrypt(policy, payload, context), runs),
            note,
        ),
        ("envelope_decrypt", timed(lambda: decryptor.decrypt(envelope, context), runs), note),
    ]


def bench_request_path(runs: int) -> list[dict[str, Any]]:
    """AbeService.Encrypt over gRPC, in-process server (default backend): one policy
    repeated, then a new patient attribute (hence a new policy) on every call."""
    import logging
    import tempfile

    import grpc

    from abe_service.authority import KeyAuthority
    from ehr_abe.server import start_server
    from ehr_common.api.v1 import abe_pb2, abe_pb2_grpc
    from ehr_common.config import load_config

    logging.getLogger("ehr_abe.server").setLevel(logging.ERROR)  # the dev-mode banner
    passphrase = b"abe bench passphrase"
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="ehr-abe-bench-") as home:
        cfg = load_config(env={})
        cfg.home = home
        cfg.server.listen = "127.0.0.1:0"
        cfg.server.services = ("abe",)
        KeyAuthority.setup(cfg.authority_dir, passphrase=passphrase)
        running = start_server(cfg, passphrase=passphrase)
        try:
            with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
                stub = abe_pb2_grpc.AbeServiceStub(channel)
                payload = os.urandom(ENVELOPE_PAYLOAD)
                counter = iter(range(10**9))

                def call(patient: str) -> None:
                    stub.Encrypt(
                        abe_pb2.EncryptRequest(
                            policy=REQUEST_POLICY.format(patient),
                            plaintext=payload,
                            context=f"patient:{patient}".encode(),
                        ),
                        metadata=DEVICE,
                    )

                # Interleaved call by call, so both rows see the same machine load.
                n = max(2 * runs, 60)
                call("p-0")  # warm-up: connection, the repeated policy's caches
                same: list[float] = []
                new: list[float] = []
                for _ in range(n):
                    for samples, patient in ((same, "p-0"), (new, f"p-{next(counter) + 1}")):
                        t = time.perf_counter()
                        call(patient)
                        samples.append((time.perf_counter() - t) * 1000)
                backend = "server default"
                base = (
                    f"1 KiB payload, 5-attribute policy, gRPC round trip; {n} calls "
                    "alternating with the other row, median"
                )
                rows.append(
                    line(backend, "request_encrypt_same_policy", 5, same, f"{base}; caches warm")
                )
                row = line(
                    backend,
                    "request_encrypt_new_policy",
                    5,
                    new,
                    f"{base}; a new patient attribute per call: its hash and the policy's "
                    "bases are cold",
                )
                row["vs_same_policy"] = round(row["ms"] / rows[0]["ms"], 2)
                rows.append(row)
        finally:
            running.stop()
    for row in rows:
        print(json.dumps(row), flush=True)
    return rows


def bench_backend(name: str, sizes: tuple[int, ...], runs: int) -> list[dict[str, Any]]:
    fame = Fame(get_backend(name))
    backend = fame.group.name
    rows: list[dict[str, Any]] = []

    def emit(row: dict[str, Any]) -> None:
        rows.append(row)
        print(json.dumps(row), flush=True)

    emit(line(backend, "setup", 0, timed(fame.setup, runs), "independent of N"))
    pk, msk = fame.setup()
    for n in sizes:
        k = max(3, runs // 3) if n >= 50 else runs
        for op, samples, note in bench_size(fame, pk, msk, n, k):
            emit(line(backend, op, n, samples, note))
    for op, samples, note in bench_envelope(fame, pk, msk, runs):
        emit(line(backend, op, ENVELOPE_ATTRS, samples, note))
    return rows


def bench_ma_backend(
    name: str, sizes: tuple[int, ...], runs: int, *, peer: bool, label_tables: int = LABEL_TABLES
) -> list[dict[str, Any]]:
    """Multi-authority rows, rabe's interleaved with them, and the ratios (bench/ma_rows.py)."""
    backend = get_backend(name).name
    binary = build_rabe() if peer else None
    rabe = RabePeer(binary) if binary is not None else None
    rows: list[dict[str, Any]] = []

    def emit(samples: list[Sample]) -> list[dict[str, Any]]:
        out = [line(backend, s.op, s.n, s.ms, s.note, scheme=s.scheme) for s in samples]
        for row in out:
            if row["scheme"].startswith("rabe-"):
                row["backend"] = "rabe-0.4.2 (BN254)"
            print(json.dumps(row), flush=True)
        rows.extend(out)
        return out

    def after_size(n: int, samples: list[Sample]) -> None:
        for ratio in ratio_rows(emit(samples)):
            print(json.dumps(ratio), flush=True)

    try:
        measured = bench_ma(name, sizes, runs, once, rabe, after_size, label_tables)
    finally:
        if rabe is not None:
            rabe.close()
    emit([s for s in measured if s.op == "authority_tables" or s.op.startswith("envelope_")])
    return rows


def plot(rows: list[dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, FormatStrFormatter, NullFormatter

    backends = sorted({r["backend"] for r in rows})
    colors = dict(zip(backends, ("tab:blue", "tab:orange", "tab:green"), strict=False))
    fig, axes = plt.subplots(2, 2, figsize=(11, 8.5))
    titles = {
        "keygen": "keygen: key for N attributes",
        "encrypt": "encrypt: AND of N attributes",
        "decrypt": "decrypt: AND of N attributes",
    }
    for ax, (op, title) in zip(axes.flat, titles.items(), strict=False):
        series = sorted({(r["backend"], r.get("scheme", "fame")) for r in rows if r["op"] == op})
        for b, scheme in series:
            pts = sorted(
                (r["n_attrs"], r["ms"])
                for r in rows
                if r["backend"] == b and r["op"] == op and r.get("scheme", "fame") == scheme
            )
            if not pts:
                continue
            ax.plot(
                [x for x, _ in pts],
                [y for _, y in pts],
                {"fame": "o-", "ma": "s--"}.get(scheme, "^:"),
                color=colors.get(b, "tab:gray") if scheme in ("fame", "ma") else None,
                label=f"{b} {scheme.upper()} (BLS12-381)" if scheme in ("fame", "ma") else scheme,
            )
            for x, y in pts:
                ax.annotate(
                    f"{y:.1f}",
                    (x, y),
                    textcoords="offset points",
                    xytext=(0, 7),
                    ha="center",
                    fontsize=7,
                    color=colors.get(b, "tab:gray"),
                )
        ref = charm_mnt224_at_10()[op]
        ax.axhline(ref, color="crimson", linestyle="--", linewidth=1)
        ax.plot(
            [10],
            [ref],
            "*",
            color="crimson",
            markersize=13,
            label=f"charm FAME, MNT224, 10 attrs: {ref:g} ms",
        )
        sizes = sorted({r["n_attrs"] for r in rows if r["op"] == op})
        values = [r["ms"] for r in rows if r["op"] == op] + [ref]
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(sizes)
        ax.set_xlim(min(sizes) / 1.3, max(sizes) * 1.3)
        ax.set_ylim(min(values) / 1.6, max(values) * 4)  # room for the legend above the data
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_formatter(FormatStrFormatter("%g"))
            axis.set_minor_formatter(NullFormatter())
        ax.yaxis.set_major_locator(FixedLocator([0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000]))
        ax.set_xlabel("attributes N")
        ax.set_ylabel("median ms (log)")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="upper left", framealpha=0.9)

    ax = axes.flat[3]
    ops = ("setup", "envelope_encrypt", "envelope_decrypt")
    width = 0.8 / max(1, len(backends))
    for i, b in enumerate(backends):
        values = [
            next(
                (
                    r["ms"]
                    for r in rows
                    if r["backend"] == b and r["op"] == op and r.get("scheme") == "fame"
                ),
                0.0,
            )
            for op in ops
        ]
        bars = ax.bar(
            [j + i * width for j in range(len(ops))], values, width, color=colors[b], label=b
        )
        ax.bar_label(bars, fmt="%.1f", fontsize=8)
    ax.set_xticks([j + width * (len(backends) - 1) / 2 for j in range(len(ops))])
    ax.set_xticklabels(
        [
            "setup",
            f"envelope encrypt\n1 KiB, {ENVELOPE_ATTRS} attrs",
            f"envelope decrypt\n1 KiB, {ENVELOPE_ATTRS} attrs",
        ]
    )
    ax.set_ylabel("median ms")
    ax.set_title("setup and full envelopes")
    ax.legend(fontsize=8)
    fig.suptitle(
        "ehr-abe: FAME and multi-authority CP-ABE timings (medians, hashes warm; "
        "FAME peers: bench/peers.json)"
    )
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    print(json.dumps({"plot": str(out)}), file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--backend",
        default="mcl",
        choices=("mcl", "pymcl", "auto", "both"),
        help="pairing backend; both = mcl then pymcl (default: %(default)s)",
    )
    ap.add_argument(
        "--runs",
        type=int,
        default=DEFAULT_RUNS,
        help="timed runs per point, a third for N >= 50 (default: %(default)s)",
    )
    ap.add_argument(
        "--sizes",
        "--attrs",
        default=",".join(map(str, DEFAULT_SIZES)),
        help="attribute counts N (default: %(default)s)",
    )
    ap.add_argument(
        "--plot",
        nargs="?",
        type=Path,
        const=DEFAULT_PLOT,
        default=None,
        metavar="PNG",
        help="write a PNG (default: bench/out/abe_bench.png)",
    )
    ap.add_argument("--schemes", default="fame,ma", help="fame, ma or both (default: %(default)s)")
    ap.add_argument(
        "--no-peer", action="store_true", help="skip the rabe 0.4.2 rows (bench/rabe_peer)"
    )
    ap.add_argument(
        "--no-request-path",
        action="store_true",
        help="skip the AbeService.Encrypt-over-gRPC rows",
    )
    ap.add_argument(
        "--ma-label-tables",
        type=int,
        default=LABEL_TABLES,
        metavar="N",
        help="G2 comb tables kept for hot attribute labels (0: none; default: %(default)s)",
    )
    args = ap.parse_args(argv)
    try:
        sizes = tuple(int(s) for s in args.sizes.split(",") if s.strip())
    except ValueError:
        ap.error("--sizes takes comma-separated integers")
    if not sizes or min(sizes) < 1 or args.runs < 1 or args.ma_label_tables < 0:
        ap.error("attribute counts and --runs must be positive, --ma-label-tables >= 0")
    schemes = {s.strip() for s in args.schemes.split(",") if s.strip()}
    if not schemes or not schemes <= {"fame", "ma"}:
        ap.error("--schemes takes fame, ma or both")
    backends = ("mcl", "pymcl") if args.backend == "both" else (args.backend,)
    rows: list[dict[str, Any]] = []
    for b in backends:
        if "fame" in schemes:
            rows.extend(bench_backend(b, sizes, args.runs))
        if "ma" in schemes:
            rows.extend(
                bench_ma_backend(
                    b, sizes, args.runs, peer=not args.no_peer, label_tables=args.ma_label_tables
                )
            )
    if not args.no_request_path and "fame" in schemes:
        rows.extend(bench_request_path(args.runs))
    if args.plot is not None:
        plot([r for r in rows if r["regime"] != "request-path"], args.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
