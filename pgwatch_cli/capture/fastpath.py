"""wal mode's capture function for one table: the generic ``bookwatch.capture()`` with a prelude
compiled for the table's columns.

The generic function finds an UPDATE's changed columns at run time (a loop over the row's
keys); with the names fixed, the whole event is one expression, which saves 25-35 us of the
writer's CPU per single-row transaction (``benchmarks/capture_cost.py``). The prelude handles
UPDATEs of tables with a one-column key. It first checks that the row has no column it does not
know: after a column is added or renamed it steps aside and the generic body below it, which
reads the trigger arguments as ever, builds the event. ``install-triggers`` compiles it again
(``status`` and the install plan compare the columns it was compiled for).

Its event is byte for byte the generic one: jsonb's key order (shorter names first, then by
bytes) and jsonb's text form (``", "`` and ``": "``) are reproduced here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from pgwatch_cli.capture import sqlfiles
from pgwatch_cli.capture.config import Mode, TriggerConfig

NAME_PREFIX = "capture_wal_"
_COMMENT_PREFIX = "bookwatch wal capture compiled for columns "
_GENERIC = re.compile(
    r"CREATE OR REPLACE FUNCTION bookwatch\.capture\(\) RETURNS trigger\s+"
    r"LANGUAGE plpgsql AS \$capture\$\s*DECLARE\n(?P<declare>.*?)\nBEGIN\n(?P<body>.*?)\n"
    r"END\n\$capture\$;",
    re.DOTALL,
)


@dataclass(frozen=True)
class FastPath:
    """The compiled capture function of one table."""

    relid: int
    columns: tuple[str, ...]  # in jsonb's key order

    @property
    def name(self) -> str:
        return f"{NAME_PREFIX}{self.relid}"

    def comment(self) -> str:
        return _COMMENT_PREFIX + json.dumps(list(self.columns), ensure_ascii=False)


def jsonb_order(names: Sequence[str]) -> tuple[str, ...]:
    """Names as jsonb orders an object's keys: by length in bytes, then bytewise."""
    return tuple(sorted(names, key=lambda name: (len(name.encode()), name.encode())))


# concat_ws() takes one argument per column, and a function at most 100 (FUNC_MAX_ARGS);
# wider tables keep the generic function, whose query has no such bound.
MAX_COLUMNS = 64


def applies(config: TriggerConfig, columns: Sequence[str]) -> bool:
    """Compiled for wal mode with a one-column key, no excluded column and at most MAX_COLUMNS
    columns. Exclusions follow renames by attribute number, which a per-row check of names
    cannot see (two columns that swap names): those tables keep the generic function. Columns
    added later make the compiled prelude step aside (its guard), so the bound holds."""
    # A tenant column: the compiled event has no "tenant"; the generic body adds it.
    return (config.mode is Mode.WAL and len(config.primary_key) == 1 and not config.excluded
            and config.tenant_column is None and len(columns) <= MAX_COLUMNS)


def columns_of(conn: psycopg.Connection[Any], relid: int) -> tuple[str, ...]:
    rows = conn.execute(sqlfiles.query("table_columns"), {"oid": relid}).fetchall()
    return jsonb_order([str(row[0]) for row in rows])


def compiled_columns(comment: str | None) -> tuple[str, ...] | None:
    """The columns a compiled function's comment names (None: not one of ours)."""
    if not comment or not comment.startswith(_COMMENT_PREFIX):
        return None
    try:
        names = json.loads(comment[len(_COMMENT_PREFIX):])
    except ValueError:
        return None
    return tuple(str(name) for name in names) if isinstance(names, list) else None


def create_statements(fast: FastPath, config: TriggerConfig) -> list[sql.Composed]:
    """CREATE OR REPLACE the table's function, private to the installer, with its comment."""
    generic = _GENERIC.search(sqlfiles.script("capture"))
    if generic is None:
        raise RuntimeError("sql/capture.sql: bookwatch.capture() is not where fastpath expects it")
    function = sql.SQL("bookwatch.{}()").format(sql.Identifier(fast.name))
    source = (
        "DECLARE\n" + generic.group("declare") + "\n"
        "    fast_new jsonb;\n    fast_old jsonb;\n    fast_changed text;\n"
        "BEGIN\n" + _prelude(fast, config) + generic.group("body") + "\nEND\n"
    )
    return [
        sql.SQL("CREATE OR REPLACE FUNCTION {} RETURNS trigger LANGUAGE plpgsql AS {}").format(
            function, sql.Literal(source)
        ),
        sql.SQL("REVOKE ALL ON FUNCTION {} FROM PUBLIC").format(function),
        sql.SQL("COMMENT ON FUNCTION {} IS {}").format(function, sql.Literal(fast.comment())),
    ]


def drop_statement(name: str) -> sql.Composed:
    return sql.SQL("DROP FUNCTION IF EXISTS bookwatch.{}()").format(sql.Identifier(name))


def _text(value: str) -> str:
    """A SQL string literal that reads the same whatever the writer's session sets
    ``standard_conforming_strings`` to (the function's statements are parsed in its session)."""
    return "E'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def _json_name(name: str) -> str:
    # to_json(text) escapes the way json.dumps does without ensure_ascii.
    return json.dumps(name, ensure_ascii=False)


def _prelude(fast: FastPath, config: TriggerConfig) -> str:
    key = config.primary_key[0]
    excluded = set(config.excluded)
    new, old = "fast_new -> {}", "fast_old -> {}"

    def differs(column: str) -> str:
        return f"{new.format(_text(column))} IS DISTINCT FROM {old.format(_text(column))}"

    changed = ",\n                ".join(
        f"CASE WHEN {differs(c)} THEN {_text(_json_name(c))} END" for c in fast.columns
    )
    diff = ",\n                ".join(
        f"CASE WHEN {differs(c)} THEN {_text(_json_name(c) + ': [')}"
        f" || ({old.format(_text(c))})::text || ', ' || ({new.format(_text(c))})::text || ']' END"
        for c in fast.columns if c not in excluded
    ) or "NULL"
    known = "ARRAY[" + ", ".join(_text(c) for c in fast.columns) + "]::text[]"
    key_new, key_old = new.format(_text(key)), old.format(_text(key))
    pk_head = _text(',"pk":{' + _json_name(key) + ":")
    old_pk_head = _text(',"old_pk":{' + _json_name(key) + ": ")
    return f"""    -- Compiled for this table by install-triggers (pgwatch_cli/capture/fastpath.py)
    IF TG_OP = 'UPDATE' THEN
        fast_new := to_jsonb(NEW);
        fast_old := to_jsonb(OLD);
        IF fast_new - {known} = '{{}}' THEN
            fast_changed := concat_ws(', ',
                {changed});
            IF fast_changed = '' THEN
                PERFORM set_config('bookwatch.wal_event' || pg_trigger_depth(), '', true);
                RETURN NULL;
            END IF;
            PERFORM set_config('bookwatch.wal_event' || pg_trigger_depth(),
                ',"action":"UPDATE","id":' || ({key_new})::text
                || {pk_head} || ({key_new})::text || '}}'
                || CASE WHEN {key_new} IS DISTINCT FROM {key_old}
                        THEN {old_pk_head} || ({key_old})::text || '}}'
                        ELSE '' END
                || ',"actor":' || to_json(coalesce(
                       nullif(current_setting('bookwatch.actor', true), ''),
                       nullif(current_setting('application_name', true), ''),
                       current_user::text))
                || ',"changed":[' || fast_changed || ']'
                || ',"diff":{{' || concat_ws(', ',
                {diff}) || '}}'
                || ',"truncated":false,"txid":' || pg_current_xact_id()::text
                || ',"timestamp":"' || to_char(clock_timestamp() AT TIME ZONE 'UTC',
                                               'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"')
                || '"}}',
                true);
            RETURN NULL;
        END IF;
    END IF;
"""
