"""The test command (`make test`): infrastructure up, pytest, infrastructure down.

MinIO always starts (built once from the Go module proxy and cached); Mosquitto
starts when it is installed (one line says so otherwise). Fabric
starts when release 3.1.5 binaries are installed (FABRIC_HOME or the default
location); otherwise one line says the Fabric tests are skipped and why.
Everything started here is stopped here, whatever the outcome.
Extra arguments go to pytest, e.g. `uv run python tools/run_tests.py -k policy`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time


def _ehr_abe(*args: str) -> int:
    return subprocess.call([sys.executable, "-m", "ehr_abe", *args])


def main() -> int:
    from ehr_abe.infra.fabric import fabric_installed
    from ehr_abe.infra.fabric.settings import FabricSettings
    from ehr_abe.infra.mqtt import INSTALL_HINT, mosquitto_binary

    env = os.environ
    installed, why = fabric_installed(FabricSettings.from_env())
    components = ["minio"]
    if mosquitto_binary() is not None:
        components.append("mqtt")
    else:
        print(f"MQTT tests skipped: {INSTALL_HINT}", flush=True)
    if installed:
        components.append("fabric")
        env["EHR_ABE_REQUIRE_FABRIC"] = "1"
    else:
        print(f"Fabric tests skipped: {why}", flush=True)
    started = time.monotonic()
    try:
        rc = _ehr_abe("infra", "up", *components)
        if rc != 0:
            print("infrastructure did not come up; see the message above", flush=True)
            return rc
        print(f"infrastructure up in {time.monotonic() - started:.1f} s", flush=True)
        marker = [] if installed else ["-m", "not fabric"]
        rc = subprocess.call([sys.executable, "-m", "pytest", *marker, *sys.argv[1:]])
        if rc == 5:
            print("pytest collected no tests: that is a failure here", flush=True)
            return 1
        return rc
    finally:
        _ehr_abe("infra", "down")


if __name__ == "__main__":
    raise SystemExit(main())
