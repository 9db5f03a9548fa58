"""The relay's second stage: decoded changes in, v1 events out (the JSON after the seq value).

Values come from pgoutput as their text form. PostgreSQL itself turns them back into values:
the relay's own session casts each text to its column's type and takes ``to_jsonb`` of the
row, and ``bookwatch.wal_event`` builds id/pk/old_pk/changed/diff from the old and new rows
exactly as log mode's capture function does, so the two modes give the same event value for
value (numbers keep their digits; timestamps, jsonb, arrays, enums, domains, bytea, composites
as to_jsonb gives them; stored generated columns, which pgoutput does not send, are computed
from their expression). One query per table per batch.

Excluded columns never leave this process: their values are replaced by placeholders that
only say whether the value changed, so they are named in ``changed`` and never valued.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow

from pgwatch_cli.stream import pgoutput
from pgwatch_cli.stream.relay_assembler import Change

# An event whose row values exceed this many bytes (old and new row together, as decoded)
# is relayed without values: "diff" null, "truncated" true and an "error" saying why, so a
# value of any size never stops the relay. Documented in the README ("wal mode limits").
MAX_EVENT_VALUE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Built:
    """An event ready to append, with where it comes from in the WAL."""

    commit_lsn: int
    position: int
    channel: str
    tail: str


@dataclass(frozen=True)
class _Shape:
    """A captured table as the relay converts its rows."""

    head: str  # ',"table":...,"schema":...'
    channel: str
    keys: list[str]
    hidden: frozenset[int]  # column indexes of excluded columns
    hidden_names: list[str]
    tenant: str | None
    columns: tuple[pgoutput.Column, ...]
    convert: sql.Composed  # the conversion query (see _conversion)
    oversized_convert: sql.Composed  # the same with every non-key value hidden
    oversized_hidden: frozenset[int]


class EventBuilder:
    """Builds events on ``store`` (the relay's ordinary connection, owner of bookwatch)."""

    def __init__(self, store: psycopg.Connection[TupleRow], encoding: str) -> None:
        self._store = store
        self._encoding = encoding
        self._relations: dict[int, pgoutput.Relation] = {}
        self._shapes: dict[int, _Shape | None] = {}
        self._epoch = _xid_epoch(store)
        self.ignored = 0  # changes of relations that are not captured tables

    def relation(self, frame: pgoutput.Relation) -> None:
        self._relations[frame.relid] = frame
        self._shapes.pop(frame.relid, None)

    def forget(self) -> None:
        """The configuration changed (an install or removal): read it again when needed."""
        self._shapes.clear()

    def build(self, changes: Sequence[Change]) -> list[Built]:
        groups: dict[tuple[int, bool], list[int]] = {}
        results: list[list[Built]] = [[] for _ in changes]
        for index, change in enumerate(changes):
            row = change.row
            if isinstance(row, pgoutput.Truncate):
                results[index] = self._truncate(change, row)
                continue
            shape = self._shape(row.relid)
            if shape is None:
                self.ignored += 1
                continue
            oversized = row.size() > MAX_EVENT_VALUE_BYTES
            groups.setdefault((row.relid, oversized), []).append(index)
        for (relid, oversized), indexes in groups.items():
            shape = self._shape(relid)
            assert shape is not None
            middles = self._convert(shape, [changes[i] for i in indexes], oversized)
            for index, middle in zip(indexes, middles, strict=True):
                if middle is not None:
                    results[index] = [self._event(shape, changes[index], middle, oversized)]
        return [built for events in results for built in events]

    def _event(self, shape: _Shape, change: Change, middle: str, oversized: bool) -> Built:
        truncated = "false"
        if oversized:
            assert isinstance(change.row, pgoutput.RowChange)
            middle = middle.rpartition(',"diff":')[0] + ',"diff":null'
            truncated = ("true,\"error\":" + json.dumps(
                f"row values of {change.row.size():,} bytes exceed the relay's limit of "
                f"{MAX_EVENT_VALUE_BYTES:,} bytes: values left out", ensure_ascii=False))
        tail = (shape.head + middle + ',"actor":' + json.dumps(change.actor, ensure_ascii=False)
                + ',"truncated":' + truncated + self._stamp(change))
        return Built(change.commit_lsn, change.position, shape.channel, tail)

    def _truncate(self, change: Change, row: pgoutput.Truncate) -> list[Built]:
        built = []
        for relid in row.relids:
            shape = self._shape(relid)
            if shape is None:
                continue
            tail = (shape.head + ',"action":"TRUNCATE","id":null,"pk":null,"actor":'
                    + json.dumps(change.actor, ensure_ascii=False)
                    + ',"changed":null,"diff":null,"truncated":false' + self._stamp(change))
            built.append(Built(change.commit_lsn, change.position, shape.channel, tail))
        return built

    def _stamp(self, change: Change) -> str:
        committed = pgoutput.protocol_time(change.commit_micros).astimezone(UTC)
        return (f',"txid":{self._txid(change.xid)},"timestamp":"'
                f'{datetime.strftime(committed, "%Y-%m-%dT%H:%M:%S.%f")}+00:00"}}')

    def _txid(self, xid: int) -> int:
        """The 64-bit transaction id (pg_current_xact_id) of a decoded 32-bit xid."""
        epoch, next_low = self._epoch
        return ((epoch if xid <= next_low else epoch - 1) << 32) | xid

    def _convert(self, shape: _Shape, changes: list[Change], oversized: bool) -> list[str | None]:
        hidden = shape.oversized_hidden if oversized else shape.hidden
        count = len(shape.columns)
        actions, has_new, has_old = [], [], []
        new_columns: list[list[str | None]] = [[] for _ in range(count)]
        old_columns: list[list[str | None]] = [[] for _ in range(count)]
        for change in changes:
            row = change.row
            assert isinstance(row, pgoutput.RowChange)
            actions.append(row.action)
            has_new.append(row.new is not None)
            has_old.append(row.old is not None)
            new, old = self._values(row, hidden, count)
            for column in range(count):
                new_columns[column].append(new[column])
                old_columns[column].append(old[column])
        query = shape.oversized_convert if oversized else shape.convert
        hidden_names = ([c.name for i, c in enumerate(shape.columns) if i in hidden]
                        if oversized else shape.hidden_names)
        params = [shape.keys, hidden_names, shape.tenant, actions, has_new, has_old,
                  *new_columns, *old_columns]
        rows = self._store.execute(query, params).fetchall()
        return [None if row[0] is None else str(row[0]) for row in rows]

    def _values(
        self, row: pgoutput.RowChange, hidden: frozenset[int], count: int
    ) -> tuple[list[str | None], list[str | None]]:
        encoding = self._encoding
        new_raw = row.new or (None,) * count
        old_raw = row.old or (None,) * count
        new: list[str | None] = []
        old: list[str | None] = []
        for index in range(count):
            old_value = old_raw[index] if index < len(old_raw) else None
            new_value = new_raw[index] if index < len(new_raw) else None
            if new_value is pgoutput.UNCHANGED:
                # Unchanged TOAST: the old row (REPLICA IDENTITY FULL) holds the value.
                new_value = old_value if isinstance(old_value, bytes) else None
            if old_value is pgoutput.UNCHANGED:
                old_value = None
            if index in hidden:
                # Only whether it changed: the value itself goes no further.
                new.append(None if row.new is None else
                           ("1" if new_value != old_value and row.old is not None else "0"))
                old.append(None if row.old is None else "0")
                continue
            new.append(new_value.decode(encoding) if isinstance(new_value, bytes) else None)
            old.append(old_value.decode(encoding) if isinstance(old_value, bytes) else None)
        return new, old

    def _shape(self, relid: int) -> _Shape | None:
        if relid in self._shapes:
            return self._shapes[relid]
        frame = self._relations.get(relid)
        shape = None if frame is None else _load_shape(self._store, frame)
        self._shapes[relid] = shape
        return shape


def _load_shape(store: psycopg.Connection[TupleRow], frame: pgoutput.Relation) -> _Shape | None:
    config = store.execute(
        "SELECT c.channel, c.key_columns, c.excluded_attnums::int[], c.tenant_column,"
        "       n.nspname::text, r.relname::text"
        "  FROM bookwatch.captured_table c"
        "  JOIN pg_catalog.pg_class r ON r.oid = c.relid"
        "  JOIN pg_catalog.pg_namespace n ON n.oid = r.relnamespace"
        " WHERE c.relid = %s::oid",
        (frame.relid,),
    ).fetchone()
    if config is None:
        return None
    channel, keys, excluded_attnums, tenant, schema, table = config
    attnums: dict[str, int] = dict(store.execute(
        "SELECT attname::text, attnum::int FROM pg_catalog.pg_attribute"
        " WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped",
        (frame.relid,),
    ).fetchall())
    generated = store.execute(
        "SELECT a.attname::text, pg_catalog.pg_get_expr(d.adbin, d.adrelid)"
        "  FROM pg_catalog.pg_attribute a"
        "  JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum"
        " WHERE a.attrelid = %s AND a.attgenerated = 's' AND NOT a.attisdropped"
        " ORDER BY a.attnum",
        (frame.relid,),
    ).fetchall()
    types = [str(row[0]) for row in store.execute(
        "SELECT pg_catalog.format_type(t, m) FROM unnest(%s::oid[], %s::int[])"
        " WITH ORDINALITY AS x(t, m, o) ORDER BY o",
        ([c.type_oid for c in frame.columns], [c.typmod for c in frame.columns]),
    ).fetchall()]
    excluded = set(excluded_attnums or ())
    hidden = frozenset(i for i, c in enumerate(frame.columns) if attnums.get(c.name) in excluded)
    valued = set(keys) | ({tenant} if tenant else set())
    oversized_hidden = frozenset(
        i for i, c in enumerate(frame.columns) if c.name not in valued) | hidden
    gens = [(str(name), str(expr)) for name, expr in generated]
    return _Shape(
        head=',"table":' + json.dumps(table, ensure_ascii=False)
        + ',"schema":' + json.dumps(schema, ensure_ascii=False),
        channel=str(channel), keys=list(keys), hidden=hidden,
        hidden_names=[c.name for i, c in enumerate(frame.columns) if i in hidden],
        tenant=tenant, columns=frame.columns,
        convert=_conversion(frame.columns, types, hidden, gens),
        oversized_convert=_conversion(frame.columns, types, oversized_hidden, gens),
        oversized_hidden=oversized_hidden,
    )


def _conversion(
    columns: Sequence[pgoutput.Column], types: Sequence[str], hidden: frozenset[int],
    generated: Sequence[tuple[str, str]],
) -> sql.Composed:
    """SELECT bookwatch.wal_event(...) for rows given as one text array per column."""
    count = len(columns)

    def row(prefix: str) -> sql.Composed:
        fields = sql.SQL(", ").join(
            sql.SQL("u.{} AS {}").format(sql.Identifier(f"{prefix}{i}"), sql.Identifier(c.name))
            if i in hidden else
            sql.SQL("u.{}::{} AS {}").format(
                # format_type() output: a type name PostgreSQL itself quoted as needed.
                sql.Identifier(f"{prefix}{i}"), sql.SQL(types[i]), sql.Identifier(c.name))
            for i, c in enumerate(columns)
        )
        computed = sql.SQL("").join(
            # pg_get_expr() output: the column's own generation expression.
            sql.SQL(", ({}) AS {}").format(sql.SQL(expr), sql.Identifier(name))
            for name, expr in generated
        )
        return sql.SQL(
            "(SELECT to_jsonb(bookwatch_row.*) FROM"
            " (SELECT bookwatch_base.*{} FROM (SELECT {}) AS bookwatch_base) AS bookwatch_row)"
        ).format(computed, fields)

    names = sql.SQL(", ").join(
        [sql.Identifier(name) for name in ("action", "has_new", "has_old")]
        + [sql.Identifier(f"n{i}") for i in range(count)]
        + [sql.Identifier(f"d{i}") for i in range(count)]
    )
    arrays = sql.SQL(", ").join(
        [sql.SQL("%b::text[]"), sql.SQL("%b::bool[]"), sql.SQL("%b::bool[]")]
        + [sql.SQL("%b::text[]")] * (2 * count)
    )
    return sql.SQL(
        "SELECT bookwatch.wal_event(u.action,"
        " CASE WHEN u.has_new THEN {new} END, CASE WHEN u.has_old THEN {old} END,"
        " %s::text[], %s::text[], %s::text)"
        " FROM unnest({arrays}) WITH ORDINALITY AS u({names}, bookwatch_o)"
        " ORDER BY u.bookwatch_o"
    ).format(new=row("n"), old=row("d"), arrays=arrays, names=names)


def _xid_epoch(store: psycopg.Connection[TupleRow]) -> tuple[int, int]:
    """The current xid epoch and the low 32 bits of the next xid."""
    row = store.execute(
        "SELECT pg_catalog.pg_snapshot_xmax(pg_catalog.pg_current_snapshot())::text::bigint"
    ).fetchone()
    assert row is not None
    full = int(row[0])
    return full >> 32, full & 0xFFFFFFFF
