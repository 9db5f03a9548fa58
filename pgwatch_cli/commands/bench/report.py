"""The benchmark's figures: computed from what writers and listeners reported, printed as a
table or one JSON object."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.table import Table

from pgwatch_cli.commands.bench.listeners import ListenResult
from pgwatch_cli.commands.bench.options import BenchOptions
from pgwatch_cli.commands.bench.writer import WritePhase
from pgwatch_cli.stats import Summary

# The writers count as having reached --rate within this share of it (pacing is not exact).
RATE_REACHED_SHARE = 0.95

WRITE_RATIO_MEANS = (
    "(events/s of the write phase with the trigger ÷ without it: one phase each, while this "
    "run's listeners receive and parse every event on the same machine (in wal mode they also "
    "relay the WAL, so the relay's CPU counts), with the payload size above. "
    "benchmarks/write_overhead.sh measures the trigger alone — pgbench, small rows, no "
    "listeners, interleaved rounds — so the README's figure is higher.)"
)


@dataclass(frozen=True)
class Percentiles:
    """Nearest-rank percentiles (``pgwatch_cli.stats``), in milliseconds."""

    p50: float
    p90: float
    p99: float
    max: float

    @classmethod
    def of(cls, values_us: Sequence[int]) -> Percentiles | None:
        summary = Summary.of(values_us)
        if summary is None:
            return None
        ms = summary.scaled(1 / 1000)
        return cls(ms.p50, ms.p90, ms.p99, ms.max)

    def as_json(self) -> dict[str, float]:
        return {key: round(value, 3) for key, value in vars(self).items()}


@dataclass(frozen=True)
class WriteLoad:
    """One write phase over all writers."""

    events: int
    seconds: float
    events_per_s: float
    statement_ms: Percentiles | None
    mean_statement_ms: float

    @classmethod
    def of(cls, phases: Sequence[WritePhase]) -> WriteLoad:
        events = sum(p.written for p in phases)
        seconds = (max(p.finished_ns for p in phases) - min(p.started_ns for p in phases)) / 1e9
        durations = [us for p in phases for us in p.statement_us]
        return cls(
            events=events,
            seconds=seconds,
            events_per_s=events / seconds if seconds > 0 else 0.0,
            statement_ms=Percentiles.of(durations),
            mean_statement_ms=sum(durations) / len(durations) / 1000 if durations else 0.0,
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "seconds": round(self.seconds, 3),
            "events_per_s": round(self.events_per_s, 1),
            "mean_statement_ms": round(self.mean_statement_ms, 3),
            "statement_ms": self.statement_ms.as_json() if self.statement_ms else None,
        }


@dataclass(frozen=True)
class Delivery:
    """What a set of listeners received, against what was written."""

    listeners: int
    received_min: int
    received_max: int
    lost: int  # summed over listeners: written events a listener never got
    duplicated: int
    listeners_missing_events: int
    latency: Percentiles | None

    @classmethod
    def of(cls, results: Sequence[ListenResult], written: int) -> Delivery:
        received = [count for r in results for count in r.received]
        return cls(
            listeners=len(received),
            received_min=min(received, default=0),
            received_max=max(received, default=0),
            lost=sum(max(0, written - count) for count in received),
            duplicated=sum(d for r in results for d in r.duplicates),
            listeners_missing_events=sum(1 for count in received if count < written),
            latency=Percentiles.of([us for r in results for us in r.latencies_us]),
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "listeners": self.listeners,
            "received_per_listener": {"min": self.received_min, "max": self.received_max},
            "lost": self.lost,
            "duplicated": self.duplicated,
            "listeners_missing_events": self.listeners_missing_events,
            "latency_ms": self.latency.as_json() if self.latency else None,
        }


@dataclass(frozen=True)
class BenchReport:
    options: BenchOptions
    server: str
    mode: str  # the capture mode that ran (what auto chose, if asked for auto)
    payload_bytes: int  # measured size of one event (its NOTIFY payload or change log row)
    events_written: int
    bookwatch: Delivery
    raw: Delivery
    throughput_events_per_s: float  # events written / (last receipt - first write)
    deliveries_per_s: float  # receipts over all listeners in the same span
    peak_queue_usage: float
    without_trigger: WriteLoad
    with_trigger: WriteLoad
    reconnects: int
    invalid_payloads: int
    subscribers_cut: int
    notices: list[str]

    @property
    def healthy(self) -> bool:
        return not (self.bookwatch.lost or self.bookwatch.duplicated
                    or self.raw.lost or self.raw.duplicated)

    def latency_ratio(self) -> dict[str, float | None]:
        mine, raw = self.bookwatch.latency, self.raw.latency
        if mine is None or raw is None:
            return {"p50": None, "p99": None}
        return {"p50": _ratio(mine.p50, raw.p50), "p99": _ratio(mine.p99, raw.p99)}

    @property
    def rate_reached(self) -> bool | None:
        """Did the writers sustain ``--rate`` with capture on? None: no rate was asked."""
        if not self.options.rate:
            return None
        return self.with_trigger.events_per_s >= RATE_REACHED_SHARE * self.options.rate

    def write_throughput_ratio(self) -> float | None:
        return _ratio(self.with_trigger.events_per_s, self.without_trigger.events_per_s)

    def added_ms_per_write(self) -> float:
        return self.with_trigger.mean_statement_ms - self.without_trigger.mean_statement_ms

    @property
    def raw_reads(self) -> str:
        """What the raw baseline consumer does in this mode."""
        return "notify_payload" if self.mode == "notify" else "change_log_on_wakeup"

    def as_json(self) -> dict[str, Any]:
        opts = self.options
        return {
            "server": self.server,
            "mode": self.mode,
            "mode_requested": opts.mode,
            "relay": opts.relay,
            "events_requested": opts.events,
            "duration_s": opts.duration,
            "rate_events_per_s": opts.rate,  # 0: as fast as possible
            "rate_reached": self.rate_reached,
            "writers": opts.writers,
            "listeners": opts.listeners,
            "listener_mode": "hub" if opts.hub else "connection_each",
            "listener_connections": opts.listener_connections,
            "payload_bytes_requested": opts.payload_bytes,
            "payload_bytes": self.payload_bytes,
            "events_written": self.events_written,
            "received_per_listener": {
                "min": self.bookwatch.received_min, "max": self.bookwatch.received_max,
            },
            "lost": self.bookwatch.lost,
            "duplicated": self.bookwatch.duplicated,
            "listeners_missing_events": self.bookwatch.listeners_missing_events,
            "latency_ms": self.bookwatch.latency.as_json() if self.bookwatch.latency else None,
            "raw_baseline": self.raw.as_json(),
            "latency_ratio_vs_raw": self.latency_ratio(),
            "throughput_events_per_s": round(self.throughput_events_per_s, 1),
            "deliveries_per_s": round(self.deliveries_per_s, 1),
            "peak_notification_queue_usage": self.peak_queue_usage,
            "raw_baseline_reads": self.raw_reads,
            "write_overhead": {
                "mode": self.mode,
                "without_trigger": self.without_trigger.as_json(),
                "with_trigger": self.with_trigger.as_json(),
                "throughput_ratio": self.write_throughput_ratio(),
                "throughput_ratio_means": WRITE_RATIO_MEANS,
                "added_ms_per_write": round(self.added_ms_per_write(), 3),
            },
            "hub_subscribers_cut": self.subscribers_cut,
            "reconnects": self.reconnects,
            "invalid_payloads": self.invalid_payloads,
            "listener_notices": self.notices,
            "healthy": self.healthy,
        }


def _ratio(numerator: float, denominator: float) -> float | None:
    return round(numerator / denominator, 3) if denominator > 0 else None


def build(
    options: BenchOptions,
    *,
    server: str,
    mode: str,
    payload_bytes: int,
    plain: Sequence[WritePhase],
    triggered: Sequence[WritePhase],
    listened: Sequence[ListenResult],
    peak_queue_usage: float,
) -> BenchReport:
    written = sum(p.written for p in triggered)
    streams = [r for r in listened if not r.raw]
    bookwatch = Delivery.of(streams, written)
    first_write = min(p.started_ns for p in triggered)
    last_receipt = max((r.last_receipt_ns for r in listened), default=0)
    span = (last_receipt - first_write) / 1e9 if last_receipt > first_write else 0.0
    receipts = sum(count for r in streams for count in r.received)
    return BenchReport(
        options=options,
        server=server,
        mode=mode,
        payload_bytes=payload_bytes,
        events_written=written,
        bookwatch=bookwatch,
        raw=Delivery.of([r for r in listened if r.raw], written),
        throughput_events_per_s=written / span if span else 0.0,
        deliveries_per_s=receipts / span if span else 0.0,
        peak_queue_usage=peak_queue_usage,
        without_trigger=WriteLoad.of(plain),
        with_trigger=WriteLoad.of(triggered),
        reconnects=sum(r.reconnects for r in streams),
        invalid_payloads=sum(r.invalid for r in streams),
        subscribers_cut=sum(r.cut for r in streams),
        notices=[notice for r in listened for notice in r.notices],
    )


def _ms(p: Percentiles | None) -> list[str]:
    return ["-"] * 4 if p is None else [f"{v:.2f}" for v in (p.p50, p.p90, p.p99, p.max)]


def _times(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def render(report: BenchReport, console: Console) -> None:
    """The summary: delivery, latency against the raw baseline, write overhead."""
    opts = report.options
    mode = f"{report.mode} mode"
    console.print(f"[bold]bookwatch bench[/bold] on {report.server}: {opts.describe()}")
    # The baseline: what a program of your own would do with a plain LISTEN connection.
    raw_name = "plain LISTEN, reading the NOTIFY payload" if report.mode == "notify" else (
        "plain LISTEN, reading the change log when woken"
    )

    delivery = Table(title="Delivery", title_justify="left")
    for heading in ("listener", "listeners", "events written", "received (fewest/most)", "lost",
                    "duplicated"):
        delivery.add_column(heading, justify="right" if heading != "listener" else "left")
    mine = "bookwatch (one connection shared)" if opts.hub else "bookwatch"
    for name, result in ((mine, report.bookwatch), (raw_name, report.raw)):
        delivery.add_row(
            name, str(result.listeners), str(report.events_written),
            f"{result.received_min}/{result.received_max}",
            _flag(result.lost), _flag(result.duplicated),
        )
    console.print(delivery)

    latency = Table(title=f"Commit → receive latency (ms, {mode})", title_justify="left")
    for heading in ("listener", "p50", "p90", "p99", "max"):
        latency.add_column(heading, justify="right" if heading != "listener" else "left")
    latency.add_row(mine, *_ms(report.bookwatch.latency))
    latency.add_row(raw_name, *_ms(report.raw.latency))
    ratio = report.latency_ratio()
    latency.add_row("ratio", _times(ratio["p50"]), "", _times(ratio["p99"]), "", style="dim")
    console.print(latency)

    writes = Table(title=f"Write load ({mode} trigger)", title_justify="left")
    for heading in ("table", "events", "events/s", "mean ms/write", "p99 ms/write"):
        writes.add_column(heading, justify="right" if heading != "table" else "left")
    for name, load in (("without capture", report.without_trigger),
                       ("with bookwatch capture", report.with_trigger)):
        p99 = f"{load.statement_ms.p99:.2f}" if load.statement_ms else "-"
        writes.add_row(name, str(load.events), f"{load.events_per_s:,.0f}",
                       f"{load.mean_statement_ms:.3f}", p99)
    console.print(writes)

    write_ratio = report.write_throughput_ratio()
    speed = "-" if write_ratio is None else f"{write_ratio:.0%}"
    console.print(
        f"With capture, writes ran at {speed} of their speed without it "
        f"({report.added_ms_per_write():+.3f} ms per write, {mode})."
    )
    console.print("[dim]Measured here with the listeners on the same machine; "
                  "benchmarks/write_overhead.sh measures capture alone.[/dim]")
    if report.rate_reached is False:
        console.print(
            f"[yellow]The writers reached {report.with_trigger.events_per_s:,.0f} events/s, "
            f"short of --rate {opts.rate:g}: this machine and database could not write faster, "
            "so the figures above are for the lower rate.[/yellow]"
        )
    console.print(
        f"Sustained: {report.throughput_events_per_s:,.0f} events/s, "
        f"{report.deliveries_per_s:,.0f} deliveries/s; payload {report.payload_bytes} bytes; "
        f"peak notification queue usage {report.peak_queue_usage:.2%}"
    )
    if report.reconnects or report.invalid_payloads or report.subscribers_cut:
        console.print(
            f"[yellow]Listener reconnects: {report.reconnects}, "
            f"invalid payloads: {report.invalid_payloads}, "
            f"hub subscribers cut for lagging: {report.subscribers_cut}[/yellow]"
        )


def _flag(count: int) -> str:
    return f"[bold red]{count}[/bold red]" if count else "0"
