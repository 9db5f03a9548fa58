"""A forged ``seq`` (issue 17.2): the row's seq column is the only seq anyone trusts. The append
refuses a body that sets seq (or v, table, schema), and every reader of the log (``tail``,
serve's replay) numbers an event by its row, whatever its payload says."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from tests.fix_cli import Invoke
from tests.serve_helpers import SseReader, running_server
from tests.stream_helpers import make_items, write_items

FORGED_SEQ = 9_000_000_000_000_000
# What an attacker's trigger appends after bookwatch's head: a valid event ending in a second,
# later "seq" member, which JSON readers resolve to the last one.
FORGED_BODY = (
    ',"action":"INSERT","id":77,"pk":{"id":77},"actor":"mallory","changed":null,"diff":null,'
    '"truncated":false,"txid":1,"timestamp":"2026-01-01T00:00:00+00:00","seq":'
    + str(FORGED_SEQ) + "}"
)


@pytest.fixture
def attacker(dsn: str) -> Iterator[str]:
    """The README's residual risk: a LOGIN role that may create a table and a trigger of its own
    (CREATE on schema public), nothing on bookwatch. Cluster-wide, so dropped afterwards."""
    name = f"bw_forger_{os.getpid()}"
    with psycopg.connect(dsn, autocommit=True) as owner:
        owner.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
        owner.execute(sql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(sql.Identifier(name)))
    try:
        yield name
    finally:
        with psycopg.connect(dsn, autocommit=True) as owner:
            owner.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
            owner.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def logged(dsn: str) -> list[tuple[int, str]]:
    with psycopg.connect(dsn) as conn:
        return [(int(seq), str(payload)) for seq, payload in conn.execute(
            "SELECT seq, payload FROM bookwatch.change_log ORDER BY seq").fetchall()]


def plant_forged_row(dsn: str) -> int:
    """A log row whose payload claims another seq (as an older install let a trigger write it)."""
    with psycopg.connect(dsn, autocommit=True) as owner:
        row = owner.execute(
            "WITH s AS (SELECT nextval('bookwatch.change_seq') AS seq)"
            " INSERT INTO bookwatch.change_log (seq, channel, payload)"
            " SELECT seq, 'booking_changes', '{\"v\":1,\"seq\":' || seq"
            " || ',\"table\":\"items\",\"schema\":\"public\"' || %s FROM s RETURNING seq",
            (FORGED_BODY,),
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_the_append_refuses_a_body_that_sets_seq(dsn: str, attacker: str) -> None:
    make_items(dsn)
    attack = psycopg.conninfo.make_conninfo(dsn, user=attacker)
    with psycopg.connect(attack, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.decoy (id int PRIMARY KEY)")
        conn.execute(
            "CREATE FUNCTION public.forge() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            " PERFORM bookwatch.append_log(TG_RELID, 'booking_changes', TG_ARGV[0]);"
            " RETURN NULL; END $$"
        )
        for body in (FORGED_BODY, FORGED_BODY.replace('"seq"', '"table":"bookings","x"'),
                     ',"action":"INSERT"} trailing', ',"v":2}'):
            conn.execute(sql.SQL(
                "CREATE OR REPLACE TRIGGER forge AFTER INSERT ON public.decoy FOR EACH ROW"
                " EXECUTE FUNCTION public.forge({})").format(sql.Literal(body)))
            with pytest.raises(psycopg.Error):
                conn.execute("INSERT INTO public.decoy VALUES (1)")
    write_items(dsn, range(1, 3))
    assert [json.loads(payload)["id"] for _, payload in logged(dsn)] == [1, 2]  # only real ones
    assert all(str(FORGED_SEQ) not in payload for _, payload in logged(dsn))


def test_tail_numbers_events_by_their_row(bookwatch: Invoke, dsn: str) -> None:
    make_items(dsn)
    write_items(dsn, range(1, 2))
    forged = plant_forged_row(dsn)
    write_items(dsn, range(2, 4))
    result = bookwatch("tail", "--dsn", dsn, "--since", "0", "--count", "4", "--timeout", "30",
                       "--json")
    assert result.exit_code == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert [event["seq"] for event in events] == [1, forged, 3, 4]  # nothing lost after it
    assert [event["id"] for event in events] == [1, 77, 2, 3]
    assert str(FORGED_SEQ) not in result.stdout


def test_serve_replay_numbers_events_by_their_row(dsn: str) -> None:
    make_items(dsn)
    write_items(dsn, range(1, 2))
    forged = plant_forged_row(dsn)
    write_items(dsn, range(2, 4))
    with running_server(dsn) as server, \
            SseReader(server.url, headers={"Last-Event-ID": "1"}) as reader:
        replayed = [json.loads(reader.next().data) for _ in range(3)]
        assert [event["seq"] for event in replayed] == [forged, 3, 4]
        write_items(dsn, range(4, 5))  # live after the replay: not skipped as "already seen"
        live = json.loads(reader.next(timeout=30).data)
        assert (live["seq"], live["id"]) == (5, 4)
