"""``bookwatch simulate``: run a scenario on a scratch schema and report it (no Typer here)."""

from __future__ import annotations

import json
import random
import sys
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from enum import StrEnum

from pgwatch_cli import lifecycle
from pgwatch_cli.commands.simulate import render, seed, storm
from pgwatch_cli.commands.simulate.feed import event_hub
from pgwatch_cli.commands.simulate.report import SeedReport, StormReport
from pgwatch_cli.commands.simulate.scratch import Scratch, scratch_area
from pgwatch_cli.commands.simulate.strategies import Strategy
from pgwatch_cli.console import note, stderr, stdout
from pgwatch_cli.errors import DatabaseFailed
from pgwatch_cli.stream.hub import SourceEnded


class Scenario(StrEnum):
    SEED = "seed"
    STORM = "storm"


@dataclass(frozen=True)
class Options:
    scenario: Scenario
    seed: int
    users: int = 8
    rounds: int = 10
    bookings: int = 3
    think_ms: float = 300.0
    relay: bool = True  # relay the WAL in the background when no other process does


def new_seed() -> int:
    return random.SystemRandom().randrange(1, 100_000)


def simulate(dsn: str, options: Options, *, as_json: bool) -> None:
    with scratch_area(dsn) as area:
        note(f"playing in scratch schema {area.schema}; it is removed afterwards")
        report = _run(area, options)
    if as_json:
        sys.stdout.write(json.dumps(report.as_json()) + "\n")
    elif isinstance(report, SeedReport):
        render.seed_story(stdout, report)
    else:
        render.storm_summary(stdout, report)


def _run(area: Scratch, options: Options) -> SeedReport | StormReport:
    try:
        return lifecycle.run_async(_play(area, options))
    except BaseExceptionGroup as group:
        # A user task's failure arrives wrapped by its TaskGroup: unwrap it first, then map
        # it like a bare one (an except clause cannot hand over to its siblings).
        failure: BaseException = _first_leaf(group)
    except (SourceEnded, LookupError) as exc:
        failure = exc
    raise _as_domain_error(failure) from None


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first


def _as_domain_error(failure: BaseException) -> BaseException:
    """What the CLI can report as one line; anything else stays as it is (a bug: traceback)."""
    if isinstance(failure, SourceEnded):
        return DatabaseFailed(f"The change stream stopped: {failure}")
    if isinstance(failure, LookupError):  # a booking the scenario needs went missing
        return DatabaseFailed(f"The scratch data changed under the simulation: {failure}")
    return failure


async def _play(area: Scratch, options: Options) -> SeedReport | StormReport:
    async with event_hub(area.dsn, area.channel, relay=options.relay) as hub:
        if options.scenario is Scenario.SEED:
            start = await seed.original(area)
            edits = seed.Edits.draw(options.seed, start)
            runs = []
            for strategy in Strategy:
                with _progress(f"playing the story: {strategy.value}"):
                    runs.append(await seed.play(area, hub, strategy, start, edits))
            return SeedReport(options.seed, edits, runs)
        work = storm.Workload(
            users=options.users, rounds=options.rounds,
            bookings=storm.booking_ids(options.bookings), think_ms=options.think_ms,
            seed=options.seed,
        )
        tallies = []
        for strategy in Strategy:
            with _progress(f"storm: {options.users} users, strategy {strategy.value}"):
                tallies.append(await storm.play(area, hub, strategy, work))
        return StormReport(work, tallies)


def _progress(what: str) -> AbstractContextManager[object]:
    """A spinner on stderr while a strategy plays, only where someone watches it."""
    return stderr.status(what) if stderr.is_terminal else nullcontext()
