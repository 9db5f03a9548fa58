"""Install, remove and inspect bookwatch's capture triggers. Each change is one transaction."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from pgwatch_cli.capture import sqlfiles
from pgwatch_cli.capture.tables import TableRef
from pgwatch_cli.errors import MissingTable, UnsupportedTable, UsageProblem

SCHEMA_VERSION = 1
TRIGGER_NAME = "bookwatch_capture"
Statement = sql.SQL | sql.Composed
DEFAULT_CHANNEL = "booking_changes"
DEFAULT_TABLES = ("bookings", "guests", "rooms")
MAX_CHANNEL_BYTES = 63  # NAMEDATALEN - 1: LISTEN truncates longer names, pg_notify refuses them
_INSTALL_LOCK = 7236284523806213749  # serializes concurrent installs and removals


@dataclass(frozen=True)
class TriggerConfig:
    """What a capture trigger does, as encoded in its arguments (see sql/schema.sql)."""

    channel: str
    durable: bool
    primary_key: tuple[str, ...]
    excluded: tuple[str, ...] = ()

    def arguments(self) -> list[str]:
        return [
            self.channel,
            "durable" if self.durable else "volatile",
            str(len(self.primary_key)),
            *self.primary_key,
            *self.excluded,
        ]

    @classmethod
    def from_arguments(cls, args: Sequence[str]) -> TriggerConfig:
        key_count = int(args[2])
        return cls(
            channel=args[0],
            durable=args[1] == "durable",
            primary_key=tuple(args[3 : 3 + key_count]),
            excluded=tuple(args[3 + key_count :]),
        )


@dataclass(frozen=True)
class InstalledTrigger:
    table: TableRef
    enabled: bool
    config: TriggerConfig

    def as_json(self) -> dict[str, Any]:
        return {
            "schema": self.table.schema,
            "table": self.table.name,
            "enabled": self.enabled,
            "durable": self.config.durable,
            "channel": self.config.channel,
            "primary_key": list(self.config.primary_key),
            "excluded_columns": list(self.config.excluded),
        }


@dataclass
class Plan:
    """The statements a command would run, and a line per table saying what changes."""

    statements: list[Statement] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)

    def render(self, conn: psycopg.Connection[Any]) -> str:
        return "\n".join(_as_text(statement, conn) for statement in self.statements)


def _as_text(statement: Statement, conn: psycopg.Connection[Any]) -> str:
    text = statement.as_string(conn).rstrip()
    return text if text.endswith(";") else text + ";"


def check_channel(channel: str) -> str:
    if not channel or len(channel.encode()) > MAX_CHANNEL_BYTES:
        raise UsageProblem(f"--channel must be 1 to {MAX_CHANNEL_BYTES} bytes long.")
    return channel


def installed_triggers(conn: psycopg.Connection[Any]) -> list[InstalledTrigger]:
    rows = conn.execute(sqlfiles.query("installed_triggers")).fetchall()
    found = []
    for schema, table, enabled, _deferred, nargs, raw_args in rows:
        args = [part.decode() for part in bytes(raw_args).split(b"\0")[:nargs]]
        found.append(
            InstalledTrigger(TableRef(schema, table), enabled, TriggerConfig.from_arguments(args))
        )
    return found


def _lookup(conn: psycopg.Connection[Any], table: TableRef) -> tuple[int, str] | None:
    row = conn.execute(
        sqlfiles.query("find_table"), {"schema": table.schema, "table": table.name}
    ).fetchone()
    return (int(row[0]), str(row[1])) if row else None


def _columns(conn: psycopg.Connection[Any], query: str, oid: int) -> tuple[str, ...]:
    return tuple(row[0] for row in conn.execute(sqlfiles.query(query), {"oid": oid}))


def plan_install(
    conn: psycopg.Connection[Any],
    tables: Sequence[TableRef],
    *,
    channel: str,
    durable: bool,
    excluded: dict[TableRef, list[str]],
) -> Plan:
    """Validate every table first (nothing is planned unless all are fine), then plan."""
    check_channel(channel)
    unknown = [str(table) for table in excluded if table not in tables]
    if unknown:
        raise UsageProblem(
            f"--exclude-column names a table that is not being installed: {', '.join(unknown)}."
        )
    wanted: dict[TableRef, TriggerConfig] = {}
    missing = []
    for table in tables:
        found = _lookup(conn, table)
        if found is None:
            missing.append(str(table))
            continue
        oid, kind = found
        if kind not in ("r", "p"):
            raise UnsupportedTable(f"{table} is not a table (it cannot carry row triggers).")
        key = _columns(conn, "primary_key_columns", oid)
        if not key:
            raise UnsupportedTable(
                f"Table {table} has no primary key.",
                hint="Events identify rows by primary key; add one, then install again.",
            )
        columns = _columns(conn, "table_columns", oid)
        bad = [column for column in excluded.get(table, []) if column not in columns]
        if bad:
            raise MissingTable(f"Table {table} has no column {', '.join(bad)}.")
        wanted[table] = TriggerConfig(
            channel, durable, key, tuple(dict.fromkeys(excluded.get(table, [])))
        )
    if missing:
        raise MissingTable(
            f"Table not found: {', '.join(missing)}. Nothing was installed.",
            hint="Names are matched exactly; qualify them (sales.bookings) or use --schema.",
        )

    current = {trigger.table: trigger for trigger in installed_triggers(conn)}
    plan = Plan(statements=[sql.SQL(sqlfiles.script("schema").strip())])
    for table, config in wanted.items():
        existing = current.get(table)
        if existing is not None and existing.enabled and existing.config == config:
            plan.actions.append(f"{table}: already installed")
            continue
        if existing is not None:
            plan.statements.append(_drop_trigger(table))
        plan.statements.append(_create_trigger(table, config))
        mode = "durable" if durable else "not durable"
        verb = "updated" if existing is not None else "installed"
        plan.actions.append(f"{table}: {verb} (channel {channel}, {mode})")
    return plan


def _drop_trigger(table: TableRef) -> sql.Composed:
    return sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(
        sql.Identifier(TRIGGER_NAME), table.identifier()
    )


def _create_trigger(table: TableRef, config: TriggerConfig) -> sql.Composed:
    # Durable capture is a deferred constraint trigger: it runs at commit, where the seq is
    # drawn in commit order. Without the log, a plain row trigger is enough (NOTIFY itself is
    # delivered at commit, in commit order).
    template = (
        "CREATE CONSTRAINT TRIGGER {name} AFTER INSERT OR UPDATE OR DELETE ON {table}"
        " DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION bookwatch.capture({args})"
        if config.durable
        else "CREATE TRIGGER {name} AFTER INSERT OR UPDATE OR DELETE ON {table}"
        " FOR EACH ROW EXECUTE FUNCTION bookwatch.capture({args})"
    )
    return sql.SQL(template).format(
        name=sql.Identifier(TRIGGER_NAME),
        table=table.identifier(),
        args=sql.SQL(", ").join(sql.Literal(arg) for arg in config.arguments()),
    )


def plan_remove(
    conn: psycopg.Connection[Any], tables: Sequence[TableRef] | None, *, drop_log: bool
) -> Plan:
    current = installed_triggers(conn)
    chosen = [t for t in current if tables is None or t.table in tables]
    plan = Plan()
    for trigger in chosen:
        plan.statements.append(_drop_trigger(trigger.table))
        plan.actions.append(f"{trigger.table}: removed")
    for table in tables or ():
        if all(t.table != table for t in chosen):
            plan.actions.append(f"{table}: not installed, nothing to do")
    remaining = [t for t in current if t not in chosen]
    if drop_log:
        if remaining:
            names = ", ".join(str(t.table) for t in remaining)
            raise UsageProblem(
                f"--drop-log drops schema bookwatch, which other tables still use: {names}.",
                hint="Remove those triggers too (omit --table), or keep the log.",
            )
        if log_schema_exists(conn):
            plan.statements.append(sql.SQL("DROP SCHEMA bookwatch CASCADE"))
            plan.actions.append("schema bookwatch (change log included): dropped")
    elif not remaining and _capture_function_exists(conn):
        plan.statements.append(sql.SQL("DROP FUNCTION IF EXISTS bookwatch.capture()"))
        plan.actions.append("capture function: dropped (no trigger uses it); change log kept")
    return plan


def take_install_lock(conn: psycopg.Connection[Any]) -> None:
    """Serialize installers, and give up on table locks instead of hanging behind a session
    that keeps a transaction open on the table (DDL needs a moment of exclusive access)."""
    conn.execute("SET LOCAL lock_timeout = '10s'")
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_INSTALL_LOCK,))


def log_schema_exists(conn: psycopg.Connection[Any]) -> bool:
    """Is schema ``bookwatch`` (change log, capture function) installed?"""
    row = conn.execute(sqlfiles.query("schema_exists")).fetchone()
    return bool(row and row[0])


def plan_scratch_drop(
    conn: psycopg.Connection[Any], schema: str, channel: str, *, created_log: bool
) -> Plan:
    """Remove what a scratch run (simulate, bench) left: its schema (tables and triggers go
    with it), its channel's log rows, and schema ``bookwatch`` itself when the run created
    it and nobody else has used it since. Run it through ``run`` so a concurrent install is
    never undone."""
    plan = Plan(statements=[
        sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
    ])
    if not log_schema_exists(conn):
        return plan
    others = [t for t in installed_triggers(conn) if t.table.schema != schema]
    foreign_rows = conn.execute(
        "SELECT count(*) FROM bookwatch.change_log WHERE channel <> %s", (channel,)
    ).fetchone()
    if created_log and not others and foreign_rows == (0,):
        plan.statements.append(sql.SQL("DROP SCHEMA bookwatch CASCADE"))
    else:
        plan.statements.append(
            sql.SQL("DELETE FROM bookwatch.change_log WHERE channel = {}").format(
                sql.Literal(channel)
            )
        )
    return plan


def _capture_function_exists(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute("SELECT to_regprocedure('bookwatch.capture()') IS NOT NULL").fetchone()
    return bool(row and row[0])


def run(
    conn: psycopg.Connection[Any], make_plan: Callable[[], Plan], *, dry_run: bool = False
) -> Plan:
    """Plan and apply in one transaction under the install lock: all of it or nothing.

    Planning inside the lock means two installers never act on the same stale view. A dry
    run plans the same way and rolls back.
    """
    with conn.transaction(force_rollback=dry_run):
        take_install_lock(conn)
        plan = make_plan()
        if not dry_run:
            for statement in plan.statements:
                conn.execute(statement)
    return plan


@dataclass
class Status:
    schema_version: int | None
    triggers: list[InstalledTrigger]
    log_rows: int | None
    log_min_seq: int | None
    log_max_seq: int | None
    queue_usage: float

    def as_json(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "tables": [trigger.as_json() for trigger in self.triggers],
            "change_log": None
            if self.log_rows is None
            else {"rows": self.log_rows, "min_seq": self.log_min_seq, "max_seq": self.log_max_seq},
            "notification_queue_usage": self.queue_usage,
        }


def status(conn: psycopg.Connection[Any]) -> Status:
    has_schema = log_schema_exists(conn)
    version = rows = low = high = None
    if has_schema:
        found = conn.execute(sqlfiles.query("schema_version")).fetchone()
        version = int(found[0]) if found else None
        rows, low, high = conn.execute(sqlfiles.query("log_summary")).fetchone() or (0, None, None)
    usage_row = conn.execute(sqlfiles.query("notification_queue_usage")).fetchone()
    return Status(
        schema_version=version,
        triggers=installed_triggers(conn),
        log_rows=rows,
        log_min_seq=low,
        log_max_seq=high,
        queue_usage=float(usage_row[0]) if usage_row else 0.0,
    )


def parse_exclusions(
    values: Iterable[str], tables: Sequence[TableRef], default_schema: str
) -> dict[TableRef, list[str]]:
    """``TABLE.COLUMN`` (or ``SCHEMA.TABLE.COLUMN``) options, grouped by table."""
    grouped: dict[TableRef, list[str]] = {}
    for value in values:
        table_part, dot, column = value.rpartition(".")
        if not dot or not table_part or not column:
            raise UsageProblem(f"--exclude-column wants TABLE.COLUMN, got {value!r}.")
        table = TableRef.parse(table_part, default_schema)
        grouped.setdefault(table, []).append(column)
    return grouped
