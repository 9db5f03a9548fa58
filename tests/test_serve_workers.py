"""``bookwatch serve --workers N``: processes sharing one port, every event to every client once,
``/healthz`` naming the worker, and no worker outliving the command."""

from __future__ import annotations

import contextlib
import queue
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import psutil
import psycopg
import pytest

from pgwatch_cli.commands.serve import Running, ServeOptions, WorkerRestarts, serve
from pgwatch_cli.commands.serve.options import ServeFailed
from tests.fix_cli import run_bookwatch
from tests.serve_helpers import ServeProcess, SseReader, bump_price, seq_of


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
            assert [seq_of(reader.next()) for _ in seqs] == seqs
        # Nothing more arrives: a duplicate would come right behind.
        marker = bump_price(postgresql, 9)
        for reader in readers:
            assert seq_of(reader.next()) == marker
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


def _worker_pids(url: str, count: int = 2, within: float = 30) -> dict[int, int]:
    """worker index → pid, asking /healthz until every worker answered."""
    answered: dict[int, int] = {}
    deadline = time.monotonic() + within
    while len(answered) < count:
        assert time.monotonic() < deadline, f"only worker(s) {set(answered)} answered"
        with contextlib.suppress(httpx.HTTPError):
            health = httpx.get(url + "/healthz", timeout=5).json()
            answered[health["worker"]] = health["pid"]
    return answered


def test_a_killed_worker_is_replaced_while_the_other_keeps_serving(
    two_workers: ServeProcess, postgresql: psycopg.Connection[Any]
) -> None:
    url = two_workers.url
    before = _worker_pids(url)
    readers = [SseReader(url, params={"table": "bookings"}) for _ in range(8)]
    try:
        psutil.Process(before[0]).kill()
        seq = bump_price(postgresql, 1)
        served = 0
        for reader in readers:
            with contextlib.suppress(AssertionError):  # its worker was the one killed
                assert seq_of(reader.next(timeout=10)) == seq
                served += 1
        assert served >= 1, "the surviving worker's clients got nothing"
        after: dict[int, int] = {}
        deadline = time.monotonic() + 60
        while after.get(0) in (None, before[0]):
            assert time.monotonic() < deadline, "no new worker 0 appeared"
            after = _worker_pids(url)
        assert after[1] == before[1], "the other worker was restarted too"
        assert two_workers.process.poll() is None, "serve stopped"
    finally:
        for reader in readers:
            reader.close()
    assert "starting it again" in "".join(two_workers.stderr)


def test_workers_that_keep_dying_stop_serve_with_an_error(demo_dsn: str) -> None:
    outcome: queue.Queue[object] = queue.Queue()
    started: queue.Queue[Running] = queue.Queue()
    options = ServeOptions(dsn=demo_dsn, port=0, workers=2,
                           worker_restarts=WorkerRestarts(limit=1, window_s=60))

    def run() -> None:
        try:
            outcome.put(serve(options, ready=started.put))
        except BaseException as exc:
            outcome.put(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    url = started.get(timeout=60).url
    first = _worker_pids(url)
    psutil.Process(first[0]).kill()
    deadline = time.monotonic() + 60
    replaced = first
    while replaced.get(0) == first[0]:
        assert time.monotonic() < deadline, "the first death was not answered by a restart"
        replaced = _worker_pids(url)
    other = psutil.Process(replaced[1])
    psutil.Process(replaced[0]).kill()  # a second death within the window: over the limit
    failure = outcome.get(timeout=30)
    thread.join(10)
    assert isinstance(failure, ServeFailed), failure
    assert "2 times within 60 s" in str(failure)
    _gone, alive = psutil.wait_procs([other], timeout=15)
    assert not alive, "the other worker outlived the crash loop"
