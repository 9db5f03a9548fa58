"""Helpers for tests that write rows and read back the events the triggers sent."""

from __future__ import annotations

import json
from typing import Any

import psycopg

from pgwatch_cli.capture import triggers
from pgwatch_cli.capture.tables import TableRef

CHANNEL = triggers.DEFAULT_CHANNEL


def install(
    dsn: str,
    *tables: str,
    durable: bool = True,
    excluded: dict[str, list[str]] | None = None,
    channel: str = CHANNEL,
) -> None:
    refs = [TableRef.parse(name) for name in tables]
    exclusions = {TableRef.parse(name): columns for name, columns in (excluded or {}).items()}
    with psycopg.connect(dsn) as conn:
        triggers.run(
            conn,
            lambda: triggers.plan_install(
                conn, refs, channel=channel, durable=durable, excluded=exclusions
            ),
        )


class Listener:
    """A plain LISTEN connection for checking what the triggers send."""

    def __init__(self, dsn: str, channel: str = CHANNEL) -> None:
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.conn.execute(psycopg.sql.SQL("LISTEN {}").format(psycopg.sql.Identifier(channel)))

    def payloads(self, expected: int, timeout: float = 10.0) -> list[str]:
        received = [
            n.payload for n in self.conn.notifies(timeout=timeout, stop_after=expected)
        ]
        return received

    def events(self, expected: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        return [json.loads(payload) for payload in self.payloads(expected, timeout)]

    def nothing_within(self, seconds: float = 0.5) -> bool:
        return not list(self.conn.notifies(timeout=seconds, stop_after=1))

    def close(self) -> None:
        self.conn.close()


def log_payloads(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    rows = conn.execute("SELECT payload FROM bookwatch.change_log ORDER BY seq").fetchall()
    return [json.loads(row[0]) for row in rows]
