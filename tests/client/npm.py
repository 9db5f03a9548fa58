"""The JavaScript side of the tests: node, npm and the client package's dev tools (typescript,
esbuild, React's types), installed from clients/js/package-lock.json on first use."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "clients" / "js"


def node() -> str:
    found = shutil.which("node")
    if found is None:
        pytest.skip("node is not installed (CI has it): the JavaScript client is not tested")
    return found


def npm() -> str:
    found = shutil.which("npm")
    if found is None:
        pytest.skip("npm is not installed (CI has it): the client package is not tested")
    return found


def dev_tools() -> Path:
    """clients/js/node_modules, installed exactly as the lock file says (once, under a lock)."""
    node()
    command = npm()
    modules = PACKAGE / "node_modules"
    with open(PACKAGE / "package-lock.json") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        if not (modules / ".bin" / "tsc").exists() or not (modules / ".bin" / "esbuild").exists():
            run([command, "ci", "--no-audit", "--no-fund"], PACKAGE, timeout=600)
    return modules


def run(command: list[str], cwd: Path, timeout: float = 300,
        env: dict[str, str] | None = None) -> str:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                            env=None if env is None else {**os.environ, **env})
    assert result.returncode == 0, (
        f"{' '.join(command)} failed ({result.returncode}):\n"
        + result.stdout[-4000:] + result.stderr[-4000:])
    return result.stdout
