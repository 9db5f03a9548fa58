#!/usr/bin/env python3
"""What serve's per-client token check costs the fan-out: ``benchmarks/sse_load.py`` with the
same clients, rate and events, once per ``--scoped-tokens`` mode, the modes interleaved round
by round (so a change in the machine's load hits them alike). Prints one JSON object: each
run's server CPU and latency, and per round the CPU of every mode as a ratio to ``shared``.

The CPU compared is the server's over the writing and the settling time: on a loaded machine
a starved server does part of the work after the last write, which the writing time alone
would not count.

Usage: python benchmarks/scoped_tokens.py --clients 5000 --rate 10 --duration 20 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

LOAD = Path(__file__).with_name("sse_load.py")
MODES = ("shared", "same-tenant", "own-tenant")
CPU = "server_cpu_pct_incl_settle"


def one_run(args: argparse.Namespace, mode: str) -> dict[str, Any]:
    command = [sys.executable, str(LOAD), "--clients", str(args.clients), "--rate",
               str(args.rate), "--duration", str(args.duration), "--settle", str(args.settle),
               "--procs", str(args.procs), "--scoped-tokens", mode]
    if args.dsn:
        command += ["--dsn", args.dsn]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise SystemExit(f"{mode} run failed:\n{done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"{mode}: {done.stderr.strip().splitlines()[-1]}", file=sys.stderr)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", default=None)
    parser.add_argument("--clients", type=int, default=5000)
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--settle", type=float, default=3.0)
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    runs: list[dict[str, Any]] = []
    ratios: dict[str, list[float]] = {mode: [] for mode in MODES[1:]}
    for number in range(args.rounds):
        # Alternate the order too: the first run of a round may find a warmer or colder box.
        order = MODES if number % 2 == 0 else tuple(reversed(MODES))
        measured = {mode: one_run(args, mode) for mode in order}
        shared_cpu = measured["shared"][CPU]
        for mode in MODES[1:]:
            ratios[mode].append(round(measured[mode][CPU] / shared_cpu, 3))
        runs += [{"round": number, "mode": mode,
                  "server_cpu_pct": result[CPU],
                  "server_cpu_pct_writing_only": result["server_cpu_pct_of_one_core"],
                  "latency_p50_ms": result["latency_ms"]["p50"],
                  "latency_p99_ms": result["latency_ms"]["p99"],
                  "clients_with_every_event": result["clients_with_every_event"],
                  "rss_per_client_kb": result["server_rss_per_client_kb"],
                  "load_average_1m": result["load_average_1m_at_end"]}
                 for mode, result in measured.items()]
    print(json.dumps({"clients": args.clients, "rate": args.rate, "duration_s": args.duration,
                      "runs": runs, "cpu_ratio_to_shared": ratios,
                      "median_ratio": {mode: statistics.median(values)
                                       for mode, values in ratios.items()}}, indent=1))


if __name__ == "__main__":
    main()
