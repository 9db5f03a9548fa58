"""What ``bookwatch serve`` is asked to do, what it reports once started, and how it fails."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pgwatch_cli.bus.url import RedisBus
from pgwatch_cli.defaults import DEFAULT_CHANNEL
from pgwatch_cli.errors import BookwatchError, UsageProblem

if TYPE_CHECKING:
    from pgwatch_cli.commands.serve.streams import Relay

DEFAULT_CLIENT_BUFFER = 1 << 20  # bytes a client may fall behind before it is reset
DEFAULT_BUFFER_BUDGET = 256 << 20
MAX_WORKERS = 64


@dataclass(frozen=True)
class WorkerRestarts:
    """A worker that dies is started again, unless more than ``limit`` died within
    ``window_s`` (a crash loop): then every worker stops and serve exits 1."""

    limit: int = 5
    window_s: float = 60.0


@dataclass(frozen=True)
class ServeOptions:
    dsn: str
    host: str = "127.0.0.1"
    port: int = 8765
    token: str | None = None
    token_secret: bytes | None = None  # verifies signed, scoped tokens (--token-secret-file)
    bus: RedisBus | None = None  # --bus redis://: events and presence through Redis
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
    # An event whose frame is bigger is replaced by a reset naming it, live and in replay
    # (None: half the client buffer, so a healthy client can always take one).
    max_event_bytes: int | None = None
    # All clients' unsent bytes together; past it, the clients furthest behind are reset.
    buffer_budget: int = DEFAULT_BUFFER_BUDGET
    # A request whose headers are not complete within this is closed (so is an idle keep-alive).
    header_timeout_s: float = 10.0
    worker_restarts: WorkerRestarts = field(default_factory=WorkerRestarts)


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


def parse_workers(text: str) -> int:
    """``--workers``: a count, or ``auto`` for one per CPU."""
    if text.strip().lower() == "auto":
        return max(1, os.cpu_count() or 1)
    try:
        count = int(text) if text.strip().isascii() else 0
    except ValueError:
        count = 0
    if not 1 <= count <= MAX_WORKERS:
        raise UsageProblem(f"--workers must be 1 to {MAX_WORKERS} or auto, not {text!r}")
    return count
