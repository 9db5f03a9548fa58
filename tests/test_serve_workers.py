"""``bookwatch serve --workers N``: processes sharing one port, every event to every client once,
``/healthz`` naming the worker, and no worker outliving the command."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from typing import Any

import httpx
import psutil
import psycopg
import pytest

from tests.fix_cli import run_bookwatch
from tests.serve_helpers import ServeProcess, SseReader, bump_price


@pytest.fixture
def two_workers(demo_dsn: str) -> Iterator[ServeProcess]:
    server = ServeProcess("--dsn", demo_dsn, "--workers", "2")
    yield server
    for child in _children(server.process.pid):
        child.kill()
    server.kill()


def _children(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def test_two_workers_deliver_every_event_once_to_every_client(
    two_workers: ServeProcess, postgresql: psycopg.Connection[Any]
) -> None:
    url = two_workers.url
    # New connections are spread over the workers by the kernel: ask until both answered.
    answered: dict[int, int] = {}
    deadline = time.monotonic() + 20
    while len(answered) < 2:
        assert time.monotonic() < deadline, f"only worker(s) {set(answered)} answered"
        health = httpx.get(url + "/healthz", timeout=10).json()
        answered[health["worker"]] = health["pid"]
        assert health["workers"] == 2
    readers = [SseReader(url, params={"table": "bookings"}) for _ in range(12)]
    try:
        deadline = time.monotonic() + 10
        while httpx.get(url + "/healthz", timeout=10).json()["clients_all_workers"] < 12:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        seqs = [bump_price(postgresql, 1 + number % 5) for number in range(15)]
        for reader in readers:
            assert [int(reader.next().id) for _ in seqs] == seqs
        # Nothing more arrives: a duplicate would come right behind.
        marker = bump_price(postgresql, 9)
        for reader in readers:
            assert reader.next().id == str(marker)
    finally:
        for reader in readers:
            reader.close()
    metrics = httpx.get(url + "/metrics", timeout=10).text
    assert "bookwatch_worker " in metrics


def test_sigterm_stops_every_worker_and_exits_0(two_workers: ServeProcess) -> None:
    workers = _children(two_workers.process.pid)
    assert len([p for p in workers if "python" in p.name().lower()]) >= 2
    with SseReader(two_workers.url) as reader:
        code, took = two_workers.stop(signal.SIGTERM, within=15)
        assert reader.ended(timeout=10)
    assert code == 0, "".join(two_workers.stderr)
    assert took < 15
    _gone, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive, f"workers outlived the command: {alive}"
    assert "Traceback" not in "".join(two_workers.stderr)


def test_a_worker_count_that_makes_no_sense_is_a_usage_error(demo_dsn: str) -> None:
    for bad in ("0", "many", "-2"):
        result = run_bookwatch("serve", "--dsn", demo_dsn, "--port", "0", "--workers", bad)
        assert result.returncode == 2, result.stderr
        assert result.stderr.count("Error:") == 1


def test_workers_stop_when_the_parent_is_killed(two_workers: ServeProcess) -> None:
    workers = [p for p in _children(two_workers.process.pid) if "python" in p.name().lower()]
    assert len(workers) >= 2
    two_workers.kill()  # SIGKILL: the parent cannot stop them itself
    _gone, alive = psutil.wait_procs(workers, timeout=15)
    assert not alive, f"workers outlived a killed parent: {alive}"
