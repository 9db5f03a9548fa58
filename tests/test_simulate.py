"""``bookwatch simulate``: the seed's story ends in a conflict only without realtime, the storm
shows fewer conflicts with it, and nothing of the user's database changes (also on Ctrl-C)."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgwatch_cli.capture.tables import TableRef
from pgwatch_cli.commands.simulate import bookings
from pgwatch_cli.commands.simulate.bookings import Copy, Ledger, MissingBooking
from pgwatch_cli.commands.simulate.report import percentiles
from pgwatch_cli.commands.simulate.seed import toast_text
from pgwatch_cli.commands.simulate.strategies import Strategy, clashes, concerns, react, rebase
from pgwatch_cli.stream import events
from tests.fix_cli import Invoke, embedded_env, run_bookwatch, spawn_bookwatch
from tests.serve_helpers import install_demo

pytestmark = pytest.mark.timeout(120)

STRATEGIES = ("baseline", "refresh", "merge")
SMALL_STORM = ("--scenario", "storm", "--users", "4", "--rounds", "6", "--bookings", "2",
               "--think-ms", "150", "--random-seed", "11")


def simulate_json(bookwatch: Invoke, dsn: str, *args: str) -> dict[str, Any]:
    result = bookwatch("simulate", "--dsn", dsn, "--json", *args)
    assert result.exit_code == 0, result.stderr
    assert "Traceback" not in result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    assert all(isinstance(report[name], dict) for name in STRATEGIES)
    return report


def leftovers(conn: psycopg.Connection[Any]) -> list[str]:
    rows = conn.execute(
        "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'bookwatch%' ORDER BY 1"
    ).fetchall()
    return [row[0] for row in rows]


def catalog(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """Everything of the user's database that a simulation could conceivably touch."""
    user_schemas = ("n.nspname NOT IN ('pg_catalog', 'information_schema')"
                    " AND n.nspname NOT LIKE 'pg\\_t%%'")
    snapshot: dict[str, Any] = {
        "schemas": conn.execute("SELECT nspname::text FROM pg_namespace ORDER BY 1").fetchall(),
        "relations": conn.execute(
            "SELECT n.nspname::text, c.relname::text, c.relkind::text FROM pg_class c"
            f" JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {user_schemas} ORDER BY 1, 2"
        ).fetchall(),
        "triggers": conn.execute(
            "SELECT tgrelid::regclass::text, tgname::text, tgenabled::text,"
            " encode(tgargs, 'hex') FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1, 2"
        ).fetchall(),
        "functions": conn.execute(
            "SELECT n.nspname::text, p.proname::text, md5(p.prosrc) FROM pg_proc p"
            f" JOIN pg_namespace n ON n.oid = p.pronamespace WHERE {user_schemas} ORDER BY 1, 2"
        ).fetchall(),
    }
    if ("bookwatch",) in snapshot["schemas"]:
        snapshot["change_log"] = conn.execute(
            "SELECT channel, count(*), max(seq) FROM bookwatch.change_log GROUP BY 1 ORDER BY 1"
        ).fetchall()
    if ("public", "bookings", "r") in snapshot["relations"]:
        snapshot["bookings"] = conn.execute(
            "SELECT md5(string_agg(b::text, ',' ORDER BY b.id)) FROM public.bookings b"
        ).fetchone()
    return snapshot


# -- the scenarios -----------------------------------------------------------------------------


def test_seed_scenario_conflicts_only_in_baseline_and_is_reproducible(
    bookwatch: Invoke, dsn: str
) -> None:
    first = simulate_json(bookwatch, dsn, "--random-seed", "5")
    again = simulate_json(bookwatch, dsn, "--seed", "5")  # the old name still works

    baseline, refresh, merge = (first[name] for name in STRATEGIES)
    assert first["scenario"] == "seed" and first["booking"] == 123
    assert (baseline["conflicts"], baseline["saves"], baseline["ben_saved"]) == (1, 1, False)
    assert [first[name]["lost_updates"] for name in STRATEGIES] == [0, 0, 0]
    assert not baseline["both_changes_kept"] and baseline["notified_after_ms"] is None
    assert any("modified by another user" in step["what"] for step in baseline["timeline"])
    for block, reaction in ((refresh, "reloaded"), (merge, "rebased")):
        assert (block["conflicts"], block["saves"], block["ben_saved"]) == (0, 2, True)
        assert block["both_changes_kept"] and block["reaction"] == reaction
        # Ben saves 600 ms after Anna; the event must have come before that.
        assert 0 <= block["notified_after_ms"] < 600
        assert re.fullmatch(r"Anna updated this booking \(\d+ ms ago\)", block["toast"])
        assert any(block["toast"] in step["what"] for step in block["timeline"])
    assert first["latency_ms"]["count"] == 2

    assert again["edits"] == first["edits"]
    assert [again[name]["conflicts"] for name in STRATEGIES] == [1, 0, 0]
    assert [step["what"] for step in again["baseline"]["timeline"]] == [
        step["what"] for step in baseline["timeline"]
    ]


def test_storm_has_fewer_conflicts_with_realtime(bookwatch: Invoke, dsn: str) -> None:
    report = simulate_json(bookwatch, dsn, *SMALL_STORM)

    assert (report["scenario"], report["users"], report["rounds"]) == ("storm", 4, 6)
    blocks = [report[name] for name in STRATEGIES]
    for block in blocks:
        assert block["attempts"] == 24
        assert block["saves"] + block["conflicts"] == 24
        assert block["conflicts"] == block["rejected_saves"] + block["clashes"]
        assert block["undelivered"] == 0
    baseline, refresh, merge = blocks
    # Nobody's save is silently replaced: clashes are asked about, stale saves rejected.
    assert [block["lost_updates"] for block in blocks] == [0, 0, 0], report
    assert baseline["clashes"] == 0
    assert baseline["conflicts"] > refresh["conflicts"], report
    assert baseline["conflicts"] > merge["conflicts"], report
    assert baseline["latency_ms"] is None and baseline["reloads"] == baseline["rebases"] == 0
    assert refresh["rebases"] == 0 and refresh["retried_saves"] == baseline["retried_saves"] == 0
    for block in (refresh, merge):
        latency = block["latency_ms"]
        # Every save reaches the three other users (a noisy shared machine: sanity only).
        assert latency["count"] == 3 * block["saves"]
        assert 0 <= latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"] < 5000
    assert report["latency_ms"]["count"] == refresh["latency_ms"]["count"] + merge[
        "latency_ms"]["count"]


def test_storm_tables_on_a_terminal_less_stdout(bookwatch: Invoke, dsn: str) -> None:
    result = bookwatch("simulate", "--dsn", dsn, "--scenario", "storm", "--users", "2",
                       "--rounds", "2", "--think-ms", "30", "--random-seed", "3")
    assert result.exit_code == 0, result.stderr
    words = " ".join(result.stdout.split())
    for text in ("Storm: 2 users x 2 rounds", "(--random-seed 3)", "Saves and conflicts",
                 "Notifications", "baseline", "refresh", "merge", "lost"):
        assert text in words
    assert "scratch schema bookwatch_sim_" in result.stderr


def test_piped_story_is_in_english_and_not_padded_wide(dsn: str) -> None:
    result = run_bookwatch("simulate", "--dsn", dsn, "--random-seed", "4",
                           env={"COLUMNS": None}, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    # Rich's width for a file (80 columns), not a canvas padded with spaces to 200.
    assert max(len(line) for line in lines) <= 80, max(lines, key=len)
    words = " ".join(result.stdout.split())
    assert "saves the price €" in words and "changes the guest " in words
    # Guests by name, columns by what they mean: no German column names in the prose.
    assert re.search(r"changes the guest [A-ZÄÖÜ][a-zäöüß]+ [A-ZÄÖÜ][a-zäöüß]+ → [A-Z]", words)
    for german in ("gesamtpreis", "guest_id", "anzahl_gaeste", "bemerkungen"):
        assert german not in result.stdout


def test_seed_and_random_seed_are_one_option(bookwatch: Invoke, dsn: str) -> None:
    both = bookwatch("simulate", "--dsn", dsn, "--random-seed", "3", "--seed", "4")
    assert both.exit_code == 2 and "--random-seed" in both.stderr
    help_text = bookwatch("simulate", "--help").stdout
    assert "--random-seed" in help_text
    assert "--seed " not in help_text and "--seed\n" not in help_text


@pytest.mark.parametrize("installed", [True, False], ids=["bookwatch-installed", "fresh-db"])
def test_users_tables_and_schemas_are_untouched(
    installed: bool, bookwatch: Invoke, dsn: str, postgresql: psycopg.Connection[Any]
) -> None:
    postgresql.autocommit = True
    if installed:  # the user's own demo tables, triggers and change log on the default channel
        assert bookwatch("init-demo", "--dsn", dsn).exit_code == 0
        postgresql.execute("UPDATE bookings SET bemerkungen = 'vorher' WHERE id = 123")
        postgresql.execute("LISTEN booking_changes")
    before = catalog(postgresql)

    args = ("--random-seed", "2") if installed else SMALL_STORM
    simulate_json(bookwatch, dsn, *args)

    assert catalog(postgresql) == before
    assert [n.payload for n in postgresql.notifies(timeout=0.5, stop_after=1)] == []
    assert leftovers(postgresql) == (["bookwatch"] if installed else [])


# -- failures and interruptions ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--scenario", "storm", "--users", "0"], "--users"),
        (["--scenario", "storm", "--rounds", "-1"], "--rounds"),
        (["--scenario", "chaos"], "--scenario"),
        (["--users", "3"], "--users"),  # storm-only option with the seed scenario
        (["--seed", "-4"], "--seed"),
        (["--random-seed", "-4"], "--random-seed"),
    ],
)
def test_bad_options_are_usage_errors(bookwatch: Invoke, args: list[str], named: str) -> None:
    result = bookwatch("simulate", "--dsn", "postgresql://nobody@127.0.0.1:1/none", *args)
    assert result.exit_code == 2, result.output
    assert named in result.stderr
    assert "Traceback" not in result.stderr


def _start_storm(dsn: str) -> subprocess.Popen[str]:
    return spawn_bookwatch(
        "simulate", "--dsn", dsn, "--scenario", "storm", "--users", "3", "--rounds", "500"
    )


def test_a_failing_run_reports_one_error_line_and_leaves_nothing(
    dsn: str, postgresql: psycopg.Connection[Any]
) -> None:
    postgresql.autocommit = True
    simulation = _start_storm(dsn)
    try:
        victim = _wait_for_users(postgresql, simulation)[0]
        postgresql.execute("SELECT pg_terminate_backend(%s)", (victim,))
        _, stderr = simulation.communicate(timeout=60)
    finally:
        simulation.kill()
    assert simulation.returncode == 1, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "terminating connection" in errors[0], stderr
    assert "Traceback" not in stderr
    assert leftovers(postgresql) == []


def test_ctrl_c_exits_130_and_leaves_nothing(
    dsn: str, postgresql: psycopg.Connection[Any]
) -> None:
    postgresql.autocommit = True
    assert leftovers(postgresql) == []
    simulation = _start_storm(dsn)
    try:
        _wait_for_users(postgresql, simulation)
        simulation.send_signal(signal.SIGINT)
        _, stderr = simulation.communicate(timeout=60)
    finally:
        simulation.kill()
    assert simulation.returncode == 130, stderr
    assert "Traceback" not in stderr
    # The change log was created by the simulation, so it went too.
    assert leftovers(postgresql) == []
    connected = postgresql.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'bookwatch%%'"
        " AND datname = %s", (postgresql.info.dbname,),
    ).fetchone()
    assert connected == (0,)


def _wait_for_users(
    conn: psycopg.Connection[Any], simulation: subprocess.Popen[str]
) -> list[int]:
    for _ in range(300):
        pids = [row[0] for row in conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name LIKE %s"
            " AND datname = %s ORDER BY application_name",
            ("bookwatch simulate user%", conn.info.dbname),
        )]
        if len(pids) == 3:
            time.sleep(0.5)  # well into the storm
            return pids
        assert simulation.poll() is None, simulation.communicate()
        time.sleep(0.1)
    raise AssertionError("the simulated users never connected")


def test_embedded_default_tells_the_story(embedded_home: Path) -> None:
    """No DSN anywhere: the embedded server is started and the seed story told on it."""
    env = {**embedded_env(embedded_home), "COLUMNS": "160"}
    result = run_bookwatch("simulate", "--random-seed", "1", env=env, timeout=180)
    assert result.returncode == 0, result.stderr
    assert "embedded PostgreSQL" in result.stderr
    assert "Traceback" not in result.stderr
    words = " ".join(result.stdout.split())  # table cells wrap at the console's width
    for text in ("baseline", "refresh", "merge", "Anna updated this booking",
                 "modified by another user", "Summary"):
        assert text in words


# -- the strategies' rules, without a database ---------------------------------------------------


def _update(changed: dict[str, tuple[Any, Any]], *, actor: str = "Anna", truncated: bool = False,
            booking: int = 123) -> events.ChangeEvent:
    return events.ChangeEvent.model_validate({
        "v": 1, "seq": 7, "table": "bookings", "schema": "s", "action": "UPDATE", "id": booking,
        "pk": {"id": booking}, "actor": actor, "changed": list(changed),
        "diff": None if truncated else {k: list(v) for k, v in changed.items()},
        "truncated": truncated, "txid": 1, "timestamp": "2026-11-28T06:41:00+00:00",
    })


def _copy(version: int = 1, **pending: Any) -> Copy:
    values = {"version": version, "gesamtpreis": 100, "guest_id": 5, "updated_at": "t0"}
    copy = Copy(123, values)
    for column, value in pending.items():
        copy.edit(column, value)
    return copy


ANNA_PRICE = {"gesamtpreis": (100, 120), "version": (1, 2), "updated_at": ("t0", "t1")}


def test_merge_rebases_other_columns_and_reports_a_clash_on_the_same_one() -> None:
    ben = _copy(guest_id=9)
    assert react(Strategy.MERGE, _update(ANNA_PRICE), ben).kind == "rebase"
    rebase(ben, _update(ANNA_PRICE))
    assert (ben.version, ben.values["gesamtpreis"], ben.pending) == (2, 120, {"guest_id": 9})

    clash = react(Strategy.MERGE, _update(ANNA_PRICE), _copy(gesamtpreis=130))
    assert (clash.kind, clash.changed) == ("clash", ("gesamtpreis",))
    # Without the diff there is nothing to rebase on: reload instead.
    assert react(Strategy.MERGE, _update(ANNA_PRICE, truncated=True), _copy(guest_id=9)).kind \
        == "reload"
    # The same value on both sides is no clash.
    assert react(Strategy.MERGE, _update(ANNA_PRICE), _copy(gesamtpreis=120)).kind == "rebase"


def test_refresh_detects_a_same_column_clash_like_merge() -> None:
    assert react(Strategy.REFRESH, _update(ANNA_PRICE), _copy(gesamtpreis=130)).kind == "clash"
    assert react(Strategy.REFRESH, _update(ANNA_PRICE), _copy(guest_id=9)).kind == "reload"
    # Without a diff, the reloaded row tells: Anna's price is there, Ben edits the price.
    ben = _copy(gesamtpreis=130)
    assert react(Strategy.REFRESH, _update(ANNA_PRICE, truncated=True), ben).kind == "reload"
    fresh = ben.reloaded(Copy(123, {**ben.values, "version": 2, "gesamtpreis": 120}))
    assert clashes(fresh, fresh.values) == ["gesamtpreis"]
    assert fresh.pending == {"gesamtpreis": 130}
    # A reload that shows only others' columns changed: no clash. JSON floats vs Decimal too.
    other = _copy(gesamtpreis=Decimal("130.10"))
    assert clashes(other, {"gesamtpreis": 100.0, "guest_id": 7}) == []
    assert clashes(other, {"gesamtpreis": 130.1}) == []


def test_the_ledger_counts_a_silent_overwrite_as_a_lost_update() -> None:
    ledger = Ledger()
    anna, ben = _copy(gesamtpreis=120), _copy(gesamtpreis=130)
    assert ledger.overwritten(anna, "Anna") == []
    ledger.record(anna, 2, "Anna")
    # Ben began from version 1 and never saw Anna's 120: writing 130 now loses it. This is
    # what the old refresh did (reload, keep the edit, save) and counted as a success.
    ben.values["version"] = 2
    assert ledger.overwritten(ben, "Ben") == ["gesamtpreis"]
    # Not lost: a column nobody else saved, or a value equal to mine, or to what I began from.
    assert ledger.overwritten(_copy(guest_id=8), "Ben") == []
    assert ledger.overwritten(_copy(gesamtpreis=Decimal("120.00")), "Ben") == []
    same_as_origin = Ledger()
    same_as_origin.record(_copy(gesamtpreis=100), 2, "Anna")
    assert same_as_origin.overwritten(_copy(gesamtpreis=130), "Ben") == []
    # Someone who began after Anna's save saw her value: overwriting it is a choice.
    clara = _copy(version=2, gesamtpreis=140)
    assert ledger.overwritten(clara, "Clara") == []


def test_a_missing_booking_is_a_domain_error(
    postgresql: psycopg.Connection[Any], dsn: str
) -> None:
    install_demo(postgresql)

    async def load_missing() -> None:
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            await bookings.load(conn, TableRef("public", "bookings"), 99_999)

    with pytest.raises(MissingBooking, match="#99999 does not exist"):
        asyncio.run(load_missing())


def test_only_newer_changes_of_others_to_the_open_booking_concern_a_user() -> None:
    assert concerns(_update(ANNA_PRICE), _copy(), "Ben")
    assert not concerns(_update(ANNA_PRICE), _copy(), "Anna")  # my own save
    assert not concerns(_update(ANNA_PRICE), _copy(version=2), "Ben")  # loaded after it
    assert not concerns(_update(ANNA_PRICE, booking=124), _copy(), "Ben")
    assert concerns(_update(ANNA_PRICE, truncated=True), _copy(version=5), "Ben")


def test_toast_text_and_percentiles() -> None:
    assert toast_text("Anna", 2.4) == "Anna updated this booking (2 ms ago)"
    assert toast_text("Anna", 2000) == "Anna updated this booking (2 seconds ago)"
    assert toast_text("Anna", 1200) == "Anna updated this booking (1 second ago)"
    assert percentiles([]) is None
    figures = percentiles([float(n) for n in range(1, 101)])
    assert figures == {"p50": 50.0, "p90": 90.0, "p99": 99.0, "max": 100.0}


def test_the_story_and_the_lost_column_agree(bookwatch: Invoke, dsn: str) -> None:
    """A refused save is not a lost update: the story says "refused" where "lost" shows 0."""
    report = simulate_json(bookwatch, dsn, "--random-seed", "5")
    baseline = report["baseline"]
    assert baseline["lost_updates"] == 0 and not baseline["ben_saved"]
    outcome = baseline["timeline"][-1]["what"]
    assert "refused (nothing silently lost)" in outcome and "is lost" not in outcome
