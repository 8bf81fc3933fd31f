"""Regenerate the gRPC/protobuf Python code in ehr_common/api/ from proto/.

Usage: uv run python tools/gen_protos.py [--check]
--check regenerates into a temporary directory and exits 1 if the committed
stubs differ (tests/test_proto_stubs.py runs this).
"""

from __future__ import annotations

import filecmp
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
OUT_PACKAGE = Path("ehr_common") / "api" / "v1"


def generate(out_root: Path) -> list[Path]:
    protos = sorted(PROTO_ROOT.rglob("*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *[str(p) for p in protos],
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    return sorted((out_root / OUT_PACKAGE).glob("*_pb2*.py*"))


def main() -> int:
    check = "--check" in sys.argv[1:]
    if not check:
        for old in (ROOT / OUT_PACKAGE).glob("*_pb2*.py*"):
            old.unlink()
        generate(ROOT)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
        committed = sorted((ROOT / OUT_PACKAGE).glob("*_pb2*.py*"))
        if [p.name for p in fresh] != [p.name for p in committed]:
            print("stale stubs: file set differs; run tools/gen_protos.py")
            return 1
        for f, c in zip(fresh, committed, strict=True):
            if not filecmp.cmp(f, c, shallow=False):
                print(f"stale stub {c.relative_to(ROOT)}; run tools/gen_protos.py")
                return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
