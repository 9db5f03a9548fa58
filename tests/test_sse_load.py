"""``benchmarks/sse_load.py`` measures something: a short run against ``bookwatch serve``
collects latency samples from every probe and delivers every event to every client."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from benchmarks.sse_load import probed

BENCHMARK = Path(__file__).parent.parent / "benchmarks" / "sse_load.py"


def test_probe_frames_are_parsed_whatever_the_spacing() -> None:
    spaced = (b'id: 7\nevent: change\ndata: {"v": 1, "diff": {"n": [0, 1]}, '
              b'"timestamp": "2026-11-28T06:41:00.123456+00:00"}')
    compact = b'event: change\ndata:{"diff":{"n":[41,42]},"timestamp":"2026-11-28T06:41:00+00:00"}'
    assert probed(spaced) == (1, "2026-11-28T06:41:00.123456+00:00")
    assert probed(compact) == (42, "2026-11-28T06:41:00+00:00")
    assert probed(b"event: change\ndata: {\"diff\": null}") is None


def test_a_short_run_measures_latency_for_every_client(server_dsn: str) -> None:
    result = subprocess.run(
        [sys.executable, str(BENCHMARK), "--dsn", server_dsn, "--clients", "50",
         "--rate", "10", "--duration", "2", "--settle", "2", "--procs", "1"],
        capture_output=True, text=True, timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["connected"] == 50
    assert report["events_written"] >= 10
    assert report["clients_with_every_event"] == 50
    assert report["latency_ms"]["samples"] >= report["events_written"]
    assert report["latency_ms"]["p99"] is not None
