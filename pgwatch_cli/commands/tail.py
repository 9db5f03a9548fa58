"""``bookwatch tail``: filter the change stream and show it as a live table or JSON lines."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime

from rich.console import Console, JustifyMethod
from rich.live import Live
from rich.table import Table
from rich.text import Text

from pgwatch_cli import config, db, lifecycle
from pgwatch_cli.capture import triggers
from pgwatch_cli.capture.tables import TableRef
from pgwatch_cli.console import error, literal, visible, warn
from pgwatch_cli.defaults import DEFAULT_CHANNEL
from pgwatch_cli.stream.events import ChangeEvent, Gap, LogReplaced
from pgwatch_cli.stream.filters import Filters, labelled_key
from pgwatch_cli.stream.listener import ChangeStream, describe_replacement
from pgwatch_cli.text import JSON_ESCAPES

ACTION_STYLES = {"INSERT": "green", "UPDATE": "yellow", "DELETE": "red", "TRUNCATE": "magenta"}
MAX_TABLE_ROWS = 40
COLUMNS: tuple[tuple[str, JustifyMethod], ...] = (
    ("time", "left"), ("seq", "right"), ("table", "left"), ("action", "left"),
    ("id", "right"), ("actor", "left"), ("changed", "left"), ("delay", "right"),
)


@dataclass(frozen=True)
class TailOptions:
    dsn: str
    channel: str = DEFAULT_CHANNEL
    filters: Filters = field(default_factory=Filters)
    count: int | None = None
    timeout: float | None = None
    since: int | None = None
    as_json: bool = False
    # Options that make a suggested command reach the same server (``--dsn …``), for hints.
    same_server: str = ""
    relay: bool = True  # relay the WAL in the background when no other process does


def run(options: TailOptions) -> None:
    """Tail until ``--count`` or ``--timeout`` is reached (or Ctrl-C raises KeyboardInterrupt)."""
    as_json = options.as_json or not sys.stdout.isatty()
    with db.connect(options.dsn, autocommit=True, application_name="bookwatch tail") as conn:
        watched = triggers.installed_triggers(conn)
    installed = [(t.table, t.config.channel) for t in watched]
    for problem in nothing_can_arrive(installed, options):
        warn(problem)
    # Composite keys are read (--id) and shown in their declared column order.
    key_columns = {f"{t.table.schema}.{t.table.name}": t.config.primary_key for t in watched}
    options = dataclasses.replace(options, filters=dataclasses.replace(
        options.filters, key_columns=tuple(sorted(key_columns.items()))))
    try:
        lifecycle.run_async(_tail(options, as_json))
    except BrokenPipeError:
        # The reader went away (``bookwatch tail | head``): that ends the tail, quietly.
        # Point stdout at /dev/null so the interpreter's final flush does not complain.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def nothing_can_arrive(
    installed: list[tuple[TableRef, str]], options: TailOptions
) -> list[str]:
    """Why no event can ever match, given the installed triggers (table, channel); empty when
    some can. Said at start; tail listens anyway (triggers may be installed meanwhile)."""
    fix = f"bookwatch install-triggers{options.same_server}"
    if not installed:
        where = config.describe(options.dsn) if options.dsn else "this database"
        return [f"no bookwatch trigger is installed in {where}, so nothing can arrive (the "
                f"wrong database?); install them with: {fix}"]
    on_channel = [table for table, channel in installed if channel == options.channel]
    if not on_channel:
        channels = ", ".join(sorted({channel for _, channel in installed}))
        return [f"no bookwatch trigger sends on channel {options.channel} (they send on: "
                f"{channels}), so nothing can arrive; tail --channel NAME picks another, or: "
                f"{fix} --channel {options.channel}"]
    wanted = options.filters.tables
    if not wanted:
        return []
    watched = [t for t in on_channel if t.name in wanted or f"{t.schema}.{t.name}" in wanted]
    if watched:
        return []
    names = ", ".join(sorted(wanted))
    tables = " ".join(f"-t {name}" for name in sorted(wanted))
    have = ", ".join(sorted(str(t) for t in on_channel))
    return [f"no bookwatch trigger on {names} (watched tables: {have}), so nothing can "
            f"arrive; a typo? Or install it: {fix} {tables}"]


async def _tail(options: TailOptions, as_json: bool) -> None:
    async with ChangeStream(
        options.dsn, channel=options.channel, since=options.since, relay=options.relay
    ) as stream:
        with JsonLines() if as_json else LiveTable(stream, filters=options.filters) as view:
            deadline = asyncio.timeout(options.timeout)
            try:
                async with deadline:
                    await _pump(stream, options, view)
            except TimeoutError:
                if not deadline.expired():
                    raise


async def _pump(stream: ChangeStream, options: TailOptions, view: JsonLines | LiveTable) -> None:
    shown = 0
    async for event in stream.items():
        if isinstance(event, Gap):
            # Changes were lost for good (the wal slot was invalidated): said, then go on.
            error(event.describe(), hint="A client holding rows should refetch them.")
            continue
        if isinstance(event, LogReplaced):
            # Nothing is lost: the new log's events follow from its start.
            warn(describe_replacement(event))
            continue
        if not options.filters.matches(event):
            continue
        view.show(event, datetime.now(UTC))
        shown += 1
        if options.count is not None and shown >= options.count:
            return


class JsonLines:
    """One wire-format object per line, flushed at once so pipes see each event live."""

    def __enter__(self) -> JsonLines:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def __init__(self) -> None:
        self._terminal = sys.stdout.isatty()

    def show(self, event: ChangeEvent, received_at: datetime) -> None:
        line = event.to_wire()
        if self._terminal:
            # JSON leaves DEL, the C1 controls and bidi overrides raw; on a terminal they are
            # written as \u escapes instead (the same JSON value, inert on the screen).
            line = line.translate(JSON_ESCAPES)
        sys.stdout.write(line + "\n")
        sys.stdout.flush()



class LiveTable:
    """A Rich live table of the newest events (newest last), no taller than the terminal."""

    def __init__(
        self, stream: ChangeStream, console: Console | None = None, filters: Filters | None = None
    ) -> None:
        self._stream = stream
        self._filters = filters or Filters()
        self._console = console or Console(highlight=False)
        height = max(5, self._console.size.height - 7)
        self._rows: deque[tuple[Text | str, ...]] = deque(maxlen=min(height, MAX_TABLE_ROWS))
        self._seen = 0
        # Rich calls get_renderable on every refresh, so the connection state stays current.
        self._live = Live(
            console=self._console,
            get_renderable=self._render,
            refresh_per_second=8,
            redirect_stderr=True,
        )

    def __enter__(self) -> LiveTable:
        self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._live.stop()

    def show(self, event: ChangeEvent, received_at: datetime) -> None:
        self._seen += 1
        self._rows.append(row_cells(event, received_at, self._filters.key_order(event)))

    def _render(self) -> Table:
        state = "listening" if self._stream.connected else "[red]reconnecting…[/red]"
        if self._stream.relaying:
            state += " · relaying the WAL"
        table = Table(
            title=f"bookwatch tail · channel {literal(self._stream.channel)} · {state}",
            title_justify="left",
            caption=f"{self._seen} events shown, last seq {self._stream.last_seq or '-'}",
            caption_justify="left",
            expand=False,
        )
        for heading, justify in COLUMNS:
            table.add_column(heading, justify=justify, no_wrap=heading != "changed")
        for cells in self._rows:
            table.add_row(*cells)
        return table


def row_cells(
    event: ChangeEvent, received_at: datetime, key_order: tuple[str, ...] | None = None
) -> tuple[Text | str, ...]:
    """The table cells of one event; delay is receipt minus the event's timestamp. A composite
    key is shown labelled (``room=12,night=2027-01-05``), in ``key_order`` when known.

    What comes from the database is a ``Text`` (never parsed as markup) with its control
    characters made visible: an actor named ``[/bold]`` or ``ESC]0;…`` is shown as written."""
    committed = event.committed_at
    return (
        committed.astimezone().strftime("%H:%M:%S.%f")[:-3],
        "-" if event.seq is None else str(event.seq),
        Text(visible(event.table)),
        Text(event.action, style=ACTION_STYLES.get(event.action, "")),
        Text(visible(labelled_key(event, key_order))),
        Text(visible(event.actor or "-")),
        Text(visible(", ".join(event.changed) if event.changed else "-")),
        format_delay((received_at - committed).total_seconds()),
    )


def format_delay(seconds: float) -> str:
    if seconds < 1:
        return f"{max(seconds, 0.0) * 1000:.1f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.0f} min"
