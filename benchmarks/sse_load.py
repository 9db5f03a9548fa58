#!/usr/bin/env python3
"""Load test of ``bookwatch serve``: many concurrent SSE clients, events at a steady rate.

Runs everything on loopback: a scratch database, ``bookwatch serve`` as a subprocess, one or
two client processes holding raw asyncio sockets (each reads ``/events`` and counts frames; a
few spread-out "probe" clients also timestamp every event), and a writer committing one
UPDATE per event at ``--rate``. Reports, as one JSON object (and a summary on stderr):

- delivery: events written vs received per client (min/max), clients cut or lost;
- latency commit -> client for the probes (p50/p90/p99/max, ms; the event's ``timestamp`` is
  taken by the deferred trigger right before commit);
- server RSS before clients, with all clients connected idle, and at peak; RSS per client;
- server and client CPU (% of one core) during the load phase;
- connect time for all clients and how long the server takes to stop with all of them open.

Usage: python benchmarks/sse_load.py --clients 1000 --rate 100 --duration 20
       python benchmarks/sse_load.py --no-durable --server-cmd 'node relay.js'   # a peer
Bounded: at most --max-clients (20000) clients, --duration at most 120 s.

``--server-cmd`` runs another relay instead of ``bookwatch serve`` (through ``sh``, in its own
process group; ``{dsn}`` and ``{port}`` in it are replaced, and ``DATABASE_URL``, ``PORT`` and
``HOST`` are set): the same database, writer, clients and report. It must serve ``/events``
and ``/healthz`` (with ``"clients"``). CPU and memory are those of its whole process tree.
A run that measured no latency at all exits 1: a benchmark that silently measures nothing is
worse than none.

``--scoped-tokens MODE`` measures serve's per-client token check (every event carries tenant 7):
``shared`` (one ``--token`` for all), ``same-tenant`` (each client its own signed token for
tenant 7: every event passes every check) or ``own-tenant`` (each client its own tenant; the
probes keep tenant 7, so latency is still measured). ``benchmarks/scoped_tokens.py`` runs
them side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx
import psutil
import psycopg

# One per run: two runs (a test and a measurement) must not drop each other's database.
SCRATCH_DB = f"bookwatch_sse_load_{os.getpid()}"
PROBES = 50


def probed(frame: bytes) -> tuple[int, str] | None:
    """The write a change frame names (the writer bumps n by one per event: the new n) and the
    trigger's clock right before commit. Parsed, not pattern-matched: payloads are relayed
    verbatim, in whatever spacing the trigger wrote them."""
    data = b"\n".join(line[5:].lstrip(b" ") for line in frame.split(b"\n")
                      if line.startswith(b"data:"))
    try:
        event = json.loads(data)
        return int(event["diff"]["n"][1]), str(event["timestamp"])
    except (ValueError, KeyError, TypeError, IndexError):
        return None


def raise_fd_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# -- clients (in their own processes) ------------------------------------------------------


class Reader(asyncio.Protocol):
    """One SSE client on a raw socket: counts change frames; a probe also times them."""

    def __init__(self, probe: bool, latencies: list[tuple[int, float, float]],
                 request: bytes) -> None:
        self.probe = probe
        self.request = request
        self.latencies = latencies
        self.buffer = b""
        self.changes = 0
        self.resets = 0
        self.closed = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.time()
        self.buffer += data
        end = self.buffer.rfind(b"\n\n")
        if end < 0:
            return
        complete, self.buffer = self.buffer[: end + 2], self.buffer[end + 2 :]
        self.changes += complete.count(b"event: change\n")
        self.resets += complete.count(b"event: reset\n")
        if self.probe:
            for frame in complete.split(b"\n\n"):
                if b"event: change" not in frame:
                    continue
                found = probed(frame)
                if found is not None:
                    stamped = datetime.fromisoformat(found[1]).timestamp()
                    self.latencies.append((found[0], stamped, now))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True


def client_token(number: int, probe: bool, scoped: str | None, secret: str) -> str | None:
    """The token client ``number`` presents in ``--scoped-tokens`` runs (None: no token)."""
    if scoped is None:
        return None
    if scoped == "shared":
        return secret
    from pgwatch_cli.auth import mint

    tenant = 7 if scoped == "same-tenant" or probe else 1000 + number
    return mint(secret.encode(), sub=f"client{number}", tables=["sse_load"], tenant=tenant,
                ttl_s=3600)


async def run_clients(
    host: str, port: int, count: int, probe_every: int, stop: Any, report: Any, index: int,
    scoped: str | None = None, secret: str = "",
) -> None:
    loop = asyncio.get_running_loop()
    latencies: list[tuple[int, float, float]] = []
    readers: list[Reader] = []
    failed = 0
    gate = asyncio.Semaphore(200)  # connect in waves, not one SYN flood
    request = (f"GET /events?table=sse_load HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n").encode()

    async def connect(number: int) -> None:
        nonlocal failed
        async with gate:
            probe = number % probe_every == 0
            token = client_token(number * 8 + index, probe, scoped, secret)
            reader = Reader(probe, latencies, request if token is None else request.replace(
                b"?table=sse_load", b"?table=sse_load&token=" + token.encode()))
            try:
                await loop.create_connection(lambda: reader, host, port)
            except OSError:
                failed += 1
                return
            readers.append(reader)

    started = time.monotonic()
    await asyncio.gather(*(connect(number + index) for number in range(count)))
    report.put(("connected", index, len(readers), failed, time.monotonic() - started))
    while not stop.is_set():
        await asyncio.sleep(0.2)
    counts = [reader.changes for reader in readers]
    report.put(("done", index, {
        "counts": counts,
        "resets": sum(reader.resets for reader in readers),
        "closed_by_server": sum(reader.closed for reader in readers),
        "latencies": latencies,
        "cpu_s": sum(os.times()[:2]),
    }))
    for reader in readers:
        if reader.transport is not None:
            reader.transport.close()


def client_process(host: str, port: int, count: int, probe_every: int, stop: Any,
                   report: Any, index: int, scoped: str | None = None, secret: str = "") -> None:
    raise_fd_limit()
    main = run_clients(host, port, count, probe_every, stop, report, index, scoped, secret)
    try:  # the clients share the machine with the server: the cheaper they are, the better
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main)


# -- the database and the server -----------------------------------------------------------


def prepare_database(admin_dsn: str, durable: bool, tenant: bool = False) -> str:
    from pgwatch_cli.capture import triggers
    from pgwatch_cli.capture.tables import TableRef
    from pgwatch_cli.defaults import DEFAULT_CHANNEL

    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {SCRATCH_DB}")
        conn.execute(f"CREATE DATABASE {SCRATCH_DB}")
    dsn = as_url(psycopg.conninfo.conninfo_to_dict(admin_dsn), SCRATCH_DB)
    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE TABLE sse_load (id integer PRIMARY KEY, n integer NOT NULL"
                     + (", tenant integer NOT NULL DEFAULT 7)" if tenant else ")"))
        conn.execute("INSERT INTO sse_load VALUES (1, 0)")
        conn.commit()
        table = TableRef("public", "sse_load")
        triggers.run(conn, lambda: triggers.plan_install(
            conn, [table], channel=DEFAULT_CHANNEL, durable=durable, excluded={},
            tenant_columns={table: "tenant"} if tenant else None))
    return dsn


def as_url(params: dict[str, Any], dbname: str) -> str:
    """A postgresql:// URL (what a peer in another language understands, unlike key=value)."""
    user = quote(str(params.get("user") or "postgres"), safe="")
    password = params.get("password")
    auth = f"{user}:{quote(str(password), safe='')}" if password else user
    host = str(params.get("host") or "127.0.0.1")
    host = f"[{host}]" if ":" in host else quote(host, safe="")
    return f"postgresql://{auth}@{host}:{params.get('port') or 5432}/{quote(dbname, safe='')}"


def drop_database(admin_dsn: str) -> None:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {SCRATCH_DB} WITH (FORCE)")


def start_server(dsn: str, args: argparse.Namespace) -> tuple[subprocess.Popen[str], str]:
    """``bookwatch serve`` (or ``--server-cmd``) on a free port; returns it and its URL."""
    port = free_port()
    env = {**os.environ, "DATABASE_URL": dsn, "PORT": str(port), "HOST": "127.0.0.1"}
    if args.scoped_tokens:  # the shared token, and the secret signed ones are checked with
        env.update(BOOKWATCH_TOKEN=args.token_secret, BOOKWATCH_TOKEN_SECRET=args.token_secret)
    if args.server_cmd:
        command = args.server_cmd.replace("{dsn}", dsn).replace("{port}", str(port))
        process = subprocess.Popen(command, shell=True, env=env, start_new_session=True,
                                   stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    else:
        process = subprocess.Popen(
            [sys.executable, "-m", "pgwatch_cli", "serve", "--dsn", dsn, "--port", str(port),
             "--client-buffer", str(args.client_buffer), "--workers", str(args.workers),
             "--max-clients", str(max(10000, args.clients))],
            env=env, start_new_session=True,
            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
        )
    # Keep draining stderr so the server never blocks on a full pipe; keep the tail to show.
    tail: list[str] = []

    def drain() -> None:
        for line in process.stderr or ():
            tail.append(line)
            del tail[:-20]

    threading.Thread(target=drain, daemon=True).start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return process, url
        time.sleep(0.2)
    stop_server(process)
    raise SystemExit("the server did not start:\n" + "".join(tail))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tree(proc: psutil.Process) -> list[psutil.Process]:
    """The server and its children (a shell, workers)."""
    with contextlib.suppress(psutil.Error):
        return [proc, *proc.children(recursive=True)]
    return [proc]


def tree_cpu_s(proc: psutil.Process) -> float:
    total = 0.0
    for member in tree(proc):
        with contextlib.suppress(psutil.Error):
            times = member.cpu_times()
            total += times.user + times.system
    return total


def tree_rss(proc: psutil.Process) -> int:
    total = 0
    for member in tree(proc):
        with contextlib.suppress(psutil.Error):
            total += member.memory_info().rss
    return total


def write_events(dsn: str, rate: float, duration: float) -> dict[int, float]:
    """Commit one UPDATE (one event) every 1/rate s for ``duration`` s; returns, per new value
    of n, the wall time the commit returned to the writer."""
    committed: dict[int, float] = {}
    written = 0
    with psycopg.connect(dsn, autocommit=True) as conn:
        started = time.monotonic()
        while time.monotonic() - started < duration:
            row = conn.execute("UPDATE sse_load SET n = n + 1 WHERE id = 1 RETURNING n").fetchone()
            assert row is not None
            committed[row[0]] = time.time()
            written += 1
            pause = written / rate - (time.monotonic() - started)
            if pause > 0:
                time.sleep(pause)
    return committed


def percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(share * len(ordered)))], 2)


def clients_open(url: str) -> int:
    """Open streams as the server counts them (all workers' when it has several)."""
    health = httpx.get(url + "/healthz", timeout=30, headers=_AUTH).json()
    return int(health.get("clients_all_workers", health["clients"]))


def metric(url: str, name: str) -> float:
    response = httpx.get(url + "/metrics", timeout=30, headers=_AUTH)
    if response.status_code != 200:  # a peer without metrics
        return float("nan")
    for line in response.text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return float("nan")


# -- the run --------------------------------------------------------------------------------

_AUTH: dict[str, str] = {}  # the shared token in --scoped-tokens runs (for /metrics)


def run(args: argparse.Namespace) -> dict[str, Any]:
    raise_fd_limit()
    if args.scoped_tokens:
        args.token_secret = os.urandom(24).hex()
        _AUTH["Authorization"] = f"Bearer {args.token_secret}"
    dsn = prepare_database(args.dsn, args.durable, tenant=bool(args.scoped_tokens))
    try:
        server, url = start_server(dsn, args)
    except BaseException:
        drop_database(args.dsn)
        raise
    host, port = url.removeprefix("http://").rsplit(":", 1)
    proc = psutil.Process(server.pid)
    result: dict[str, Any] = {"server": args.server_cmd or f"bookwatch serve --workers "
                              f"{args.workers}", "clients": args.clients, "rate": args.rate,
                              "duration_s": args.duration, "client_processes": args.procs,
                              "scoped_tokens": args.scoped_tokens}
    context = mp.get_context("spawn")
    stop, report = context.Event(), context.Queue()
    workers = []
    try:
        clients_open(url)
        time.sleep(1)
        rss_before = tree_rss(proc)
        share = args.clients // args.procs
        probe_every = max(1, args.clients // PROBES)
        for index in range(args.procs):
            count = share + (args.clients - share * args.procs if index == 0 else 0)
            worker = context.Process(target=client_process, args=(
                host, int(port), count, probe_every, stop, report, index, args.scoped_tokens,
                getattr(args, "token_secret", "")))
            worker.start()
            workers.append(worker)
        connected, failed, connect_s = 0, 0, 0.0
        for _ in workers:
            _, _, ok, bad, took = report.get(timeout=300)
            connected, failed, connect_s = connected + ok, failed + bad, max(connect_s, took)
        deadline = time.monotonic() + 60
        while clients_open(url) < connected and time.monotonic() < deadline:
            time.sleep(0.2)
        result["connected"] = connected
        result["connect_failed"] = failed
        result["connect_s"] = round(connect_s, 2)
        result["server_sees_clients"] = clients_open(url)
        time.sleep(2)
        rss_idle = tree_rss(proc)

        long_pauses_before = metric(url, "bookwatch_gc_long_pauses_total")
        cpu_before = tree_cpu_s(proc)
        started = time.monotonic()
        peak = [rss_idle]
        sampling = threading.Event()

        def sample() -> None:
            while not sampling.is_set():
                peak[0] = max(peak[0], tree_rss(proc))
                time.sleep(0.5)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        committed = write_events(dsn, args.rate, args.duration)
        cpu_writing = tree_cpu_s(proc) - cpu_before
        writing_s = time.monotonic() - started
        written = len(committed)
        time.sleep(args.settle)
        load_s = time.monotonic() - started
        cpu_server = tree_cpu_s(proc) - cpu_before
        sampling.set()
        sampler.join()

        cut = metric(url, "bookwatch_sse_lagging_clients_cut_total")
        gc_long = metric(url, "bookwatch_gc_long_pauses_total") - long_pauses_before
        still_open = clients_open(url)
        result["server_stop_s"] = stop_server(server)  # with every client still connected
        stop.set()
        parts = [report.get(timeout=120)[2] for _ in workers]
        counts = [count for part in parts for count in part["counts"]]
        probed = [value for part in parts for value in part["latencies"]]
        # Commit returned to the writer -> client read it (what a user waits for), and the
        # trigger's pre-commit clock -> client (adds the commit's WAL flush).
        latencies = [(seen - committed[n]) * 1000 for n, _, seen in probed if n in committed]
        from_trigger = [(seen - stamped) * 1000 for _, stamped, seen in probed]
        complete = sum(count == written for count in counts)
        # Is the tail a few slow events (a pause) or every event a bit slow (throughput)?
        worst_by_event: dict[int, float] = {}
        for n, _, seen in probed:
            if n in committed:
                worst_by_event[n] = max(worst_by_event.get(n, 0.0), (seen - committed[n]) * 1000)
        result.update({
            "events_written": written,
            "clients_with_every_event": complete,
            "received_min": min(counts, default=0),
            "received_max": max(counts, default=0),
            "lagging_cut": cut,
            "resets_seen": sum(part["resets"] for part in parts),
            "slowest_events_ms": sorted((round(v, 1) for v in worst_by_event.values()),
                                        reverse=True)[:5],
            "server_gc_pauses_over_50ms_under_load": gc_long,
            "clients_open_after_load": still_open,
            "latency_ms": {"samples": len(latencies), "p50": percentile(latencies, 0.5),
                           "p90": percentile(latencies, 0.9),
                           "p99": percentile(latencies, 0.99),
                           "max": round(max(latencies), 2) if latencies else None,
                           "mean": round(statistics.fmean(latencies), 2) if latencies else None},
            "latency_from_trigger_clock_ms": {"p50": percentile(from_trigger, 0.5),
                                              "p99": percentile(from_trigger, 0.99)},
            "server_rss_mb": {"before_clients": round(rss_before / 2**20, 1),
                              "clients_idle": round(rss_idle / 2**20, 1),
                              "peak_under_load": round(peak[0] / 2**20, 1)},
            "server_rss_per_client_kb": round((rss_idle - rss_before) / max(1, connected) / 1024,
                                              1),
            "server_rss_per_client_under_load_kb": round(
                (peak[0] - rss_before) / max(1, connected) / 1024, 1),
            "server_cpu_pct_of_one_core": round(100 * cpu_writing / writing_s, 1),
            "server_cpu_pct_incl_settle": round(100 * cpu_server / load_s, 1),
            "load_average_1m_at_end": round(os.getloadavg()[0], 2),
            "client_cpu_s_total": round(sum(part["cpu_s"] for part in parts), 1),
        })
        for worker in workers:
            worker.join(30)
        return result
    finally:
        stop.set()
        for worker in workers:
            if worker.is_alive():
                worker.kill()
        if server.poll() is None:
            stop_server(server)
        drop_database(args.dsn)


def stop_server(server: subprocess.Popen[str]) -> float:
    """SIGTERM to its process group, and how long the graceful shutdown took."""
    begun = time.monotonic()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        server.wait()
    return round(time.monotonic() - begun, 2)


def summary(result: dict[str, Any]) -> str:
    latency = result.get("latency_ms", {})
    return (
        f"{result['clients']} clients @ {result['rate']}/s: connected {result.get('connected')}"
        f" (failed {result.get('connect_failed')}, {result.get('connect_s')} s); "
        f"every event to {result.get('clients_with_every_event')} clients "
        f"(min {result.get('received_min')}/{result.get('events_written')}); "
        f"cut {result.get('lagging_cut')}; latency p50 {latency.get('p50')} ms "
        f"p99 {latency.get('p99')} ms max {latency.get('max')} ms; "
        f"RSS/client {result.get('server_rss_per_client_kb')} KB idle, "
        f"{result.get('server_rss_per_client_under_load_kb')} KB peak; "
        f"server CPU {result.get('server_cpu_pct_of_one_core')}% of a core"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", default=os.environ.get(
        "BOOKWATCH_BENCH_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help=f"an admin connection; the scratch database {SCRATCH_DB} is created and dropped")
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=10.0, help="events per second")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of writing")
    parser.add_argument("--settle", type=float, default=5.0,
                        help="seconds to wait for delivery after the last write")
    parser.add_argument("--procs", type=int, default=2, help="client processes (1-2)")
    parser.add_argument("--client-buffer", type=int, default=1 << 20,
                        help="bookwatch serve's --client-buffer (bytes)")
    parser.add_argument("--workers", type=int, default=1, help="bookwatch serve's --workers")
    parser.add_argument("--server-cmd", default=None,
                        help="run this relay instead of bookwatch serve ({dsn}, {port})")
    parser.add_argument("--durable", action=argparse.BooleanOptionalAction, default=True,
                        help="install durable triggers (--no-durable: notify mode, which a "
                        "relay that reads NOTIFY payloads needs)")
    parser.add_argument("--max-clients", type=int, default=20000)
    parser.add_argument("--scoped-tokens", choices=("shared", "same-tenant", "own-tenant"),
                        default=None, help="clients present tokens (see above)")
    args = parser.parse_args()
    if not 1 <= args.clients <= args.max_clients or not 0 < args.duration <= 120:
        parser.error("--clients must be 1..--max-clients and --duration at most 120 s")
    if not 1 <= args.procs <= 4 or args.rate <= 0:
        parser.error("--procs must be 1..4 and --rate positive")
    # A stopped benchmark still stops its server and drops its database (the finally blocks).
    signal.signal(signal.SIGTERM, lambda _sig, _frame: sys.exit(143))
    result = run(args)
    print(summary(result), file=sys.stderr)
    print(json.dumps(result))
    if not result["latency_ms"]["samples"]:
        print("FAILED: no latency sample was collected (no probe read a change event)",
              file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
