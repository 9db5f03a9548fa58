"""What one ``bookwatch bench`` run does: its options, checked before anything starts."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from pgwatch_cli.errors import UsageProblem

DEFAULT_EVENTS = 2000
# NOTIFY refuses 8000 bytes, so in log and notify modes the capture function drops the diff of
# an event above ~7500 bytes (log mode too: its rows stay deliverable as NOTIFY-mode events), and
# the diff is where the benchmark carries its key and send time. wal mode has no such limit.
MAX_PAYLOAD_BYTES = 7400
MAX_WAL_PAYLOAD_BYTES = 1_000_000
STREAMS_PER_PROCESS = 100
# A listener that has received nothing new for this long after the last write is done.
DRAIN_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class BenchOptions:
    events: int | None
    duration: float | None
    rate: float
    writers: int
    listeners: int
    payload_bytes: int
    mode: str = "auto"  # as requested: auto|wal|log|notify (the run reports what auto chose)
    relay: bool = True  # the listeners' ChangeStreams relay the WAL (wal mode) when nobody does
    hub: bool = False
    streams_per_process: int = STREAMS_PER_PROCESS
    # Read when the options are made, so that tests can shorten it.
    drain_timeout: float = field(default_factory=lambda: DRAIN_TIMEOUT_S)

    @property
    def listener_processes(self) -> int:
        return math.ceil(self.listeners / self.streams_per_process)

    @property
    def listener_connections(self) -> int:
        """LISTEN connections the listeners open: one each, or one per process with --hub."""
        return self.listener_processes if self.hub else self.listeners

    def quota(self, writer: int) -> int | None:
        """How many events writer number ``writer`` sends (None: until the duration is over)."""
        if self.events is None:
            return None
        share, extra = divmod(self.events, self.writers)
        return share + (1 if writer < extra else 0)

    def writer_rate(self) -> float:
        return self.rate / self.writers if self.rate else 0.0

    def describe(self) -> str:
        load = f"{self.events} events" if self.events is not None else f"{self.duration:g} s"
        rate = "as fast as possible" if not self.rate else f"{self.rate:g} events/s"
        relay = "" if self.relay else ", no relay"
        fanout = (
            f" sharing {self.listener_connections} connection(s) through the hub"
            if self.hub else ""
        )
        return (
            f"{load}, {rate}, {self.writers} writer(s), {self.listeners} listener(s){fanout}, "
            f"payload ~{self.payload_bytes} B, mode {self.mode}{relay}"
        )


def checked(
    *,
    events: int | None,
    duration: float | None,
    rate: float,
    writers: int,
    listeners: int,
    payload_bytes: int,
    mode: str = "auto",
    relay: bool = True,
    hub: bool = False,
) -> BenchOptions:
    """Options as given on the command line, or UsageProblem (exit 2) naming the bad one."""
    if events is not None and duration is not None:
        raise UsageProblem("--events and --duration exclude each other; give one.")
    if events is not None and events < 1:
        raise UsageProblem(f"--events must be at least 1, got {events}.")
    if duration is not None and not (0 < duration < math.inf):
        raise UsageProblem(f"--duration must be a positive number of seconds, got {duration:g}.")
    if not (0 <= rate < math.inf):
        raise UsageProblem(
            f"--rate must be 0 (as fast as possible) or a positive number of events/s, "
            f"got {rate:g}."
        )
    if writers < 1:
        raise UsageProblem(f"--writers must be at least 1, got {writers}.")
    if listeners < 1:
        raise UsageProblem(f"--listeners must be at least 1, got {listeners}.")
    limit = MAX_WAL_PAYLOAD_BYTES if mode == "wal" else MAX_PAYLOAD_BYTES
    if not (0 <= payload_bytes <= limit):
        raise UsageProblem(
            f"--payload-bytes must be between 0 and {limit} in {mode} mode, got {payload_bytes}.",
            hint="In log and notify modes (and auto, which may pick log) an event above "
            "~7500 bytes loses its values; --mode wal carries up to "
            f"{MAX_WAL_PAYLOAD_BYTES} bytes."
            if mode != "wal" else None,
        )
    if events is None and duration is None:
        events = DEFAULT_EVENTS
    return BenchOptions(
        events=events,
        duration=duration,
        rate=rate,
        writers=writers,
        listeners=listeners,
        payload_bytes=payload_bytes,
        mode=mode,
        relay=relay,
        hub=hub,
    )
