"""`make test` (tools/run_tests.py): its own infra per run, one line for a missing engine."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def run_tests(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    spec = importlib.util.spec_from_file_location("run_tests", ROOT / "tools" / "run_tests.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "run_tests", module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    for name in (
        "EHR_ABE_INFRA_DIR",
        "CI",
        "EHR_ABE_MINIO_PORT",
        "EHR_ABE_MINIO_CONSOLE_PORT",
        "EHR_ABE_MQTT_PORT",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("EHR_ABE_FABRIC_PORT_OFFSET", raising=False)
    return module


def test_each_run_gets_its_own_ports(run_tests: ModuleType) -> None:
    first: dict[str, str] = {}
    second: dict[str, str] = {}
    for component in run_tests.COMPONENTS:
        component.isolate(first)
        component.isolate(second)
    mine = {
        int(first["EHR_ABE_MINIO_PORT"]),
        int(first["EHR_ABE_MINIO_CONSOLE_PORT"]),
        int(first["EHR_ABE_MQTT_PORT"]),
    }
    assert len(mine) == 3
    offset = int(first["EHR_ABE_FABRIC_PORT_OFFSET"])
    assert offset > 0 and all(run_tests._port_free(p) for p in run_tests._fabric_ports(offset))
    # chosen ports are left alone when the user set them
    chosen = {
        "EHR_ABE_MINIO_PORT": "1",
        "EHR_ABE_FABRIC_PORT_OFFSET": "5",
        "EHR_ABE_MQTT_PORT": "7",
    }
    given = dict(chosen)
    for component in run_tests.COMPONENTS:
        component.isolate(chosen)
    assert chosen == given


def test_a_missing_engine_outside_ci_is_one_line_and_the_rest_runs(
    run_tests: ModuleType,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    missing = run_tests.Component(
        "minio",
        lambda env: (False, "no cached MinIO binary and no Go toolchain"),
        lambda env: env.setdefault("EHR_ABE_MINIO_PORT", "1"),
        required_in_ci=True,
    )
    monkeypatch.setattr(run_tests, "COMPONENTS", [missing])
    monkeypatch.setattr(
        sys, "argv", ["run_tests.py", "-q", "-p", "no:cacheprovider", "tests/test_proto_stubs.py"]
    )
    monkeypatch.chdir(ROOT)
    rc = run_tests.main()
    out = capfd.readouterr().out
    assert rc == 0, out
    lines = [line for line in out.splitlines() if "skipped" in line and "minio" in line]
    assert lines == ["minio tests skipped: no cached MinIO binary and no Go toolchain"]
    assert "passed" in out  # the rest of the suite ran
    infra = next(
        line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("infrastructure of")
    )
    assert not os.path.exists(infra)  # the run's own infra dir is gone


def test_under_ci_a_required_engine_that_cannot_start_fails_the_run(
    run_tests: ModuleType,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("CI", "1")
    monkeypatch.setenv("EHR_ABE_CACHE", str(tmp_path / "empty-cache"))  # no MinIO binary
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable) + ":/usr/bin:/bin")  # no Go
    monkeypatch.setattr(run_tests, "COMPONENTS", run_tests.COMPONENTS[:1])  # MinIO only
    monkeypatch.setattr(sys, "argv", ["run_tests.py", "-q", "tests/test_proto_stubs.py"])
    monkeypatch.chdir(ROOT)
    rc = run_tests.main()
    out = capfd.readouterr().out
    assert rc != 0
    assert "minio did not come up" in out and "tests skipped" not in out
