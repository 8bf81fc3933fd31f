"""Starting and stopping the processes of local components, by pid file.

`stop` only ever signals a process whose command line still names the
executable we started, so a recycled pid is never killed by mistake.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path


def read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def running(pid_file: Path, marker: str) -> int | None:
    """The pid from pid_file if that process is alive and its command line contains marker."""
    pid = read_pid(pid_file)
    if pid is None:
        return None
    args = cmdline(pid)
    if not args or not any(marker in a for a in args):
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            if f.read().split(")")[-1].split()[0] == "Z":
                return None
    except OSError:
        return None
    return pid


def start(
    args: Sequence[str],
    *,
    pid_file: Path,
    log_file: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> int:
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(
            list(args),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,  # not killed with the CLI; stopped by `down`
        )
    pid_file.write_text(str(proc.pid))
    # Until exec() completes the child still shows our own command line; wait for
    # it so that `running()` (which checks the command line) sees the new program.
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and proc.poll() is None:
        if any(args[0] in a for a in cmdline(proc.pid)):
            break
        time.sleep(0.01)
    return proc.pid


def _gone(pid: int) -> bool:
    """True once the pid no longer runs (exited, or a zombie awaiting its reaper)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] in ("Z", "X")
    except OSError:
        return True


def stop(pid_file: Path, marker: str, timeout_s: float = 15.0) -> bool:
    """SIGTERM, then SIGKILL after timeout_s. True if a process was stopped."""
    pid = running(pid_file, marker)
    if pid is None:
        pid_file.unlink(missing_ok=True)
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    # Wait for the process itself, not its command line: a program's cmdline
    # empties while it is still exiting and holding its ports.
    while time.monotonic() < deadline:
        _reap(pid)
        if _gone(pid):
            break
        time.sleep(0.05)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
    _reap(pid)
    pid_file.unlink(missing_ok=True)
    return True


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
