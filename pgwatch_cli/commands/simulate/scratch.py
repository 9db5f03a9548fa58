"""The scratch area a simulation plays in: its own schema, demo tables, triggers and channel.

Nothing outside it is touched, and everything it created is removed afterwards — also after
an error or Ctrl-C (the caller's ``with`` block exits through ``remove``).
"""

from __future__ import annotations

import secrets
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Any

import psycopg
from psycopg import sql

from pgwatch_cli import db
from pgwatch_cli.capture import triggers
from pgwatch_cli.capture.tables import TableRef
from pgwatch_cli.console import warn
from pgwatch_cli.demo import schema as demo
from pgwatch_cli.errors import BookwatchError, database_failure

PREFIX = "bookwatch_sim_"


@dataclass(frozen=True)
class Scratch:
    """Where one simulation runs: the schema's name doubles as its NOTIFY channel."""

    dsn: str
    schema: str
    log_existed: bool  # was schema "bookwatch" there before we installed triggers?

    @property
    def channel(self) -> str:
        return self.schema

    @property
    def bookings(self) -> TableRef:
        return TableRef(self.schema, "bookings")


def new_name() -> str:
    return PREFIX + secrets.token_hex(4)


@contextmanager
def scratch_area(dsn: str, *, name: str | None = None) -> Iterator[Scratch]:
    """Create the area, yield it, remove every trace of it whatever happens in between."""
    schema = name or new_name()
    with _connect(dsn) as conn:
        log_existed = triggers.log_schema_exists(conn)
    area = Scratch(dsn, schema, log_existed)
    try:
        with _connect(dsn) as conn:
            _create(conn, area)
        yield area
    except BaseException:
        # The original failure is what the user must see; a cleanup failure only warns.
        with _sigint_deferred():
            try:
                remove(area)
            except BookwatchError as failure:
                warn(f"{failure.message} ({failure.hint})")
        raise
    with _sigint_deferred():
        remove(area)


def _connect(dsn: str) -> psycopg.Connection[Any]:
    return db.connect(dsn, autocommit=True, application_name="bookwatch simulate")


def _create(conn: psycopg.Connection[Any], area: Scratch) -> None:
    with conn.transaction():
        for statement in demo.create_statements(area.schema):
            conn.execute(sql.Composed([statement]))
        demo.fill(conn, area.schema)
    triggers.run(
        conn,
        lambda: triggers.plan_install(
            conn, demo.table_refs(area.schema), channel=area.channel, durable=True, excluded={}
        ),
    )


def remove(area: Scratch) -> None:
    """Drop the schema (its triggers go with it), its channel's log rows, and the log itself
    when this simulation was the one that created it and nobody else uses it since."""
    try:
        with _connect(area.dsn) as conn:
            triggers.run(
                conn,
                lambda: triggers.plan_scratch_drop(
                    conn, area.schema, area.channel, created_log=not area.log_existed
                ),
            )
    except (psycopg.Error, BookwatchError) as exc:
        reason = exc.message if isinstance(exc, BookwatchError) else database_failure(exc).message
        raise BookwatchError(
            f"Could not remove the scratch schema {area.schema}: {reason}",
            hint=f"Drop it by hand: DROP SCHEMA {area.schema} CASCADE",
        ) from exc


@contextmanager
def _sigint_deferred() -> Iterator[None]:
    """A second Ctrl-C during cleanup would leave the scratch schema behind: hold it until done."""
    pending: list[int] = []

    def remember(signum: int, _frame: FrameType | None) -> None:
        pending.append(signum)

    try:
        previous = signal.signal(signal.SIGINT, remember)
    except ValueError:  # not the main thread: signals cannot reach us here anyway
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if pending:
        raise KeyboardInterrupt
