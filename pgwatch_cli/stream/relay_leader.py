"""Relaying in the background of any listening process, whenever no other process relays.

The slot admits one consumer, so taking it is winning the election: every process polls the
slot every few seconds and starts relaying when it is free (its relay died, or never ran).
A relay killed with ``kill -9`` frees the slot as soon as the server sees its socket close, so
a successor takes over within about ``RETRY_S``.

One background relay per database per process, shared by all its ChangeStreams.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from time import monotonic
from typing import Any

import psycopg
from psycopg.rows import TupleRow

from pgwatch_cli import db
from pgwatch_cli.capture.prune import apply_retention
from pgwatch_cli.stream.relay import Housekeeping, Relay, RelayStats
from pgwatch_cli.stream.replication import (
    RELAY_APPLICATION_NAME,
    ReplicationForbidden,
    SlotBusy,
    SlotMissing,
)

RETRY_S = 2.5
# A role that may not relay (no REPLICATION, or not the installer) asks again this seldom.
FORBIDDEN_RETRY_S = 60.0
NOTICE_INTERVAL_S = 60.0
STOP_TIMEOUT_S = 5.0

Notice = Callable[[str], None]


def connect_store(dsn: str) -> psycopg.Connection[TupleRow]:
    params: dict[str, Any] = {"connect_timeout": db.CONNECT_TIMEOUT_S, **db.KEEPALIVES}
    return psycopg.connect(
        dsn, autocommit=True, application_name=RELAY_APPLICATION_NAME, **params
    )


class BackgroundRelay:
    """A daemon thread that relays whenever the slot is free, until ``stop()``."""

    def __init__(
        self,
        dsn: str,
        notice: Notice,
        *,
        retry_s: float = RETRY_S,
        housekeeping: Housekeeping | None = None,
    ) -> None:
        self.dsn = dsn
        self.notice = notice
        self.retry_s = retry_s
        self.housekeeping = housekeeping
        self.leading = False
        self.relay: Relay | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bookwatch relay", daemon=True)
        self._noticed: dict[str, float] = {}
        self._forbidden_said = False

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def stats(self) -> RelayStats | None:
        return self.relay.stats if self.relay is not None else None

    def _run(self) -> None:
        store: psycopg.Connection[TupleRow] | None = None
        try:
            while not self._stop.is_set():
                wait = self.retry_s
                try:
                    if store is None or store.closed:
                        store = connect_store(self.dsn)
                    self._attempt(store)
                except (ReplicationForbidden, psycopg.errors.InsufficientPrivilege) as exc:
                    # Said once: a reader role's tail would otherwise repeat it forever.
                    if not self._forbidden_said:
                        self._forbidden_said = True
                        self.notice(
                            f"not relaying the WAL from this process ({_first_line(exc)}); "
                            "events arrive while a process with the installer's role relays"
                        )
                    wait = FORBIDDEN_RETRY_S
                except (SlotBusy, SlotMissing):
                    pass  # someone else relays, or nothing is in wal mode: look again later
                except psycopg.errors.UndefinedTable:
                    pass  # the slot exists but the log is being (re)created
                except Exception as exc:  # lost connection, protocol surprise: try again
                    if store is not None and store.broken:
                        store.close()
                        store = None
                    self._say(f"relay: {_first_line(exc)}; retrying")
                self._stop.wait(wait)
        finally:
            if store is not None:
                store.close()

    def _attempt(self, store: psycopg.Connection[TupleRow]) -> None:
        relay = Relay(self.dsn, store, stop=self._stop, housekeeping=self.housekeeping)
        self.relay = relay
        try:
            self.leading = True
            relay.run()
        finally:
            self.leading = False

    def _say(self, message: str) -> None:
        """Notice each distinct problem at most once a minute (a retry loop must not flood)."""
        now = monotonic()
        if now - self._noticed.get(message, -NOTICE_INTERVAL_S) >= NOTICE_INTERVAL_S:
            self._noticed[message] = now
            self.notice(message)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class _Shared:
    def __init__(self, relay: BackgroundRelay) -> None:
        self.relay = relay
        self.users = 0


_registry: dict[str, _Shared] = {}
_registry_lock = threading.Lock()


# What every background relay (and ``bookwatch relay``) runs now and then on its connection:
# the change log's retention policy (install-triggers --retention), so the log stays bounded
# wherever events are relayed.
housekeeping: Housekeeping = apply_retention


def acquire(dsn: str, notice: Notice) -> BackgroundRelay:
    """This process's background relay for ``dsn``, started on first use."""
    with _registry_lock:
        shared = _registry.get(dsn)
        if shared is None:
            relay = BackgroundRelay(dsn, notice, housekeeping=housekeeping)
            shared = _registry[dsn] = _Shared(relay)
            shared.relay.start()
        shared.users += 1
        return shared.relay


def release(relay: BackgroundRelay) -> None:
    """Give back what ``acquire`` returned; the last user stops the relay (and waits for it)."""
    with _registry_lock:
        shared = _registry.get(relay.dsn)
        if shared is None or shared.relay is not relay:
            return
        shared.users -= 1
        if shared.users > 0:
            return
        del _registry[relay.dsn]
    relay.stop()
