"""The Typer app: options in, calls out. Domain errors become exit codes in one place.

Imports of psycopg, rich and the commands happen inside the commands: ``bookwatch --help``
and shell completion must not pay for them.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, ParamSpec, TypeVar

import typer

from pgwatch_cli import __version__, config, lifecycle
from pgwatch_cli.console import enable_tracebacks, error, note, tracebacks_enabled
from pgwatch_cli.defaults import DEFAULT_CHANNEL, DEFAULT_TABLES
from pgwatch_cli.errors import (
    BenchmarkFailed,
    BookwatchError,
    DatabaseUnreachable,
    UsageProblem,
    database_failure,
)

if TYPE_CHECKING:
    import psycopg

    from pgwatch_cli.capture import status as capture_status
    from pgwatch_cli.capture import triggers
    from pgwatch_cli.capture.tables import TableRef

app = typer.Typer(
    name="bookwatch",
    help="Real-time change events from PostgreSQL for people editing the same data.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # Plain help: no "<bool>"/"<list[str]>" type tags, and no rich import for --help.
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

P = ParamSpec("P")
R = TypeVar("R")

# -- shared options ----------------------------------------------------------------------------

TokenSecretFileOption = Annotated[
    str | None,
    typer.Option(
        "--token-secret-file", metavar="PATH", show_default=False,
        help="File holding the HS256 secret of signed, scoped tokens (at least 32 bytes, not "
        "world-readable). Default: the secret itself in $BOOKWATCH_TOKEN_SECRET.",
    ),
]


DsnOption = Annotated[
    str | None,
    typer.Option(
        "--dsn",
        metavar="DSN",
        help="PostgreSQL connection string (URI or key=value). Default: $BOOKWATCH_DSN, "
        "$DATABASE_URL, the libpq environment (PGHOST…), else the embedded server. Prefer "
        "the environment variables: a --dsn value is visible to other users in ps.",
        show_default=False,
    ),
]
EmbeddedOption = Annotated[
    bool, typer.Option("--embedded", help="Use the embedded PostgreSQL even if a DSN is set.")
]
TablesOption = Annotated[
    list[str] | None,
    typer.Option(
        "--table", "-t", metavar="TABLE",
        help="Capture this table (repeatable; default: bookings, guests, rooms); NAME or "
        "SCHEMA.NAME.",
        show_default=False,
    ),
]
SchemaOption = Annotated[
    str, typer.Option("--schema", metavar="NAME",
                      help="Schema for table names given without one.")
]
ChannelOption = Annotated[
    str, typer.Option("--channel", metavar="NAME", help="NOTIFY channel the events are sent on.")
]
DryRunOption = Annotated[
    bool, typer.Option("--dry-run", help="Say what would change and print the SQL that would "
                       "run; change nothing.")
]
NoRelayOption = Annotated[
    bool, typer.Option("--no-relay", help="Never relay the WAL from this process (wal mode: "
                       "another process, e.g. bookwatch relay, must run the relay).")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]

# The server choice of the running command, for hints that name where it came from.
_chosen: list[config.DsnChoice] = []


def guarded(command: Callable[P, R]) -> Callable[P, R]:
    """Run a command under the one shutdown path and turn its errors into one ``Error:`` line
    and the exit code of docs/reference.md: domain and database errors, Ctrl-C (130), SIGTERM
    (143) and SIGHUP (129) — the signals after the same cleanup as Ctrl-C (see ``lifecycle``)."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            with lifecycle.signals_raise():
                return command(*args, **kwargs)
        except KeyboardInterrupt as interrupt:
            if tracebacks_enabled():
                raise
            note("interrupted" if not isinstance(interrupt, lifecycle.Terminated)
                 else f"stopped by {interrupt}")
            raise typer.Exit(lifecycle.exit_code(interrupt)) from None
        except BrokenPipeError:
            # The reader went away (``bookwatch simulate | head -1``): that ends the output,
            # quietly, as for any Unix filter. Cleanup has run on the way out.
            _silence_stdout()
            raise typer.Exit(0) from None
        except BookwatchError as exc:
            if tracebacks_enabled():
                raise
            hint = exc.hint
            if isinstance(exc, DatabaseUnreachable) and hint is None and _chosen:
                from pgwatch_cli import db

                hint = db.unreachable_hint(exc.reason, _chosen[-1])
            if exc.suggest:
                fix = f"run: bookwatch {exc.suggest}{same_server()}"
                hint = f"{hint} {fix}" if hint else fix.capitalize()
            error(exc.message, hint)
            raise typer.Exit(exc.exit_code) from None
        except Exception as exc:
            psycopg = sys.modules.get("psycopg")  # never imported: cannot be one of its errors
            if psycopg is None or not isinstance(exc, psycopg.Error) or tracebacks_enabled():
                raise
            failure = database_failure(exc)
            error(failure.message, failure.hint)
            raise typer.Exit(failure.exit_code) from None

    return wrapper


def _silence_stdout() -> None:
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def database(dsn: str | None, embedded: bool) -> str:
    """Resolve the server to use and say which on stderr (docs/reference.md, "Connecting")."""
    from pgwatch_cli import db

    choice = config.choose_dsn(dsn, force_embedded=embedded)
    _chosen.append(choice)
    resolved = db.resolve(choice)
    if choice.embedded:
        note(f"using the embedded PostgreSQL (data in {config.bookwatch_home() / 'pgdata'})")
    else:
        note(f"using PostgreSQL {config.describe(resolved)} (from {choice.source.value})")
    return resolved


def same_server() -> str:
    """Options for a suggested command that reach the server this one used."""
    return _chosen[-1].same_server_args() if _chosen else ""


def _tables(values: list[str] | None, schema: str, defaults: tuple[str, ...]) -> list[TableRef]:
    from pgwatch_cli.capture.tables import TableRef

    names = values or list(defaults)
    return list(dict.fromkeys(TableRef.parse(name, schema) for name in names))


def _print_plan(plan: triggers.Plan, conn: psycopg.Connection[Any], dry_run: bool) -> None:
    if not dry_run:
        for action in plan.actions:
            note(action)
        return
    for action in plan.would:
        note(action)
    if plan.changes_anything:
        sys.stdout.write(plan.render(conn) + "\n")
        note("dry run: nothing was changed")
    else:
        note("dry run: nothing would change")


# -- callback ----------------------------------------------------------------------------------


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"bookwatch {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show tracebacks (also BOOKWATCH_DEBUG=1).")
    ] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_show_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    """Real-time change events from PostgreSQL for people editing the same data."""
    if debug:
        enable_tracebacks()


# -- commands ----------------------------------------------------------------------------------


def _mode_choices() -> list[str]:
    from pgwatch_cli.capture import modes

    return list(modes.CHOICES)


def _mode_name(value: str) -> str:
    from pgwatch_cli.capture import modes

    if value not in modes.CHOICES:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(modes.CHOICES)}.")
    return value


ModeOption = Annotated[
    str,
    typer.Option("--mode", help="Capture mode: wal (WAL + relay), log (change log under a "
                 "commit lock), notify (payload in NOTIFY, no log), or auto: wal where the "
                 "server allows it, else log.", callback=_mode_name,
                 autocompletion=_mode_choices, metavar="auto|wal|log|notify"),
]


def _requested_mode(mode: str, durable: bool | None) -> str:
    """--durable is an alias of --mode auto, --no-durable of --mode notify."""
    if durable is None:
        return mode
    alias = "auto" if durable else "notify"
    if mode not in ("auto", alias):
        flag = "--durable" if durable else "--no-durable"
        raise UsageProblem(f"{flag} means --mode {alias}; it cannot be combined with "
                           f"--mode {mode}.")
    return alias


@app.command("install-triggers")
@guarded
def install_triggers(
    table: TablesOption = None,
    schema: SchemaOption = "public",
    channel: ChannelOption = DEFAULT_CHANNEL,
    mode: ModeOption = "auto",
    durable: Annotated[
        bool | None,
        typer.Option(
            "--durable/--no-durable",
            help="Older spellings of --mode auto and --mode notify.", show_default=False,
        ),
    ] = None,
    retention_option: Annotated[
        str | None,
        typer.Option(
            "--retention", metavar="DURATION", show_default=False,
            help="How long the change log keeps events, e.g. 7d, 12h (stored in the "
            "database; default 7d when first installed).",
        ),
    ] = None,
    exclude_column: Annotated[
        list[str] | None,
        typer.Option(
            "--exclude-column", metavar="TABLE.COLUMN",
            help="A column whose values never leave the database (repeatable).",
            show_default=False,
        ),
    ] = None,
    tenant_column: Annotated[
        list[str] | None,
        typer.Option(
            "--tenant-column", metavar="TABLE.COLUMN",
            help="Events of TABLE carry this column's value as \"tenant\", for serve's "
            "tenant-scoped tokens (repeatable, one per table).",
            show_default=False,
        ),
    ] = None,
    dry_run: DryRunOption = False,
    dsn: DsnOption = None,
    embedded: EmbeddedOption = False,
) -> None:
    """Install the change-capture function and triggers (idempotent, one transaction)."""
    from pgwatch_cli import db
    from pgwatch_cli.capture import retention, triggers

    tables = _tables(table, schema, DEFAULT_TABLES)
    excluded = triggers.parse_exclusions(exclude_column or [], tables, schema)
    tenants = triggers.parse_tenant_columns(tenant_column or [], tables, schema)
    triggers.check_channel(channel)
    requested = _requested_mode(mode, durable)
    interval = None if retention_option is None else retention.to_interval(retention_option)
    with db.connect(database(dsn, embedded)) as conn:
        plan = triggers.run(
            conn,
            lambda: triggers.plan_install(
                conn, tables, channel=channel, mode=requested, excluded=excluded,
                tenant_columns=tenants, retention=interval,
            ),
            dry_run=dry_run,
        )
        _print_plan(plan, conn, dry_run)


@app.command("remove-triggers")
@guarded
def remove_triggers(
    table: Annotated[
        list[str] | None,
        typer.Option(
            "--table", "-t", metavar="TABLE", show_default=False,
            help="Remove only this table's trigger (repeatable; default: every table's); "
            "NAME or SCHEMA.NAME.",
        ),
    ] = None,
    schema: SchemaOption = "public",
    drop_log: Annotated[
        bool, typer.Option(
            "--drop-log", help="Also drop schema bookwatch with the change log (and role "
            "bookwatch_reader when no other database of the cluster uses it).")
    ] = False,
    force: Annotated[
        bool, typer.Option(
            "--force", help="Remove even when events still wait in the relay slot (they are "
            "lost).")
    ] = False,
    dry_run: DryRunOption = False,
    dsn: DsnOption = None,
    embedded: EmbeddedOption = False,
) -> None:
    """Remove bookwatch triggers (all, or --table); the change log stays unless --drop-log."""
    from pgwatch_cli import db
    from pgwatch_cli.capture import triggers

    tables = _tables(table, schema, ()) if table else None
    with db.connect(database(dsn, embedded)) as conn:
        plan = triggers.run(
            conn, lambda: triggers.plan_remove(
                conn, tables, drop_log=drop_log, force=force, dry_run=dry_run),
            dry_run=dry_run,
        )
        if not plan.actions:
            note("no bookwatch triggers installed; nothing to do")
        _print_plan(plan, conn, dry_run)


@app.command()
@guarded
def status(
    as_json: JsonOption = False,
    dsn: DsnOption = None,
    embedded: EmbeddedOption = False,
) -> None:
    """Show capture triggers and modes, the change log, the relay slot and the queue."""
    from pgwatch_cli import db
    from pgwatch_cli.capture import status as capture_status

    resolved = database(dsn, embedded)
    with db.connect(resolved, autocommit=True) as conn:
        current = capture_status.status(conn)
    if as_json:
        sys.stdout.write(
            json.dumps({"server": config.describe(resolved), **current.as_json()}) + "\n"
        )
    else:
        _print_status(current)
    for warning in current.warnings:
        note(f"warning: {warning}")


def _print_status(current: capture_status.Status) -> None:
    from rich.table import Table

    from pgwatch_cli.capture import status as capture_status
    from pgwatch_cli.console import literal, stdout

    if not current.triggers:
        stdout.print("No bookwatch triggers installed.")
    else:
        grid = Table(title="bookwatch triggers", title_justify="left")
        # Shown only where used: most installs have no tenant column.
        tenants = any(trigger.config.tenant_column for trigger in current.triggers)
        headings = ("table", "trigger", "mode", "channel", "primary key", "excluded")
        for heading in (*headings, "tenant") if tenants else headings:
            grid.add_column(heading, overflow="fold")
        for trigger in current.triggers:
            cells = [  # names from the database: literal (console.literal)
                literal(str(trigger.table))
                + (" (partitioned)" if trigger.config.partitioned else ""),
                "[green]enabled[/green]" if trigger.enabled else "[red]disabled[/red]",
                trigger.config.mode.value,
                literal(trigger.config.channel),
                literal(", ".join(trigger.config.primary_key)),
                literal(", ".join(trigger.config.excluded) or "-"),
            ]
            if tenants:
                cells.append(literal(trigger.config.tenant_column or "-"))
            grid.add_row(*cells)
        stdout.print(grid)
    log = current.log
    if log is None:
        stdout.print("Change log: not installed")
    else:
        line = f"Change log: {log.rows} rows" if log.rows else "Change log: empty"
        if log.rows:
            line += f", seq {log.min_seq}..{log.max_seq}"
            if log.oldest_age_s is not None:
                line += f", oldest {_age(log.oldest_age_s)} old"
        line += f", {log.size_bytes} bytes; retention {log.retention or '-'}; log id {log.log_id}"
        stdout.print(line)
    if current.schema_version is not None:
        stdout.print(f"Schema version: {current.schema_version} "
                     f"(this bookwatch: {current.known_schema_version})")
    relay = current.relay
    if relay is not None:
        if not relay.exists:
            stdout.print(f"Relay slot {relay.slot}: missing")
        else:
            who = f"active (relay PID {relay.pid})" if relay.active else "no relay running"
            waiting = (f"{relay.events_waiting} events waiting ({relay.events_waiting_method})"
                       if relay.events_waiting is not None
                       else f"{relay.unconfirmed_wal_bytes} bytes of WAL not yet confirmed")
            if relay.wal_status == "lost":
                who += ", invalidated (lost)"
            retained = capture_status.human_bytes(relay.retained_wal_bytes or 0)
            stdout.print(f"Relay slot {relay.slot}: {who}; retains {retained} of WAL; {waiting}")
    if current.last_gap is not None:
        stdout.print(f"Last GAP: {literal(current.last_gap.description)}, logged "
                     f"{current.last_gap.logged_at}")
    stdout.print(f"Notification queue usage: {current.queue_usage:.1%}")


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


@app.command()
@guarded
def prune(
    older_than: Annotated[
        str | None,
        typer.Option("--older-than", metavar="DURATION", show_default=False,
                     help="Delete events logged longer ago than this, e.g. 7d, 12h."),
    ] = None,
    keep_last: Annotated[
        int | None,
        typer.Option("--keep-last", min=0, metavar="N", show_default=False,
                     help="Delete all but the newest N events."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say how many events would go; delete nothing.")
    ] = False,
    dsn: DsnOption = None,
    embedded: EmbeddedOption = False,
) -> None:
    """Delete old events from the change log (always the oldest ones, in seq order)."""
    from pgwatch_cli import db
    from pgwatch_cli.capture import prune as capture_prune
    from pgwatch_cli.capture import retention

    if (older_than is None) == (keep_last is None):
        raise UsageProblem("Give exactly one of --older-than DURATION or --keep-last N.")
    interval = None if older_than is None else retention.to_interval(older_than, "--older-than")
    with db.connect(database(dsn, embedded)) as conn:
        if keep_last == 0:
            done = capture_prune.prune(conn, older_than="0 seconds", dry_run=dry_run)
        else:
            done = capture_prune.prune(conn, older_than=interval, keep_last=keep_last,
                                       dry_run=dry_run)
    first = "empty" if done.first_kept is None else f"starts at seq {done.first_kept}"
    if dry_run:
        note(f"dry run: would delete {done.deleted} events; the log would then be {first}")
    else:
        note(f"deleted {done.deleted} events; the change log {'is ' if first == 'empty' else ''}"
             f"{first}")


@app.command("init-demo")
@guarded
def init_demo(
    schema: SchemaOption = "public",
    reset: Annotated[
        bool, typer.Option("--reset", help="Drop and recreate the demo tables.")
    ] = False,
    channel: ChannelOption = DEFAULT_CHANNEL,
    mode: ModeOption = "auto",
    dsn: DsnOption = None,
    embedded: EmbeddedOption = False,
) -> None:
    """Create a hotel's booking tables (bookings, guests, rooms) with sample data, and install
    triggers on them: the README's story of Anna and Ben editing booking #123."""
    from pgwatch_cli import db
    from pgwatch_cli.demo import schema as demo

    with db.connect(database(dsn, embedded)) as conn:
        inserted, plan = demo.init(conn, schema, reset=reset, channel=channel, mode=mode)
    for name, count in inserted.items():
        note(f"{schema}.{name}: {count} sample rows" if count else f"{schema}.{name}: kept")
    for action in plan.actions:
        note(action)
    note(f"try: bookwatch tail{same_server()}   (and change a booking in another terminal)")


def _action_choices() -> list[str]:
    """What shell completion offers after --action (baked into completions/ statically)."""
    from pgwatch_cli.stream.events import ACTIONS

    return list(ACTIONS)


def _action_names(values: list[str] | None) -> list[str] | None:
    from pgwatch_cli.stream.events import ACTIONS

    names = [value.upper() for value in values or []]
    for name in names:
        if name not in ACTIONS:
            raise typer.BadParameter(f"{name!r} is not one of {', '.join(ACTIONS)}.")
    return names or None


@app.command()
@guarded
def tail(
    table: Annotated[
        list[str] | None,
        typer.Option(
            "--table", "-t", help="Only this table (repeatable); NAME or SCHEMA.NAME.",
            metavar="TABLE", show_default=False,
        ),
    ] = None,
    action: Annotated[
        list[str] | None,
        typer.Option(
            "--action", "-a",
            help="Only this action (repeatable): INSERT, UPDATE, DELETE or TRUNCATE.",
            callback=_action_names, autocompletion=_action_choices, metavar="ACTION",
            show_default=False,
        ),
    ] = None,
    row_id: Annotated[
        list[str] | None,
        typer.Option(
            "--id", metavar="ID", show_default=False,
            help="Only the row with this primary key (repeatable). A composite key: "
            "COLUMN=VALUE,COLUMN=VALUE in any order, or the values comma-separated in the "
            "key's declared column order (--id room=12,night=2027-01-05 or --id 12,2027-01-05).",
        ),
    ] = None,
    actor: Annotated[
        list[str] | None,
        typer.Option("--actor", help="Only changes made by this actor (repeatable).",
                     metavar="NAME", show_default=False),
    ] = None,
    channel: ChannelOption = DEFAULT_CHANNEL,
    count: Annotated[
        int | None,
        typer.Option("--count", min=1, help="Exit after this many matching events.",
                     metavar="N", show_default=False),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option("--timeout", min=0, help="Exit after this many seconds.",
                     metavar="SECONDS", show_default=False),
    ] = None,
    since: Annotated[
        int | None,
        typer.Option("--since", min=0, help="First replay logged events with seq > SEQ.",
                     metavar="SEQ", show_default=False),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON event per line (default when piped).")
    ] = False,
    no_relay: NoRelayOption = False,
    dsn: DsnOption = None,
    embedded: EmbeddedOption = False,
) -> None:
    """Stream change events live: a table on a terminal, JSON lines when piped."""
    from pgwatch_cli.capture import triggers
    from pgwatch_cli.commands import tail as tailing
    from pgwatch_cli.stream.filters import Filters

    triggers.check_channel(channel)
    tailing.run(
        tailing.TailOptions(
            dsn=database(dsn, embedded),
            channel=channel,
            filters=Filters.of(table or (), action or (), row_id or (), actor or ()),
            count=count,
            timeout=timeout,
            since=since,
            as_json=as_json,
            same_server=same_server(),
            relay=not no_relay,
        )
    )


@app.command()
@guarded
def relay(
    dsn: DsnOption = None,
    embedded: EmbeddedOption = False,
) -> None:
    """Run the wal relay in the foreground (WAL -> change log) until Ctrl-C or SIGTERM."""
    from pgwatch_cli.commands import relay as relaying

    code = relaying.run(relaying.RelayOptions(dsn=database(dsn, embedded)))
    if code:
        raise typer.Exit(code)


@app.command()
@guarded
def bench(
    events: Annotated[
        int | None,
        typer.Option("--events", help="Events to write in total (default 2000).",
                     metavar="N", show_default=False),
    ] = None,
    duration: Annotated[
        float | None,
        typer.Option("--duration", metavar="SECONDS", show_default=False,
                     help="Write for this many seconds instead of --events (twice: once "
                     "without the trigger, once with it)."),
    ] = None,
    rate: Annotated[
        float, typer.Option("--rate", metavar="R",
                            help="Events/s over all writers; 0 = as fast as possible.")
    ] = 0.0,
    writers: Annotated[
        int, typer.Option("--writers", metavar="W", help="Writer processes (one connection each).")
    ] = 1,
    listeners: Annotated[
        int, typer.Option("--listeners", metavar="L",
                          help="ChangeStream listeners (one connection each; see --hub).")
    ] = 1,
    payload_bytes: Annotated[
        int, typer.Option("--payload-bytes", metavar="B",
                          help="Approximate size of each event (at most 7400 bytes; "
                          "1 MB in wal mode).")
    ] = 500,
    mode: ModeOption = "auto",
    durable: Annotated[
        bool | None,
        typer.Option(
            "--durable/--no-durable",
            help="Older spellings of --mode auto and --mode notify.", show_default=False,
        ),
    ] = None,
    no_relay: NoRelayOption = False,
    hub: Annotated[
        bool,
        typer.Option("--hub", help="Listeners of a process share one ChangeStream through the "
                     "in-process hub, as serve does (default: one connection each)."),
    ] = False,
    as_json: JsonOption = False,
    dsn: DsnOption = None,
    embedded: EmbeddedOption = False,
) -> None:
    """Measure notify latency, delivery and trigger write overhead on a scratch schema."""
    from pgwatch_cli.commands import bench as benchmark
    from pgwatch_cli.console import stdout

    options = benchmark.checked(
        events=events, duration=duration, rate=rate, writers=writers, listeners=listeners,
        payload_bytes=payload_bytes, mode=_requested_mode(mode, durable), relay=not no_relay,
        hub=hub,
    )
    resolved = database(dsn, embedded)
    result = benchmark.run(resolved, options, server=config.describe(resolved))
    if as_json:
        sys.stdout.write(json.dumps(result.as_json()) + "\n")
    else:
        benchmark.render(result, stdout)
    for notice in result.notices:
        note(f"listener: {notice}")
    if not result.healthy:
        raise BenchmarkFailed(
            f"Delivery was incomplete: {result.bookwatch.lost + result.raw.lost} lost, "
            f"{result.bookwatch.duplicated + result.raw.duplicated} duplicated receipts.",
            hint="A healthy run loses and duplicates nothing; see the figures above.",
        )


_SCENARIOS = ("seed", "storm")


def _scenario_name(value: str) -> str:
    if value not in _SCENARIOS:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(_SCENARIOS)}.")
    return value


@app.command()
@guarded
def simulate(
    scenario: Annotated[
        str,
        typer.Option("--scenario", help="seed: the README's story, Anna and Ben editing hotel "
                     "booking #123 at once; storm: many users editing a few bookings.",
                     callback=_scenario_name, metavar="seed|storm",
                     autocompletion=lambda: list(_SCENARIOS)),
    ] = "seed",
    users: Annotated[
        int | None,
        typer.Option("--users", min=1, max=50, metavar="N", show_default=False,
                     help="storm: simulated users, one connection each (default 8)."),
    ] = None,
    rounds: Annotated[
        int | None,
        typer.Option("--rounds", min=1, metavar="R", show_default=False,
                     help="storm: edits per user (default 10)."),
    ] = None,
    bookings: Annotated[
        int | None,
        typer.Option("--bookings", min=1, max=50, metavar="K", show_default=False,
                     help="storm: how many bookings they share (default 3)."),
    ] = None,
    think_ms: Annotated[
        float | None,
        typer.Option("--think-ms", min=1, metavar="MS", show_default=False,
                     help="storm: mean think time per edit, in ms (default 300)."),
    ] = None,
    random_seed: Annotated[
        int | None,
        typer.Option("--random-seed", min=0, metavar="S", help="Make the users' choices "
                     "reproducible (default: random, and printed).", show_default=False),
    ] = None,
    # The old name, kept working but out of sight: "seed" is the scenario's word.
    seed_alias: Annotated[
        int | None, typer.Option("--seed", min=0, metavar="S", hidden=True, show_default=False)
    ] = None,
    as_json: JsonOption = False,
    no_relay: NoRelayOption = False,
    dsn: DsnOption = None,
    embedded: EmbeddedOption = False,
) -> None:
    """Play an edit conflict three ways (baseline, refresh, merge) on a scratch schema.

    The story (the README's "Why"): Anna and Ben edit hotel booking #123 at the same time;
    without realtime, Ben's save is rejected as "modified by another user"."""
    from pgwatch_cli.commands import simulate as simulation

    storm_only = {"--users": users, "--rounds": rounds, "--bookings": bookings,
                  "--think-ms": think_ms}
    given = [name for name, value in storm_only.items() if value is not None]
    if scenario == "seed" and given:
        raise UsageProblem(f"{', '.join(given)} only apply to --scenario storm.")
    if random_seed is not None and seed_alias is not None and random_seed != seed_alias:
        raise UsageProblem("--seed is another name for --random-seed: give one of them.")
    seed = random_seed if random_seed is not None else seed_alias
    defaults = simulation.Options(simulation.Scenario(scenario), seed=0)
    options = simulation.Options(
        scenario=simulation.Scenario(scenario),
        seed=simulation.new_seed() if seed is None else seed,
        users=users or defaults.users,
        rounds=rounds or defaults.rounds,
        bookings=bookings or defaults.bookings,
        think_ms=think_ms or defaults.think_ms,
        relay=not no_relay,
    )
    simulation.simulate(database(dsn, embedded), options, as_json=as_json)


@app.command()
@guarded
def serve(
    host: Annotated[
        str, typer.Option("--host", metavar="HOST",
                          help="Address to listen on (non-loopback needs --token).")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", metavar="PORT", min=0, max=65535,
                          help="Port to listen on (0: any free).")
    ] = 8765,
    token: Annotated[
        str | None,
        typer.Option("--token", envvar="BOOKWATCH_TOKEN", show_envvar=True, show_default=False,
                     metavar="TOKEN",
                     help="Require this bearer token (header, or ?token= for EventSource; "
                     "on a non-loopback --host at least 16 characters, 8 different). "
                     "Prefer $BOOKWATCH_TOKEN: a --token value is visible to other users in ps."),
    ] = None,
    allow_origin: Annotated[
        list[str] | None,
        typer.Option("--allow-origin", metavar="ORIGIN", show_default=False,
                     help="Let pages from this origin use the server (CORS; repeatable)."),
    ] = None,
    insecure: Annotated[
        bool, typer.Option("--insecure", help="Allow a non-loopback --host without a token "
                           "(or with a weak one).")
    ] = False,
    demo_page: Annotated[
        bool, typer.Option("--demo", help="Serve a demo booking editor at / on the "
                           "init-demo tables (needs init-demo).")
    ] = False,
    schema: Annotated[
        str, typer.Option("--schema", metavar="NAME",
                          help="Schema of the demo tables (with --demo).")
    ] = "public",
    channel: ChannelOption = DEFAULT_CHANNEL,
    heartbeat: Annotated[
        float, typer.Option("--heartbeat", min=0.1, max=15, metavar="SECONDS",
                            help="Seconds between heartbeat comments on idle streams.")
    ] = 15.0,
    client_buffer: Annotated[
        int, typer.Option("--client-buffer", min=4096, metavar="BYTES",
                          help="Bytes a slow client may fall behind before it is reset.")
    ] = 1 << 20,
    workers: Annotated[
        str, typer.Option("--workers", metavar="N|auto",
                          help="Processes serving the port (auto: one per CPU).")
    ] = "1",
    max_clients: Annotated[
        int, typer.Option("--max-clients", min=1, metavar="N",
                          help="Open streams per process; beyond them 503 with Retry-After.")
    ] = 10000,
    max_lag: Annotated[
        float, typer.Option("--max-lag", min=0, metavar="SECONDS",
                            help="Reset clients instead of relaying events older than this "
                            "(0: never).")
    ] = 10.0,
    token_secret_file: TokenSecretFileOption = None,
    no_relay: NoRelayOption = False,
    bus: Annotated[
        str, typer.Option("--bus", metavar="postgres|redis://HOST:PORT/DB",
                          help="Where replicas get events and presence: PostgreSQL (LISTEN + "
                          "log reads), or a Redis Stream fed once per database "
                          "(needs bookwatch[redis]).")
    ] = "postgres",
    dsn: DsnOption = None,
    embedded: EmbeddedOption = False,
) -> None:
    """Relay change events to browsers over Server-Sent Events (GET /events)."""
    import signal

    from pgwatch_cli.bus import url as bus_url
    from pgwatch_cli.capture import triggers
    from pgwatch_cli.commands import serve as server

    triggers.check_channel(channel)
    processes = server.parse_workers(workers)
    secret = _token_secret(token_secret_file)
    redis_bus = bus_url.parse(bus)
    if redis_bus is not None:
        bus_url.require_client()
    # Refuse an unsafe exposure before touching the database.
    server.check_exposure(host, token or None, insecure, signed=secret is not None)
    options = server.ServeOptions(
        dsn=database(dsn, embedded), host=host, port=port, token=token or None,
        token_secret=secret,
        allow_origins=tuple(allow_origin or ()), insecure=insecure, demo=demo_page,
        schema=schema, channel=channel, heartbeat_s=heartbeat, client_buffer=client_buffer,
        workers=processes, max_clients=max_clients, max_lag_s=max_lag, relay=not no_relay,
        bus=redis_bus,
    )

    def announce(running: server.Running) -> None:
        note(f"serving on {running.url}" + (f"  (demo page: {running.url}/)" if demo_page else ""))

    stopped_by = server.serve(options, ready=announce)
    if stopped_by == signal.SIGINT:
        raise KeyboardInterrupt
    if stopped_by == signal.SIGHUP:  # SIGTERM is serve's normal stop: exit 0
        raise lifecycle.Terminated(signal.SIGHUP)


@app.command()
@guarded
def token(
    sub: Annotated[str, typer.Option("--sub", metavar="NAME", show_default=False,
                                     help="Who holds the token (the viewer's name).")],
    table: Annotated[list[str], typer.Option(
        "--table", "-t", metavar="TABLE", show_default=False,
        help="A table the token may read (repeatable; * for every table).")],
    tenant: Annotated[str | None, typer.Option(
        "--tenant", metavar="TENANT", show_default=False,
        help="Only events of this tenant (see install-triggers --tenant-column).")] = None,
    row_id: Annotated[list[str] | None, typer.Option(
        "--id", metavar="ID", show_default=False,
        help="Only this row (repeatable).")] = None,
    ttl: Annotated[str, typer.Option(
        "--ttl", metavar="DURATION", help="How long the token is valid: 90s, 15m, 1h, 7d.")
    ] = "1h",
    token_secret_file: TokenSecretFileOption = None,
) -> None:
    """Mint a signed token scoped to a viewer, tables, rows and a tenant (printed alone)."""
    from pgwatch_cli import auth
    from pgwatch_cli.auth.tokens import InvalidToken, parse_ttl

    seconds = parse_ttl(ttl)
    secret = auth.load_secret(token_secret_file)
    try:
        minted = auth.mint(secret, sub=sub, tables=table, ids=row_id or (), tenant=tenant,
                           ttl_s=seconds)
    except InvalidToken as exc:
        raise UsageProblem(f"Cannot mint that token: {exc}.") from None
    typer.echo(minted)


def _token_secret(path: str | None) -> bytes | None:
    """serve's signing secret: from the file, else $BOOKWATCH_TOKEN_SECRET, else none."""
    import os

    from pgwatch_cli import auth
    from pgwatch_cli.auth.secret import ENV_VAR

    if path is None and not os.environ.get(ENV_VAR):
        return None
    return auth.load_secret(path)


def main() -> None:
    app(prog_name="bookwatch")
