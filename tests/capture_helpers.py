"""Helpers for tests that write rows and read back the events the triggers produced.

Every mode has a reader with the same two calls (``events``, ``nothing_within``):
``notify`` reads NOTIFY payloads, ``log`` takes NOTIFY as a wake-up and reads the change log,
``wal`` decodes the relay slot itself (as the relay would, without numbering by the log).
"""

from __future__ import annotations

import json
import time
from typing import Any

import psycopg
from psycopg import sql

from pgwatch_cli.capture import sqlfiles, triggers
from pgwatch_cli.capture.tables import TableRef
from pgwatch_cli.defaults import DEFAULT_CHANNEL

CHANNEL = DEFAULT_CHANNEL


def install(
    dsn: str,
    *tables: str,
    mode: str = "log",
    excluded: dict[str, list[str]] | None = None,
    channel: str = CHANNEL,
) -> triggers.Plan:
    refs = [TableRef.parse(name) for name in tables]
    exclusions = {TableRef.parse(name): columns for name, columns in (excluded or {}).items()}
    with psycopg.connect(dsn) as conn:
        return triggers.run(
            conn,
            lambda: triggers.plan_install(
                conn, refs, channel=channel, mode=mode, excluded=exclusions
            ),
        )


class Listener:
    """A plain LISTEN connection: what any role that may connect could see."""

    def __init__(self, dsn: str, channel: str = CHANNEL) -> None:
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))

    def payloads(self, expected: int, timeout: float = 10.0) -> list[str]:
        return [n.payload for n in self.conn.notifies(timeout=timeout, stop_after=expected)]

    def events(self, expected: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        return [json.loads(payload) for payload in self.payloads(expected, timeout)]

    def nothing_within(self, seconds: float = 0.5) -> bool:
        return not list(self.conn.notifies(timeout=seconds, stop_after=1))

    def close(self) -> None:
        self.conn.close()


class LogReader:
    """log mode: each NOTIFY carries a seq; the event itself is read from the change log."""

    def __init__(self, dsn: str, channel: str = CHANNEL) -> None:
        self.wakeups = Listener(dsn, channel)
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.channel = channel
        self.after = 0

    def events(self, expected: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while len(found) < expected and time.monotonic() < deadline:
            for payload in self.wakeups.payloads(1, timeout=0.5):
                assert payload.isdigit(), f"a log-mode NOTIFY carried more than a seq: {payload}"
            rows = self.conn.execute(
                sqlfiles.query("log_after"),
                {"channel": self.channel, "after": self.after, "page": 1000},
            ).fetchall()
            for seq, payload in rows:
                self.after = seq
                found.append(json.loads(payload))
        return found

    def nothing_within(self, seconds: float = 0.5) -> bool:
        return self.wakeups.nothing_within(seconds) and not self.conn.execute(
            "SELECT 1 FROM bookwatch.change_log WHERE seq > %s", (self.after,)
        ).fetchall()

    def close(self) -> None:
        self.wakeups.close()
        self.conn.close()


def slot_messages(conn: psycopg.Connection[Any], *, consume: bool = True) -> list[bytes]:
    """The row changes (pgoutput I/U/D/T frames) waiting in the relay slot, in commit order."""
    function = "pg_logical_slot_get_binary_changes" if consume else (
        "pg_logical_slot_peek_binary_changes")
    slot_name = conn.execute(sqlfiles.query("relay_slot_name")).fetchone()[0]
    rows = conn.execute(
        sql.SQL("SELECT data FROM {}(%s, NULL, NULL, 'proto_version', '1', "
                "'publication_names', 'bookwatch_messages', 'messages', 'true')").format(
            sql.Identifier(function)),
        (slot_name,),
    ).fetchall()
    return [bytes(data) for (data,) in rows if bytes(data)[:1] in (b"I", b"U", b"D", b"T")]


class WalReader(LogReader):
    """wal mode: a real relay in the background (as tail and serve run one), then the log."""

    def __init__(self, dsn: str, channel: str = CHANNEL) -> None:
        from pgwatch_cli.stream.relay_leader import BackgroundRelay

        super().__init__(dsn, channel)
        self.notices: list[str] = []
        self.relay = BackgroundRelay(dsn, self.notices.append, retry_s=0.2)
        self.relay.start()
        deadline = time.monotonic() + 10
        while not self.relay.leading and time.monotonic() < deadline:
            time.sleep(0.02)

    def nothing_within(self, seconds: float = 0.5) -> bool:
        time.sleep(seconds)
        return super().nothing_within(0.01)

    def close(self) -> None:
        self.relay.stop()
        super().close()


def reader(dsn: str, mode: str, channel: str = CHANNEL) -> LogReader | WalReader | Listener:
    if mode == "wal":
        return WalReader(dsn, channel)
    if mode == "log":
        return LogReader(dsn, channel)
    return Listener(dsn, channel)


def log_payloads(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    rows = conn.execute("SELECT payload FROM bookwatch.change_log ORDER BY seq").fetchall()
    return [json.loads(row[0]) for row in rows]
