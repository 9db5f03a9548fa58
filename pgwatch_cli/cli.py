"""The Typer app: options in, calls out. Domain errors become exit codes in one place."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from typing import Annotated, Any, ParamSpec, TypeVar

import psycopg
import typer
from rich.table import Table

from pgwatch_cli import __version__, config, db
from pgwatch_cli.capture import triggers
from pgwatch_cli.capture.tables import TableRef
from pgwatch_cli.console import error, note, stdout
from pgwatch_cli.demo import schema as demo
from pgwatch_cli.errors import BenchmarkFailed, BookwatchError, UsageProblem, database_failure

app = typer.Typer(
    name="bookwatch",
    help="Real-time change events from PostgreSQL for people editing the same data.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

P = ParamSpec("P")
R = TypeVar("R")

# -- shared options ----------------------------------------------------------------------------

DsnOption = Annotated[
    str | None,
    typer.Option(
        "--dsn",
        help="PostgreSQL connection string. Default: $BOOKWATCH_DSN, $DATABASE_URL, libpq "
        "environment (PGHOST…), else the embedded server.",
        show_default=False,
    ),
]
EmbeddedOption = Annotated[
    bool, typer.Option("--embedded", help="Use the embedded PostgreSQL even if a DSN is set.")
]
TablesOption = Annotated[
    list[str] | None,
    typer.Option(
        "--table", "-t", help="Table to watch (repeatable); may be schema-qualified.",
        show_default=False,
    ),
]
SchemaOption = Annotated[
    str, typer.Option("--schema", help="Schema for table names given without one.")
]
ChannelOption = Annotated[
    str, typer.Option("--channel", help="NOTIFY channel the events are sent on.")
]
DryRunOption = Annotated[
    bool, typer.Option("--dry-run", help="Print the SQL that would run; change nothing.")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]


def _debug_enabled() -> bool:
    return os.environ.get("BOOKWATCH_DEBUG", "") not in ("", "0")


def guarded(command: Callable[P, R]) -> Callable[P, R]:
    """Turn domain and database errors into one ``Error:`` line and the SPEC's exit code."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except KeyboardInterrupt:
            if _debug_enabled():
                raise
            note("interrupted")
            raise typer.Exit(130) from None
        except BookwatchError as exc:
            if _debug_enabled():
                raise
            error(exc.message, exc.hint)
            raise typer.Exit(exc.exit_code) from None
        except psycopg.Error as exc:
            if _debug_enabled():
                raise
            failure = database_failure(exc)
            error(failure.message, failure.hint)
            raise typer.Exit(failure.exit_code) from None

    return wrapper


def database(dsn: str | None, embedded: bool) -> str:
    """Resolve the server to use and say which on stderr (SPEC "Connecting")."""
    choice = config.choose_dsn(dsn, force_embedded=embedded)
    resolved = db.resolve(choice)
    if choice.embedded:
        note(f"using the embedded PostgreSQL (data in {config.bookwatch_home() / 'pgdata'})")
    else:
        note(f"using PostgreSQL {config.describe(resolved)} (from {choice.source.value})")
    return resolved


def _tables(values: list[str] | None, schema: str, defaults: tuple[str, ...]) -> list[TableRef]:
    names = values or list(defaults)
    return list(dict.fromkeys(TableRef.parse(name, schema) for name in names))


def _print_plan(plan: triggers.Plan, conn: psycopg.Connection[Any], dry_run: bool) -> None:
    if dry_run:
        sys.stdout.write(plan.render(conn) + "\n")
        note("dry run: nothing was changed")
    for action in plan.actions:
        note(action)


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
        os.environ["BOOKWATCH_DEBUG"] = "1"


# -- commands ----------------------------------------------------------------------------------


@app.command("install-triggers")
@guarded
def install_triggers(
    table: TablesOption = None,
    schema: SchemaOption = "public",
    channel: ChannelOption = triggers.DEFAULT_CHANNEL,
    durable: Annotated[
        bool,
        typer.Option(
            "--durable/--no-durable",
            help="Also append every change to bookwatch.change_log (seq, replay).",
        ),
    ] = True,
    exclude_column: Annotated[
        list[str] | None,
        typer.Option(
            "--exclude-column", help="TABLE.COLUMN whose values never leave the database.",
            show_default=False,
        ),
    ] = None,
    dry_run: DryRunOption = False,
    dsn: DsnOption = None,
    embedded: EmbeddedOption = False,
) -> None:
    """Install the change-capture function and triggers (idempotent, one transaction)."""
    tables = _tables(table, schema, triggers.DEFAULT_TABLES)
    excluded = triggers.parse_exclusions(exclude_column or [], tables, schema)
    triggers.check_channel(channel)
    with db.connect(database(dsn, embedded)) as conn:
        plan = triggers.run(
            conn,
            lambda: triggers.plan_install(
                conn, tables, channel=channel, durable=durable, excluded=excluded
            ),
            dry_run=dry_run,
        )
        _print_plan(plan, conn, dry_run)


@app.command("remove-triggers")
@guarded
def remove_triggers(
    table: TablesOption = None,
    schema: SchemaOption = "public",
    drop_log: Annotated[
        bool, typer.Option("--drop-log", help="Also drop schema bookwatch with the change log.")
    ] = False,
    dry_run: DryRunOption = False,
    dsn: DsnOption = None,
    embedded: EmbeddedOption = False,
) -> None:
    """Remove bookwatch triggers (all, or --table); the change log stays unless --drop-log."""
    tables = _tables(table, schema, ()) if table else None
    with db.connect(database(dsn, embedded)) as conn:
        plan = triggers.run(
            conn, lambda: triggers.plan_remove(conn, tables, drop_log=drop_log), dry_run=dry_run
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
    """Show installed triggers, the change log and the notification queue."""
    resolved = database(dsn, embedded)
    with db.connect(resolved) as conn:
        current = triggers.status(conn)
    if as_json:
        sys.stdout.write(
            json.dumps({"server": config.describe(resolved), **current.as_json()}) + "\n"
        )
        return
    _print_status(current)


def _print_status(current: triggers.Status) -> None:
    if not current.triggers:
        stdout.print("No bookwatch triggers installed.")
    else:
        grid = Table(title="bookwatch triggers", title_justify="left")
        for heading in ("table", "trigger", "mode", "channel", "primary key", "excluded"):
            grid.add_column(heading, overflow="fold")
        for trigger in current.triggers:
            grid.add_row(
                str(trigger.table),
                "[green]enabled[/green]" if trigger.enabled else "[red]disabled[/red]",
                "durable" if trigger.config.durable else "not durable",
                trigger.config.channel,
                ", ".join(trigger.config.primary_key),
                ", ".join(trigger.config.excluded) or "-",
            )
        stdout.print(grid)
    if current.log_rows is None:
        stdout.print("Change log: not installed")
    elif current.log_rows == 0:
        stdout.print("Change log: empty")
    else:
        stdout.print(
            f"Change log: {current.log_rows} rows, seq {current.log_min_seq}..{current.log_max_seq}"
        )
    if current.schema_version is not None:
        stdout.print(f"Schema version: {current.schema_version}")
    stdout.print(f"Notification queue usage: {current.queue_usage:.1%}")


@app.command("init-demo")
@guarded
def init_demo(
    schema: SchemaOption = "public",
    reset: Annotated[
        bool, typer.Option("--reset", help="Drop and recreate the demo tables.")
    ] = False,
    channel: ChannelOption = triggers.DEFAULT_CHANNEL,
    dsn: DsnOption = None,
    embedded: EmbeddedOption = False,
) -> None:
    """Create the seed's demo tables (bookings, guests, rooms) with data, and install triggers."""
    with db.connect(database(dsn, embedded)) as conn:
        inserted, plan = demo.init(conn, schema, reset=reset, channel=channel)
    for name, count in inserted.items():
        note(f"{schema}.{name}: {count} sample rows" if count else f"{schema}.{name}: kept")
    for action in plan.actions:
        note(action)
    note("try: bookwatch tail   (and change a booking in another terminal)")


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
            "--action", "-a", help="Only this action (repeatable): INSERT, UPDATE or DELETE.",
            callback=_action_names, autocompletion=_action_choices, metavar="ACTION",
            show_default=False,
        ),
    ] = None,
    row_id: Annotated[
        list[str] | None,
        typer.Option("--id", help="Only the row with this primary key (repeatable).",
                     metavar="ID", show_default=False),
    ] = None,
    actor: Annotated[
        list[str] | None,
        typer.Option("--actor", help="Only changes made by this actor (repeatable).",
                     metavar="NAME", show_default=False),
    ] = None,
    channel: ChannelOption = triggers.DEFAULT_CHANNEL,
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
    no_relay: Annotated[
        bool, typer.Option("--no-relay", help="Never relay the WAL from this process (wal "
                           "mode: another process must run the relay).")
    ] = False,
    dsn: DsnOption = None,
    embedded: EmbeddedOption = False,
) -> None:
    """Stream change events live: a table on a terminal, JSON lines when piped."""
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
                          help="Approximate NOTIFY payload size per event.")
    ] = 500,
    durable: Annotated[
        bool,
        typer.Option("--durable/--no-durable",
                     help="Benchmark the durable trigger (change log, seq) or the plain one."),
    ] = True,
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

    options = benchmark.checked(
        events=events, duration=duration, rate=rate, writers=writers, listeners=listeners,
        payload_bytes=payload_bytes, durable=durable, hub=hub,
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
        typer.Option("--scenario", help="seed: the seed's story of booking #123; storm: many "
                     "users at once.", callback=_scenario_name, metavar="seed|storm",
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
    seed: Annotated[
        int | None,
        typer.Option("--seed", min=0, metavar="S", help="Make the users' choices reproducible "
                     "(default: random, and printed).", show_default=False),
    ] = None,
    as_json: JsonOption = False,
    dsn: DsnOption = None,
    embedded: EmbeddedOption = False,
) -> None:
    """Play the seed's edit conflict three ways (baseline, refresh, merge) on a scratch schema."""
    from pgwatch_cli.commands import simulate as simulation

    storm_only = {"--users": users, "--rounds": rounds, "--bookings": bookings,
                  "--think-ms": think_ms}
    given = [name for name, value in storm_only.items() if value is not None]
    if scenario == "seed" and given:
        raise UsageProblem(f"{', '.join(given)} only apply to --scenario storm.")
    defaults = simulation.Options(simulation.Scenario(scenario), seed=0)
    options = simulation.Options(
        scenario=simulation.Scenario(scenario),
        seed=simulation.new_seed() if seed is None else seed,
        users=users or defaults.users,
        rounds=rounds or defaults.rounds,
        bookings=bookings or defaults.bookings,
        think_ms=think_ms or defaults.think_ms,
    )
    simulation.simulate(database(dsn, embedded), options, as_json=as_json)


@app.command()
@guarded
def serve(
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on (non-loopback needs --token).")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", min=0, max=65535, help="Port to listen on (0: any free).")
    ] = 8765,
    token: Annotated[
        str | None,
        typer.Option("--token", envvar="BOOKWATCH_TOKEN", show_envvar=True, show_default=False,
                     help="Require this bearer token (header, or ?token= for EventSource)."),
    ] = None,
    allow_origin: Annotated[
        list[str] | None,
        typer.Option("--allow-origin", metavar="ORIGIN", show_default=False,
                     help="Let pages from this origin use the server (CORS; repeatable)."),
    ] = None,
    insecure: Annotated[
        bool, typer.Option("--insecure", help="Allow a non-loopback --host without a token.")
    ] = False,
    demo_page: Annotated[
        bool, typer.Option("--demo", help="Serve the seed's booking editor at / (needs "
                           "init-demo).")
    ] = False,
    schema: Annotated[
        str, typer.Option("--schema", help="Schema of the demo tables (with --demo).")
    ] = "public",
    channel: ChannelOption = triggers.DEFAULT_CHANNEL,
    heartbeat: Annotated[
        float, typer.Option("--heartbeat", min=0.1, max=15, metavar="SECONDS",
                            help="Seconds between heartbeat comments on idle streams.")
    ] = 15.0,
    client_buffer: Annotated[
        int, typer.Option("--client-buffer", min=1, metavar="EVENTS",
                          help="Events a slow client may fall behind before it is reset.")
    ] = 1000,
    dsn: DsnOption = None,
    embedded: EmbeddedOption = False,
) -> None:
    """Relay change events to browsers over Server-Sent Events (GET /events)."""
    import signal

    from pgwatch_cli.commands import serve as server

    triggers.check_channel(channel)
    # Refuse an unsafe exposure before touching the database.
    server.check_exposure(host, token or None, insecure)
    options = server.ServeOptions(
        dsn=database(dsn, embedded), host=host, port=port, token=token or None,
        allow_origins=tuple(allow_origin or ()), insecure=insecure, demo=demo_page,
        schema=schema, channel=channel, heartbeat_s=heartbeat, client_buffer=client_buffer,
    )

    def announce(running: server.Running) -> None:
        note(f"serving on {running.url}" + (f"  (demo page: {running.url}/)" if demo_page else ""))

    if server.serve(options, ready=announce) == signal.SIGINT:
        raise KeyboardInterrupt


def main() -> None:
    app(prog_name="bookwatch")
