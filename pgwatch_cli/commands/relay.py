"""``bookwatch relay``: the wal relay alone in the foreground, a one-line status on stderr, until
Ctrl-C (exit 130), SIGTERM (exit 0) or SIGHUP (exit 129). While another process relays, it
waits on standby and takes over when that one stops."""

from __future__ import annotations

import signal
import sys
import threading
from contextlib import AbstractContextManager
from dataclasses import dataclass
from time import monotonic
from types import FrameType

import psycopg
from psycopg.rows import TupleRow

from pgwatch_cli import console, lifecycle
from pgwatch_cli.errors import BookwatchError, NotInstalled
from pgwatch_cli.stream import relay_leader, relay_store
from pgwatch_cli.stream.pgoutput import ProtocolError
from pgwatch_cli.stream.relay import Relay, RelayStats
from pgwatch_cli.stream.relay_leader import RETRY_S, connect_store
from pgwatch_cli.stream.replication import (
    ReplicationForbidden,
    ReplicationLost,
    SlotBusy,
    SlotMissing,
)
from pgwatch_cli.text import first_line

PLAIN_STATUS_EVERY_S = 30.0  # when stderr is not a terminal: a line this often, not a redraw
_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@dataclass(frozen=True)
class RelayOptions:
    dsn: str


def run(options: RelayOptions) -> int:
    """Relay until a signal; returns the exit code (Ctrl-C raises KeyboardInterrupt)."""
    stop = threading.Event()
    caught: list[int] = []
    status = StatusLine()
    with _signals_set(stop, caught):
        store = connect_store(options.dsn)
        try:
            slot = relay_store.slot_name(store)
            if not relay_store.slot_state(store, slot).exists:
                raise _no_slot(slot)
            _relay_until(stop, options.dsn, store, status)
        finally:
            store.close()
            status.done()
    received = caught[0] if caught else signal.SIGTERM
    if received == signal.SIGINT:
        raise KeyboardInterrupt
    return 0 if received == signal.SIGTERM else 128 + received


def _relay_until(
    stop: threading.Event, dsn: str, store: psycopg.Connection[TupleRow], status: StatusLine
) -> None:
    while not stop.is_set():
        relay = Relay(dsn, store, stop=stop, on_status=status.relaying,
                      housekeeping=relay_leader.housekeeping)
        try:
            relay.run()
        except SlotBusy as exc:
            status.show(f"standby: {exc}; taking over when it stops")
        except SlotMissing:
            raise _no_slot(relay.stats.slot or "bookwatch_<oid>") from None
        except ReplicationForbidden as exc:
            raise RelayForbidden(
                f"This role may not read the WAL: {exc}.",
                hint="Relay as the role that ran install-triggers, with REPLICATION "
                "(ALTER ROLE name REPLICATION) or as a superuser.",
            ) from None
        except psycopg.errors.InsufficientPrivilege as exc:
            raise RelayForbidden(
                f"This role may not relay: {first_line(exc)}.",
                hint="The relay reads bookwatch.captured_table and writes the change log: run it "
                "as the role that ran install-triggers.",
            ) from None
        except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName,
                psycopg.errors.UndefinedFunction):
            # remove-triggers --drop-log, a reinstall on its way: the slot keeps the events.
            status.show("the change log is missing; waiting for it (events wait in the slot)")
        except (ReplicationLost, ProtocolError, psycopg.OperationalError) as exc:
            status.show(f"relay interrupted ({first_line(exc)}); retrying")
            if store.broken or store.closed:
                store.close()
                store = connect_store(dsn)
        else:
            status.relaying(relay.stats)
        stop.wait(RETRY_S)


class RelayForbidden(BookwatchError):
    """This role may not relay."""


def _no_slot(slot: str) -> NotInstalled:
    return NotInstalled(
        f"This database has no bookwatch replication slot ({slot}): no table is captured in "
        "wal mode, so there is nothing to relay.",
        hint="Put the tables in wal mode.", suggest="install-triggers --mode wal",
    )


def _signals_set(stop: threading.Event, caught: list[int]) -> AbstractContextManager[None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        caught.append(signum)
        stop.set()

    return lifecycle.handling(_SIGNALS, handler)


class StatusLine:
    """One line on stderr: redrawn in place on a terminal, printed now and then otherwise."""

    def __init__(self) -> None:
        self._tty = sys.stderr.isatty()
        self._last = ""
        self._printed_at = -PLAIN_STATUS_EVERY_S
        self._rate_from: tuple[float, int] | None = None
        self._drawn = False

    def relaying(self, stats: RelayStats) -> None:
        now = monotonic()
        rate = ""
        if self._rate_from is not None and now > self._rate_from[0]:
            per_s = (stats.appended - self._rate_from[1]) / (now - self._rate_from[0])
            rate = f" ({per_s:,.0f}/s)"
        self._rate_from = (now, stats.appended)
        lag = "-" if stats.lag_s is None else f"{stats.lag_s * 1000:,.0f} ms"
        line = (
            f"relaying {stats.slot}: {stats.appended:,} events{rate}, newest seq "
            f"{stats.newest_seq if stats.newest_seq is not None else '-'}, lag {lag}"
        )
        if stats.ignored:
            line += f", {stats.ignored:,} changes of uncaptured tables ignored"
        self.show(line, state="relaying")

    def show(self, line: str, *, state: str | None = None) -> None:
        if self._tty:
            sys.stderr.write("\r\x1b[K" + line[:200])
            sys.stderr.flush()
            self._drawn = True
            return
        kind = state or line
        now = monotonic()
        if kind != self._last or now - self._printed_at >= PLAIN_STATUS_EVERY_S:
            console.note(line)
            self._last, self._printed_at = kind, now

    def done(self) -> None:
        if self._drawn:
            sys.stderr.write("\n")
            sys.stderr.flush()
