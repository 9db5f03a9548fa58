"""The one percentile definition (nearest rank), without a database."""

from __future__ import annotations

import pytest

from pgwatch_cli.stats import Summary, nearest_rank


def test_nearest_rank_of_one_to_hundred() -> None:
    values = [float(n) for n in range(1, 101)]
    assert [nearest_rank(values, f) for f in (0.5, 0.9, 0.99, 1.0)] == [50, 90, 99, 100]


@pytest.mark.parametrize(("values", "p50", "p99"), [([7], 7, 7), ([5, 1, 3], 3, 5),
                                                     ([1, 2], 1, 2)])
def test_summary_of_few_values(values: list[float], p50: float, p99: float) -> None:
    summary = Summary.of(values)
    assert summary is not None
    assert (summary.p50, summary.p99, summary.max, summary.count) == (p50, p99, max(values),
                                                                      len(values))


def test_no_values_no_summary() -> None:
    assert Summary.of([]) is None


def test_scaled() -> None:
    summary = Summary.of([1000, 2000])
    assert summary is not None and summary.scaled(1 / 1000).max == 2.0
