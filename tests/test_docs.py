"""Every command is documented: help text, a working ``--help``, a mention in README.md."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main
from typer.core import TyperGroup, TyperOption

from pgwatch_cli.cli import app
from tests.fix_cli import Invoke, run_bookwatch

README = Path(__file__).resolve().parent.parent / "README.md"
SECRET = "s3cr3t-pw"
SECRET_ENV = {
    "BOOKWATCH_DSN": f"postgresql://u:{SECRET}@h/db",
    "DATABASE_URL": f"postgresql://u:{SECRET}@h/db",
    "PGPASSWORD": SECRET,
    "BOOKWATCH_TOKEN": SECRET,
}


def _group() -> TyperGroup:
    group = typer.main.get_command(app)
    assert isinstance(group, TyperGroup)
    return group


COMMANDS = sorted(_group().commands)


@pytest.mark.parametrize("name", COMMANDS)
def test_command_has_help_text(name: str) -> None:
    command = _group().commands[name]
    assert (command.help or "").strip(), f"command {name} has no docstring/help"


@pytest.mark.parametrize("name", COMMANDS)
def test_every_option_has_help_text(name: str) -> None:
    command = _group().commands[name]
    undocumented = [
        param.opts[0] for param in command.params
        if isinstance(param, TyperOption) and not param.hidden and not (param.help or "").strip()
    ]
    assert not undocumented, f"{name}: options without help: {undocumented}"


@pytest.mark.parametrize("name", COMMANDS)
def test_command_help_exits_0_without_leaking_secrets(
    name: str, bookwatch: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable, value in SECRET_ENV.items():
        monkeypatch.setenv(variable, value)
    result = bookwatch(name, "--help")
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.stdout
    assert SECRET not in result.stdout + result.stderr


def test_top_level_help_lists_every_command_without_secrets() -> None:
    """The real entry point, in its own process, with secrets in the environment."""
    result = run_bookwatch("--help", env={**SECRET_ENV, "COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    assert SECRET not in result.stdout + result.stderr
    listed = [name for name in COMMANDS if re.search(rf"(?<![\w-]){re.escape(name)}\b",
                                                     result.stdout)]
    assert listed == COMMANDS


# Secrets set before pgwatch_cli is imported: catches a default computed from the environment
# at import time (which the in-process test above cannot see). One process for all commands.
ALL_HELP = """
import sys
from typer.testing import CliRunner
from pgwatch_cli.cli import app
for name in sys.argv[1:]:
    result = CliRunner().invoke(app, [name, "--help"])
    print(f"== {name} exit {result.exit_code}")
    print(result.output)
"""


def test_help_in_a_fresh_process_never_shows_secrets() -> None:
    result = subprocess.run(
        [sys.executable, "-c", ALL_HELP, *COMMANDS], capture_output=True, text=True,
        timeout=120, env={**os.environ, **SECRET_ENV},
    )
    assert result.returncode == 0, result.stderr
    assert [f"== {name} exit 0" for name in COMMANDS] == [
        line for line in result.stdout.splitlines() if line.startswith("== ")
    ]
    assert SECRET not in result.stdout + result.stderr


@pytest.mark.parametrize("name", COMMANDS)
def test_command_is_in_the_readme(name: str) -> None:
    readme = README.read_text(encoding="utf-8")
    # A whole word: "tail" inside "details" or "serve" inside "server" does not count.
    assert re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", readme), (
        f"README.md does not mention the {name} command"
    )
