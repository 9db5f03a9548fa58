"""ChangeStream: the one LISTEN connection of a process, turned into a gap-free event stream.

Order of work on every (re)connect: note the log's newest seq (first connect only), LISTEN,
replay the change log after the cursor, then go live. Notifications that arrive while the log
is read are held by psycopg (its notifies backlog) and delivered afterwards; dedupe by ``seq``
drops the ones the log already gave, so the seam has neither a gap nor a duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from time import monotonic

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow

from pgwatch_cli import console, db
from pgwatch_cli.capture import sqlfiles
from pgwatch_cli.errors import DatabaseUnreachable, NotInstalled
from pgwatch_cli.stream.events import ChangeEvent, InvalidPayload, parse

DEFAULT_CHANNEL = "booking_changes"
LISTENER_APPLICATION_NAME = "bookwatch listener"
BACKOFF_FIRST_S = 0.2
BACKOFF_CAP_S = 8.0
INVALID_NOTICE_INTERVAL_S = 5.0

AsyncConn = psycopg.AsyncConnection[TupleRow]
Notice = Callable[[str], None]
# What a dead connection looks like: server gone or terminated us (OperationalError), the
# connection object already closed (InterfaceError), the liveness check timed out.
_CONNECTION_LOST = (psycopg.OperationalError, psycopg.InterfaceError, TimeoutError, OSError)


@dataclass
class StreamStats:
    """Counters of one ChangeStream, for status lines, /metrics and tests."""

    received: int = 0  # notifications read live, valid or not
    delivered: int = 0  # events handed to the consumer (live and replayed)
    invalid: int = 0  # payloads that were not valid v1 (skipped)
    duplicates: int = 0  # events dropped because their seq was already delivered
    replayed: int = 0  # events read from the change log
    reconnects: int = 0  # successful reconnects after a lost connection


async def read_log(
    conn: AsyncConn,
    channel: str,
    after: int,
    page: int = 1000,
    *,
    on_invalid: Callable[[int, InvalidPayload], None] | None = None,
) -> AsyncGenerator[ChangeEvent]:
    """The change log of ``channel`` after seq ``after``, oldest first, ``page`` rows a query.

    A row that is not a valid event is skipped (reported to ``on_invalid``), never fatal.
    """
    query = sqlfiles.query("log_after")
    while True:
        cursor = await conn.execute(query, {"channel": channel, "after": after, "page": page})
        rows = await cursor.fetchall()
        for seq, payload in rows:
            after = seq
            try:
                yield parse(payload)
            except InvalidPayload as exc:
                if on_invalid is not None:
                    on_invalid(seq, exc)
        if len(rows) < page:
            return


class ChangeStream:
    """Every change event of one channel exactly once, in seq order, reconnecting forever.

    Use as ``async with ChangeStream(dsn) as stream: async for event in stream: ...``.
    Events without a seq (``--no-durable`` triggers) are passed through undeduplicated and
    cannot be recovered after an outage; the stream says so when it happens.

    The connection is read (and checked for liveness) while someone iterates; in between,
    notifications wait in the connection, so a consumer that pauses loses nothing. Keep
    iterating (``Hub.run`` does) to notice a dead connection within ``check_interval`` + 5 s.
    """

    def __init__(
        self,
        dsn: str,
        *,
        channel: str = DEFAULT_CHANNEL,
        since: int | None = None,
        notice: Notice = console.warn,
        check_interval: float = 2.0,
    ) -> None:
        self.dsn = dsn
        self.channel = channel
        self.since = since
        self.notice = notice
        self.check_interval = check_interval
        self.last_seq: int | None = since
        self.connected = False
        self.stats = StreamStats()
        self._conn: AsyncConn | None = None
        self._durable = False  # the database has a change log to replay from
        self._volatile_seen = False  # some event came without seq: those are not replayable
        self._events: AsyncGenerator[ChangeEvent] | None = None
        self._invalid_pending = 0
        self._invalid_reason = ""
        self._invalid_noticed_at = -INVALID_NOTICE_INTERVAL_S

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> ChangeStream:
        conn, newest = await self._open()
        if self.since is not None:
            if newest is None:
                await conn.close()
                raise NotInstalled(
                    "There is no change log to replay from (bookwatch.change_log is missing).",
                    hint="Install durable triggers (install-triggers --durable), or drop --since.",
                )
            await self._warn_if_log_too_short(conn, self.since)
        else:
            # Replaying after the newest logged seq (taken before LISTEN) closes the window
            # between that query and LISTEN; later reconnects replay from the same cursor.
            self.last_seq = newest
        self._conn = conn
        self.connected = True
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop iterating and close the connection (idempotent)."""
        events, self._events = self._events, None
        if events is not None:
            await events.aclose()
        await self._close_connection()

    def __aiter__(self) -> AsyncIterator[ChangeEvent]:
        if self._conn is None and self._events is None:
            raise RuntimeError("use 'async with ChangeStream(...)' before iterating")
        # One generator per stream: a second iterator would race the first on the connection.
        if self._events is None:
            self._events = self._run()
        return self._events

    @property
    def backend_pid(self) -> int | None:
        """PID of the server process serving the LISTEN connection, while connected."""
        return self._conn.info.backend_pid if self._conn is not None else None

    # -- the loop --------------------------------------------------------------------------

    async def _run(self) -> AsyncGenerator[ChangeEvent]:
        lost_at: float | None = None
        while True:
            try:
                if self._conn is None:
                    await self._reconnect()
                conn = self._conn
                assert conn is not None
                self.connected = True
                replayed = 0
                if self._durable and self.last_seq is not None:
                    log = read_log(
                        conn, self.channel, self.last_seq, on_invalid=self._invalid_logged
                    )
                    async with contextlib.aclosing(log):
                        async for event in log:
                            if self._fresh(event):
                                replayed += 1
                                self.stats.replayed += 1
                                yield event
                if lost_at is not None:
                    self._recovered(monotonic() - lost_at, replayed)
                    lost_at = None
                async with contextlib.aclosing(self._live(conn)) as live:
                    async for event in live:
                        yield event
            except _CONNECTION_LOST as exc:
                if lost_at is None:
                    lost_at = monotonic()
                    self.notice(f"lost the connection to PostgreSQL ({_reason(exc)}); reconnecting")
                await self._close_connection()

    async def _live(self, conn: AsyncConn) -> AsyncGenerator[ChangeEvent]:
        heard_at = monotonic()
        while True:
            quiet_for = monotonic() - heard_at
            if quiet_for >= self.check_interval:
                # Nothing arrived for a while: make sure that is silence, not a dead peer.
                await _check_alive(conn, self.check_interval + 3.0)
                heard_at = monotonic()
                self._report_invalid()
                quiet_for = 0.0
            wait = self.check_interval - quiet_for
            async with contextlib.aclosing(conn.notifies(timeout=wait)) as notes:
                async for note in notes:
                    heard_at = monotonic()
                    self.stats.received += 1
                    event = self._accept(note.payload)
                    if event is not None:
                        yield event

    def _accept(self, payload: str) -> ChangeEvent | None:
        try:
            event = parse(payload)
        except InvalidPayload as exc:
            self._invalid(str(exc))
            return None
        return event if self._fresh(event) else None

    def _fresh(self, event: ChangeEvent) -> bool:
        """Dedupe by seq; record the event as delivered when it is new."""
        seq = event.seq
        if seq is None:
            self._volatile_seen = True
        elif self.last_seq is not None and seq <= self.last_seq:
            self.stats.duplicates += 1
            return False
        else:
            self.last_seq = seq
        self.stats.delivered += 1
        return True

    # -- connecting ------------------------------------------------------------------------

    async def _open(self) -> tuple[AsyncConn, int | None]:
        """Connect and LISTEN; returns the connection and the log's newest seq (None: no log)."""
        conn = await db.connect_async(
            self.dsn, autocommit=True, application_name=LISTENER_APPLICATION_NAME
        )
        try:
            newest = await self._newest_seq(conn)
            await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
        except BaseException:
            await conn.close()
            raise
        self._durable = newest is not None
        return conn, newest

    async def _newest_seq(self, conn: AsyncConn) -> int | None:
        try:
            cursor = await conn.execute(
                sqlfiles.query("log_newest_seq"), {"channel": self.channel}
            )
        except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName):
            return None
        row = await cursor.fetchone()
        return int(row[0]) if row is not None else 0

    async def _warn_if_log_too_short(self, conn: AsyncConn, since: int) -> None:
        cursor = await conn.execute(sqlfiles.query("log_oldest_seq"), {"channel": self.channel})
        row = await cursor.fetchone()
        oldest = row[0] if row is not None else None
        if oldest is not None and oldest > since + 1:
            self.notice(
                f"the change log starts at seq {oldest}; events {since + 1}..{oldest - 1} "
                "are no longer there"
            )

    async def _reconnect(self) -> None:
        """Connect again, forever, with jittered exponential backoff."""
        delay = BACKOFF_FIRST_S
        while True:
            await asyncio.sleep(random.uniform(delay / 2, delay))
            try:
                conn, newest = await self._open()
            except (DatabaseUnreachable, *_CONNECTION_LOST):
                delay = min(delay * 2, BACKOFF_CAP_S)
                continue
            self._conn = conn
            self.stats.reconnects += 1
            if self._durable and self.last_seq is None:
                # Durable, but nothing was seen before the loss to resume from.
                self.last_seq = newest
            return

    def _recovered(self, outage_s: float, replayed: int) -> None:
        message = f"reconnected after {outage_s:.1f} s"
        if self._durable and self.last_seq is not None:
            message += f", replayed {replayed} event{'s' if replayed != 1 else ''}"
        if not self._durable or self._volatile_seen:
            message += (
                "; events sent during the outage by non-durable triggers could not be "
                "recovered (no change log to replay from)"
            )
        self.notice(message)

    async def _close_connection(self) -> None:
        conn, self._conn = self._conn, None
        self.connected = False
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    # -- invalid payloads ------------------------------------------------------------------

    def _invalid_logged(self, seq: int, exc: InvalidPayload) -> None:
        self._invalid(f"change log seq {seq}: {exc}")

    def _invalid(self, reason: str) -> None:
        self.stats.invalid += 1
        self._invalid_pending += 1
        self._invalid_reason = reason
        self._report_invalid()

    def _report_invalid(self) -> None:
        """Warn about skipped payloads at most every few seconds (a flood must not flood stderr)."""
        if not self._invalid_pending:
            return
        now = monotonic()
        if now - self._invalid_noticed_at < INVALID_NOTICE_INTERVAL_S:
            return
        count = self._invalid_pending
        self.notice(
            f"skipped {count} invalid payload{'s' if count != 1 else ''} on channel "
            f"{self.channel} (last: {self._invalid_reason})"
        )
        self._invalid_pending = 0
        self._invalid_noticed_at = now


async def _check_alive(conn: AsyncConn, timeout: float) -> None:
    """A cheap round trip; TimeoutError when the server does not answer within ``timeout``."""
    check = asyncio.create_task(conn.execute("SELECT 1"))
    try:
        done, _ = await asyncio.wait({check}, timeout=timeout)
    finally:
        if not check.done():
            # Cancelling the query would make psycopg send a cancel request and wait up to
            # 10 s for a peer that does not answer; dropping the connection first skips that.
            conn.pgconn.finish()
            check.cancel()
            await asyncio.gather(check, return_exceptions=True)
    if not done:
        raise TimeoutError("no answer to the liveness check")
    check.result()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer to the liveness check"
    # libpq's first line is the cause ("terminating connection due to administrator command").
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
