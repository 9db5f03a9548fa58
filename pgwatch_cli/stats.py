"""Percentiles, one definition for every report (bench, simulate, the dev benchmarks)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def nearest_rank(ordered: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of already sorted, non-empty values (``fraction`` 0..1):
    the smallest value with at least that fraction of all values at or below it."""
    index = math.ceil(fraction * len(ordered)) - 1
    return ordered[min(len(ordered) - 1, max(0, index))]


@dataclass(frozen=True)
class Summary:
    """p50, p90, p99 and max of some values, in their unit."""

    count: int
    p50: float
    p90: float
    p99: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary | None:
        if not values:
            return None
        ordered = sorted(values)
        return cls(
            len(ordered), nearest_rank(ordered, 0.50), nearest_rank(ordered, 0.90),
            nearest_rank(ordered, 0.99), ordered[-1],
        )

    def scaled(self, factor: float) -> Summary:
        """The same figures in another unit (µs → ms: 1/1000)."""
        return Summary(self.count, self.p50 * factor, self.p90 * factor, self.p99 * factor,
                       self.max * factor)
