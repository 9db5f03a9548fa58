"""Counters of the SSE relay and their Prometheus text exposition (``GET /metrics``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class RelayCounters:
    """What happened to SSE clients since the server started."""

    streams_opened: int = 0
    events_relayed: int = 0  # change frames written to clients, replayed ones included
    resumes: int = 0  # streams opened with Last-Event-ID
    replayed: int = 0  # events read from the change log for resuming clients
    resets: int = 0  # reset events sent (log too short to resume, or lagging)
    lagging_cut: int = 0  # clients whose buffer overflowed and were closed
    refused: int = 0  # streams refused with 503 (--max-clients)
    lag_skipped: int = 0  # events not relayed because they were older than --max-lag
    lag_resets: int = 0  # times every client was reset because the relay lagged
    oversized: int = 0  # events replaced by a reset because they were over the size limit
    budget_cut: int = 0  # clients reset because the process's buffer budget was exceeded


@dataclass(frozen=True)
class Sample:
    name: str
    kind: str  # "counter" or "gauge"
    help: str
    value: float


def render(samples: list[Sample]) -> str:
    """Prometheus text format 0.0.4: HELP and TYPE lines, then the value."""
    lines = []
    for sample in samples:
        lines.append(f"# HELP {sample.name} {sample.help}")
        lines.append(f"# TYPE {sample.name} {sample.kind}")
        value = int(sample.value) if float(sample.value).is_integer() else sample.value
        lines.append(f"{sample.name} {value}")
    return "\n".join(lines) + "\n"
