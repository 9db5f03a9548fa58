"""How long to wait before trying again: one jittered exponential backoff for every retry loop.

Each wait is drawn uniformly from the upper half of the current delay ("equal jitter": never
less than half, so a crowd of clients spreads out without retrying at once), and the delay
doubles after each wait up to ``cap_s``; ``reset()`` starts again from ``first_s`` after a
success.
"""

from __future__ import annotations

import random


class Backoff:
    def __init__(self, first_s: float, cap_s: float) -> None:
        if not 0 < first_s <= cap_s:
            raise ValueError(f"backoff needs 0 < first_s <= cap_s, got {first_s}, {cap_s}")
        self.first_s = first_s
        self.cap_s = cap_s
        self._delay = first_s

    def next_wait(self) -> float:
        """The next wait in seconds; the one after it is up to twice as long."""
        wait = random.uniform(self._delay / 2, self._delay)
        self._delay = min(self._delay * 2, self.cap_s)
        return wait

    def reset(self) -> None:
        self._delay = self.first_s
