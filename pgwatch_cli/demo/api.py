"""``serve --demo``: the seed's frontend as a page, and the small booking API it uses.

Saving is optimistic locking on ``version``: ``PUT /api/bookings/{id}`` with ``If-Match``
answers 409 when someone saved first. Writes set ``bookwatch.actor`` to the editing user, so
the change event names the real editor.

Every request takes a pooled connection and gives it back; a save waits at most
``LOCK_TIMEOUT`` for a row another transaction holds (then 503 with ``Retry-After``), so a few
stuck saves cannot hold every connection while the other requests wait.
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Awaitable, Callable
from datetime import date, datetime
from decimal import Decimal
from importlib import resources
from typing import Any, Protocol
from urllib.parse import unquote

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from pgwatch_cli.capture import sqlfiles
from pgwatch_cli.capture.tables import TableRef
from pgwatch_cli.demo import schema as demo
from pgwatch_cli.errors import BookwatchError
from pgwatch_cli.text import has_control_characters

ACTOR_HEADER = "X-Bookwatch-User"
SEQ_HEADER = "X-Bookwatch-Seq"
CONFLICT_MESSAGE = (
    "This booking was modified by another user. Reload it to see their changes, then save again."
)
_ETAG = re.compile(r'^\s*(?:W/)?"?(\d+)"?\s*$')
MAX_ACTOR_LENGTH = 100
LOCK_TIMEOUT = "2s"
SAVE_TIMEOUT = "5s"
RETRY_AFTER_S = 1
# Who saved a booking is looked up among this many newest log entries (a bounded scan).
SAVED_BY_WINDOW = 2000


class ConnectionSource(Protocol):
    """Where the routes take their connections (serve's pool): autocommit, given back at exit."""

    def connection(self) -> contextlib.AbstractAsyncContextManager[psycopg.AsyncConnection[Any]]:
        ...


class BadActor(ValueError):
    """An ``X-Bookwatch-User`` header that cannot be a person's name."""


def actor_of(raw: str | None) -> str:
    """The editing person from ``X-Bookwatch-User``, which the page sends percent-encoded
    (``encodeURIComponent``) so that any name survives HTTP's Latin-1 headers."""
    if raw is None or not raw.strip():
        return "demo"
    if not raw.isascii():
        raise BadActor(f"send {ACTOR_HEADER} percent-encoded (encodeURIComponent(name))")
    try:
        name = unquote(raw.strip(), errors="strict")
    except UnicodeDecodeError:
        raise BadActor(f"{ACTOR_HEADER} is not percent-encoded UTF-8") from None
    if not name.strip():
        return "demo"
    if len(name) > MAX_ACTOR_LENGTH:
        raise BadActor(f"{ACTOR_HEADER} must be at most {MAX_ACTOR_LENGTH} characters")
    # The name lands in change events that other people's pages show.
    if has_control_characters(name):
        raise BadActor(f"{ACTOR_HEADER} must not contain control characters")
    return name

_SELECT = """
SELECT b.id, b.reservierungsnummer, b.guest_id, b.room_id,
       g.vorname || ' ' || g.nachname AS gast, r.nummer AS zimmer, r.typ AS zimmertyp,
       b.anreise, b.abreise, b.anzahl_gaeste, b.gesamtpreis, b.status, b.bemerkungen,
       b.updated_at, b.version
  FROM {bookings} b
  JOIN {guests} g ON g.id = b.guest_id
  JOIN {rooms} r ON r.id = b.room_id
"""


class BookingChanges(BaseModel):
    """The fields the editor may change; anything else in the body is refused."""

    model_config = ConfigDict(extra="forbid")

    gesamtpreis: Decimal | None = Field(default=None, ge=0, le=Decimal("99999999.99"))
    status: str | None = Field(default=None, min_length=1, max_length=40)
    bemerkungen: str | None = Field(default=None, max_length=2000)
    anreise: date | None = None
    abreise: date | None = None
    anzahl_gaeste: int | None = Field(default=None, ge=1, le=20)

    @model_validator(mode="after")
    def _something(self) -> BookingChanges:
        if not self.model_fields_set:
            raise ValueError("nothing to change")
        return self


def check_tables(conn: psycopg.Connection[Any], schema: str) -> None:
    """Fail with a hint when ``init-demo`` has not created the demo tables."""
    present = {table.name for table in demo.existing(conn, schema)}
    missing = [name for name in demo.DEMO_TABLES if name not in present]
    if missing:
        raise BookwatchError(
            f"The demo tables are missing in schema {schema}: {', '.join(missing)}.",
            hint="Create them, then run serve --demo again.", suggest="init-demo",
        )


@functools.cache
def page() -> str:
    """The demo page with its script and style inlined: one request, no static route to guard."""
    static = resources.files("pgwatch_cli.demo") / "static"
    html = (static / "index.html").read_text(encoding="utf-8")
    css = (static / "demo.css").read_text(encoding="utf-8")
    js = (static / "demo.js").read_text(encoding="utf-8")
    return html.replace(
        '<link rel="stylesheet" href="demo.css">', f"<style>\n{css}</style>"
    ).replace('<script src="demo.js"></script>', f"<script>\n{js}</script>")


def _json_value(value: Any) -> Any:
    if isinstance(value, Decimal):
        return f"{value:.2f}"
    if isinstance(value, date | datetime):
        return value.isoformat()
    return value


def _booking(row: dict[str, Any]) -> dict[str, Any]:
    return {key: _json_value(value) for key, value in row.items()}


def _etag(version: int) -> str:
    return f'"{version}"'


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


async def _newest_seq(conn: psycopg.AsyncConnection[Any], channel: str) -> int | None:
    cursor = await conn.execute("SELECT to_regclass('bookwatch.change_log') IS NOT NULL")
    exists = await cursor.fetchone()
    if not exists or not exists[0]:
        return None
    cursor = await conn.execute(sqlfiles.query("log_newest_seq"), {"channel": channel})
    row = await cursor.fetchone()
    return int(row[0]) if row is not None else None


async def _saved_by(
    conn: psycopg.AsyncConnection[Any], schema: str, booking_id: int
) -> str | None:
    """Who made the booking's newest logged change, if the change log says (None: unknown)."""
    try:
        cursor = await conn.execute(
            "SELECT to_regclass('bookwatch.change_log') IS NOT NULL"
            " AND has_table_privilege('bookwatch.change_log', 'SELECT')"
        )
        readable = await cursor.fetchone()
        if not readable or not readable[0]:
            return None
        cursor = await conn.execute(_SAVED_BY, {
            "window": SAVED_BY_WINDOW, "schema": schema, "id": booking_id,
        })
        row = await cursor.fetchone()
    except psycopg.Error:
        return None
    return row[0] if row is not None else None


_SAVED_BY = """
SELECT payload::jsonb ->> 'actor'
  FROM bookwatch.change_log
 WHERE seq > (SELECT coalesce(max(seq), 0) FROM bookwatch.change_log) - %(window)s
   AND payload::jsonb ->> 'table' = 'bookings' AND payload::jsonb ->> 'schema' = %(schema)s
   AND payload::jsonb -> 'id' = to_jsonb(%(id)s::bigint)
 ORDER BY seq DESC
 LIMIT 1
"""

Handler = Callable[[Request], Awaitable[Response]]


def _database_errors(handler: Handler) -> Handler:
    """A database that is down, busy or slow is a 503 the page can retry, never a 500."""

    @functools.wraps(handler)
    async def guarded(request: Request) -> Response:
        retry = {"Retry-After": str(RETRY_AFTER_S)}
        try:
            return await handler(request)
        except psycopg.errors.LockNotAvailable:
            return JSONResponse(
                {"error": "someone else is saving this booking right now; try again"},
                status_code=503, headers=retry,
            )
        except psycopg.errors.QueryCanceled:
            return JSONResponse({"error": "the database took too long; try again"},
                                status_code=503, headers=retry)
        except psycopg.OperationalError:  # psycopg_pool.PoolTimeout included
            return JSONResponse({"error": "the database is not available; try again"},
                                status_code=503, headers=retry)

    return guarded


def routes(connections: ConnectionSource, schema: str, channel: str) -> list[BaseRoute]:
    names = {name: TableRef(schema, name).identifier() for name in demo.DEMO_TABLES}
    select = sql.SQL(_SELECT).format(**names)
    list_query = select + sql.SQL(" ORDER BY b.id")
    one_query = select + sql.SQL(" WHERE b.id = %s")

    async def fetch_one(
        conn: psycopg.AsyncConnection[Any], booking_id: int
    ) -> dict[str, Any] | None:
        async with conn.cursor(row_factory=dict_row) as cursor:
            await cursor.execute(one_query, (booking_id,))
            return await cursor.fetchone()

    async def index(request: Request) -> Response:
        return HTMLResponse(page())

    @_database_errors
    async def list_bookings(request: Request) -> Response:
        # One snapshot for the rows and the newest seq visible in it: a stream opened with
        # last_event_id = that seq brings exactly the changes the list does not show yet.
        async with connections.connection() as conn, conn.transaction():
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            async with conn.cursor(row_factory=dict_row) as cursor:
                await cursor.execute(list_query)
                rows = await cursor.fetchall()
            seq = await _newest_seq(conn, channel)
        headers = {SEQ_HEADER: str(seq)} if seq is not None else None
        return JSONResponse([_booking(row) for row in rows], headers=headers)

    @_database_errors
    async def get_booking(request: Request) -> Response:
        booking_id: int = request.path_params["booking_id"]
        async with connections.connection() as conn:
            row = await fetch_one(conn, booking_id)
        if row is None:
            return _error(404, f"booking {booking_id} does not exist")
        return JSONResponse(_booking(row), headers={"ETag": _etag(row["version"])})

    @_database_errors
    async def put_booking(request: Request) -> Response:
        booking_id: int = request.path_params["booking_id"]
        if_match = request.headers.get("if-match")
        if if_match is None:
            return _error(428, "send If-Match with the version you edited (optimistic locking)")
        expected = _ETAG.match(if_match)
        if expected is None:
            return _error(400, f"If-Match must be a version like \"3\", not {if_match!r}")
        try:
            actor = actor_of(request.headers.get(ACTOR_HEADER))
        except BadActor as exc:
            return _error(400, str(exc))
        try:
            changes = BookingChanges.model_validate_json(await request.body())
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            return _error(422, f"{where}: {first['msg']}" if where else first["msg"])
        values = changes.model_dump(exclude_unset=True)
        assignments = sql.SQL(", ").join(
            sql.SQL("{} = %s").format(sql.Identifier(column)) for column in values
        )
        update = sql.SQL(
            "UPDATE {bookings} SET {assignments}, version = version + 1, updated_at = now()"
            " WHERE id = %s AND version = %s RETURNING id"
        ).format(bookings=names["bookings"], assignments=assignments)
        async with connections.connection() as conn:
            try:
                async with conn.transaction():
                    # Bound parameters, never pasted: the name comes from the browser.
                    await conn.execute(
                        "SELECT set_config('bookwatch.actor', %s, true),"
                        " set_config('lock_timeout', %s, true),"
                        " set_config('statement_timeout', %s, true)",
                        (actor, LOCK_TIMEOUT, SAVE_TIMEOUT),
                    )
                    cursor = await conn.execute(
                        update, [*values.values(), booking_id, int(expected.group(1))]
                    )
                    updated = await cursor.fetchone()
                    row = await fetch_one(conn, booking_id)
            except psycopg.errors.CheckViolation:
                return _error(422, "departure (abreise) must be after arrival (anreise)")
            if row is None:
                return _error(404, f"booking {booking_id} does not exist")
            if updated is None:
                saved_by = await _saved_by(conn, schema, booking_id)
                return _error(409, CONFLICT_MESSAGE, current=_booking(row), saved_by=saved_by)
        return JSONResponse(_booking(row), headers={"ETag": _etag(row["version"])})

    return [
        Route("/", index),
        Route("/api/bookings", list_bookings),
        Route("/api/bookings/{booking_id:int}", get_booking, methods=["GET"]),
        Route("/api/bookings/{booking_id:int}", put_booking, methods=["PUT"]),
    ]
