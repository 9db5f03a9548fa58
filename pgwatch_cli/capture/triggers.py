"""Install, remove and inspect bookwatch's capture triggers. Each change is one transaction."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from pgwatch_cli.capture import migrations, modes, slot, slot_limits, sqlfiles, wal_tables
from pgwatch_cli.capture import retention as durations
from pgwatch_cli.capture.config import Mode, TriggerConfig
from pgwatch_cli.capture.tables import TableRef
from pgwatch_cli.errors import MissingTable, UnsupportedTable, UsageProblem

TRIGGER_NAME = "bookwatch_capture"
TRUNCATE_TRIGGER_NAME = "bookwatch_truncate"
# wal mode v2's SECURITY DEFINER halves, dropped when a v2 install is upgraded.
SEND_TRIGGER_NAME = "bookwatch_capture_send"
TRUNCATE_SEND_TRIGGER_NAME = "bookwatch_truncate_send"
_ALL_TRIGGER_NAMES = (TRIGGER_NAME, TRUNCATE_TRIGGER_NAME, SEND_TRIGGER_NAME,
                      TRUNCATE_SEND_TRIGGER_NAME)
Statement = sql.SQL | sql.Composed
MAX_CHANNEL_BYTES = 63  # NAMEDATALEN - 1: LISTEN truncates longer names, pg_notify refuses them
_INSTALL_LOCK = 7236284523806213749  # serializes concurrent installs and removals


@dataclass(frozen=True)
class InstalledTrigger:
    table: TableRef
    enabled: bool
    config: TriggerConfig
    # The other triggers of the set (log and notify modes' truncate trigger) are all there.
    complete: bool = True
    function: str = "capture"  # wal mode: emit_actor (v2 installs: capture or capture_wal_N)

    def as_json(self) -> dict[str, Any]:
        return {
            "schema": self.table.schema,
            "table": self.table.name,
            "enabled": self.enabled,
            "mode": self.config.mode.value,
            "channel": self.config.channel,
            "primary_key": list(self.config.primary_key),
            "excluded_columns": list(self.config.excluded),
            "tenant_column": self.config.tenant_column,
            "partitioned": self.config.partitioned,
        }


@dataclass
class Plan:
    """The statements a command would run, and a line per table saying what changes.

    ``create_slot`` runs in the same transaction before ``statements`` (PostgreSQL creates a
    logical slot only in a transaction that has not written yet) and is dropped again if they
    fail; ``drop_slot`` runs after the commit (dropping a slot is not transactional).
    """

    statements: list[Statement] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    would: list[str] = field(default_factory=list)
    create_slot: str | None = None
    drop_slot: str | None = None

    @property
    def changes_anything(self) -> bool:
        """Whether applying it would change something (re-applying capture.sql alone does not)."""
        return any(done != conditional for done, conditional in zip(self.actions, self.would,
                                                                    strict=True))

    def note(self, text: str) -> None:
        """A line that reads the same whether the plan runs or is only shown (--dry-run)."""
        self.actions.append(text)
        self.would.append(text)

    def change(self, done: str, would: str) -> None:
        """A change, said as done after a run and in the conditional for --dry-run."""
        self.actions.append(done)
        self.would.append(would)

    def render(self, conn: psycopg.Connection[Any]) -> str:
        statements = list(self.statements)
        if self.create_slot:
            statements.insert(0, slot.create_slot_statement(self.create_slot))
        if self.drop_slot:
            statements.append(slot.drop_slot_statement(self.drop_slot))
        return "\n".join(_as_text(statement, conn) for statement in statements)


def _as_text(statement: Statement, conn: psycopg.Connection[Any]) -> str:
    text = statement.as_string(conn).rstrip()
    return text if text.endswith(";") else text + ";"


def check_channel(channel: str) -> str:
    if not channel or len(channel.encode()) > MAX_CHANNEL_BYTES:
        raise UsageProblem(f"--channel must be 1 to {MAX_CHANNEL_BYTES} bytes long.")
    if any(ord(character) < 32 for character in channel):
        raise UsageProblem("--channel cannot contain control characters.")
    return channel


def installed_triggers(conn: psycopg.Connection[Any]) -> list[InstalledTrigger]:
    rows = conn.execute(sqlfiles.query("installed_triggers")).fetchall()
    found = []
    for (schema, table, enabled, _deferred, nargs, raw_args, others, _partitioned, function,
         _comment) in rows:
        args = [part.decode() for part in bytes(raw_args).split(b"\0")[:nargs]]
        config = TriggerConfig.from_arguments(args)
        # wal v3: one statement-level trigger does it all.
        expected = set() if function == wal_tables.ACTOR_FUNCTION else {TRUNCATE_TRIGGER_NAME}
        found.append(InstalledTrigger(
            TableRef(schema, table), enabled, config, complete=set(others or ()) == expected,
            function=function,
        ))
    return found


def _lookup(
    conn: psycopg.Connection[Any], table: TableRef
) -> tuple[int, str, str | None] | None:
    """The table's oid, relkind and, for a partition, its root partitioned table."""
    row = conn.execute(
        sqlfiles.query("find_table"), {"schema": table.schema, "table": table.name}
    ).fetchone()
    return (int(row[0]), str(row[1]), row[2]) if row else None


def _config_for(
    conn: psycopg.Connection[Any], table: TableRef, channel: str, mode: Mode,
    excluded: Sequence[str], tenant_column: str | None = None,
) -> TriggerConfig | None:
    """Validate one table and describe its trigger: None when there is no such table; raises
    for a table that cannot be watched."""
    found = _lookup(conn, table)
    if found is None:
        return None
    oid, kind, root = found
    if table.schema == "bookwatch":
        raise UnsupportedTable(
            f"{table} is bookwatch's own table: capturing it would capture its own events.")
    if kind not in ("r", "p"):
        raise UnsupportedTable(f"{table} is not a table (it cannot carry row triggers).")
    if root is not None:
        raise UnsupportedTable(
            f"{table} is a partition of {root}; bookwatch captures a partitioned table as a "
            "whole (its events are named by the root table).",
            hint=f"Install on the root instead: -t {root}",
        )
    key = tuple(row[0] for row in conn.execute(
        sqlfiles.query("primary_key_columns"), {"oid": oid}))
    if not key:
        raise UnsupportedTable(
            f"Table {table} has no primary key.",
            hint="Events identify rows by primary key; add one, then install again.",
        )
    columns = {str(row[0]): int(row[1]) for row in conn.execute(
        sqlfiles.query("table_columns"), {"oid": oid})}
    bad = [column for column in excluded if column not in columns]
    if bad:
        raise MissingTable(f"Table {table} has no column {', '.join(bad)}.")
    if tenant_column is not None and tenant_column not in columns:
        raise MissingTable(f"Table {table} has no column {tenant_column} (--tenant-column). "
                           "Nothing was installed.")
    if tenant_column is not None and tenant_column in excluded:
        # Every event carries the tenant's value: it cannot also stay in the database.
        raise UsageProblem(f"{table}.{tenant_column} cannot be both --tenant-column and "
                           "--exclude-column.")
    names = tuple(dict.fromkeys(excluded))
    return TriggerConfig(
        channel=channel, mode=mode, primary_key=key, excluded=names,
        excluded_attnums=tuple(columns[name] for name in names), partitioned=kind == "p",
        tenant_column=tenant_column,
    )


def plan_install(
    conn: psycopg.Connection[Any],
    tables: Sequence[TableRef],
    *,
    channel: str,
    excluded: dict[TableRef, list[str]],
    tenant_columns: dict[TableRef, str] | None = None,
    mode: str = "auto",
    durable: bool | None = None,
    retention: str | None = None,
) -> Plan:
    """Validate every table first (nothing is planned unless all are fine), then plan.

    ``durable`` is the older spelling: True means ``mode="auto"``, False ``mode="notify"``.
    ``retention`` is interval text (``retention.to_interval``) to store; None keeps it.
    """
    if durable is not None:
        mode = "auto" if durable else "notify"
    check_channel(channel)
    unknown = [str(table) for table in excluded if table not in tables]
    if unknown:
        raise UsageProblem(
            f"--exclude-column names a table that is not being installed: {', '.join(unknown)}."
        )
    tenant_columns = tenant_columns or {}
    unknown = [str(table) for table in tenant_columns if table not in tables]
    if unknown:
        raise UsageProblem(
            f"--tenant-column names a table that is not being installed: {', '.join(unknown)}."
        )
    chosen, reason = modes.resolve(conn, mode)
    wanted: dict[TableRef, TriggerConfig] = {}
    missing = []
    for table in tables:
        config = _config_for(conn, table, channel, chosen, excluded.get(table, []),
                             tenant_columns.get(table))
        if config is None:
            missing.append(str(table))
        else:
            wanted[table] = config
    if missing:
        raise MissingTable(
            f"Table not found: {', '.join(missing)}. Nothing was installed.",
            hint="Names are matched exactly; qualify them (sales.bookings) or use --schema.",
        )

    plan = Plan()
    if mode == "auto":
        plan.note(f"capture mode: {reason}")
        if chosen is Mode.LOG:
            plan.note("log mode: every writer's commit appends to the change log under one "
                      "lock, so commits queue there under load; see the README section "
                      "\"Capture modes\"")
    upgrade, upgrade_actions = migrations.plan(conn)
    plan.statements.extend(upgrade)
    for action in upgrade_actions:
        plan.change(action, action.replace(" applied", " would be applied"))
    plan.statements.append(sql.SQL(sqlfiles.script("capture").strip()))
    if retention is not None:
        plan.statements.append(durations.store_statement(retention))
        plan.change(f"change log retention: {retention}",
                    f"change log retention: would be set to {retention}")

    current = {trigger.table: trigger for trigger in installed_triggers(conn)}
    final_modes = {table: trigger.config.mode for table, trigger in current.items()}
    final_modes.update({table: config.mode for table, config in wanted.items()})
    publication = slot.publication_name(conn)
    if Mode.WAL in final_modes.values() and not slot.publication_exists(conn, publication):
        plan.statements.append(slot.create_publication_statement(publication))
    for table, old in current.items():
        if (old.config.legacy or _wal_v2(old)) and table not in wanted:
            # An older schema's trigger: same behaviour, rewritten for this version.
            converted = _config_for(conn, table, old.config.channel, old.config.mode,
                                    old.config.excluded, old.config.tenant_column)
            assert converted is not None  # the trigger is on it, so the table exists
            _replace_triggers(conn, plan, table, converted, old, publication)
            plan.change(f"{table}: upgraded ({converted.mode.value} mode kept)",
                        f"{table}: would be upgraded ({converted.mode.value} mode kept)")
    for table, config in wanted.items():
        existing = current.get(table)
        if (existing is not None and existing.enabled and existing.complete
                and existing.config == config and _in_place(conn, table, existing, publication)):
            plan.note(f"{table}: already installed")
            continue
        _replace_triggers(conn, plan, table, config, existing, publication)
        verb = "updated" if existing is not None else "installed"
        detail = f"(channel {channel}, {config.mode.value} mode)"
        plan.change(f"{table}: {verb} {detail}", f"{table}: would be {verb} {detail}")

    if log_schema_exists(conn) and wal_tables.registered_table_exists(conn):
        plan.statements.append(wal_tables.forget_dropped_statement())
    if Mode.WAL in final_modes.values():
        if slot_limits.wal_keep_size(conn) == -1:
            plan.note(f"warning: {slot_limits.keep_size_warning()}")
        name = slot.slot_name(conn)
        if not slot.slot_exists(conn, name):
            plan.create_slot = name
            plan.change(f"relay slot {name}: created (pgoutput)",
                        f"relay slot {name}: would be created (pgoutput)")
    return plan


def _wal_v2(trigger: InstalledTrigger) -> bool:
    """A wal-mode table of schema version 2 (row triggers, compiled functions)."""
    return trigger.config.mode is Mode.WAL and trigger.function != wal_tables.ACTOR_FUNCTION


def _in_place(
    conn: psycopg.Connection[Any], table: TableRef, existing: InstalledTrigger, publication: str
) -> bool:
    """The trigger runs this version's function (and for wal mode, the rest is in place)."""
    if existing.config.mode is not Mode.WAL:
        return existing.function == "capture"
    if existing.function != wal_tables.ACTOR_FUNCTION:
        return False
    found = _lookup(conn, table)
    return found is not None and wal_tables.in_place(conn, found[0], publication)


def _replace_triggers(
    conn: psycopg.Connection[Any], plan: Plan, table: TableRef, config: TriggerConfig,
    existing: InstalledTrigger | None, publication: str,
) -> None:
    found = _lookup(conn, table)
    assert found is not None  # validated by _config_for
    oid = found[0]
    plan.statements.extend(_drop_triggers(table))
    if config.mode is Mode.WAL:
        statements, notes = wal_tables.install_statements(conn, table, oid, config, publication)
        plan.statements.extend(statements)
        for note in notes:
            plan.change(note, note.replace(": REPLICA IDENTITY FULL",
                                           ": would be set to REPLICA IDENTITY FULL"))
        return
    if existing is not None and existing.function == wal_tables.ACTOR_FUNCTION:
        statements, notes = wal_tables.remove_statements(conn, table, oid, publication)
        plan.statements.extend(statements)
        for note in notes:
            plan.change(note, note.replace(" restored", " would be restored"))
    plan.statements.extend(_create_triggers(table, config))


def _drop_triggers(table: TableRef) -> list[Statement]:
    return [_drop_trigger(table, name) for name in _ALL_TRIGGER_NAMES]


def _drop_trigger(table: TableRef, name: str) -> sql.Composed:
    return sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(
        sql.Identifier(name), table.identifier()
    )


def _create_triggers(table: TableRef, config: TriggerConfig) -> list[Statement]:
    # log mode numbers events at commit, so its row trigger is a deferred constraint trigger.
    # notify needs no such thing: NOTIFYs are delivered at commit, in commit order.
    row_template = (
        "CREATE CONSTRAINT TRIGGER {name} AFTER INSERT OR UPDATE OR DELETE ON {table}"
        " DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION bookwatch.{function}({args})"
        if config.mode is Mode.LOG
        else "CREATE TRIGGER {name} AFTER INSERT OR UPDATE OR DELETE ON {table}"
        " FOR EACH ROW EXECUTE FUNCTION bookwatch.{function}({args})"
    )
    args = sql.SQL(", ").join(sql.Literal(arg) for arg in config.arguments())
    truncate_template = ("CREATE TRIGGER {name} AFTER TRUNCATE ON {table}"
                         " FOR EACH STATEMENT EXECUTE FUNCTION bookwatch.{function}({args})")
    statements: list[Statement] = [
        sql.SQL(row_template).format(
            name=sql.Identifier(TRIGGER_NAME), table=table.identifier(),
            function=sql.Identifier("capture"), args=args,
        ),
        sql.SQL(truncate_template).format(
            name=sql.Identifier(TRUNCATE_TRIGGER_NAME), table=table.identifier(),
            function=sql.Identifier("capture"), args=args,
        ),
    ]
    return statements


def plan_remove(
    conn: psycopg.Connection[Any], tables: Sequence[TableRef] | None, *, drop_log: bool,
    force: bool = False, dry_run: bool = False,
) -> Plan:
    """What ``remove-triggers`` does. Refused (UsageProblem) when it would drop the relay slot
    with events still waiting in it, unless ``force`` (a dry run says it would be refused)."""
    current = installed_triggers(conn)
    chosen = [t for t in current if tables is None or t.table in tables]
    plan = Plan()
    publication = slot.publication_name(conn)
    for trigger in chosen:
        plan.statements.extend(_drop_triggers(trigger.table))
        found = _lookup(conn, trigger.table)
        if trigger.function == wal_tables.ACTOR_FUNCTION and found is not None:
            statements, notes = wal_tables.remove_statements(
                conn, trigger.table, found[0], publication)
            plan.statements.extend(statements)
            for note in notes:
                plan.change(note, note.replace(" restored", " would be restored"))
        plan.change(f"{trigger.table}: removed", f"{trigger.table}: would be removed")
    for table in tables or ():
        if all(t.table != table for t in chosen):
            plan.note(f"{table}: not installed, nothing to do")
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
            plan.change("schema bookwatch (change log included): dropped",
                        "schema bookwatch (change log included): would be dropped")
            _plan_reader_role_drop(conn, plan)
    elif not remaining and _capture_function_exists(conn):
        plan.statements.append(sql.SQL("DROP FUNCTION IF EXISTS bookwatch.capture()"))
        plan.change("capture function: dropped (no trigger uses it); change log kept",
                    "capture function: would be dropped (no trigger uses it); change log kept")
    if drop_log or all(t.config.mode is not Mode.WAL for t in remaining):
        _plan_relay_slot_drop(conn, plan, because="--drop-log" if drop_log
                              else "no table is captured in wal mode any more", force=force,
                              dry_run=dry_run)
    return plan


def _plan_reader_role_drop(conn: psycopg.Connection[Any], plan: Plan) -> None:
    """Role bookwatch_reader is cluster-wide: dropped with the last log that uses it."""
    row = conn.execute(sqlfiles.query("may_drop_roles")).fetchone()
    if row is None or not row[0]:
        return
    drop = "DROP ROLE bookwatch_reader;"
    users = [str(r[0]) for r in conn.execute(sqlfiles.query("reader_role_users")).fetchall()]
    if users:
        plan.note(f"role bookwatch_reader kept: database{'s' if len(users) > 1 else ''} "
                  f"{', '.join(users)} still use{'' if len(users) > 1 else 's'} it (roles are "
                  f"cluster-wide); once none does: {drop}")
    elif not row[1]:
        plan.note(f"role bookwatch_reader kept: dropping a role needs CREATEROLE; a superuser "
                  f"can run: {drop}")
    else:
        # After the schema: its grants to the role go with it. An install in another database
        # may grant to the role meanwhile: then the role stays and the removal still succeeds.
        plan.statements.append(sql.SQL(
            "DO $drop$ BEGIN DROP ROLE bookwatch_reader; EXCEPTION WHEN"
            " dependent_objects_still_exist OR undefined_object THEN NULL; END $drop$"))
        plan.change("role bookwatch_reader: dropped (no database of the cluster uses it)",
                    "role bookwatch_reader: would be dropped (no database of the cluster "
                    "uses it)")


def _plan_relay_slot_drop(
    conn: psycopg.Connection[Any], plan: Plan, *, because: str, force: bool = True,
    dry_run: bool = False,
) -> None:
    publication = slot.publication_name(conn)
    if slot.publication_exists(conn, publication):
        plan.statements.append(slot.drop_publication_statement(publication))
    name = slot.slot_name(conn)
    if slot.slot_exists(conn, name):
        plan.drop_slot = name
        waiting = slot.waiting_events(conn, name)
        if waiting and not force and dry_run:
            plan.note(f"relay slot {name}: holds {waiting} events not yet relayed; without "
                      "--force, remove-triggers refuses to drop them")
        elif waiting and not force:
            raise UsageProblem(
                f"The relay slot {name} still holds {waiting} event"
                f"{'s' if waiting != 1 else ''} not yet relayed to the change log; removing "
                f"it ({because}) would lose {'them' if waiting != 1 else 'it'}.",
                hint="Let them be relayed first (bookwatch relay, or any tail or serve, until "
                "status shows none waiting), or add --force to drop them; nothing was changed.",
            )
        lost = f"; {waiting} events not yet relayed go with it" if waiting else ""
        plan.change(f"relay slot {name}: dropped ({because}){lost}",
                    f"relay slot {name}: would be dropped ({because}){lost}")


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
    with it), its channel's log rows, schema ``bookwatch`` itself when the run created it and
    nobody else has used it since, and the relay slot when no wal-mode table remains. Run it
    through ``run`` so a concurrent install is never undone."""
    plan = Plan(statements=[
        sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
    ])
    if not log_schema_exists(conn):
        return plan
    installed = installed_triggers(conn)
    others = [t for t in installed if t.table.schema != schema]
    if wal_tables.registered_table_exists(conn):
        plan.statements.append(wal_tables.forget_dropped_statement())
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
    if all(t.config.mode is not Mode.WAL for t in others):
        _plan_relay_slot_drop(conn, plan, because="no table is captured in wal mode any more")
    return plan


def _capture_function_exists(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute("SELECT to_regprocedure('bookwatch.capture()') IS NOT NULL").fetchone()
    return bool(row and row[0])


def run(
    conn: psycopg.Connection[Any], make_plan: Callable[[], Plan], *, dry_run: bool = False
) -> Plan:
    """Plan and apply in one transaction under the install lock: all of it or nothing.

    Planning inside the lock means two installers never act on the same stale view. A dry
    run plans the same way and rolls back. A relay slot the plan needs is created first
    (see ``slot.create_slot``) and dropped again when the rest fails; one the plan removes
    goes after the commit (dropping a slot is not transactional).
    """
    made: tuple[bool, bool] = (False, False)
    name = None
    try:
        if not dry_run:
            with conn.transaction():
                take_install_lock(conn)
                name = make_plan().create_slot
            if name is not None:
                made = slot.create_slot(conn, name)
        with conn.transaction(force_rollback=dry_run):
            take_install_lock(conn)
            plan = make_plan()
            if made[1]:
                plan.change(f"relay slot {name}: created (pgoutput)",
                            f"relay slot {name}: would be created (pgoutput)")
            if not dry_run:
                for statement in plan.statements:
                    conn.execute(statement)
    except BaseException:
        if name is not None and any(made):
            with contextlib.suppress(psycopg.Error):
                slot.undo_create(conn, name, made)
        raise
    if plan.drop_slot and not dry_run:
        slot.drop_slot(conn, plan.drop_slot)
    return plan


@contextlib.contextmanager
def relay_slot_for(conn: psycopg.Connection[Any], requested_mode: str) -> Iterator[None]:
    """For callers that write before ``plan_install`` runs (init-demo): create the relay slot
    first when the mode will be wal (see ``slot.create_slot``), and drop it again if the
    block fails."""
    with conn.transaction():
        chosen = modes.resolve(conn, requested_mode)[0]
        name = slot.slot_name(conn)
    made = slot.create_slot(conn, name) if chosen is Mode.WAL else (False, False)
    try:
        yield
    except BaseException:
        with contextlib.suppress(psycopg.Error):
            slot.undo_create(conn, name, made)
        raise


def parse_tenant_columns(
    values: Iterable[str], tables: Sequence[TableRef], default_schema: str
) -> dict[TableRef, str]:
    """``--tenant-column TABLE.COLUMN`` options: at most one per table."""
    chosen: dict[TableRef, str] = {}
    for table, columns in parse_exclusions(values, tables, default_schema,
                                           option="--tenant-column").items():
        if len(set(columns)) > 1:
            raise UsageProblem(f"--tenant-column names two columns of {table}: "
                               f"{', '.join(dict.fromkeys(columns))}; a table has one tenant.")
        chosen[table] = columns[0]
    return chosen


def parse_exclusions(
    values: Iterable[str], tables: Sequence[TableRef], default_schema: str,
    option: str = "--exclude-column",
) -> dict[TableRef, list[str]]:
    """``TABLE.COLUMN`` (or ``SCHEMA.TABLE.COLUMN``) options, grouped by table."""
    grouped: dict[TableRef, list[str]] = {}
    for value in values:
        table_part, dot, column = value.rpartition(".")
        if not dot or not table_part or not column:
            raise UsageProblem(f"{option} wants TABLE.COLUMN, got {value!r}.")
        table = TableRef.parse(table_part, default_schema)
        grouped.setdefault(table, []).append(column)
    return grouped
