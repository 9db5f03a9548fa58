"""``bookwatch.js``: its unit tests (rebase, the connection states) in Node's own test runner,
and the module as ``serve`` hands it out."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from pgwatch_cli import client
from tests.serve_helpers import running_server

HERE = Path(__file__).resolve().parent
NODE = shutil.which("node") or "/usr/bin/node"


@pytest.mark.skipif(not Path(NODE).exists(), reason="node is not installed")
def test_client_unit_tests_pass_in_node() -> None:
    result = subprocess.run(
        [NODE, "--test", str(HERE / "client" / "bookwatch.test.mjs")],
        capture_output=True, text=True, timeout=120, cwd=HERE.parent,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "# fail 0" in result.stdout


def test_the_module_exports_what_the_spec_names() -> None:
    source = client.script().decode()
    for name in ("connect", "rebase", "difference"):
        assert f"export function {name}(" in source
    # No build step and nothing to install: the module imports nothing.
    assert not [line for line in source.splitlines() if line.startswith("import ")]


def test_serve_hands_out_the_module_under_the_token_rule(
    postgresql: psycopg.Connection[Any], dsn: str
) -> None:
    with running_server(dsn) as server:
        plain = httpx.get(server.url + "/bookwatch.js", timeout=10)
    assert plain.status_code == 200
    assert plain.headers["content-type"].startswith("text/javascript")
    assert plain.content == client.script()
    with running_server(dsn, token="s3cret") as server:
        denied = httpx.get(server.url + "/bookwatch.js", timeout=10)
        allowed = httpx.get(server.url + "/bookwatch.js?token=s3cret", timeout=10)
    assert denied.status_code == 401
    assert allowed.status_code == 200 and allowed.content == client.script()
