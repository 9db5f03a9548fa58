"""Garbage-collection pauses kept out of the fan-out.

A full (generation-2) collection walks every tracked object: with thousands of open streams
that is a pause of 100 ms or more, and the automatic ones start whenever an allocation crosses
a threshold, in the middle of a pass. So: everything alive after start-up is frozen (never
walked again), young collections run less often, and full collections are left to the
automatic rule only when plenty of new long-lived objects piled up (Python's own 25% rule),
which streams that only receive events do not cause.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass
from typing import Any

# Measured with benchmarks/sse_load.py, 10,000 clients at 10 events/s on the shared 2-core
# machine, one run each: the default (700, 10, 10) had one collection of 50 ms or more while
# events were fanned out; (20000, 20, 20) none then, but a 212 ms one while the clients
# connected (a generation-1 collection walks up to 400,000 objects); (10000, 2, 10) none.
# The fan-out itself allocates next to nothing per client: what remains is the events' parsing.
THRESHOLDS = (10_000, 2, 10)


LONG_PAUSE_S = 0.05


@dataclass
class GcStats:
    gen2_collections: int = 0
    longest_pause_s: float = 0.0
    long_pauses: int = 0  # collections that took LONG_PAUSE_S or more
    _started: float = 0.0

    def callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        pause = time.perf_counter() - self._started
        self.longest_pause_s = max(self.longest_pause_s, pause)
        if pause >= LONG_PAUSE_S:
            self.long_pauses += 1
        if info.get("generation") == 2:
            self.gen2_collections += 1


gc_stats = GcStats()


def settle_after_start() -> None:
    """Call once the server is up: collect, freeze what is alive, and tune the thresholds."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
    if gc_stats.callback not in gc.callbacks:
        gc.callbacks.append(gc_stats.callback)
