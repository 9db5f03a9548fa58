"""Scenario results as one JSON-ready object: a block per strategy plus latency figures."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pgwatch_cli.commands.simulate.seed import ANNA, BEN, BOOKING_ID, Edits, SeedRun
from pgwatch_cli.commands.simulate.storm import Tally, Workload
from pgwatch_cli.commands.simulate.strategies import DESCRIPTIONS
from pgwatch_cli.stats import Summary


@dataclass(frozen=True)
class SeedReport:
    seed: int
    edits: Edits
    runs: list[SeedRun]

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "scenario": "seed",
            "seed": self.seed,
            "booking": BOOKING_ID,
            "edits": {
                ANNA: {"gesamtpreis": str(self.edits.price)},
                BEN: {"guest_id": self.edits.guest_id},
            },
        }
        for run in self.runs:
            out[run.strategy.value] = {
                "description": DESCRIPTIONS[run.strategy],
                "saves": run.saves,
                "conflicts": run.conflicts,
                "lost_updates": run.lost_updates,
                "ben_saved": run.ben_saved,
                "both_changes_kept": run.both_kept,
                "notified_after_ms": _ms(run.notified_after_ms),
                "toast": run.toast,
                "reaction": run.reaction,
                "timeline": [
                    {"at_ms": _ms(step.at_ms), "who": step.who or None, "what": step.what}
                    for step in run.steps
                ],
            }
        notified = [r.notified_after_ms for r in self.runs if r.notified_after_ms is not None]
        out["latency_ms"] = latency_block(notified)
        return out


@dataclass(frozen=True)
class StormReport:
    work: Workload
    tallies: list[Tally]

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "scenario": "storm",
            "seed": self.work.seed,
            "users": self.work.users,
            "rounds": self.work.rounds,
            "bookings": list(self.work.bookings),
            "think_ms": self.work.think_ms,
        }
        every: list[float] = []
        for tally in self.tallies:
            every += tally.latencies_ms
            out[tally.strategy.value] = {
                "description": DESCRIPTIONS[tally.strategy],
                "attempts": tally.attempts,
                "saves": tally.saves,
                "conflicts": tally.conflicts,
                "conflict_rate": round(tally.conflict_rate, 4),
                "rejected_saves": tally.rejected,
                "clashes": tally.clashes,
                "lost_updates": tally.lost_updates,
                "retried_saves": tally.retries,
                "reloads": tally.reloads,
                "rebases": tally.rebases,
                "undelivered": tally.undelivered,
                "duration_ms": _ms(tally.duration_ms),
                "latency_ms": latency_block(tally.latencies_ms)
                if tally.strategy.realtime else None,
            }
        out["latency_ms"] = latency_block(every)
        return out


def latency_block(values: list[float]) -> dict[str, Any]:
    figures = percentiles(values) or {}
    return {"count": len(values), **{name: _ms(value) for name, value in figures.items()}}


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def percentiles(values: list[float]) -> dict[str, float] | None:
    """p50/p90/p99/max by nearest rank (``pgwatch_cli.stats``), or None without values."""
    summary = Summary.of(values)
    if summary is None:
        return None
    return {"p50": summary.p50, "p90": summary.p90, "p99": summary.p99, "max": summary.max}
