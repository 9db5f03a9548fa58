"""The scratch area a simulation plays in: its own schema, demo tables, triggers and channel.

Nothing outside it is touched, and everything it created is removed afterwards — also after
an error, Ctrl-C, SIGTERM or SIGHUP (the caller's ``with`` block exits through ``remove``).
A run that is killed outright leaves it behind; the next run removes it (see
``pgwatch_cli.scratch``: the schema is claimed by a session that lives as long as the run).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from pgwatch_cli import db, lifecycle
from pgwatch_cli import scratch as scratch_schemas
from pgwatch_cli.capture import triggers
from pgwatch_cli.capture.tables import TableRef
from pgwatch_cli.console import warn
from pgwatch_cli.demo import schema as demo
from pgwatch_cli.errors import BookwatchError, database_failure

PREFIX = scratch_schemas.SIMULATE_PREFIX


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
    return scratch_schemas.new_name(PREFIX)


@contextmanager
def scratch_area(dsn: str, *, name: str | None = None) -> Iterator[Scratch]:
    """Create the area, yield it, remove every trace of it whatever happens in between."""
    schema = name or new_name()
    with _connect(dsn) as owner:
        # Claimed before it exists, held until it is gone: see pgwatch_cli.scratch.
        scratch_schemas.claim(owner, schema)
        for orphan in scratch_schemas.remove_abandoned(owner):
            warn(f"removed {orphan.describe()}")
        area = Scratch(dsn, schema, triggers.log_schema_exists(owner))
        try:
            _create(owner, area)
            yield area
        except BaseException:
            # The original failure is what the user must see; a cleanup failure only warns.
            with lifecycle.signals_deferred():
                try:
                    remove(area)
                except BookwatchError as failure:
                    warn(f"{failure.message} ({failure.hint})")
            raise
        with lifecycle.signals_deferred():
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
        # A fresh connection: the owner's may be the reason the run failed.
        with _connect(area.dsn) as conn:
            scratch_schemas.drop(conn, area.schema, created_log=not area.log_existed)
    except (psycopg.Error, BookwatchError) as exc:
        reason = exc.message if isinstance(exc, BookwatchError) else database_failure(exc).message
        raise BookwatchError(
            f"Could not remove the scratch schema {area.schema}: {reason}",
            hint=f"Drop it by hand: DROP SCHEMA {area.schema} CASCADE",
        ) from exc
