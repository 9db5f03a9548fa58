"""``serve --bus redis://``: replicas fed through a Redis Stream, the log read once per batch.

Real PostgreSQL and the real Redis on 127.0.0.1:6379 (each test its own key prefix, deleted
afterwards); skipped, with the reason, when Redis does not answer or redis-py is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from typer.testing import CliRunner

from pgwatch_cli.bus import url as bus_url
from pgwatch_cli.cli import app
from pgwatch_cli.stream.events import ChangeEvent
from tests.serve_helpers import (
    ServeProcess,
    SseReader,
    bump_price,
    newest_seq,
    running_server,
)

REDIS_URL = os.environ.get("BOOKWATCH_TEST_REDIS", "redis://127.0.0.1:6379/0")
TAKEOVER_S = 10.0  # SPEC: a publisher's successor within 10 s


def _redis_problem() -> str | None:
    try:
        import redis
    except ImportError:
        return "redis-py is not installed (pip install 'bookwatch[redis]')"
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except redis.exceptions.RedisError as exc:
        return f"no Redis at {REDIS_URL} ({exc})"
    return None


def needs_redis() -> None:
    problem = _redis_problem()
    if problem is not None:
        pytest.skip(problem)


@pytest.fixture
def bus() -> Iterator[bus_url.RedisBus]:
    """A Redis bus with a key prefix of its own, its keys deleted afterwards."""
    needs_redis()
    import redis

    prefix = f"bwtest-{uuid.uuid4().hex[:10]}"
    parsed = bus_url.parse(f"{REDIS_URL}?prefix={prefix}")
    assert parsed is not None
    yield parsed
    with contextlib.suppress(redis.exceptions.RedisError):
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
        keys = list(client.scan_iter(match=f"{prefix}:*"))
        if keys:
            client.delete(*keys)


def health(url: str) -> dict[str, Any]:
    result: dict[str, Any] = httpx.get(url + "/healthz", timeout=10).json()
    return result


def eventually(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.1)


def seqs_of(reader: SseReader, count: int, timeout: float = 20.0) -> list[int]:
    # serve's event ids are LOG:SEQ (the change log's tag, then the seq).
    return [int(reader.next("change", timeout=timeout).id.rpartition(":")[2])
            for _ in range(count)]


def nothing_more(reader: SseReader, within: float = 1.5) -> bool:
    try:
        reader.next("change", timeout=within)
    except AssertionError:
        return True
    return False


def listeners(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND application_name = 'bookwatch listener'"
    ).fetchone()
    assert row is not None
    return int(row[0])


# -- the option ------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [
    "http://127.0.0.1:6379/0", "redis://", "redis://127.0.0.1:6379/99",
    "redis://127.0.0.1:notaport/0", "redis://127.0.0.1/0?prefix=a%20b", "redis://h/0?x=1",
    "mysql",
])
def test_a_bad_bus_is_refused_with_exit_2_and_one_line(value: str) -> None:
    result = CliRunner().invoke(app, ["serve", "--bus", value, "--dsn", "host=/nonexistent"])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("Error: --bus"), result.stderr


def test_a_password_in_a_bad_bus_url_is_not_printed() -> None:
    result = CliRunner().invoke(app, ["serve", "--bus", "http://u:s3cret@h:1/0"])
    assert result.exit_code == 2
    assert "s3cret" not in result.stderr


def test_without_the_redis_extra_bus_redis_is_exit_2_naming_it(tmp_path: Path) -> None:
    # The interpreter starts with redis unimportable, as on a machine without the extra.
    (tmp_path / "sitecustomize.py").write_text(textwrap.dedent("""
        import sys
        class _NoRedis:
            def find_spec(self, name, path=None, target=None):
                if name == "redis" or name.startswith("redis."):
                    raise ModuleNotFoundError("No module named " + repr(name), name=name)
                return None
        sys.meta_path.insert(0, _NoRedis())
    """))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(tmp_path), str(Path(__file__).parent.parent), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, "-m", "pgwatch_cli", "serve", "--bus", "redis://127.0.0.1:6379/0",
         "--dsn", "host=/nonexistent"],
        capture_output=True, text=True, env=env, timeout=60,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("Error: --bus redis:// needs the redis extra"), result.stderr
    assert "bookwatch[redis]" in result.stderr


# -- events ----------------------------------------------------------------------------------


def test_two_replicas_get_every_event_once_and_hold_one_listen_between_them(
    demo_dsn: str, bus: bus_url.RedisBus
) -> None:
    with psycopg.connect(demo_dsn, autocommit=True) as conn, \
            running_server(demo_dsn, bus=bus) as a, running_server(demo_dsn, bus=bus) as b, \
            SseReader(a.url) as on_a, SseReader(b.url) as on_b:
        eventually(lambda: health(a.url).get("bus_lag") is not None, 15, "a publisher")
        written = [bump_price(conn, 1 + n % 5) for n in range(30)]
        assert seqs_of(on_a, 30) == written
        assert seqs_of(on_b, 30) == written
        assert nothing_more(on_a) and nothing_more(on_b, 0.2)
        # One of the two publishes (its ChangeStream is the one LISTEN); the other only reads
        # Redis.
        assert listeners(conn) == 1
        states = [health(a.url), health(b.url)]
        assert {state["bus"] for state in states} == {bus.shown}
        assert all(state["bus_source"] == "redis" and state["status"] == "ok"
                   for state in states)
        assert sorted(state["bus_publishing_here"] for state in states) == [False, True]
        metrics = httpx.get(a.url + "/metrics", timeout=10).text
        assert "bookwatch_bus_lag_events " in metrics
        assert "bookwatch_bus_fallback 0" in metrics


def test_a_replica_restart_resumes_every_event_once(
    demo_dsn: str, bus: bus_url.RedisBus
) -> None:
    with psycopg.connect(demo_dsn, autocommit=True) as conn, \
            running_server(demo_dsn, bus=bus) as a:
        with running_server(demo_dsn, bus=bus) as b, SseReader(b.url) as reader:
            eventually(lambda: health(a.url).get("bus_lag") is not None, 15, "a publisher")
            first = [bump_price(conn, 2) for _ in range(5)]
            assert seqs_of(reader, 5) == first
        missed = [bump_price(conn, 3) for _ in range(7)]  # while the replica is down
        with running_server(demo_dsn, bus=bus) as b2, \
                SseReader(b2.url, headers={"Last-Event-ID": str(first[-1])}) as resumed:
            assert seqs_of(resumed, 7) == missed
            later = [bump_price(conn, 4) for _ in range(5)]
            assert seqs_of(resumed, 5) == later
            assert nothing_more(resumed)


def test_a_publisher_killed_with_9_is_replaced_and_no_event_is_lost_or_doubled(
    demo_dsn: str, bus: bus_url.RedisBus
) -> None:
    publisher = ServeProcess("--bus", f"{REDIS_URL}?prefix={bus.prefix}", "--dsn", demo_dsn)
    try:
        eventually(lambda: health(publisher.url).get("bus_publishing_here"), 15,
                   "the first replica publishes")
        replica = ServeProcess("--bus", f"{REDIS_URL}?prefix={bus.prefix}", "--dsn", demo_dsn)
        try:
            with psycopg.connect(demo_dsn, autocommit=True) as conn, \
                    SseReader(replica.url) as reader:
                before = [bump_price(conn, 1) for _ in range(5)]
                assert seqs_of(reader, 5) == before
                publisher.kill()
                killed_at = time.monotonic()
                during = [bump_price(conn, 2) for _ in range(10)]
                assert seqs_of(reader, 10, timeout=TAKEOVER_S + 10) == during
                assert time.monotonic() - killed_at < TAKEOVER_S + 5
                assert health(replica.url)["bus_publishing_here"] is True
                after = [bump_price(conn, 3) for _ in range(5)]
                assert seqs_of(reader, 5) == after
                assert nothing_more(reader)
                assert health(replica.url)["status"] == "ok"
        finally:
            replica.kill()
    finally:
        publisher.kill()


def test_a_cursor_older_than_the_trimmed_stream_replays_from_the_log(
    demo_dsn: str, bus: bus_url.RedisBus
) -> None:
    import redis

    from pgwatch_cli.bus.subscriber import BusStream

    async def scenario() -> tuple[list[int], list[int], int]:
        with psycopg.connect(demo_dsn, autocommit=True) as conn:
            async with BusStream(bus, demo_dsn, publish=True) as publisher, \
                    BusStream(bus, demo_dsn, publish=False) as behind:
                items = behind.items()
                first = await asyncio.to_thread(bump_price, conn, 1)
                event = await asyncio.wait_for(anext(items), 20)
                assert isinstance(event, ChangeEvent) and event.seq == first
                # The replica stops reading; the stream moves on and is trimmed past it.
                written = []
                for n in range(20):
                    written.append(await asyncio.to_thread(bump_price, conn, 1 + n % 5))
                assert publisher.keys is not None
                key = publisher.keys.stream(publisher.channel)
                direct = redis.Redis.from_url(REDIS_URL)
                await asyncio.to_thread(
                    eventually, lambda: _top_seq(direct, key) == written[-1], 20, "published")
                direct.xtrim(key, maxlen=1, approximate=False)
                assert direct.xlen(key) == 1
                got = []
                while len(got) < len(written):
                    item = await asyncio.wait_for(anext(items), 20)
                    assert isinstance(item, ChangeEvent)
                    got.append(item.seq)
                more = [await asyncio.to_thread(bump_price, conn, 2) for _ in range(3)]
                for _ in more:
                    item = await asyncio.wait_for(anext(items), 20)
                    assert isinstance(item, ChangeEvent)
                    got.append(item.seq)
                return written + more, got, behind.bus_stats.catch_ups

    written, got, catch_ups = asyncio.run(scenario())
    assert got == written
    assert catch_ups >= 1


def test_publishing_does_not_wait_for_a_slow_lease_renewal(
    demo_dsn: str, bus: bus_url.RedisBus
) -> None:
    """A renewal that PostgreSQL holds up (here: a lock on the lease row) must not hold up
    the batches read meanwhile; a lease taken by another holder stops the publishing."""
    from pgwatch_cli.bus.lease import RENEW_S
    from pgwatch_cli.bus.subscriber import BusStream

    async def scenario() -> None:
        with psycopg.connect(demo_dsn, autocommit=True) as conn, \
                psycopg.connect(demo_dsn) as locker:
            async with BusStream(bus, demo_dsn, publish=True) as stream:
                items = stream.items()
                first = await asyncio.to_thread(bump_price, conn, 1)
                event = await asyncio.wait_for(anext(items), 20)
                assert isinstance(event, ChangeEvent) and event.seq == first
                publisher = stream.publisher
                assert publisher is not None and publisher.leading
                name = f"{bus.prefix}:{stream.channel}"
                locker.execute("SELECT 1 FROM bookwatch.bus_lease WHERE name = %s FOR UPDATE",
                               (name,))
                await asyncio.sleep(RENEW_S + 0.5)  # a renewal is waiting for the lock now
                second = await asyncio.to_thread(bump_price, conn, 2)
                event = await asyncio.wait_for(anext(items), 3.0)
                assert isinstance(event, ChangeEvent) and event.seq == second
                await asyncio.to_thread(locker.rollback)
                # Another holder takes the lease: this publisher notices at its next renewal.
                await asyncio.to_thread(
                    conn.execute, "UPDATE bookwatch.bus_lease SET holder = 'another',"
                    " expires_at = now() + interval '1 hour' WHERE name = %s", (name,))
                deadline = time.monotonic() + 2 * RENEW_S + 10
                while publisher.leading and time.monotonic() < deadline:
                    await asyncio.sleep(0.1)
                assert not publisher.leading

    asyncio.run(scenario())


def _top_seq(client: Any, key: str) -> int | None:
    top = client.xrevrange(key, count=1)
    return int(top[0][0].decode().partition("-")[0]) if top else None


def _restart_redis() -> None:
    subprocess.run(["redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "-::1",
                    "--port", "6379", "--save", "", "--appendonly", "no",
                    "--dir", "/var/lib/redis", "--logfile", "/var/log/redis/ci.log"],
                   check=True, timeout=30)


@pytest.mark.slow
def test_a_redis_restart_falls_back_to_the_log_once_and_returns(
    demo_dsn: str, bus: bus_url.RedisBus
) -> None:
    if not REDIS_URL.startswith("redis://127.0.0.1:6379"):
        pytest.skip("restarts only the local Redis")
    replica = ServeProcess("--bus", f"{REDIS_URL}?prefix={bus.prefix}", "--dsn", demo_dsn)
    try:
        eventually(lambda: health(replica.url).get("bus_publishing_here"), 15, "publishing")
        with psycopg.connect(demo_dsn, autocommit=True) as conn, \
                SseReader(replica.url) as reader:
            before = [bump_price(conn, 1) for _ in range(3)]
            assert seqs_of(reader, 3) == before
            try:
                subprocess.run(["redis-cli", "shutdown", "nosave"], timeout=30)
                during = [bump_price(conn, 2) for _ in range(6)]
                assert seqs_of(reader, 6) == during
                state = health(replica.url)
                assert state["bus_fallback"] is True and state["status"] == "ok"
            finally:
                _restart_redis()
            eventually(lambda: health(replica.url)["bus_source"] == "redis", 20, "back on Redis")
            after = [bump_price(conn, 3) for _ in range(6)]
            assert seqs_of(reader, 6) == after
            assert nothing_more(reader)
            assert newest_seq(conn) == after[-1]
        said = "".join(replica.stderr)
        assert said.count("Redis at") == 2, said  # once unreachable, once back
        assert said.count("is unreachable") == 1 and said.count("is back;") == 1, said
    finally:
        replica.stop(signal.SIGTERM, 10) if replica.process.poll() is None else None
        replica.kill()


def test_healthz_of_a_server_without_a_bus_names_postgres(demo_dsn: str) -> None:
    with running_server(demo_dsn) as server:
        assert health(server.url)["bus"] == "postgres"
        assert json.loads(json.dumps(health(server.url)))["status"] == "ok"


def test_without_any_publisher_replicas_read_the_log_and_say_so(
    demo_dsn: str, bus: bus_url.RedisBus
) -> None:
    from pgwatch_cli.bus.subscriber import CHECK_S, BusStream

    said: list[str] = []

    async def scenario() -> list[int | None]:
        with psycopg.connect(demo_dsn, autocommit=True) as conn:
            # No process may publish (say, the role cannot write bookwatch.bus_lease).
            async with BusStream(bus, demo_dsn, publish=False, notice=said.append,
                                 publisher_grace_s=1.0) as alone:
                items = alone.items()
                written = [await asyncio.to_thread(bump_price, conn, 1) for _ in range(3)]
                got = []
                for _ in written:
                    item = await asyncio.wait_for(anext(items), 1.0 + 2 * CHECK_S + 10)
                    assert isinstance(item, ChangeEvent)
                    got.append(item.seq)
                assert got == written
                return got

    asyncio.run(scenario())
    assert [line for line in said if "no bus publisher" in line] == [
        "no bus publisher for this database; reading the change log every 2 s until one "
        "publishes"]


def test_wal_mode_through_the_bus_and_a_recreated_log(
    logical_db: str, bus: bus_url.RedisBus
) -> None:
    """The publisher's ChangeStream relays the WAL; a recreated log reaches replicas as
    LogReplaced followed by the new log's events from its start."""
    from pgwatch_cli.bus.subscriber import BusStream
    from pgwatch_cli.stream.events import LogReplaced
    from tests.relay_helpers import create_log, install_wal, write

    install_wal(logical_db)

    async def take(items: Any, count: int) -> list[Any]:
        got: list[Any] = []
        while len([item for item in got if isinstance(item, ChangeEvent)]) < count:
            got.append(await asyncio.wait_for(anext(items), 30))
        return got

    async def scenario() -> tuple[list[Any], str]:
        async with BusStream(bus, logical_db, publish=True) as publisher, \
                BusStream(bus, logical_db, publish=False) as replica:
            items = replica.items()
            await asyncio.to_thread(write, logical_db, range(3))
            got = await take(items, 3)
            assert publisher.publisher is not None and publisher.publisher.leading
            new_log = await asyncio.to_thread(create_log, logical_db)
            await asyncio.to_thread(write, logical_db, [10, 11])
            got += await take(items, 2)
            return got, new_log

    got, new_log = asyncio.run(scenario())
    events = [(item.id, item.seq) for item in got if isinstance(item, ChangeEvent)]
    assert events[:3] == [(0, 1), (1, 2), (2, 3)]
    replaced = [item for item in got if isinstance(item, LogReplaced)]
    assert len(replaced) == 1 and replaced[0].new_log_id == new_log
    assert events[3:] == [(10, 1), (11, 2)]
