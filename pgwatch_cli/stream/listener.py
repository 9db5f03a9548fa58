"""ChangeStream: the one LISTEN connection of a process, turned into a gap-free event stream.

Order of work on every (re)connect: note the log's newest seq (first connect only), LISTEN,
replay the change log after the cursor, then go live. When the database has a change log
(``log`` and ``wal`` modes), a notification is only a wake-up: whatever it carries, the stream
reads the log after its cursor, so a forged NOTIFY costs one read and can neither invent, skip
nor reorder an event. Only seq-less events (``notify`` mode) are taken from the payload.

Every read also returns the log's identity (``log_id``): a log recreated under a running stream
is noticed on the next read (a wake-up, or the idle check every ``check_interval``) and yields
LogReplaced, then the new log's events from its start.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from time import monotonic
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow

from pgwatch_cli import console, db
from pgwatch_cli.backoff import Backoff
from pgwatch_cli.capture import sqlfiles
from pgwatch_cli.errors import BookwatchError, DatabaseUnreachable, NotInstalled
from pgwatch_cli.stream import relay_leader
from pgwatch_cli.stream.events import (
    ChangeEvent,
    Gap,
    InvalidPayload,
    LogReplaced,
    StreamItem,
    parse,
    parse_gap,
    parse_logged,
)
from pgwatch_cli.text import first_line

DEFAULT_CHANNEL = "booking_changes"
LISTENER_APPLICATION_NAME = "bookwatch listener"
BACKOFF_FIRST_S = 0.2
BACKOFF_CAP_S = 8.0
INVALID_NOTICE_INTERVAL_S = 5.0
# A wake-up whose seq the stream has already passed is stale, or the sign of a recreated log
# (seq restarted): it is checked with a read, but at most this often.
STALE_CHECK_INTERVAL_S = 0.2
READ_TIMEOUT_S = 30.0
# How often an idle stream that does not relay looks for a wal slot created since it started
# (a database switched from log to wal mode while it runs).
SLOT_CHECK_INTERVAL_S = 5.0
PAGE = 1000
# Versions of the bookwatch schema whose change log this listener can read.
KNOWN_SCHEMA_VERSIONS = frozenset({"1", "2", "3"})
# Unacknowledged data fails the connection after this long (a frozen peer); TCP only.
TCP_USER_TIMEOUT_MS = 15_000

AsyncConn = psycopg.AsyncConnection[TupleRow]
Notice = Callable[[str], None]
# What a dead connection looks like: server gone or terminated us (OperationalError), the
# connection object already closed (InterfaceError), the liveness check timed out.
_CONNECTION_LOST = (psycopg.OperationalError, psycopg.InterfaceError, TimeoutError, OSError)
_NO_LOG = (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName)

# One statement, one snapshot: the log's identity with the page it belongs to.
_READ_PAGE = """
SELECT NULL::bigint, value FROM bookwatch.meta WHERE key = 'log_id'
UNION ALL
(SELECT seq, payload FROM bookwatch.change_log
  WHERE channel = %(channel)s AND seq > %(after)s ORDER BY seq LIMIT %(page)s)
"""
_LOG_STATE = """
SELECT (SELECT value FROM bookwatch.meta WHERE key = 'schema_version'),
       (SELECT value FROM bookwatch.meta WHERE key = 'log_id'),
       (SELECT coalesce(max(seq), 0) FROM bookwatch.change_log WHERE channel = %(channel)s)
"""


def _has_slot_query() -> str:
    """Whether this database's relay slot exists; its name comes from the one query that
    names it (sql/queries.sql, relay_slot_name)."""
    name = sqlfiles.query("relay_slot_name").rstrip().rstrip(";")
    return ("SELECT EXISTS (SELECT FROM pg_catalog.pg_replication_slots"
            f" WHERE slot_name = (\n{name}\n))")


class UnsupportedSchema(BookwatchError):
    """The change log has a schema version this bookwatch does not know."""


@dataclass(frozen=True)
class _LogState:
    version: str | None
    log_id: str | None
    newest: int


@dataclass
class StreamStats:
    """Counters of one ChangeStream, for status lines, /metrics and tests."""

    received: int = 0  # notifications read live, valid or not
    delivered: int = 0  # events handed to the consumer (live and replayed)
    invalid: int = 0  # payloads that were not valid v1 (skipped)
    duplicates: int = 0  # events dropped because their seq was already delivered
    replayed: int = 0  # events read from the change log
    reconnects: int = 0  # successful reconnects after a lost connection
    wakeups: int = 0  # notifications that led to a read of the log
    replaced: int = 0  # times the change log was found recreated (new log_id)


async def read_log(
    conn: AsyncConn,
    channel: str,
    after: int,
    page: int = 1000,
    *,
    on_invalid: Callable[[int, InvalidPayload], None] | None = None,
) -> AsyncGenerator[ChangeEvent]:
    """The change log of ``channel`` after seq ``after``, oldest first, ``page`` rows a query.

    A row that is not a valid event (a GAP marker included) is skipped (reported to
    ``on_invalid``), never fatal. Events carry the row's seq, whatever their payload says.
    """
    query = sqlfiles.query("log_after")
    while True:
        cursor = await conn.execute(query, {"channel": channel, "after": after, "page": page})
        rows = await cursor.fetchall()
        for seq, payload in rows:
            after = seq
            try:
                yield parse_logged(seq, payload)
            except InvalidPayload as exc:
                if on_invalid is not None:
                    on_invalid(seq, exc)
        if len(rows) < page:
            return


class ChangeStream:
    """Every change event of one channel exactly once, in seq order, reconnecting forever.

    Use as ``async with ChangeStream(dsn) as stream: async for event in stream: ...``, or
    iterate ``stream.items()`` to also get LogReplaced when the change log is recreated
    (plain iteration reports that through ``notice`` and goes on with the new log).
    Events without a seq (``notify`` mode) are passed through undeduplicated and cannot be
    recovered after an outage; the stream says so when it happens.

    With ``relay=True`` (the default) and a database in ``wal`` mode, the process also relays
    the WAL into the change log in a background thread whenever no other process does; a slot
    created after the stream started is found by the idle check.

    A logged GAP marker (changes lost by the wal relay) is yielded by ``items()`` as a Gap
    (a LogReplaced: consumers refetch); plain iteration reports it through ``notice``.

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
        relay: bool = True,
    ) -> None:
        self.dsn = dsn
        self.channel = channel
        self.since = since
        self.notice = notice
        self.check_interval = check_interval
        self.relay = relay
        self.last_seq: int | None = since
        self.log_id: str | None = None
        self.connected = False
        self.stats = StreamStats()
        self.background_relay: relay_leader.BackgroundRelay | None = None
        self._conn: AsyncConn | None = None
        self._durable = False  # the database has a change log to replay from
        self._log_gone = False  # the change log vanished under a running stream
        self._volatile_seen = False  # some event came without seq: those are not replayable
        self._items: AsyncGenerator[StreamItem] | None = None
        self._events: AsyncGenerator[ChangeEvent] | None = None
        self._checked_at = -STALE_CHECK_INTERVAL_S
        self._slot_checked_at = monotonic()
        self._invalid_pending = 0
        self._invalid_reason = ""
        self._invalid_noticed_at = -INVALID_NOTICE_INTERVAL_S

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> ChangeStream:
        conn, state = await self._open()
        try:
            if self.since is not None:
                if state is None:
                    raise NotInstalled(
                        "There is no change log to replay from (bookwatch.change_log is missing).",
                        hint="Install triggers with a change log (wal or log mode), or drop "
                        "--since.", suggest="install-triggers",
                    )
                await self._warn_if_log_too_short(conn, self.since)
            else:
                # Replaying after the newest logged seq (taken before LISTEN) closes the window
                # between that query and LISTEN; later reconnects replay from the same cursor.
                self.last_seq = state.newest if state is not None else None
            await self._start_relay(conn)
        except BaseException:
            await conn.close()
            raise
        self._conn = conn
        self.connected = True
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop iterating, stop the background relay, close the connection (idempotent)."""
        events, self._events = self._events, None
        if events is not None:
            await events.aclose()
        items, self._items = self._items, None
        if items is not None:
            # Still running in a task that was not stopped first (e.g. a hub pump left behind
            # by a timeout): closing the connection below ends it instead.
            with contextlib.suppress(RuntimeError):
                await items.aclose()
        await self._close_connection()
        relay, self.background_relay = self.background_relay, None
        if relay is not None:
            await asyncio.to_thread(relay_leader.release, relay)

    def items(self) -> AsyncIterator[StreamItem]:
        """Events and LogReplaced markers, in order."""
        if self._conn is None and self._items is None:
            raise RuntimeError("use 'async with ChangeStream(...)' before iterating")
        # One generator per stream: a second iterator would race the first on the connection.
        if self._items is None:
            self._items = self._run()
        return self._items

    def __aiter__(self) -> AsyncIterator[ChangeEvent]:
        if self._events is None:
            self._events = self._events_only(self.items())
        return self._events

    async def _events_only(self, items: AsyncIterator[StreamItem]) -> AsyncGenerator[ChangeEvent]:
        async for item in items:
            if isinstance(item, Gap):
                self.notice(item.describe())
            elif isinstance(item, LogReplaced):
                self.notice(describe_replacement(item))
            else:
                yield item

    @property
    def backend_pid(self) -> int | None:
        """PID of the server process serving the LISTEN connection, while connected."""
        return self._conn.info.backend_pid if self._conn is not None else None

    @property
    def relaying(self) -> bool:
        """This process relays the WAL right now (it holds the slot)."""
        return self.background_relay is not None and self.background_relay.leading

    # -- the loop --------------------------------------------------------------------------

    async def _run(self) -> AsyncGenerator[StreamItem]:
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
                    async with contextlib.aclosing(self._read(conn)) as log:
                        async for item in log:
                            if isinstance(item, ChangeEvent):
                                replayed += 1
                                self.stats.replayed += 1
                            yield item
                if lost_at is not None:
                    self._recovered(monotonic() - lost_at, replayed)
                    lost_at = None
                async with contextlib.aclosing(self._live(conn)) as live:
                    async for item in live:
                        yield item
            except _CONNECTION_LOST as exc:
                if lost_at is None:
                    lost_at = monotonic()
                    self.notice(f"lost the connection to PostgreSQL ({_reason(exc)}); reconnecting")
                await self._close_connection()

    async def _live(self, conn: AsyncConn) -> AsyncGenerator[StreamItem]:
        heard_at = monotonic()
        while True:
            quiet_for = monotonic() - heard_at
            if quiet_for >= self.check_interval:
                # Nothing arrived for a while: make sure that is silence, not a dead peer. With a
                # log, the check is a read: it also notices a recreated log and any lost wake-up.
                heard_at = monotonic()
                self._report_invalid()
                if not (self._durable or self._log_gone) and await self._log_appeared(conn):
                    self._durable = True
                    self.last_seq = self.last_seq or 0  # a new log: all of it is new to us
                if self._durable or self._log_gone:
                    async with contextlib.aclosing(self._read(conn)) as log:
                        async for item in log:
                            yield item
                if self._durable and monotonic() - self._slot_checked_at >= SLOT_CHECK_INTERVAL_S:
                    self._slot_checked_at = monotonic()
                    await self._start_relay(conn)
                continue
            # stop_after=1 ends the round after the first packet of notifications: the
            # connection is free again for the read they ask for.
            notes = []
            async with contextlib.aclosing(
                conn.notifies(timeout=self.check_interval - quiet_for, stop_after=1)
            ) as pending:
                async for note in pending:
                    notes.append(note.payload)
            if not notes:
                continue
            heard_at = monotonic()
            self.stats.received += len(notes)
            wake = False
            for payload in notes:
                event, wakes = self._accept(payload)
                if event is not None:
                    yield event
                wake = wake or wakes
            if wake:
                self.stats.wakeups += 1
                async with contextlib.aclosing(self._read(conn)) as log:
                    async for item in log:
                        yield item

    def _accept(self, payload: str) -> tuple[ChangeEvent | None, bool]:
        """A notification: a seq-less event to deliver as is, and/or whether to read the log."""
        if self._durable or self._log_gone:
            if payload.isdigit():
                return None, self._worth_reading(int(payload))
            try:
                event = parse(payload)
            except InvalidPayload as exc:
                self._invalid(str(exc))
                return None, self._worth_reading(None)
            if event.seq is None:  # a notify-mode trigger on the same channel
                return (event if self._fresh(event) else None), False
            # A payload with a seq is a wake-up like any other: its content is not trusted.
            return None, self._worth_reading(event.seq)
        if payload.isdigit():
            # A wake-up, but this stream knew of no log: capture was (re)installed since.
            return None, True
        try:
            event = parse(payload)
        except InvalidPayload as exc:
            self._invalid(str(exc))
            return None, False
        return (event if self._fresh(event) else None), False

    def _worth_reading(self, seq: int | None) -> bool:
        if seq is None or self.last_seq is None or seq > self.last_seq:
            return True
        # Already passed: a stale wake-up, or a recreated log whose seq started again.
        return monotonic() - self._checked_at >= STALE_CHECK_INTERVAL_S

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

    # -- reading the log -------------------------------------------------------------------

    async def _read(self, conn: AsyncConn) -> AsyncGenerator[StreamItem]:
        """The log after the cursor, page by page; LogReplaced first when it is a new log.

        The first page must come within the liveness bound (a frozen peer is noticed by any
        read); later pages of a long catch-up get longer."""
        self._checked_at = monotonic()
        timeout = self.check_interval + 3.0
        while True:
            params = {"channel": self.channel, "after": self.last_seq or 0, "page": PAGE}
            try:
                rows = await _fetch(conn, _READ_PAGE, params, timeout)
            except _NO_LOG:
                self._lost_log()
                return
            log_id = next((str(value) for seq, value in rows if seq is None), None)
            self._durable = True
            if self._log_gone or (log_id != self.log_id and self.log_id is not None):
                await self._check_version(conn)
                replaced = LogReplaced(self.log_id, log_id)
                self._log_gone = False
                self._durable = True
                self.log_id = log_id
                self.last_seq = 0
                self.stats.replaced += 1
                await self._start_relay(conn)  # a reinstall may have put tables in wal mode
                yield replaced
                continue
            if self.log_id is None and log_id is not None:
                # A log installed or upgraded in place (v1 has no log_id) under this stream.
                await self._start_relay(conn)
            self.log_id = log_id
            logged = [(seq, payload) for seq, payload in rows if seq is not None]
            for seq, payload in logged:
                gap = parse_gap(seq, payload, log_id)
                if gap is not None:
                    if self.last_seq is None or seq > self.last_seq:
                        self.last_seq = seq
                        yield gap
                    continue
                try:
                    # The row's seq column, never the payload's: a forged body cannot move
                    # the cursor past real events.
                    event = parse_logged(seq, payload)
                except InvalidPayload as exc:
                    self._invalid(f"change log seq {seq}: {exc}")
                    self.last_seq = max(self.last_seq or 0, seq)
                    continue
                if self._fresh(event):
                    yield event
            if len(logged) < PAGE:
                return
            timeout = READ_TIMEOUT_S

    async def _log_appeared(self, conn: AsyncConn) -> bool:
        """The liveness check of a stream without a log: is there one now?"""
        try:
            await _fetch(conn, _LOG_STATE, {"channel": self.channel}, self.check_interval + 3.0)
        except _NO_LOG:
            return False
        return True

    def _lost_log(self) -> None:
        if not self._log_gone and self._durable:
            self.notice(
                "the change log is gone (remove-triggers --drop-log?); waiting for it to be "
                "installed again"
            )
        self._log_gone = self._durable or self._log_gone
        self._durable = False

    async def _check_version(self, conn: AsyncConn) -> None:
        rows = await _fetch(conn, _LOG_STATE, {"channel": self.channel}, READ_TIMEOUT_S)
        _known_version(rows[0][0])

    # -- connecting ------------------------------------------------------------------------

    async def _open(self) -> tuple[AsyncConn, _LogState | None]:
        """Connect and LISTEN; returns the connection and the log's state (None: no log)."""
        conn = await db.connect_async(
            _with_tcp_user_timeout(self.dsn), autocommit=True,
            application_name=LISTENER_APPLICATION_NAME,
        )
        try:
            state = await self._log_state(conn)
            await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
        except BaseException:
            await conn.close()
            raise
        self._durable = state is not None
        if state is not None and self.log_id is None and not self._log_gone:
            self.log_id = state.log_id
        return conn, state

    async def _log_state(self, conn: AsyncConn) -> _LogState | None:
        try:
            cursor = await conn.execute(_LOG_STATE, {"channel": self.channel})
        except _NO_LOG:
            return await self._v1_log_state(conn)
        row = await cursor.fetchone()
        assert row is not None
        _known_version(row[0])
        return _LogState(row[0], row[1], int(row[2]))

    async def _v1_log_state(self, conn: AsyncConn) -> _LogState | None:
        """A log without a meta table: the earliest installs."""
        try:
            cursor = await conn.execute(
                sqlfiles.query("log_newest_seq"), {"channel": self.channel}
            )
        except _NO_LOG:
            return None
        row = await cursor.fetchone()
        return _LogState(None, None, int(row[0]) if row is not None else 0)

    async def _start_relay(self, conn: AsyncConn) -> None:
        if not self.relay or self.background_relay is not None:
            return
        cursor = await conn.execute(_has_slot_query())
        row = await cursor.fetchone()
        if row is not None and row[0]:
            self.background_relay = relay_leader.acquire(self.dsn, self.notice)

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
        backoff = Backoff(BACKOFF_FIRST_S, BACKOFF_CAP_S)
        while True:
            await asyncio.sleep(backoff.next_wait())
            try:
                conn, state = await self._open()
            except (DatabaseUnreachable, *_CONNECTION_LOST):
                continue
            self._conn = conn
            self.stats.reconnects += 1
            if self._durable and self.last_seq is None and state is not None:
                # Durable, but nothing was seen before the loss to resume from.
                self.last_seq = state.newest
            try:
                await self._start_relay(conn)
            except _CONNECTION_LOST:
                continue
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


def describe_replacement(replaced: LogReplaced) -> str:
    return (
        f"the change log was recreated (log_id {replaced.old_log_id or '-'} -> "
        f"{replaced.new_log_id or '-'}); continuing with the new log from its start"
    )


def _known_version(version: str | None) -> None:
    if version is not None and version not in KNOWN_SCHEMA_VERSIONS:
        raise UnsupportedSchema(
            f"The database's bookwatch schema is version {version}; this bookwatch reads "
            f"versions {', '.join(sorted(KNOWN_SCHEMA_VERSIONS))}.",
            hint="Upgrade bookwatch to the release that installed it.",
        )


def _with_tcp_user_timeout(dsn: str) -> str:
    if "tcp_user_timeout" in psycopg.conninfo.conninfo_to_dict(dsn):
        return dsn
    return psycopg.conninfo.make_conninfo(dsn, tcp_user_timeout=TCP_USER_TIMEOUT_MS)


async def _fetch(
    conn: AsyncConn, query: str, params: dict[str, Any], timeout: float
) -> list[tuple[Any, ...]]:
    """Run ``query``; TimeoutError when the server does not answer within ``timeout``."""

    async def rows() -> list[tuple[Any, ...]]:
        cursor = await conn.execute(query, params)
        return await cursor.fetchall() if cursor.description is not None else []

    task = asyncio.create_task(rows())
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout)
    finally:
        if not task.done():
            # Cancelling the query would make psycopg send a cancel request and wait up to
            # 10 s for a peer that does not answer; dropping the connection first skips that.
            conn.pgconn.finish()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    if not done:
        raise TimeoutError("no answer to the liveness check")
    return task.result()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer to the liveness check"
    # libpq's first line is the cause ("terminating connection due to administrator command").
    return first_line(exc)
