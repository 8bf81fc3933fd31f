"""`python -m chaincode`: serve the ehr chaincode as a service (CCaaS).

Environment:
  CHAINCODE_ID               the package id the peer knows it by (required)
  CHAINCODE_SERVER_ADDRESS   host:port to listen on (required)
  EHR_CC_TLS_KEY, EHR_CC_TLS_CERT, EHR_CC_TLS_CLIENT_CA
                             PEM files; all three for mutual TLS, none for plaintext
                             (development only)
The library's own TLS variables are never read by it; this server (chaincode.serve)
takes the files explicitly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from pathlib import Path


def _quiet_library_logging() -> None:
    """fabric-chaincode-python forces DEBUG logging at import and logs every proposal
    and put_state value (health data). Undo that: our own INFO lines only."""
    from fabric_chaincode_python.fabric_shim import logging as shim_logging

    listener = getattr(shim_logging, "_QUEUE_LISTENER", None)
    if listener is not None:
        listener.stop()
    shim_logger = logging.getLogger("asyncio")
    for h in list(shim_logger.handlers):
        shim_logger.removeHandler(h)
    shim_logger.setLevel(logging.ERROR)  # it warns "Look out!" on every message
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def _read(var: str) -> bytes | None:
    path = os.environ.get(var, "")
    if not path:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise SystemExit(f"{var}={path}: cannot read ({exc.strerror})") from None


def main() -> int:
    _quiet_library_logging()
    from chaincode.serve import serve

    log = logging.getLogger("ehr.chaincode")
    cc_id = os.environ.get("CHAINCODE_ID", "")
    address = os.environ.get("CHAINCODE_SERVER_ADDRESS", "")
    if not cc_id or not address:
        print("set CHAINCODE_ID and CHAINCODE_SERVER_ADDRESS", file=sys.stderr)
        return 2
    key, cert, ca = (
        _read(v) for v in ("EHR_CC_TLS_KEY", "EHR_CC_TLS_CERT", "EHR_CC_TLS_CLIENT_CA")
    )
    given = [x is not None for x in (key, cert, ca)]
    if any(given) and not all(given):
        print(
            "EHR_CC_TLS_KEY, EHR_CC_TLS_CERT and EHR_CC_TLS_CLIENT_CA go together", file=sys.stderr
        )
        return 2
    log.info("ehr chaincode serving at %s (mutual TLS: %s)", address, "yes" if all(given) else "NO")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(cc_id, address, key=key, cert=cert, client_ca=ca))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
