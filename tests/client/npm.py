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
            _install(command)
    return modules


# What npm says when it cannot reach the registry at all (no network: a sandbox, a plane).
_UNREACHABLE = ("ENOTFOUND", "EAI_AGAIN", "ECONNREFUSED", "ENETUNREACH", "ETIMEDOUT")


def _install(command: str) -> None:
    """``npm ci`` from the lock file, the cache first. With no registry to reach the tests of
    the packed client skip, saying why (CI reaches it and runs them); any other failure fails."""
    result = subprocess.run(
        [command, "ci", "--no-audit", "--no-fund", "--prefer-offline", "--fetch-retries=1",
         "--fetch-timeout=20000"],
        cwd=PACKAGE, capture_output=True, text=True, timeout=600,
    )
    if result.returncode == 0:
        return
    output = result.stdout[-4000:] + result.stderr[-4000:]
    said = [line for line in output.splitlines() if any(code in line for code in _UNREACHABLE)]
    if said:
        pytest.skip("the npm registry is unreachable, so the client package's dev tools "
                    "(typescript, esbuild) cannot be installed: " + said[0].strip())
    raise AssertionError(f"npm ci failed ({result.returncode}):\n{output}")


def run(command: list[str], cwd: Path, timeout: float = 300,
        env: dict[str, str] | None = None) -> str:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                            env=None if env is None else {**os.environ, **env})
    assert result.returncode == 0, (
        f"{' '.join(command)} failed ({result.returncode}):\n"
        + result.stdout[-4000:] + result.stderr[-4000:])
    return result.stdout
