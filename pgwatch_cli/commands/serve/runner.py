"""Running ``bookwatch serve``: bind, connect the one ChangeStream, serve until a signal."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import uvicorn
from starlette.types import ASGIApp

from pgwatch_cli import console, db
from pgwatch_cli.commands.serve import presence_sync
from pgwatch_cli.commands.serve.app import AppSettings, create_app
from pgwatch_cli.commands.serve.connections import Connections
from pgwatch_cli.commands.serve.presence import Presence
from pgwatch_cli.commands.serve.security import check_exposure
from pgwatch_cli.commands.serve.streams import Relay
from pgwatch_cli.demo import api as demo_api
from pgwatch_cli.errors import BookwatchError
from pgwatch_cli.stream.hub import Hub
from pgwatch_cli.stream.listener import DEFAULT_CHANNEL, ChangeStream

# Streams end themselves at shutdown; this only bounds a peer that will not take the last bytes.
GRACEFUL_SHUTDOWN_S = 3


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
    heartbeat_s: float = 15.0
    client_buffer: int = 1000


class ServerBindFailed(BookwatchError):
    """The server could not listen on the requested address."""


class ServeFailed(BookwatchError):
    """The server stopped because relaying events failed."""


@dataclass(frozen=True)
class Running:
    """A started server, as ``serve`` reports it once it accepts connections."""

    url: str
    relay: Relay
    server: RelayServer

    def stop(self) -> None:
        """Ask for a graceful shutdown (from any thread): uvicorn polls this flag."""
        self.server.should_exit = True


def _announce(running: Running) -> None:
    console.note(f"serving on {running.url}")


def serve(options: ServeOptions, *, ready: Callable[[Running], None] = _announce) -> int | None:
    """Serve until SIGINT/SIGTERM; returns the signal that stopped it (None: stopped otherwise).

    Raises ``UsageProblem`` for an unsafe exposure and ``ServerBindFailed`` for a taken port
    before anything else happens.
    """
    check_exposure(options.host, options.token, options.insecure)
    listening = bind(options.host, options.port)
    try:
        if options.demo:
            with db.connect(options.dsn) as conn:
                demo_api.check_tables(conn, options.schema)
        return asyncio.run(_serve(options, listening, ready))
    finally:
        listening.close()


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so a taken port is one clear error, not a log line."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ServerBindFailed(f"Cannot listen on {host}:{port}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    listening = socket.socket(family, kind, proto)
    try:
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listening.bind(address)
        listening.listen(2048)
    except OSError as exc:
        listening.close()
        hint = "Choose another --port, or stop the process using it." if (
            exc.errno == errno.EADDRINUSE
        ) else None
        raise ServerBindFailed(
            f"Cannot listen on {host}:{port}: {exc.strerror or exc}", hint=hint
        ) from None
    listening.set_inheritable(True)
    return listening


def url_of(listening: socket.socket) -> str:
    host, port = listening.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def _serve(
    options: ServeOptions, listening: socket.socket, ready: Callable[[Running], None]
) -> int | None:
    presence = Presence()
    async with ChangeStream(options.dsn, channel=options.channel) as stream, \
            presence_sync.shared(presence, options.dsn):
        hub = Hub(stream, queue_size=options.client_buffer)
        connections = Connections(options.dsn)
        relay = Relay(
            stream=stream, hub=hub, presence=presence, connections=connections,
            heartbeat_s=options.heartbeat_s, client_buffer=options.client_buffer,
        )
        settings = AppSettings(
            token=options.token, allow_origins=tuple(options.allow_origins),
            demo_schema=options.schema if options.demo else None,
        )
        pump = asyncio.create_task(hub.run())
        background = [pump, asyncio.create_task(relay.watchdog())]

        def stop_streams() -> None:
            # The pump first: under a backlog it would keep the loop busy fanning out events
            # that nobody will be sent.
            for task in background:
                task.cancel()
            relay.stop()

        server = RelayServer(uvicorn_config(create_app(relay, settings)), stop_streams)
        server.started_hook = lambda: ready(Running(url_of(listening), relay, server))
        for task in background:
            # Serving without events would look healthy and be useless: stop instead.
            task.add_done_callback(lambda _task: setattr(server, "should_exit", True))
        try:
            await server.serve(sockets=[listening])
        finally:
            for task in background:
                task.cancel()
            outcomes = await asyncio.gather(*background, return_exceptions=True)
            await connections.close()
        failure = next((outcome for outcome in outcomes if isinstance(outcome, Exception)), None)
        if failure is not None:
            raise ServeFailed(f"The event relay failed: {failure}") from failure
        return server.stopped_by


def uvicorn_config(app: ASGIApp) -> uvicorn.Config:
    debug = os.environ.get("BOOKWATCH_DEBUG", "") not in ("", "0")
    config = uvicorn.Config(
        app,
        lifespan="off",
        log_level="info" if debug else "warning",
        access_log=debug,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        backlog=2048,
    )
    _quiet_intended_drops()
    return config


class _IntendedDrop(logging.Filter):
    """A client that does not read is dropped without a proper end of body, on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "ASGI callable returned without completing response."


def _quiet_intended_drops() -> None:
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(existing, _IntendedDrop) for existing in logger.filters):
        logger.addFilter(_IntendedDrop())


class RelayServer(uvicorn.Server):
    """uvicorn, made to end the endless streams when it shuts down (it would wait for them)."""

    def __init__(self, config: uvicorn.Config, stop_streams: Callable[[], None]) -> None:
        super().__init__(config)
        self.stop_streams = stop_streams
        self.stopped_by: int | None = None
        self.started_hook: Callable[[], None] | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # uvicorn re-raises the signal after shutdown, which would kill the process before
        # our own cleanup ran; here the signal is only recorded and returned by serve().
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            yield
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    def _on_signal(self, sig: int) -> None:
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True  # a second Ctrl-C: stop waiting
        self.should_exit = True
        if self.stopped_by is None:
            self.stopped_by = sig

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and self.started_hook is not None:
            self.started_hook()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.stop_streams()
        await super().shutdown(sockets)
