"""Helpers for the ``serve`` tests: the server in a thread, SSE readers, demo tables, writes.

The server runs for real (aiohttp on a free port) and is read over real sockets with httpx
and httpx-sse: ``httpx.ASGITransport`` would hang on an endless stream.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
from httpx_sse import ServerSentEvent, connect_sse

from pgwatch_cli.capture import triggers
from pgwatch_cli.commands.serve import Running, ServeOptions, serve
from pgwatch_cli.defaults import DEFAULT_CHANNEL
from pgwatch_cli.demo import schema as demo

STOP_WITHIN_S = 5.0


@contextlib.contextmanager
def running_server(dsn: str, **options: Any) -> Iterator[Running]:
    """``bookwatch serve`` on a free loopback port in a thread; stopped (gracefully) on exit."""
    started: queue.Queue[Running | BaseException] = queue.Queue()

    def run() -> None:
        try:
            serve(ServeOptions(dsn=dsn, port=0, **options), ready=started.put)
        except BaseException as exc:
            started.put(exc)

    thread = threading.Thread(target=run, name="bookwatch-serve", daemon=True)
    thread.start()
    outcome = started.get(timeout=30)
    if isinstance(outcome, BaseException):
        raise outcome
    try:
        yield outcome
    finally:
        outcome.stop()
        thread.join(STOP_WITHIN_S + 5)
        assert not thread.is_alive(), "the server did not stop"


def install_demo(conn: psycopg.Connection[Any], schema: str = "public") -> None:
    """The seed's tables with sample data and durable triggers, as ``init-demo`` makes them."""
    with conn.transaction():
        for statement in demo.create_statements(schema):
            conn.execute(statement)
        demo.fill(conn, schema)
        plan = triggers.plan_install(
            conn, demo.table_refs(schema), channel=DEFAULT_CHANNEL, durable=True,
            excluded={},
        )
        for statement in plan.statements:
            conn.execute(statement)


def bump_price(conn: psycopg.Connection[Any], booking_id: int, actor: str = "test") -> int:
    """One committed UPDATE of a booking; returns the seq it got in the change log."""
    with conn.transaction():
        conn.execute("SELECT set_config('bookwatch.actor', %s, true)", (actor,))
        conn.execute(
            "UPDATE bookings SET gesamtpreis = gesamtpreis + 1, version = version + 1"
            " WHERE id = %s", (booking_id,),
        )
    return newest_seq(conn)


def newest_seq(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT coalesce(max(seq), 0) FROM bookwatch.change_log").fetchone()
    assert row is not None
    return int(row[0])


@dataclass
class Received:
    event: ServerSentEvent
    at: float  # time.monotonic() when it was read


@dataclass
class SseReader:
    """Reads one ``/events`` stream in a thread; the test takes events off ``events``."""

    url: str
    params: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    events: queue.Queue[Received | BaseException | None] = field(
        default_factory=queue.Queue, init=False)
    status: int | None = field(default=None, init=False)
    opened: threading.Event = field(default_factory=threading.Event, init=False)

    def __post_init__(self) -> None:
        self._response: httpx.Response | None = None
        self._client = httpx.Client(timeout=httpx.Timeout(30.0, connect=5.0))
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        assert self.opened.wait(10), "the stream did not open"

    def _read(self) -> None:
        try:
            with connect_sse(
                self._client, "GET", self.url + "/events", params=self.params,
                headers=self.headers,
            ) as source:
                self.status = source.response.status_code
                self._response = source.response
                self.opened.set()
                for event in source.iter_sse():
                    self.events.put(Received(event, time.monotonic()))
            self.events.put(None)  # the server ended the stream
        except BaseException as exc:
            self.opened.set()
            self.events.put(exc)

    def next(self, kind: str | None = "change", timeout: float = 15.0) -> ServerSentEvent:
        """The next event of ``kind`` (None: any), skipping others; fails after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {kind or 'event'} within {timeout} s")
            try:
                item = self.events.get(timeout=remaining)
            except queue.Empty:
                continue
            if item is None:
                raise AssertionError("the server ended the stream")
            if isinstance(item, BaseException):
                raise AssertionError(f"the stream failed: {item!r}")
            if kind is None or item.event.event == kind:
                return item.event

    def ended(self, timeout: float = 10.0) -> bool:
        """True once the server has closed the stream (events before that are skipped)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                item = self.events.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                continue
            if item is None or isinstance(item, BaseException):
                return True
        return False

    def close(self) -> None:
        """Hang up, the way a closing browser tab does (the server sees the disconnect)."""
        if self._response is not None:
            stream = self._response.extensions["network_stream"]
            with contextlib.suppress(OSError):
                stream.get_extra_info("socket").shutdown(socket.SHUT_RDWR)
        self._client.close()
        self._thread.join(5)

    def __enter__(self) -> SseReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ServeProcess:
    """``bookwatch serve`` in its own process; ``url`` once it says it is serving."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        env = {**os.environ, "BOOKWATCH_DEBUG": "", **(env or {})}
        if "BOOKWATCH_TOKEN" not in (env or {}):
            env.pop("BOOKWATCH_TOKEN", None)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pgwatch_cli", "serve", "--port", "0", *args],
            stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
        )
        self.stderr: list[str] = []
        found = threading.Event()
        self.url = ""

        def read() -> None:
            assert self.process.stderr is not None
            for line in self.process.stderr:
                self.stderr.append(line)
                match = re.search(r"serving on (http://\S+)", line)
                if match:
                    self.url = match.group(1)
                    found.set()

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()
        if not found.wait(30):
            self.process.kill()
            raise AssertionError("serve did not start: " + "".join(self.stderr))

    def stop(self, sig: int, within: float) -> tuple[int, float]:
        started = time.monotonic()
        self.process.send_signal(sig)
        code = self.process.wait(timeout=within + 10)
        self._reader.join(5)
        return code, time.monotonic() - started

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()


def seq_of(event: ServerSentEvent) -> int:
    """The seq of an event id (``LOG:SEQ``, or a bare seq)."""
    assert event.id, f"an event without an id: {event}"
    return int(event.id.rpartition(":")[2])


def address_of(url: str) -> tuple[str, int]:
    """``http://127.0.0.1:8765`` → ``("127.0.0.1", 8765)``, for raw sockets."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def stuck_client(url: str) -> socket.socket:
    """A client that opens ``/events`` and never reads: its receive buffer fills at once."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(address_of(url))
    sock.sendall(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    return sock
