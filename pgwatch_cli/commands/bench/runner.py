"""The coordinator: scratch schema, child processes, progress bar, and cleanup whatever happens
(errors, Ctrl-C): the scratch schema and every child process are gone when ``run`` returns."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue
import threading
import time
from collections.abc import Iterator
from multiprocessing.process import BaseProcess
from typing import Any

import psycopg
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from pgwatch_cli import console, db, lifecycle
from pgwatch_cli import scratch as scratch_schemas
from pgwatch_cli.capture import sqlfiles
from pgwatch_cli.capture.config import Mode
from pgwatch_cli.commands.bench import listeners, report, scratch, writer
from pgwatch_cli.commands.bench.links import FAILED, LISTENED, READY, WRITES, Links, failure_text
from pgwatch_cli.commands.bench.options import BenchOptions
from pgwatch_cli.errors import BenchmarkFailed

APPLICATION_NAME = "bookwatch bench"
_READY_TIMEOUT_S = 180.0
_FINISH_TIMEOUT_S = 900.0
_TICK_S = 0.1
_STOP_GRACE_S = 5.0


def run(dsn: str, options: BenchOptions, *, server: str) -> report.BenchReport:
    """One benchmark run, start to finish."""
    with db.connect(dsn, autocommit=True, application_name=APPLICATION_NAME) as conn:
        _check_connections(conn, options)
        made = scratch.new_scratch(conn)
        for orphan in scratch_schemas.remove_abandoned(conn):
            console.warn(f"removed {orphan.describe()}")
        try:
            mode, choice = scratch.create(conn, made, mode=options.mode)
            if choice is not None:
                console.note(choice)
            pad, payload_bytes = scratch.calibrate_pad(
                conn, made, options.payload_bytes, mode=mode, dsn=dsn, relay=options.relay
            )
            scratch.populate(conn, made, options.writers, pad)
            phases = _Phases(dsn, options, made, pad, conn, mode)
            phases.run()
        finally:
            with lifecycle.signals_deferred():
                _drop(dsn, made)
    return report.build(
        options,
        server=server,
        mode=mode.value,
        payload_bytes=payload_bytes,
        plain=phases.plain,
        triggered=phases.triggered,
        listened=phases.listened,
        peak_queue_usage=phases.peak_queue_usage,
    )


def _check_connections(conn: psycopg.Connection[Any], options: BenchOptions) -> None:
    """Refuse up front, with the numbers, when the server cannot take that many connections."""
    row = conn.execute(
        "SELECT current_setting('max_connections')::int,"
        " current_setting('superuser_reserved_connections')::int"
        "   + coalesce(current_setting('reserved_connections', true)::int, 0),"
        " (SELECT count(*) FROM pg_catalog.pg_stat_activity"
        "   WHERE backend_type = 'client backend')::int,"
        " (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user)"
    ).fetchone()
    assert row is not None
    limit, reserved, in_use, superuser = row
    available = limit - in_use - (0 if superuser else reserved)
    needed = options.listener_connections + 1 + options.writers  # + raw listener, writers
    if needed > available:
        raise BenchmarkFailed(
            f"{options.listeners} listener(s) and {options.writers} writer(s) need {needed} "
            f"connections, but the server has only {available} free "
            f"(max_connections = {limit}, {in_use} in use).",
            hint="Lower --listeners, or raise max_connections on the server "
            "(ALTER SYSTEM SET max_connections = ...; it takes a restart).",
        )


def _drop(dsn: str, made: scratch.Scratch) -> None:
    # A fresh connection: the coordinator's may be the reason the run failed.
    try:
        with db.connect(dsn, autocommit=True, application_name=APPLICATION_NAME) as conn:
            scratch.drop(conn, made)
    except Exception as exc:
        console.warn(
            f"could not remove the scratch schema {made.schema} ({failure_text(exc)}); "
            f"remove it with: DROP SCHEMA {made.schema} CASCADE"
        )


class _NoFailureReported(Exception):
    """No child said why it failed within the grace period."""


class _Phases:
    """Start the children, run the write phase without trigger, then with it, collect."""

    def __init__(
        self,
        dsn: str,
        options: BenchOptions,
        made: scratch.Scratch,
        pad: int,
        conn: psycopg.Connection[Any],
        mode: Mode,
    ) -> None:
        self.dsn, self.options, self.made, self.pad, self.conn = dsn, options, made, pad, conn
        self.mode = mode
        self.plain: list[writer.WritePhase] = []
        self.triggered: list[writer.WritePhase] = []
        self.listened: list[listeners.ListenResult] = []
        self.peak_queue_usage = 0.0
        self.children: list[BaseProcess] = []
        self._pending: list[tuple[Any, ...]] = []

    def run(self) -> None:
        opts = self.options
        ctx = multiprocessing.get_context("spawn")
        groups = opts.listener_processes
        self.links = Links.create(ctx, writers=opts.writers, listener_processes=groups + 1)
        try:
            # Children start with these signals blocked and set up their own handling first
            # (lifecycle.child_process_setup): a Ctrl-C while they boot reaches only us.
            with lifecycle.signals_blocked():
                self._start_children(ctx)
            with self._progress() as progress:
                self.progress = progress
                self._phase = "connect"
                self._expect(READY, groups + 1 + opts.writers, timeout=_READY_TIMEOUT_S)
                self._phase = "plain"
                self.plain = self._write_phase()
                self._phase = "triggered"
                self.triggered = self._write_phase()
                written = sum(p.written for p in self.triggered)
                self.links.target.value = written
                self.progress.update(self.received_task, total=written)
                self.listened = self._expect(LISTENED, groups + 1, timeout=_FINISH_TIMEOUT_S)
                self._tick(force=True)
        finally:
            with lifecycle.signals_deferred():
                self._stop_children()

    def _start_children(self, ctx: multiprocessing.context.SpawnContext) -> None:
        opts = self.options
        remaining = opts.listeners
        for slot in range(opts.listener_processes):
            streams = min(opts.streams_per_process, remaining)
            remaining -= streams
            job = listeners.ListenJob(
                self.dsn, self.made.channel, slot, streams, opts.drain_timeout, hub=opts.hub,
                parent_pid=os.getpid(), relay=opts.relay,
            )
            self._spawn(ctx, listeners.main, job, f"bench listeners {slot}")
        raw = listeners.ListenJob(
            self.dsn, self.made.channel, opts.listener_processes, 0, opts.drain_timeout,
            parent_pid=os.getpid(), from_log=self.mode is not Mode.NOTIFY,
        )
        self._spawn(ctx, listeners.main, raw, "bench raw listener")
        for index in range(opts.writers):
            job_w = writer.WriterJob(
                dsn=self.dsn, scratch=self.made, index=index, writers=opts.writers,
                quota=opts.quota(index), duration=opts.duration, rate=opts.writer_rate(),
                pad=self.pad, parent_pid=os.getpid(),
            )
            self._spawn(ctx, writer.main, job_w, f"bench writer {index}")

    def _spawn(self, ctx: multiprocessing.context.SpawnContext, target: Any, job: Any,
               name: str) -> None:
        child = ctx.Process(target=target, args=(job, self.links), name=name, daemon=True)
        child.start()
        self.children.append(child)

    def _write_phase(self) -> list[writer.WritePhase]:
        task = self.plain_task if self._phase == "plain" else self.triggered_task
        self.progress.start_task(task)
        if task == self.triggered_task:
            self.progress.start_task(self.received_task)
        try:
            self.links.start.wait(_READY_TIMEOUT_S)
        except threading.BrokenBarrierError:
            # A writer broke the barrier because it failed; its FAILED message says why.
            with contextlib.suppress(_NoFailureReported):
                self._expect(FAILED, 1, timeout=_STOP_GRACE_S)
            raise BenchmarkFailed("A writer stopped before the write phase began.") from None
        phases: list[writer.WritePhase] = self._expect(WRITES, self.options.writers, timeout=None)
        written = sum(p.written for p in phases)
        self.progress.update(task, total=written, completed=written)
        return phases

    # -- messages ----------------------------------------------------------------------------

    def _expect(self, kind: str, count: int, *, timeout: float | None) -> list[Any]:
        """``count`` messages of ``kind``; FAILED from any child, or a child that died,
        fails the run. Messages of other kinds are kept for later."""
        got = [m[1] for m in self._pending if m[0] == kind]
        self._pending = [m for m in self._pending if m[0] != kind]
        deadline = None if timeout is None else time.monotonic() + timeout
        while len(got) < count:
            self._tick()
            try:
                message = self.links.messages.get(timeout=_TICK_S)
            except queue.Empty:
                self._check_children()
                if deadline is not None and time.monotonic() > deadline:
                    if kind == FAILED:
                        raise _NoFailureReported() from None
                    raise BenchmarkFailed(
                        f"Timed out waiting for the benchmark's processes ({kind})."
                    ) from None
                continue
            if message[0] == FAILED:
                raise BenchmarkFailed(f"Benchmark {message[1]}")
            if message[0] == kind:
                got.append(message[1])
                if kind == READY:
                    self.progress.advance(self.connect_task)
            else:
                self._pending.append(message)
        return got

    def _check_children(self) -> None:
        for child in self.children:
            if child.exitcode not in (None, 0):
                raise BenchmarkFailed(f"Benchmark process '{child.name}' died "
                                      f"(exit code {child.exitcode}).")

    def _stop_children(self) -> None:
        self.links.stop.set()
        self.links.start.abort()
        deadline = time.monotonic() + _STOP_GRACE_S
        for child in self.children:
            child.join(max(0.0, deadline - time.monotonic()))
        for child in self.children:
            if child.is_alive():
                child.terminate()
                child.join(2.0)
            if child.is_alive():
                child.kill()
                child.join()
        self.links.messages.close()
        self.links.messages.cancel_join_thread()

    # -- progress ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _progress(self) -> Iterator[Progress]:
        total = self.options.events
        progress = Progress(
            TextColumn("{task.description:<34}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), console=console.stderr, transient=False,
            # Only where someone watches: a log or pipe gets no bars (nor their final frame).
            disable=not console.stderr.is_terminal,
        )
        self.connect_task = progress.add_task(
            "processes connected", total=self.options.listener_processes + 1 + self.options.writers
        )
        self.plain_task = progress.add_task("writes without trigger", total=total, start=False)
        self.triggered_task = progress.add_task("writes with trigger", total=total, start=False)
        self.received_task = progress.add_task(
            "received by the slowest listener", total=total, start=False
        )
        self._last_tick = 0.0
        with progress:
            yield progress

    def _tick(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_tick < _TICK_S:
            return
        self._last_tick = now
        written = sum(self.links.written[:])
        if self._phase == "plain":
            self.progress.update(self.plain_task, completed=written)
        elif self._phase == "triggered":
            self.progress.update(self.triggered_task, completed=written)
        if self._phase == "triggered" or self.links.target.value >= 0:
            self.progress.update(self.received_task, completed=min(self.links.received[:]))
            self._sample_queue()

    def _sample_queue(self) -> None:
        row = self.conn.execute(sqlfiles.query("notification_queue_usage")).fetchone()
        if row is not None:
            self.peak_queue_usage = max(self.peak_queue_usage, float(row[0]))
