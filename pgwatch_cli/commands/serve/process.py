"""One serving process: bind, connect the one ChangeStream, serve until stopped.

aiohttp's low-level server (public API only: ``web.Server``, ``ServerRunner``, ``SockSite``)
with the gate (gate.py) as its only handler. Run alone, or as one of ``--workers``
(supervisor.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import resource
import signal
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from aiohttp import web

from pgwatch_cli import console, db, lifecycle
from pgwatch_cli.bus import hooks as bus_hooks
from pgwatch_cli.commands.serve import logs, pauses, presence_sync
from pgwatch_cli.commands.serve.app import AppSettings, create_app
from pgwatch_cli.commands.serve.connections import Connections
from pgwatch_cli.commands.serve.fanout import Fanout
from pgwatch_cli.commands.serve.metrics import RelayCounters
from pgwatch_cli.commands.serve.options import Running, ServeFailed, ServeOptions, ServerBindFailed
from pgwatch_cli.commands.serve.presence import Presence
from pgwatch_cli.commands.serve.streams import Relay, WorkerInfo
from pgwatch_cli.stream.listener import ChangeStream

# Streams end themselves at shutdown; this only bounds a peer that will not take the last bytes.
GRACEFUL_SHUTDOWN_S = 3.0
BACKLOG = 2048
ALONE_STOPS_ON = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# A worker leaves Ctrl-C and SIGHUP to its supervisor, which stops it with SIGTERM.
WORKER_STOPS_ON = (signal.SIGTERM,)


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

    def __init__(self, signals: Iterable[int]) -> None:
        self.signals = tuple(signals)
        self.loop = asyncio.get_running_loop()
        self.event = asyncio.Event()
        self.stopped_by: int | None = None
        self._handlers = contextlib.ExitStack()

    def __enter__(self) -> Stopper:
        if threading.current_thread() is threading.main_thread():
            self._handlers.enter_context(lifecycle.loop_handling(
                self.loop, self.signals, self.on_signal))
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
    with Stopper(ALONE_STOPS_ON if worker.count == 1 else WORKER_STOPS_ON) as stopper:
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
                on_count=worker.record, max_event_bytes=options.max_event_bytes,
            )
            connections = Connections(options.dsn)
            relay = Relay(
                stream=stream, presence=presence, connections=connections, fanout=fanout,
                heartbeat_s=options.heartbeat_s, max_clients=options.max_clients, worker=worker,
                buffer_budget=options.buffer_budget,
            )
            settings = AppSettings(
                token=options.token, token_secret=options.token_secret,
                allow_origins=tuple(options.allow_origins),
                demo_schema=options.schema if options.demo else None,
            )
            server = web.Server(
                create_app(relay, settings, options.host), handler_cancellation=True,
                keepalive_timeout=options.header_timeout_s,
                # A refused body (413) is not read to its end: the connection is closed.
                lingering_time=0,
                access_log=access_log if debug else None, access_log_class=logs.AccessLogger,
            )
            runner = web.ServerRunner(server, shutdown_timeout=GRACEFUL_SHUTDOWN_S)
            await runner.setup()
            background = [asyncio.create_task(relay.pump()),
                          asyncio.create_task(relay.heartbeats()),
                          asyncio.create_task(relay.keep_budget())]
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
