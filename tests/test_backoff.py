"""The one backoff every retry loop uses: waits in the upper half of a delay that doubles up to
its cap, and starts over after a success."""

from __future__ import annotations

import pytest

from pgwatch_cli.backoff import Backoff


def test_waits_double_up_to_the_cap_with_jitter_in_the_upper_half() -> None:
    backoff = Backoff(0.2, 1.0)
    waits = [backoff.next_wait() for _ in range(6)]
    for wait, delay in zip(waits, [0.2, 0.4, 0.8, 1.0, 1.0, 1.0], strict=True):
        assert delay / 2 <= wait <= delay


def test_reset_starts_again_from_the_first_delay() -> None:
    backoff = Backoff(0.2, 8.0)
    for _ in range(5):
        backoff.next_wait()
    backoff.reset()
    assert 0.1 <= backoff.next_wait() <= 0.2


def test_a_crowd_spreads_out() -> None:
    waits = {Backoff(1.0, 1.0).next_wait() for _ in range(50)}
    assert len(waits) > 40


@pytest.mark.parametrize(("first", "cap"), [(0.0, 1.0), (2.0, 1.0), (-1.0, 1.0)])
def test_a_backoff_that_makes_no_sense_is_refused(first: float, cap: float) -> None:
    with pytest.raises(ValueError, match="backoff needs"):
        Backoff(first, cap)
