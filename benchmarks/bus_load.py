#!/usr/bin/env python3
"""What N ``serve`` replicas cost the database, with the PostgreSQL bus and with Redis.

Starts ``--replicas N`` ``bookwatch serve`` processes on N ports (``--bus postgres`` or
``--bus redis://...``) on a scratch database, spreads ``--clients`` SSE clients over them (one
client process per replica, sse_load.py's raw-socket readers and probes), commits one UPDATE
per event at ``--rate`` and reports, as one JSON object (summary on stderr):

- the database's work per event: scans of ``bookwatch.change_log`` (``pg_stat_user_tables``:
  every log read is one), transactions other than the writer's (``pg_stat_database``), and
  the connections the replicas hold (``pg_stat_activity``), LISTEN ones apart;
- delivery (every client got every event?) and latency commit -> client (p50/p99, ms);
- CPU of all replicas together (% of one core) while writing.

Usage: python benchmarks/bus_load.py --replicas 4 --clients 800 --bus postgres
       python benchmarks/bus_load.py --replicas 4 --clients 800 --bus redis://127.0.0.1:6379/0
       python benchmarks/bus_load.py --compare ...   # both buses, one after the other
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from typing import Any

import httpx
import psutil
import psycopg

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sse_load  # its clients, writer, database and process helpers)

_LOG_SCANS = """
SELECT coalesce(seq_scan, 0) + coalesce(idx_scan, 0) FROM pg_stat_user_tables
 WHERE schemaname = 'bookwatch' AND relname = 'change_log'
"""
_XACTS = "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s"
_CONNECTIONS = """
SELECT count(*), count(*) FILTER (WHERE application_name = 'bookwatch listener')
  FROM pg_stat_activity WHERE datname = %s AND application_name LIKE 'bookwatch%%'
"""


def database_counters(admin_dsn: str, dsn: str) -> dict[str, int]:
    """Counters as the statistics collector has them now (flushed first)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_force_next_flush()")
        time.sleep(1.1)  # other backends flush at most every second (PG 15)
        scans = conn.execute(_LOG_SCANS).fetchone()
        dbname = conn.info.dbname
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        xacts = conn.execute(_XACTS, (dbname,)).fetchone()
    return {"log_scans": int(scans[0]) if scans else 0, "xacts": int(xacts[0]) if xacts else 0}


def connections(admin_dsn: str, dbname: str) -> tuple[int, int]:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        row = conn.execute(_CONNECTIONS, (dbname,)).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def start_replica(dsn: str, bus: str, port: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "pgwatch_cli", "serve", "--dsn", dsn, "--port", str(port),
         "--bus", bus, "--max-clients", "20000"],
        start_new_session=True, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
    )


def wait_healthy(url: str, redis_bus: bool, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError, ValueError):
            response = httpx.get(url + "/healthz", timeout=2)
            body = response.json()
            if response.status_code == 200 and (not redis_bus or body.get("bus_lag") is not None):
                return
        time.sleep(0.2)
    raise SystemExit(f"replica at {url} did not become healthy")


def run(args: argparse.Namespace, bus: str) -> dict[str, Any]:
    sse_load.raise_fd_limit()
    redis_bus = bus.startswith("redis")
    if redis_bus:  # a key prefix of its own, deleted afterwards
        bus += ("&" if "?" in bus else "?") + f"prefix=bench-{uuid.uuid4().hex[:8]}"
    dsn = sse_load.prepare_database(args.dsn, True)
    dbname = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
    replicas: list[subprocess.Popen[str]] = []
    ports = [sse_load.free_port() for _ in range(args.replicas)]
    context = mp.get_context("spawn")
    stop, report = context.Event(), context.Queue()
    clients: list[Any] = []
    try:
        for port in ports:
            replicas.append(start_replica(dsn, bus, port))
            threading.Thread(target=_drain, args=(replicas[-1],), daemon=True).start()
        for port in ports:
            wait_healthy(f"http://127.0.0.1:{port}", redis_bus)
        share = args.clients // args.replicas
        probe_every = max(1, args.clients // sse_load.PROBES)
        for index, port in enumerate(ports):
            worker = context.Process(target=sse_load.client_process, args=(
                "127.0.0.1", port, share, probe_every, stop, report, index * share))
            worker.start()
            clients.append(worker)
        for _ in clients:
            report.get(timeout=300)
        time.sleep(2)
        held, listening = connections(args.dsn, dbname)
        procs = [psutil.Process(replica.pid) for replica in replicas]
        before = database_counters(args.dsn, dsn)
        cpu_before = sum(sse_load.tree_cpu_s(proc) for proc in procs)
        started = time.monotonic()
        committed = sse_load.write_events(dsn, args.rate, args.duration)
        cpu = sum(sse_load.tree_cpu_s(proc) for proc in procs) - cpu_before
        writing_s = time.monotonic() - started
        time.sleep(args.settle)
        after = database_counters(args.dsn, dsn)
        written = len(committed)
        stop.set()
        parts = [report.get(timeout=120)[2] for _ in clients]
        counts = [count for part in parts for count in part["counts"]]
        probed = [value for part in parts for value in part["latencies"]]
        latencies = [(seen - committed[n]) * 1000 for n, _, seen in probed if n in committed]
        # The writer commits once per event; the counters' own reads are a few transactions.
        others = after["xacts"] - before["xacts"] - written
        return {
            "bus": "redis" if redis_bus else "postgres", "replicas": args.replicas,
            "clients": share * args.replicas, "rate": args.rate, "events_written": written,
            "clients_with_every_event": sum(count == written for count in counts),
            "received_min": min(counts, default=0), "received_max": max(counts, default=0),
            "change_log_scans_per_event": round(
                (after["log_scans"] - before["log_scans"]) / max(1, written), 2),
            "other_transactions_per_event": round(others / max(1, written), 2),
            "db_connections_held": held, "db_listen_connections": listening,
            "latency_ms": {"samples": len(latencies), "p50": sse_load.percentile(latencies, 0.5),
                           "p99": sse_load.percentile(latencies, 0.99)},
            "replicas_cpu_pct_of_one_core": round(100 * cpu / writing_s, 1),
        }
    finally:
        stop.set()
        for worker in clients:
            worker.join(10)
            if worker.is_alive():
                worker.kill()
        for replica in replicas:
            if replica.poll() is None:
                sse_load.stop_server(replica)
        sse_load.drop_database(args.dsn)
        if redis_bus:
            _forget_keys(bus)


def _drain(process: subprocess.Popen[str]) -> None:
    for _line in process.stderr or ():
        pass


def _forget_keys(bus: str) -> None:
    from pgwatch_cli.bus import url

    parsed = url.parse(bus)
    if parsed is None:
        return
    with contextlib.suppress(Exception):
        import redis

        client = redis.Redis.from_url(parsed.url)
        keys = list(client.scan_iter(match=f"{parsed.prefix}:*"))
        if keys:
            client.delete(*keys)


def summary(result: dict[str, Any]) -> str:
    latency = result["latency_ms"]
    return (
        f"{result['bus']:8} {result['replicas']} replicas, {result['clients']} clients @ "
        f"{result['rate']}/s: log scans/event {result['change_log_scans_per_event']}, other "
        f"xacts/event {result['other_transactions_per_event']}, connections "
        f"{result['db_connections_held']} (LISTEN {result['db_listen_connections']}); every "
        f"event to {result['clients_with_every_event']}/{result['clients']} clients; p50 "
        f"{latency['p50']} ms p99 {latency['p99']} ms; replicas CPU "
        f"{result['replicas_cpu_pct_of_one_core']}% of a core"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", default=os.environ.get(
        "BOOKWATCH_BENCH_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--clients", type=int, default=800, help="in all, spread evenly")
    parser.add_argument("--rate", type=float, default=10.0, help="events per second")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of writing")
    parser.add_argument("--settle", type=float, default=3.0)
    parser.add_argument("--bus", default="postgres", help="postgres or redis://HOST:PORT/DB")
    parser.add_argument("--compare", default=None, metavar="REDIS_URL",
                        help="run the PostgreSQL bus, then this Redis bus, in one run")
    args = parser.parse_args()
    if not 1 <= args.replicas <= 16 or not 0 < args.duration <= 120 or args.clients < 1:
        parser.error("--replicas 1..16, --duration at most 120 s, --clients at least 1")
    signal.signal(signal.SIGTERM, lambda _sig, _frame: sys.exit(143))
    buses = ["postgres", args.compare] if args.compare else [args.bus]
    results = []
    for bus in buses:
        result = run(args, bus)
        print(summary(result), file=sys.stderr)
        results.append(result)
    print(json.dumps(results if len(results) > 1 else results[0]))
    if any(not result["latency_ms"]["samples"] for result in results):
        print("FAILED: no latency sample was collected", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
