"""Running ``bookwatch serve``: bind, connect the one ChangeStream, serve until a signal.

One process serves with aiohttp (public API only: ``web.Server``, ``ServerRunner``,
``SockSite``); ``--workers N`` starts N such processes on one port (workers.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import resource
import signal
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from pgwatch_cli import console, db, lifecycle
from pgwatch_cli.bus import hooks as bus_hooks
from pgwatch_cli.bus.url import RedisBus
from pgwatch_cli.commands.serve import logs, pauses, presence_sync
from pgwatch_cli.commands.serve.app import AppSettings, create_app
from pgwatch_cli.commands.serve.connections import Connections
from pgwatch_cli.commands.serve.fanout import Fanout
from pgwatch_cli.commands.serve.front import Front
from pgwatch_cli.commands.serve.metrics import RelayCounters
from pgwatch_cli.commands.serve.presence import Presence
from pgwatch_cli.commands.serve.security import check_exposure
from pgwatch_cli.commands.serve.streams import Relay, WorkerInfo
from pgwatch_cli.defaults import DEFAULT_CHANNEL
from pgwatch_cli.demo import api as demo_api
from pgwatch_cli.errors import BookwatchError, UsageProblem
from pgwatch_cli.stream.listener import ChangeStream

# Streams end themselves at shutdown; this only bounds a peer that will not take the last bytes.
GRACEFUL_SHUTDOWN_S = 3.0
# A request whose headers are not complete within this is closed (so is an idle keep-alive).
HEADER_TIMEOUT_S = 10.0
BACKLOG = 2048
DEFAULT_CLIENT_BUFFER = 1 << 20  # bytes a client may fall behind before it is reset


@dataclass(frozen=True)
class ServeOptions:
    dsn: str
    host: str = "127.0.0.1"
    port: int = 8765
    token: str | None = None
    allow_origins: Sequence[str] = field(default_factory=tuple)
    insecure: bool = False
    demo: bool = False
    schema: str = "public"
    channel: str = DEFAULT_CHANNEL
    relay: bool = True  # relay the WAL in the background when no other process does
    heartbeat_s: float = 15.0
    client_buffer: int = DEFAULT_CLIENT_BUFFER  # bytes
    workers: int = 1
    max_clients: int = 10000
    max_lag_s: float = 10.0  # 0: never reset for lag
    bus: RedisBus | None = None  # --bus redis://: events and presence through Redis


class ServerBindFailed(BookwatchError):
    """The server could not listen on the requested address."""


class ServeFailed(BookwatchError):
    """The server stopped because relaying events failed."""


@dataclass(frozen=True)
class Running:
    """A started server, as ``serve`` reports it once it accepts connections."""

    url: str
    relay: Relay | None  # None in the parent of --workers
    stop_server: Callable[[], None]

    def stop(self) -> None:
        """Ask for a graceful shutdown (from any thread)."""
        self.stop_server()


def _announce(running: Running) -> None:
    console.note(f"serving on {running.url}")


def serve(options: ServeOptions, *, ready: Callable[[Running], None] = _announce) -> int | None:
    """Serve until SIGINT/SIGTERM; returns the signal that stopped it (None: stopped otherwise).

    Raises ``UsageProblem`` for an unsafe exposure and ``ServerBindFailed`` for a taken port
    before anything else happens.
    """
    check_exposure(options.host, options.token, options.insecure)
    raise_fd_limit()
    if options.demo or options.workers > 1:
        # One clear error here rather than one per worker process.
        with db.connect(options.dsn) as conn:
            if options.demo:
                demo_api.check_tables(conn, options.schema)
    if options.workers > 1:
        from pgwatch_cli.commands.serve import workers

        return workers.run(options, ready)
    listening = bind(options.host, options.port)
    try:
        return run_loop(serve_on(options, listening, ready, WorkerInfo()))
    finally:
        listening.close()


MAX_WORKERS = 64


def parse_workers(text: str) -> int:
    """``--workers``: a count, or ``auto`` for one per CPU."""
    if text.strip().lower() == "auto":
        return max(1, os.cpu_count() or 1)
    try:
        count = int(text)
    except ValueError:
        count = 0
    if not 1 <= count <= MAX_WORKERS:
        raise UsageProblem(f"--workers must be 1 to {MAX_WORKERS} or auto, not {text!r}")
    return count


def raise_fd_limit() -> None:
    """Every stream is a descriptor: take all the kernel allows this process."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def run_loop(main: Coroutine[Any, Any, int | None]) -> int | None:
    """uvloop's event loop when installed (``bookwatch[fast]``), else asyncio's."""
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:
        pass
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def bind(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """The listening socket, bound here so a taken port is one clear error, not a log line."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ServerBindFailed(f"Cannot listen on {host}:{port}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    listening = socket.socket(family, kind, proto)
    try:
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        listening.bind(address)
        listening.listen(BACKLOG)
    except OSError as exc:
        listening.close()
        hint = "Choose another --port, or stop the process using it." if (
            exc.errno == errno.EADDRINUSE
        ) else None
        raise ServerBindFailed(
            f"Cannot listen on {host}:{port}: {exc.strerror or exc}", hint=hint
        ) from None
    listening.setblocking(False)
    return listening


def url_of(listening: socket.socket) -> str:
    host, port = listening.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class Stopper:
    """What ends ``serve``: a signal (main thread only), ``Running.stop()``, or a failure."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.event = asyncio.Event()
        self.stopped_by: int | None = None
        self._handlers = contextlib.ExitStack()

    def __enter__(self) -> Stopper:
        if threading.current_thread() is threading.main_thread():
            self._handlers.enter_context(lifecycle.loop_handling(
                self.loop, (signal.SIGINT, signal.SIGTERM, signal.SIGHUP), self.on_signal))
        return self

    def __exit__(self, *exc: object) -> None:
        self._handlers.close()

    def on_signal(self, sig: int) -> None:
        if self.stopped_by is None:
            self.stopped_by = sig
        self.event.set()

    def stop(self) -> None:
        self.event.set()

    def stop_threadsafe(self) -> None:
        with contextlib.suppress(RuntimeError):  # the loop already ended
            self.loop.call_soon_threadsafe(self.event.set)


async def serve_on(
    options: ServeOptions,
    listening: socket.socket,
    ready: Callable[[Running], None],
    worker: WorkerInfo,
) -> int | None:
    """Serve on ``listening`` until stopped (one process, or one of the workers)."""
    debug = console.tracebacks_enabled()
    access_log = logs.configure(debug)
    with Stopper() as stopper:
        presence = Presence()
        # --bus: the one place serve chooses between the PostgreSQL bus and Redis.
        source = ChangeStream(options.dsn, channel=options.channel, relay=options.relay) \
            if options.bus is None else bus_hooks.stream(
                options.bus, options.dsn, channel=options.channel, relay=options.relay)
        sharing = presence_sync.shared(presence, options.dsn) if options.bus is None \
            else bus_hooks.shared_presence(presence, options.bus, options.dsn)
        async with source as stream, sharing:
            fanout = Fanout(
                RelayCounters(), buffer_bytes=options.client_buffer,
                max_lag_s=options.max_lag_s, clock_offset_s=await clock_offset(options.dsn),
                on_count=worker.record,
            )
            connections = Connections(options.dsn)
            relay = Relay(
                stream=stream, presence=presence, connections=connections, fanout=fanout,
                heartbeat_s=options.heartbeat_s, max_clients=options.max_clients, worker=worker,
            )
            settings = AppSettings(
                token=options.token, allow_origins=tuple(options.allow_origins),
                demo_schema=options.schema if options.demo else None,
            )
            front = Front(relay, settings, create_app(relay, settings), options.host)
            server = web.Server(
                front, handler_cancellation=True, keepalive_timeout=HEADER_TIMEOUT_S,
                # A refused body (413) is not read to its end: the connection is closed.
                lingering_time=0,
                access_log=access_log if debug else None, access_log_class=logs.AccessLogger,
            )
            runner = web.ServerRunner(server, shutdown_timeout=GRACEFUL_SHUTDOWN_S)
            await runner.setup()
            background = [asyncio.create_task(relay.pump()),
                          asyncio.create_task(relay.heartbeats())]
            if worker.count > 1:
                background.append(asyncio.create_task(_orphaned(stopper)))
            try:
                await web.SockSite(runner, listening, backlog=BACKLOG).start()
                for task in background:
                    # Serving without events would look healthy and be useless: stop instead.
                    task.add_done_callback(lambda _task: stopper.stop())
                pauses.settle_after_start()
                ready(Running(url_of(listening), relay, stopper.stop_threadsafe))
                await stopper.event.wait()
            finally:
                # The pump first: under a backlog it would keep the loop busy fanning out
                # events that nobody will be sent.
                for task in background:
                    task.cancel()
                relay.stop()
                await runner.cleanup()
                outcomes = await asyncio.gather(*background, return_exceptions=True)
                await connections.close()
    failure = next((outcome for outcome in outcomes if isinstance(outcome, Exception)), None)
    if failure is not None:
        raise ServeFailed(f"The event relay failed: {failure}") from failure
    return stopper.stopped_by


async def clock_offset(dsn: str) -> float:
    """The database's clock minus this host's (events carry the database's commit time)."""
    try:
        async with await db.connect_async(dsn, autocommit=True) as conn:
            before = time.time()
            cursor = await conn.execute("SELECT extract(epoch FROM clock_timestamp())::float8")
            row = await cursor.fetchone()
            after = time.time()
    except Exception:
        return 0.0
    return float(row[0]) - (before + after) / 2 if row else 0.0


async def _orphaned(stopper: Stopper) -> None:
    """A worker stops when the process that started it is gone (even if it was killed)."""
    parent = os.getppid()
    while os.getppid() == parent:
        await asyncio.sleep(1.0)
    stopper.on_signal(signal.SIGTERM)
