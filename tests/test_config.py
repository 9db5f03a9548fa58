"""Choosing the server and naming it: passwords never printed, however the DSN is written;
hints name where the settings came from, by cause. No database needed (but for the CLI runs,
which fail to connect on purpose)."""

from __future__ import annotations

import pytest

from pgwatch_cli import config, db
from pgwatch_cli.config import DsnChoice, DsnSource
from pgwatch_cli.errors import UsageProblem
from tests.fix_cli import Invoke

SECRET = "S3cretPW"

# (written as, what must remain visible)
MASKED = [
    (f"postgresql://anna:{SECRET}@db.example:5433/app",
     "postgresql://anna:****@db.example:5433/app"),
    (f"postgresql://anna:se/{SECRET}@db/app", "postgresql://anna:****@db/app"),
    (f"postgresql://anna:p@{SECRET}@db/app", "postgresql://anna:****@db/app"),
    (f"postgresql://anna:p#{SECRET}@db/app", "postgresql://anna:****@db/app"),
    (f"postgresql://anna:p:{SECRET}@db/app", "postgresql://anna:****@db/app"),
    (f"postgres://anna:p%40{SECRET}@db/app", "postgres://anna:****@db/app"),
    (f"postgresql://anna@db/app?password={SECRET}&sslmode=require",
     "postgresql://anna@db/app?password=****&sslmode=require"),
    (f"host=db user=anna password={SECRET} dbname=app",
     "host=db user=anna password=**** dbname=app"),
    (f"host=db password = '{SECRET} with space' dbname=app", "host=db password = **** dbname=app"),
    (f"host=db PASSWORD='it\\'s {SECRET}'", "host=db PASSWORD=****"),
    ("postgresql://anna@db/app", "postgresql://anna@db/app"),
]


@pytest.mark.parametrize(("written", "shown"), MASKED)
def test_mask_hides_the_password_however_written(written: str, shown: str) -> None:
    assert config.mask(written) == shown
    assert SECRET not in config.mask(written)


@pytest.mark.parametrize(
    "dsn",
    [f"postgresql://anna:se/{SECRET}@127.0.0.1:1/app",
     f"postgresql://anna:p@{SECRET}@127.0.0.1:1/app",
     f"postgresql://anna:p?{SECRET}@127.0.0.1:1/app"],
)
def test_a_uri_libpq_would_misread_is_refused_without_echo(dsn: str) -> None:
    with pytest.raises(UsageProblem) as refused:
        config.choose_dsn(dsn)
    assert SECRET not in refused.value.message and "Percent-encode" in (refused.value.hint or "")


@pytest.mark.parametrize(
    "dsn",
    [f"postgresql://anna:p#{SECRET}@127.0.0.1:1/app",
     f"postgresql://anna:p:{SECRET}@127.0.0.1:1/app",
     f"postgresql://anna:p%40{SECRET}@127.0.0.1:1/app",
     f"postgresql://anna:se%2F{SECRET}@127.0.0.1:1/app",
     f"host=127.0.0.1 port=1 user=anna password='{SECRET} x'",
     f"postgresql://anna:se/{SECRET}@127.0.0.1:1/app",
     f"postgresql://anna:p@{SECRET}@127.0.0.1:1/app"],
)
def test_no_command_output_shows_the_password(bookwatch: Invoke, dsn: str) -> None:
    for args in (["status", "--dsn", dsn], ["tail", "--dsn", dsn, "--timeout", "1"],
                 ["init-demo", "--dsn", dsn]):
        result = bookwatch(*args)
        assert result.exit_code in (1, 2)
        assert SECRET not in result.stdout + result.stderr
        assert "Error:" in result.stderr


def test_a_libpq_environment_failure_is_blamed_on_it(bookwatch: Invoke,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGHOST", "/nonexistent")
    result = bookwatch("status")
    assert result.exit_code == 1
    hint = result.stderr.splitlines()[-1]
    assert "PGHOST=/nonexistent" in hint and "--dsn" not in hint and "embedded" not in hint


def test_hints_match_the_cause() -> None:
    option = DsnChoice(f"postgresql://anna:{SECRET}@db/app", DsnSource.OPTION)
    refused = db.unreachable_hint("Connection refused", option)
    assert "is the server running" in refused and SECRET not in refused
    assert "password" in db.unreachable_hint('password authentication failed for user "anna"',
                                             option)
    env = DsnChoice("postgresql://db/app", DsnSource.BOOKWATCH_DSN)
    assert "$BOOKWATCH_DSN" in db.unreachable_hint("Connection refused", env)


def test_suggested_commands_reach_the_same_server() -> None:
    assert DsnChoice("postgresql://anna@db/app", DsnSource.OPTION).same_server_args() == (
        " --dsn postgresql://anna@db/app"
    )
    assert SECRET not in DsnChoice(f"postgresql://anna:{SECRET}@db/app",
                                   DsnSource.OPTION).same_server_args()
    assert DsnChoice("", DsnSource.EMBEDDED, forced=True).same_server_args() == " --embedded"
    assert DsnChoice("x", DsnSource.BOOKWATCH_DSN).same_server_args() == ""


def test_help_warns_that_dsn_and_token_show_in_ps(bookwatch: Invoke) -> None:
    assert "visible to other users in ps" in " ".join(bookwatch("tail", "--help").stdout.split())
    assert "Prefer $BOOKWATCH_TOKEN" in " ".join(bookwatch("serve", "--help").stdout.split())


def test_a_suggested_fix_carries_the_same_dsn(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import typer

    from pgwatch_cli import cli
    from pgwatch_cli.errors import NotInstalled

    monkeypatch.setattr(cli, "_chosen", [DsnChoice("postgresql://anna@db/app", DsnSource.OPTION)])

    @cli.guarded
    def failing() -> None:
        raise NotInstalled("No change log here.", hint="It is made by durable triggers.",
                           suggest="install-triggers --durable")

    with pytest.raises(typer.Exit) as exited:
        failing()
    assert exited.value.exit_code == 1
    assert "run: bookwatch install-triggers --durable --dsn postgresql://anna@db/app" in (
        " ".join(capsys.readouterr().err.split())
    )
