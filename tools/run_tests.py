"""The test command (`make test`): infrastructure up, pytest, infrastructure down.

Each run gets its own infrastructure: a temporary state directory and free
ports (MinIO's two ports, a Fabric port offset), so two runs on one machine
never meet, and `down` stops exactly the components this run started. Point
the run at existing infrastructure with EHR_ABE_INFRA_DIR (and the port
variables it was started with): components already running there are used
and left running; the others are started there and stopped afterwards.

MinIO starts when its binary is cached or Go can build it. Outside CI (the CI
variable unset), without either, one line says the MinIO tests are skipped and
why, and the rest of the suite runs; under CI MinIO is required. Fabric starts
when release 3.1.5 binaries are installed (FABRIC_HOME or the default
location); otherwise one line says the Fabric tests are skipped and why.

The components live in COMPONENTS, in start order: a new one is one entry
there (its `ehr-abe infra` name, which is also its pytest marker).
Extra arguments go to pytest, e.g. `uv run python tools/run_tests.py -k policy`.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, MutableMapping
from dataclasses import dataclass
from pathlib import Path

Env = MutableMapping[str, str]


@dataclass(frozen=True)
class Component:
    #: the `ehr-abe infra` component name, which is also its pytest marker
    name: str
    #: (can it start here, why not), with the run's environment
    available: Callable[[Env], tuple[bool, str]]
    #: sets this run's own free ports in the environment (unless the user chose them)
    isolate: Callable[[Env], None]
    #: under CI a missing component fails the run instead of skipping its tests
    required_in_ci: bool = False

    @property
    def require_env(self) -> str:
        return f"EHR_ABE_REQUIRE_{self.name.upper()}"


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


# -- MinIO --------------------------------------------------------------------------------
def _minio_available(env: Env) -> tuple[bool, str]:
    from ehr_abe.infra.config import minio_binary_path, pinned_minio_version

    binary = minio_binary_path(pinned_minio_version())
    if binary.is_file() or shutil.which("go", path=env.get("PATH")):
        return True, ""
    return False, f"no cached MinIO binary ({binary}) and no Go toolchain to build it"


def _minio_isolate(env: Env) -> None:
    if "EHR_ABE_MINIO_PORT" not in env and "EHR_ABE_MINIO_CONSOLE_PORT" not in env:
        port, console = _free_ports(2)
        env["EHR_ABE_MINIO_PORT"], env["EHR_ABE_MINIO_CONSOLE_PORT"] = str(port), str(console)


# -- Fabric -------------------------------------------------------------------------------
def _fabric_available(env: Env) -> tuple[bool, str]:
    from ehr_abe.infra.fabric import fabric_installed
    from ehr_abe.infra.fabric.settings import FabricSettings

    return fabric_installed(FabricSettings.from_env(env=env))


def _fabric_ports(offset: int) -> list[int]:
    from ehr_abe.infra.fabric.settings import FabricSettings

    s = FabricSettings().shifted(offset)
    ports = [s.orderer_port, s.orderer_admin_port, s.orderer_operations_port]
    for o in s.orgs:
        ports += [o.peer_port, o.chaincode_port, o.operations_port, o.cc_server_port]
    return ports


def _fabric_isolate(env: Env) -> None:
    if "EHR_ABE_FABRIC_PORT_OFFSET" in env:
        return
    # The shared network of this run at +offset, the tests' private one 300 above it.
    private = int(env.get("EHR_ABE_TEST_FABRIC_PORT_OFFSET", "300"))
    for _ in range(200):
        offset = random.randrange(10, 4000) * 10
        if all(_port_free(p) for p in _fabric_ports(offset) + _fabric_ports(offset + private)):
            env["EHR_ABE_FABRIC_PORT_OFFSET"] = str(offset)
            return
    raise SystemExit("no free port range for this run's Fabric network")


# -- Mosquitto ----------------------------------------------------------------------------
def _mqtt_available(env: Env) -> tuple[bool, str]:
    from ehr_abe.infra.mqtt import INSTALL_HINT, mosquitto_binary

    return (True, "") if mosquitto_binary() is not None else (False, INSTALL_HINT)


def _mqtt_isolate(env: Env) -> None:
    if "EHR_ABE_MQTT_PORT" in env:
        return
    taken = {env.get("EHR_ABE_MINIO_PORT"), env.get("EHR_ABE_MINIO_CONSOLE_PORT")}
    port = next(p for p in iter(lambda: str(_free_ports(1)[0]), None) if p not in taken)
    env["EHR_ABE_MQTT_PORT"] = port


COMPONENTS: list[Component] = [
    Component("minio", _minio_available, _minio_isolate, required_in_ci=True),
    Component("fabric", _fabric_available, _fabric_isolate),
    # .ci/run installs Mosquitto with apt-get when it is missing
    Component("mqtt", _mqtt_available, _mqtt_isolate, required_in_ci=True),
]


def _ehr_abe(env: Env, *args: str) -> int:
    return subprocess.call([sys.executable, "-m", "ehr_abe", *args], env=dict(env))


def _running(env: Env, name: str) -> bool:
    """Is `name` already up in the run's infra dir (every one of its processes running)?"""
    from ehr_abe.infra import manager
    from ehr_abe.infra.config import load_infra_config

    saved = dict(os.environ)
    os.environ.update(env)  # the infra config reads the process environment
    try:
        [component] = manager.components(load_infra_config(env=env), [name], lambda _m: None)
        rows = component.status()
        return bool(rows) and all(r.state == "running" for r in rows)
    except Exception:  # unknown state: treat as not running, `up` will say more
        return False
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _down(env: Env, names: Iterable[str]) -> None:
    names = list(names)
    if names:
        _ehr_abe(env, "infra", "down", *reversed(names))


def main() -> int:
    env: Env = dict(os.environ)
    in_ci = bool(env.get("CI"))
    own_dir: Path | None = None
    if not env.get("EHR_ABE_INFRA_DIR"):
        own_dir = Path(tempfile.mkdtemp(prefix="ehr-abe-test-infra-"))
        env["EHR_ABE_INFRA_DIR"] = str(own_dir)
        for c in COMPONENTS:
            c.isolate(env)
    print(f"infrastructure of this run: {env['EHR_ABE_INFRA_DIR']}", flush=True)

    wanted: list[Component] = []
    skipped: list[str] = []
    for c in COMPONENTS:
        ok, why = c.available(env)
        if ok or (in_ci and c.required_in_ci):
            wanted.append(c)  # under CI a required component that cannot start fails below
        else:
            print(f"{c.name} tests skipped: {why}", flush=True)
            skipped.append(c.name)

    started: list[str] = []
    t0 = time.monotonic()
    try:
        for c in wanted:
            if _running(env, c.name):
                print(f"{c.name}: already running there; used and left running", flush=True)
            else:
                started.append(c.name)  # before `up`: a half-started component is stopped too
                rc = _ehr_abe(env, "infra", "up", c.name)
                if rc != 0:
                    print(f"{c.name} did not come up; see the message above", flush=True)
                    return rc
            env[c.require_env] = "1"  # it runs: its tests must not skip
        print(f"infrastructure up in {time.monotonic() - t0:.1f} s", flush=True)
        marker = ["-m", " and ".join(f"not {n}" for n in skipped)] if skipped else []
        rc = subprocess.call([sys.executable, "-m", "pytest", *marker, *sys.argv[1:]], env=env)
        if rc == 5:
            print("pytest collected no tests: that is a failure here", flush=True)
            return 1
        return rc
    finally:
        _down(env, started)
        if own_dir is not None:
            shutil.rmtree(own_dir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
