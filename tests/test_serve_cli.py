"""``bookwatch serve`` as a user runs it: refusals, bind failures, signals, exit codes."""

from __future__ import annotations

import signal
import socket
from collections.abc import Iterator

import httpx
import pytest

from tests.fix_cli import run_bookwatch
from tests.serve_helpers import ServeProcess, SseReader


def _assert_one_error(stderr: str) -> None:
    errors = [line for line in stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, stderr
    assert "Traceback" not in stderr


@pytest.fixture
def serve_process() -> Iterator[list[ServeProcess]]:
    started: list[ServeProcess] = []
    yield started
    for server in started:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait()


def test_refuses_a_public_address_without_a_token(dsn: str) -> None:
    result = run_bookwatch("serve", "--dsn", dsn, "--host", "0.0.0.0", "--port", "0",
                           env={"BOOKWATCH_TOKEN": ""})
    assert result.returncode == 2
    _assert_one_error(result.stderr)
    assert "--token" in result.stderr and "--insecure" in result.stderr


def test_a_taken_port_is_one_error_and_exit_1(dsn: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_bookwatch("serve", "--dsn", dsn, "--port", str(port))
    assert result.returncode == 1
    _assert_one_error(result.stderr)
    assert f"127.0.0.1:{port}" in result.stderr


def test_demo_without_the_demo_tables_says_to_run_init_demo(dsn: str) -> None:
    result = run_bookwatch("serve", "--dsn", dsn, "--demo", "--port", "0")
    assert result.returncode == 1
    _assert_one_error(result.stderr)
    assert "bookings" in result.stderr and "init-demo" in result.stderr


def test_sigterm_with_clients_connected_stops_within_seconds(
    demo_dsn: str, serve_process: list[ServeProcess]
) -> None:
    server = ServeProcess("--dsn", demo_dsn, "--host", "0.0.0.0", "--insecure")
    serve_process.append(server)
    url = server.url.replace("0.0.0.0", "127.0.0.1")
    readers = [SseReader(url, params={"viewer": "Anna", "viewing": "bookings:1"})
               for _ in range(3)]
    assert httpx.get(url + "/healthz", timeout=10).json()["clients"] == 3
    code, took = server.stop(signal.SIGTERM, within=5)
    assert code == 0, "".join(server.stderr)
    assert took < 5
    assert all(reader.ended(timeout=5) for reader in readers)
    assert "Traceback" not in "".join(server.stderr)
    for reader in readers:
        reader.close()


def test_ctrl_c_exits_130_without_a_traceback(
    demo_dsn: str, serve_process: list[ServeProcess]
) -> None:
    server = ServeProcess("--dsn", demo_dsn, "--token", "t")
    serve_process.append(server)
    reader = SseReader(server.url, params={"token": "t"})
    code, took = server.stop(signal.SIGINT, within=5)
    assert code == 130
    assert took < 5
    assert "Traceback" not in "".join(server.stderr)
    reader.close()
