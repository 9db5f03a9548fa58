"""The benchmark's scratch schema: created for one run, always removed afterwards.

Two identical tables: ``events`` carries bookwatch's capture trigger, ``plain`` carries none,
so the same write load can be timed with and without it. Each event is an UPDATE of a row the
writer owns, setting ``k`` (a key unique across the run), ``ts`` (the writer's clock just
before it sent the statement) and ``pad`` (text sized so the NOTIFY payload reaches the size
asked for). UPDATEs, not INSERTs, because only an UPDATE's payload carries values (its diff).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from pgwatch_cli import console
from pgwatch_cli import scratch as scratch_schemas
from pgwatch_cli.capture import triggers
from pgwatch_cli.capture.config import Mode
from pgwatch_cli.capture.tables import TableRef
from pgwatch_cli.errors import BenchmarkFailed
from pgwatch_cli.stream import relay_leader

ROWS_PER_WRITER = 100
EVENTS_TABLE = "events"
PLAIN_TABLE = "plain"
_CALIBRATION_ROW = -1
_CALIBRATION_PAD = 64
# How long the calibration waits for its two events in the change log (tests shorten it).
CALIBRATION_WAIT_S = 10.0


@dataclass(frozen=True)
class Scratch:
    schema: str
    channel: str
    created_bookwatch_schema: bool

    @property
    def events_table(self) -> TableRef:
        return TableRef(self.schema, EVENTS_TABLE)

    @property
    def plain_table(self) -> TableRef:
        return TableRef(self.schema, PLAIN_TABLE)

    def table(self, with_trigger: bool) -> TableRef:
        return self.events_table if with_trigger else self.plain_table


def new_scratch(conn: psycopg.Connection[Any]) -> Scratch:
    """Names for a new scratch schema and channel, claimed for this run on ``conn`` (which
    must stay open until it is dropped: see pgwatch_cli.scratch); nothing is created yet."""
    name = scratch_schemas.new_name(scratch_schemas.BENCH_PREFIX)
    scratch_schemas.claim(conn, name)
    return Scratch(
        schema=name, channel=name, created_bookwatch_schema=not triggers.log_schema_exists(conn)
    )


def create(
    conn: psycopg.Connection[Any], scratch: Scratch, *, mode: str
) -> tuple[Mode, str | None]:
    """The schema, both tables (empty) and the capture trigger on ``events`` in ``mode``
    (auto|wal|log|notify). Returns the mode installed and, for auto, the sentence saying
    which it chose and why (the same one install-triggers prints)."""
    with conn.transaction():
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(scratch.schema)))
        for table in (scratch.events_table, scratch.plain_table):
            conn.execute(
                sql.SQL(
                    "CREATE TABLE {} (id integer PRIMARY KEY, k bigint NOT NULL,"
                    " ts bigint NOT NULL, pad text NOT NULL)"
                ).format(table.identifier())
            )
    plan = triggers.run(
        conn,
        lambda: triggers.plan_install(
            conn, [scratch.events_table], channel=scratch.channel, mode=mode, excluded={}
        ),
    )
    installed = next(
        t.config.mode for t in triggers.installed_triggers(conn) if t.table == scratch.events_table
    )
    choice = next((line for line in plan.actions if line.startswith("capture mode:")), None)
    return installed, choice


def calibrate_pad(
    conn: psycopg.Connection[Any], scratch: Scratch, payload_bytes: int, *, mode: Mode, dsn: str,
    relay: bool = True,
) -> tuple[int, int]:
    """How long ``pad`` must be for an event of about ``payload_bytes``, and the event size
    that gives (never below the size of an event with an empty pad).

    Measured, not computed: one UPDATE with a known pad, its event's length read back (the
    NOTIFY payload in notify mode, the change log row otherwise). The diff holds the pad
    twice (old and new value). In wal mode the two events are relayed into the log here
    (by this process unless ``relay`` is False), before any listener starts, so no listener
    counts them.
    """
    table = scratch.events_table.identifier()
    listen = mode is Mode.NOTIFY
    if listen:
        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(scratch.channel)))
    try:
        conn.execute(
            sql.SQL("INSERT INTO {} VALUES (%s, -1, 0, '')").format(table), (_CALIBRATION_ROW,)
        )
        conn.execute(
            sql.SQL("UPDATE {} SET k = %s, ts = %s, pad = %s WHERE id = %s").format(table),
            (10**12, 10**18, "x" * _CALIBRATION_PAD, _CALIBRATION_ROW),
        )
        if listen:
            payloads = [n.payload for n in conn.notifies(timeout=10, stop_after=2)]
        else:
            payloads = _logged_payloads(
                conn, scratch.channel, dsn, relay=relay and mode is Mode.WAL
            )
    finally:
        if listen:
            conn.execute(sql.SQL("UNLISTEN {}").format(sql.Identifier(scratch.channel)))
    if len(payloads) < 2:
        raise BenchmarkFailed(
            "The calibration event did not arrive within 10 s.",
            hint=("In wal mode events arrive only while a process relays the WAL: drop "
                  "--no-relay, or run the relay beside the benchmark."
                  if mode is Mode.WAL and not relay else None),
            suggest="relay" if mode is Mode.WAL and not relay else None,
        )
    without_pad = len(payloads[-1].encode()) - 2 * _CALIBRATION_PAD
    pad = max(0, (payload_bytes - without_pad) // 2)
    return pad, without_pad + 2 * pad


def _logged_payloads(
    conn: psycopg.Connection[Any], channel: str, dsn: str, *, relay: bool
) -> list[str]:
    """The channel's events in the change log (up to 2), waiting up to CALIBRATION_WAIT_S for
    them; with ``relay``, this process relays the WAL meanwhile unless another process already
    does."""
    background = relay_leader.acquire(dsn, console.warn) if relay else None
    try:
        deadline = time.monotonic() + CALIBRATION_WAIT_S
        while True:
            rows = conn.execute(
                "SELECT payload::text FROM bookwatch.change_log WHERE channel = %s"
                " ORDER BY seq LIMIT 2",
                (channel,),
            ).fetchall()
            if len(rows) >= 2 or time.monotonic() > deadline:
                return [str(row[0]) for row in rows]
            time.sleep(0.02)
    finally:
        if background is not None:
            relay_leader.release(background)


def populate(conn: psycopg.Connection[Any], scratch: Scratch, writers: int, pad: int) -> None:
    """Each writer's rows in both tables, padded like the updates to come.

    ``k`` starts negative so no initial value equals an event key (keys are >= 0).
    """
    with conn.transaction():
        for table in (scratch.events_table, scratch.plain_table):
            conn.execute(
                sql.SQL(
                    "INSERT INTO {} SELECT i, -1 - i, 0, repeat('.', %s)"
                    " FROM generate_series(0, %s) AS i"
                ).format(table.identifier()),
                (pad, writers * ROWS_PER_WRITER - 1),
            )


def drop(conn: psycopg.Connection[Any], scratch: Scratch) -> None:
    """Remove all the run left behind (see ``pgwatch_cli.scratch.drop``)."""
    scratch_schemas.drop(conn, scratch.schema, created_log=scratch.created_bookwatch_schema)
