"""What other roles of the database cannot do to capture (issue 17.3, 16.4): take over a
built-in the capture functions call by planting a better match in a writable schema, or stall
every writer's commit by holding the commit-order lock."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.capture_helpers import Listener, install, log_payloads
from tests.fix_roles import RoleMaker, connect_as

PLANTS = (
    # Exact matches for calls capture() makes with text arguments: they beat the built-ins'
    # polymorphic or variadic signatures wherever the writer's search_path reaches them.
    "CREATE FUNCTION public.to_json(text) RETURNS json LANGUAGE sql"
    " AS $$ SELECT '\"planted\"'::json $$",
    "CREATE FUNCTION public.to_jsonb(text) RETURNS jsonb LANGUAGE sql"
    " AS $$ SELECT '\"planted\"'::jsonb $$",
    "CREATE FUNCTION public.concat_ws(text, text, text) RETURNS text LANGUAGE sql"
    " AS $$ SELECT 'planted' $$",
    "CREATE FUNCTION public.nullif(text, text) RETURNS text LANGUAGE sql"
    " AS $$ SELECT 'planted' $$",
    "CREATE FUNCTION public.current_setting(text, boolean) RETURNS text LANGUAGE sql"
    " AS $$ SELECT 'planted' $$",
    "CREATE FUNCTION public.planted_cat(text, bigint) RETURNS text LANGUAGE sql"
    " AS $$ SELECT 'planted' $$",
    "CREATE OPERATOR public.|| (LEFTARG = text, RIGHTARG = bigint, FUNCTION = public.planted_cat)",
)


@pytest.fixture
def owner(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        yield conn


@pytest.mark.parametrize("mode", ["log", "notify"])
def test_functions_planted_in_a_writable_public_change_nothing(
    dsn: str, owner: psycopg.Connection[Any], make_role: RoleMaker, mode: str
) -> None:
    owner.execute("CREATE TABLE guests (id int PRIMARY KEY, name text)")
    install(dsn, "guests", mode=mode)
    # PostgreSQL <= 14's default, which many databases keep after an upgrade.
    owner.execute("GRANT CREATE ON SCHEMA public TO PUBLIC")
    planter = make_role()
    writer = make_role("GRANT SELECT, INSERT, UPDATE ON guests TO {role}")
    with connect_as(dsn, planter) as conn:
        for statement in PLANTS:
            conn.execute(statement)
        conn.execute("GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA public TO PUBLIC")
    listener = Listener(dsn)
    with connect_as(dsn, writer) as conn:
        conn.execute("SET search_path = public, pg_catalog")  # the planted ones come first
        conn.execute("INSERT INTO guests VALUES (1, 'Anna')")
        conn.execute("UPDATE guests SET name = 'Ben' WHERE id = 1")
    events = log_payloads(owner) if mode == "log" else listener.events(2)
    assert "planted" not in repr(events)
    assert [(e["action"], e["table"], e["pk"], e["actor"]) for e in events] == [
        ("INSERT", "guests", {"id": 1}, writer), ("UPDATE", "guests", {"id": 1}, writer)]
    assert events[1]["diff"] == {"name": ["Anna", "Ben"]}


def test_a_login_role_cannot_stall_log_writers_with_the_commit_order_lock(
    dsn: str, owner: psycopg.Connection[Any], make_role: RoleMaker
) -> None:
    owner.execute("CREATE TABLE guests (id int PRIMARY KEY, name text)")
    install(dsn, "guests", mode="log")
    nobody = make_role()  # LOGIN and nothing else
    with connect_as(dsn, nobody) as staller:
        staller.autocommit = False
        # The key v0.2's log-mode writers waited on, held as long as the attacker likes.
        staller.execute("SELECT pg_advisory_xact_lock(7236284523806213748)")
        for attempt in ("SELECT bookwatch.commit_order_lock()",
                        "SELECT FROM bookwatch.meta WHERE key = 'log_id' FOR UPDATE"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                staller.execute(attempt)
            staller.rollback()
            staller.execute("SELECT pg_advisory_xact_lock(7236284523806213748)")
        started = time.monotonic()
        with psycopg.connect(dsn, autocommit=True) as writer:
            writer.execute("SET lock_timeout = '5s'")
            writer.execute("INSERT INTO guests VALUES (1, 'Anna')")
        assert time.monotonic() - started < 5
    assert [e["action"] for e in log_payloads(owner)] == ["INSERT"]


def test_log_writers_still_commit_in_seq_order(
    dsn: str, owner: psycopg.Connection[Any]
) -> None:
    """The owner's lock still orders appends: a writer whose commit waits behind another
    transaction holding it draws the larger seq."""
    owner.execute("CREATE TABLE guests (id int PRIMARY KEY, name text)")
    install(dsn, "guests", mode="log")
    with psycopg.connect(dsn) as holder:
        holder.execute("SELECT bookwatch.commit_order_lock()")  # as the relay does
        done = threading.Event()

        def write() -> None:
            with psycopg.connect(dsn, autocommit=True) as writer:
                writer.execute("INSERT INTO guests VALUES (1, 'Anna')")
            done.set()

        thread = threading.Thread(target=write)
        thread.start()
        assert not done.wait(1.0), "the writer committed while the lock was held"
        holder.execute("INSERT INTO bookwatch.change_log (seq, channel, payload) VALUES"
                       " (nextval('bookwatch.change_seq'), 'x', '{}')")
        holder.commit()
        thread.join(30)
    seqs = owner.execute("SELECT channel, seq FROM bookwatch.change_log ORDER BY seq").fetchall()
    assert [channel for channel, _ in seqs] == ["x", "booking_changes"]
