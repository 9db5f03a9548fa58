"""The one place that speaks libpq's COPY_BOTH directly: a logical replication stream.

psycopg (3.3) opens ``replication=database`` connections and runs ``START_REPLICATION``, which
leaves the connection in COPY_BOTH mode; from there on the stream is read and answered through
the connection's documented low-level ``pgconn`` (``get_copy_data`` / ``put_copy_data``),
because psycopg has no replication API of its own. Everything else in bookwatch uses psycopg's
ordinary interface.
"""

from __future__ import annotations

import select
from time import monotonic
from typing import Any

import psycopg
from psycopg import pq, sql
from psycopg.rows import TupleRow

from pgwatch_cli import db

RELAY_APPLICATION_NAME = "bookwatch relay"
# Unacknowledged data fails the connection after this long: a frozen peer, where keepalives
# alone never fire because data is in flight.
TCP_USER_TIMEOUT_MS = 15_000


class SlotBusy(Exception):
    """Another process is consuming the slot (it is the relay)."""


class SlotMissing(Exception):
    """The replication slot does not exist."""


class ReplicationLost(Exception):
    """The replication connection ended or failed."""


class ReplicationForbidden(Exception):
    """The role may not open a replication connection (needs REPLICATION or superuser)."""


class ReplicationStream:
    """A started logical replication stream: read CopyData frames, send status updates."""

    def __init__(self, conn: psycopg.Connection[TupleRow]) -> None:
        self._conn = conn
        self._pgconn = conn.pgconn

    @classmethod
    def start(
        cls, dsn: str, slot: str, options: dict[str, str], *, start_lsn: str = "0/0"
    ) -> ReplicationStream:
        """Connect and ``START_REPLICATION``; SlotBusy / SlotMissing when that is why not."""
        params: dict[str, Any] = {
            "connect_timeout": db.CONNECT_TIMEOUT_S,
            **db.KEEPALIVES,
            "tcp_user_timeout": TCP_USER_TIMEOUT_MS,
            "application_name": RELAY_APPLICATION_NAME,
        }
        try:
            conn = psycopg.connect(dsn, autocommit=True, replication="database", **params)
        except psycopg.OperationalError as exc:
            # libpq keeps no SQLSTATE for a refused connection: the server's words it is
            # (PostgreSQL 15: "must be superuser or replication role ..."; 16+: "permission
            # denied to start WAL sender").
            text = str(exc)
            if "replication role" in text or "permission denied to start WAL sender" in text:
                raise ReplicationForbidden(_first_line(exc)) from None
            raise
        command = sql.SQL("START_REPLICATION SLOT {} LOGICAL {} ({})").format(
            sql.Identifier(slot),
            sql.SQL(start_lsn),
            sql.SQL(", ").join(
                sql.SQL("{} {}").format(sql.Identifier(key), sql.Literal(value))
                for key, value in options.items()
            ),
        )
        try:
            cursor = conn.execute(command)
        except psycopg.errors.ObjectInUse as exc:
            conn.close()
            raise SlotBusy(str(exc)) from None
        except psycopg.errors.UndefinedObject as exc:
            conn.close()
            raise SlotMissing(str(exc)) from None
        except BaseException:
            conn.close()
            raise
        if cursor.pgresult is None or cursor.pgresult.status != pq.ExecStatus.COPY_BOTH:
            conn.close()
            raise ReplicationLost("START_REPLICATION did not start a replication stream")
        return cls(conn)

    @property
    def backend_pid(self) -> int:
        return self._pgconn.backend_pid

    def read(self, timeout: float) -> bytes | None:
        """The next CopyData frame, or None when none arrives within ``timeout`` seconds
        (0: only what has already arrived)."""
        pgconn = self._pgconn
        size, data = pgconn.get_copy_data(1)
        if size > 0:  # under load a frame is almost always buffered already
            return bytes(data)
        deadline = monotonic() + timeout
        while True:
            if size > 0:
                return bytes(data)
            if size == -1:
                raise ReplicationLost(self._ending())
            if size < -1:
                raise ReplicationLost(self._error_text())
            remaining = deadline - monotonic()
            if remaining <= 0 and timeout > 0:
                return None
            readable, _, _ = select.select([pgconn.socket], [], [], max(remaining, 0))
            if not readable:
                return None
            try:
                pgconn.consume_input()
            except psycopg.OperationalError as exc:
                raise ReplicationLost(str(exc).strip() or "connection lost") from None
            size, data = pgconn.get_copy_data(1)

    def send(self, data: bytes) -> None:
        pgconn = self._pgconn
        try:
            if pgconn.put_copy_data(data) != 1:
                raise ReplicationLost(self._error_text())
            while pgconn.flush() == 1:
                select.select([], [pgconn.socket], [], 1.0)
        except psycopg.OperationalError as exc:
            raise ReplicationLost(str(exc).strip() or "connection lost") from None

    def close(self) -> None:
        # Closing the socket ends the walsender; the server frees the slot at once.
        self._conn.close()

    def _ending(self) -> str:
        result = self._pgconn.get_result()
        if result is not None and result.error_message:
            return result.error_message.decode("utf-8", "replace").strip()
        return "the server ended the replication stream"

    def _error_text(self) -> str:
        return self._pgconn.error_message.decode("utf-8", "replace").strip() or "connection lost"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    return first.rsplit("FATAL:", 1)[-1].strip()
