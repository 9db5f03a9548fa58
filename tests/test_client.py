"""The browser client: its unit tests (rebase, exact numbers, the shared stream) in Node's own
test runner, its types, and the module as ``serve`` hands it out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import psycopg

from pgwatch_cli import client
from tests.client import npm
from tests.serve_helpers import running_server

HERE = Path(__file__).resolve().parent
SOURCE = npm.PACKAGE / "src" / "index.js"


def test_client_unit_tests_pass_in_node() -> None:
    output = npm.run([npm.node(), "--test", str(HERE / "client")], HERE.parent, timeout=180)
    assert "# fail 0" in output and "# pass 0" not in output


def test_serve_hands_out_the_package_source_itself() -> None:
    assert client.script() == SOURCE.read_bytes(), (
        "pgwatch_cli/client/bookwatch.js must be a copy of clients/js/src/index.js: "
        "cp clients/js/src/index.js pgwatch_cli/client/bookwatch.js")


def test_the_module_exports_what_the_spec_names() -> None:
    source = client.script().decode()
    for name in ("connect", "rebase", "difference", "parseJson"):
        assert f"export function {name}(" in source
    # No build step and nothing to install: the module imports nothing, and it does not rely
    # on import.meta.url (which names the bundle once an app bundles it).
    assert not [line for line in source.splitlines() if line.startswith("import ")]
    assert "import.meta" not in source


def test_declarations_and_readme_examples_typecheck() -> None:
    modules = npm.dev_tools()
    npm.run([str(modules / ".bin" / "tsc"), "-p", "tsconfig.json"], npm.PACKAGE)


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
