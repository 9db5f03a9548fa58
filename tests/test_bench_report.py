"""bench's figures from what writers and listeners report: the maths, in memory."""

from __future__ import annotations

import io

from rich.console import Console

from pgwatch_cli.commands.bench import options as bench_options
from pgwatch_cli.commands.bench import report
from pgwatch_cli.commands.bench.listeners import ListenResult
from pgwatch_cli.commands.bench.writer import WritePhase

S = 1_000_000_000  # ns


def phase(with_trigger: bool, written: int, seconds: float, statement_us: int) -> WritePhase:
    return WritePhase(0, with_trigger, written, started_ns=10 * S,
                      finished_ns=10 * S + int(seconds * S), statement_us=[statement_us] * written)


def listened(slot: int, raw: bool, received: list[int], duplicates: list[int]) -> ListenResult:
    return ListenResult(slot=slot, raw=raw, received=received, duplicates=duplicates, foreign=0,
                        latencies_us=list(range(1000, 1000 + 100 * len(received))),
                        last_receipt_ns=12 * S)


def build() -> report.BenchReport:
    opts = bench_options.checked(events=100, duration=None, rate=0, writers=1, listeners=2,
                                 payload_bytes=500)
    return report.build(
        opts, server="test", mode="wal", payload_bytes=512,
        plain=[phase(False, 100, 1.0, 500)], triggered=[phase(True, 100, 2.0, 1500)],
        listened=[listened(0, False, [100, 97], [0, 2]), listened(1, True, [100], [0])],
        peak_queue_usage=0.01,
    )


def test_loss_duplicates_and_health() -> None:
    figures = build()
    assert figures.events_written == 100
    assert (figures.bookwatch.lost, figures.bookwatch.duplicated) == (3, 2)
    assert figures.bookwatch.listeners_missing_events == 1
    assert (figures.raw.lost, figures.raw.duplicated) == (0, 0)
    assert not figures.healthy


def test_write_ratio_and_added_time() -> None:
    figures = build()
    assert figures.write_throughput_ratio() == 0.5  # 50/s with the trigger, 100/s without
    assert round(figures.added_ms_per_write(), 3) == 1.0
    overhead = figures.as_json()["write_overhead"]
    assert "÷" in overhead["throughput_ratio_means"]
    assert overhead["mode"] == "wal"  # what ran, not what was asked for (auto)


def test_mode_says_what_ran_and_how_the_baseline_read() -> None:
    figures = build().as_json()
    assert (figures["mode"], figures["mode_requested"], figures["relay"]) == ("wal", "auto", True)
    assert figures["raw_baseline_reads"] == "change_log_on_wakeup"


def test_throughput_spans_first_write_to_last_receipt() -> None:
    figures = build()
    assert figures.throughput_events_per_s == 50.0  # 100 events over 2 s
    assert figures.deliveries_per_s == 98.5  # 197 receipts by the bookwatch listeners


def test_the_summary_speaks_the_users_words_and_says_when_the_rate_was_missed() -> None:
    opts = bench_options.checked(events=100, duration=None, rate=500, writers=1, listeners=2,
                                 payload_bytes=500)
    figures = report.build(
        opts, server="test", mode="log", payload_bytes=512,
        plain=[phase(False, 100, 0.2, 500)], triggered=[phase(True, 100, 0.3175, 1500)],
        listened=[listened(0, False, [100, 100], [0, 0]), listened(1, True, [100], [0])],
        peak_queue_usage=0.0,
    )
    assert figures.rate_reached is False and figures.as_json()["rate_reached"] is False
    out = io.StringIO()
    report.render(figures, Console(file=out, width=200))
    text = " ".join(out.getvalue().split())
    assert "The writers reached 315 events/s, short of --rate 500" in text
    assert "plain LISTEN, reading the change log when woken" in text
    assert "writes ran at 63% of their speed without it" in text
    for builders_word in ("raw psycopg", "ChangeStream", "count", "÷"):
        assert builders_word not in text
