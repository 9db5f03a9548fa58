"""The scenarios' results as Rich output: a timeline per strategy and summary tables."""

from __future__ import annotations

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pgwatch_cli.commands.simulate import seed
from pgwatch_cli.commands.simulate.report import SeedReport, StormReport, percentiles
from pgwatch_cli.commands.simulate.strategies import DESCRIPTIONS, Strategy

_TONES = {"ok": "green", "bad": "bold red", "notice": "cyan"}
_STRATEGY_STYLE = {Strategy.BASELINE: "red", Strategy.REFRESH: "cyan", Strategy.MERGE: "green"}


def _strategy(strategy: Strategy) -> str:
    return f"[bold {_STRATEGY_STYLE[strategy]}]{strategy.value}[/]"


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f} ms"


def _readable(console: Console) -> Console:
    """Piped output goes to pagers, logs and other programs: Rich's own width for a file (80
    columns, or $COLUMNS), not a wide canvas whose table rows are padded with spaces."""
    if console.is_terminal:
        return console
    # type(console): the same kind of console, so the CLI's quiet end on a closed pipe holds.
    return type(console)(file=console.file, highlight=False, no_color=console.no_color)


def seed_story(console: Console, report: SeedReport) -> None:
    console = _readable(console)
    console.print(
        f"[bold]Booking #{seed.BOOKING_ID}[/bold]: Anna changes the price, Ben the guest "
        f"[dim](--random-seed {report.seed})[/dim]"
    )
    for run in report.runs:
        timeline = Table(
            title=f"{_strategy(run.strategy)} — {DESCRIPTIONS[run.strategy]}",
            title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False,
        )
        timeline.add_column("ms", justify="right", style="dim")
        timeline.add_column("who", style="bold")
        timeline.add_column("what")
        for step in run.steps:
            style = _TONES.get(step.tone, "")
            what = escape(step.what)
            timeline.add_row(
                f"{step.at_ms:.0f}", step.who, f"[{style}]{what}[/]" if style else what
            )
        console.print()
        console.print(timeline)
    console.print(_seed_summary(report))
    console.print(
        "[dim]refresh and merge keep Ben's edit only when Anna changed other fields: had he "
        "changed the price too, both would ask him rather than overwrite hers (the storm "
        "counts those as clashes: bookwatch simulate --scenario storm).[/dim]"
    )


def _seed_summary(report: SeedReport) -> Table:
    summary = Table(
        title="Summary", title_justify="left", box=box.ROUNDED,
        caption="Ben notified: from Anna's COMMIT until Ben's client had her event.",
        caption_justify="left",
    )
    for heading in ("strategy", "Ben's save", "conflicts", "lost", "Ben notified",
                    "his client", "both kept"):
        summary.add_column(heading, justify="right" if heading in ("conflicts", "lost")
                           else "left")
    for run in report.runs:
        summary.add_row(
            _strategy(run.strategy),
            "[green]saved[/green]" if run.ben_saved else "[red]rejected[/red]",
            str(run.conflicts),
            _lost(run.lost_updates),
            _ms(run.notified_after_ms),
            _CLIENT_DID.get(run.reaction or "", "error shown"),
            "[green]yes[/green]" if run.both_kept else "[red]no[/red]",
        )
    return summary


_CLIENT_DID = {"reloaded": "reloaded", "rebased": "rebased"}


def _lost(count: int) -> str:
    return f"[bold red]{count}[/]" if count else "0"


def storm_summary(console: Console, report: StormReport) -> None:
    console = _readable(console)
    work = report.work
    first, last = work.bookings[0], work.bookings[-1]
    shared = f"#{first}" if first == last else f"#{first}-#{last}"
    console.print(
        f"[bold]Storm[/bold]: {work.users} users x {work.rounds} rounds on booking"
        f"{'s' if first != last else ''} {shared}, think ~{work.think_ms:.0f} ms "
        f"[dim](--random-seed {work.seed})[/dim]"
    )
    outcome = Table(title="Saves and conflicts", title_justify="left", box=box.ROUNDED)
    for heading in ("strategy", "rounds", "saves", "conflicts", "rate", "rejected", "clashes",
                    "lost"):
        outcome.add_column(heading, justify="left" if heading == "strategy" else "right")
    timing = Table(
        title="Notifications (commit → other users' clients, ms)", title_justify="left",
        box=box.ROUNDED,
    )
    for heading in ("strategy", "events", "reloads", "rebases", "p50", "p90", "p99", "max"):
        timing.add_column(heading, justify="left" if heading == "strategy" else "right")
    for tally in report.tallies:
        outcome.add_row(
            _strategy(tally.strategy), str(tally.attempts), str(tally.saves),
            str(tally.conflicts), f"{tally.conflict_rate:.1%}", str(tally.rejected),
            str(tally.clashes), _lost(tally.lost_updates),
        )
        if not tally.strategy.realtime:
            continue
        figures = percentiles(tally.latencies_ms)
        timing.add_row(
            _strategy(tally.strategy), str(len(tally.latencies_ms)), str(tally.reloads),
            str(tally.rebases),
            *(f"{figures[k]:.1f}" if figures else "—" for k in ("p50", "p90", "p99", "max")),
        )
    console.print(outcome)
    console.print(
        "[dim]rejected: stale saves refused by the optimistic lock; clashes: refresh or merge "
        "found another user's change to the very field being edited and asked instead of "
        "overwriting. conflicts = rejected + clashes. lost: saves that silently replaced a "
        "value another user had saved since this user began the edit.[/dim]"
    )
    console.print(timing)
    for tally in report.tallies:
        if tally.strategy.realtime and tally.rejected:
            console.print(
                f"[yellow]{tally.strategy.value}[/yellow]: {tally.rejected} stale save"
                f"{'s were' if tally.rejected != 1 else ' was'} still rejected: saved inside "
                "the notification window, after another user's commit and before its event "
                "reached this user's client. Real, and counted above."
            )
        if tally.retries:
            console.print(
                f"[green]{tally.strategy.value}[/green]: {tally.retries} save"
                f"{'s were' if tally.retries != 1 else ' was'} rejected by the lock first, "
                "rebased on the row as it was then and sent again (no clash, so no question)."
            )
        if tally.undelivered:
            console.print(
                f"[yellow]{tally.strategy.value}: {tally.undelivered} notifications did not "
                "arrive within the drain timeout.[/yellow]"
            )
