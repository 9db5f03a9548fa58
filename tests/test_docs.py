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


# The README is a user's guide: the two commands first, using bookwatch on one's own database
# soon after, and nothing that points outside the repository.
REPOSITORY = README.parent
DOCS = sorted((REPOSITORY / "docs").glob("*.md"))


def _code_blocks(text: str) -> list[str]:
    return re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.DOTALL)


def test_readme_starts_with_the_two_commands() -> None:
    blocks = _code_blocks(README.read_text(encoding="utf-8"))
    assert [block.strip() for block in blocks[:2]] == [
        "pip install . && bookwatch simulate",
        "pip install -e '.[test]' && python -m pytest -q",
    ]


def test_readme_reaches_using_your_own_database_within_80_lines() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    headings = [number for number, line in enumerate(lines, 1)
                if line.startswith("## Use it on your own database")]
    assert headings and headings[0] <= 80, "the README's own-database section comes too late"
    section = "\n".join(lines[headings[0]:])
    section = section[:section.find("\n## ")]
    for command in ("install-triggers", "status", "tail", "serve", "remove-triggers",
                    "bookwatch.js"):
        assert command in section, f"the own-database section does not show {command}"


@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda path: path.name)
def test_docs_point_only_inside_the_repository(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    assert "../shared" not in text and "SPEC" not in text
    assert not re.search(r"\bthe issue\b", text, flags=re.IGNORECASE)
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        if re.match(r"[a-z]+:", target):  # a URL, not a file
            continue
        assert (page.parent / target).resolve().is_relative_to(REPOSITORY), target
        assert (page.parent / target).exists(), f"{page.name} links to missing {target}"


def test_code_comments_cite_the_reference_in_the_repository() -> None:
    """Comments and docstrings cite docs/reference.md, not a contract kept elsewhere."""
    citing = [
        f"{path.relative_to(REPOSITORY)}:{number}"
        for path in (REPOSITORY / "pgwatch_cli").rglob("*")
        if path.suffix in {".py", ".js", ".sql", ".html"}
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if re.search(r"\bSPEC\b", line)
    ]
    assert not citing, f"cite docs/reference.md instead of SPEC: {citing}"


def test_license_file_matches_the_package_metadata() -> None:
    pyproject = (REPOSITORY / "pyproject.toml").read_text(encoding="utf-8")
    assert re.search(r'^license = "MIT"$', pyproject, flags=re.MULTILINE)
    assert (REPOSITORY / "LICENSE").read_text(encoding="utf-8").startswith("MIT License")
