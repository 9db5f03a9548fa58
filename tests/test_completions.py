"""The committed shell completion scripts match the CLI, parse, and complete what they should."""

from __future__ import annotations

import difflib
import enum
import re
import shutil
import subprocess
from pathlib import Path
from typing import Annotated

import pytest
import typer
import typer.main

from devtools import completion
from pgwatch_cli.cli import app

SHELLS = sorted(completion.FILENAMES)
BASH = shutil.which("bash")
FISH = shutil.which("fish")
ZSH = shutil.which("zsh")

# Sources the script and prints what TAB would offer for the words given as arguments; runs
# with an empty PATH, so any external program (python included) would fail loudly on stderr.
BASH_DRIVER = """
source "$1"; shift
COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 ))
_bookwatch
printf '%s\\n' "${COMPREPLY[@]}"
"""

# Types the line and TAB into an interactive zsh on a pseudo-terminal, with compadd wrapped
# to print every match as HIT::word (the quotes keep the echoed command from matching).
ZSH_DRIVER = """
zmodload zsh/zpty || exit 3
zpty z "$3" -f -i
zpty -w z "PROMPT=''; RPROMPT=''; fpath=(${(q)1} \\$fpath); autoload -Uz compinit; compinit -u -D"
zpty -w z "compadd () {
  if [[ \\${@[1,(i)(-|--)]} == *-(O|A|D)\\ * ]]; then builtin compadd \\"\\$@\\"; return \\$?; fi
  typeset -a __hits
  builtin compadd -A __hits \\"\\$@\\"
  (( \\$#__hits )) && print -rl -- '' \\"HIT\\"\\"::\\"\\${^__hits}
  return 1
}"
zpty -w z "bindkey '^I' complete-word; comppostfuncs=( exit )"
zpty -w z "$2"$'\\t'
while zpty -r z line; do print -rn -- $line; done
zpty -d z
"""


def committed(shell: str) -> Path:
    return completion.COMPLETIONS_DIR / completion.FILENAMES[shell]


def command_names() -> list[str]:
    group = typer.main.get_command(app)
    assert isinstance(group, typer.core.TyperGroup)
    return sorted(group.commands)


@pytest.fixture(scope="module")
def generated() -> dict[str, str]:
    return completion.generate()


@pytest.fixture(scope="module")
def current(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Scripts freshly generated from the current CLI, for the behaviour tests (so a stale
    committed copy fails only the tests that say to regenerate)."""
    directory = tmp_path_factory.mktemp("current")
    completion.write(directory)
    return {shell: directory / name for shell, name in completion.FILENAMES.items()}


@pytest.mark.parametrize("shell", SHELLS)
def test_committed_script_matches_the_cli(shell: str, generated: dict[str, str]) -> None:
    path = committed(shell)
    current = path.read_text(encoding="utf-8") if path.exists() else ""
    if current != generated[shell]:
        diff = "".join(
            difflib.unified_diff(
                current.splitlines(keepends=True), generated[shell].splitlines(keepends=True),
                f"committed {path.name}", "generated from the CLI", n=1,
            )
        )
        pytest.fail(
            f"completions/{path.name} no longer matches the CLI: run "
            f"`{completion.REGENERATE}` and commit completions/.\n{diff[:4000]}"
        )


def test_generation_is_deterministic() -> None:
    assert completion.generate() == completion.generate()


@pytest.mark.parametrize(
    ("shell", "pattern"),
    [
        ("bash", "        {name})\n"),  # its own case branch
        ("zsh", "        '{name}:"),  # an entry of _describe's command list
        ("fish", "-a {name} -d "),  # offered as the command word
    ],
)
def test_every_command_is_in_each_script(shell: str, pattern: str) -> None:
    script = committed(shell).read_text(encoding="utf-8")
    missing = [name for name in command_names() if pattern.format(name=name) not in script]
    assert not missing, f"{shell} script lacks {missing}: run `{completion.REGENERATE}`"


def _syntax_check(program: str | None, flag_file: list[str], shell: str) -> None:
    if program is None:
        pytest.skip(f"{shell} is not installed")
    result = subprocess.run(
        [program, *flag_file, str(committed(shell))], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr


def test_bash_script_parses() -> None:
    assert BASH is not None, "bash is required"
    _syntax_check(BASH, ["-n"], "bash")


def test_zsh_script_parses() -> None:
    _syntax_check(ZSH, ["-n"], "zsh")


def test_fish_script_parses() -> None:
    _syntax_check(FISH, ["--no-execute"], "fish")


# -- behaviour: what TAB offers ----------------------------------------------------------------


def bash_complete(script: Path, *words: str) -> list[str]:
    """Offers for the command line ``words`` (the last one is being completed)."""
    if BASH is None:
        pytest.skip("bash is not installed")
    result = subprocess.run(
        [BASH, "--norc", "--noprofile", "-c", BASH_DRIVER, "driver", str(script), *words],
        capture_output=True, text=True, timeout=30, env={"PATH": ""},
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr
    return [line for line in result.stdout.splitlines() if line]


def fish_complete(script: Path, line: str, home: Path) -> list[str]:
    if FISH is None:
        pytest.skip("fish is not installed")
    result = subprocess.run(
        [FISH, "--no-config", "--private", "-c", "source $argv[1]; complete -C $argv[2]",
         str(script), line],
        capture_output=True, text=True, timeout=30, env={"PATH": "", "HOME": str(home)},
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr
    return [entry.split("\t")[0] for entry in result.stdout.splitlines()]


def zsh_complete(directory: Path, line: str) -> list[str]:
    """Matches zsh offers for ``line`` with ``directory``'s _bookwatch on $fpath."""
    if ZSH is None:
        pytest.skip("zsh is not installed")
    result = subprocess.run(
        [ZSH, "-f", "-c", ZSH_DRIVER, "driver", str(directory), line, ZSH],
        capture_output=True, text=True, timeout=60, env={"PATH": "", "HOME": str(directory)},
    )
    assert result.returncode == 0, result.stderr
    return sorted(re.findall(r"HIT::([^\s\x1b]+)", result.stdout.replace("\r", "")))


def test_bash_offers_commands_then_their_options(current: dict[str, Path]) -> None:
    script = current["bash"]
    assert bash_complete(script, "bookwatch", "") == command_names()
    assert bash_complete(script, "bookwatch", "--debug", "st") == ["status"]
    assert bash_complete(script, "bookwatch", "install-triggers", "--ta") == ["--table"]
    assert "--no-durable" in bash_complete(script, "bookwatch", "install-triggers", "--")


def test_bash_offers_nothing_for_a_free_text_value(current: dict[str, Path]) -> None:
    script = current["bash"]
    assert bash_complete(script, "bookwatch", "install-triggers", "--table", "") == []
    assert bash_complete(script, "bookwatch", "install-triggers", "-t", "") == []
    assert bash_complete(script, "bookwatch", "install-triggers", "--table", "=", "") == []


@pytest.mark.parametrize("name", command_names())
def test_bash_offers_exactly_each_commands_options(name: str, current: dict[str, Path]) -> None:
    spec = {command.name: command for command in completion.read_cli(app).commands}[name]
    expected = sorted(n for option in spec.options for n in option.names)
    assert sorted(bash_complete(current["bash"], "bookwatch", name, "-")) == expected


def test_fish_offers_commands_and_options(current: dict[str, Path], tmp_path: Path) -> None:
    script = current["fish"]
    assert sorted(fish_complete(script, "bookwatch ", tmp_path)) == command_names()
    assert fish_complete(script, "bookwatch install-triggers --ta", tmp_path) == ["--table"]
    assert fish_complete(script, "bookwatch install-triggers --table ", tmp_path) == []


def test_zsh_offers_commands_options_and_values(current: dict[str, Path]) -> None:
    directory = current["zsh"].parent
    assert zsh_complete(directory, "bookwatch ") == command_names()
    assert zsh_complete(directory, "bookwatch --debug st") == ["status"]
    assert zsh_complete(directory, "bookwatch install-triggers --ta") == ["--table"]
    assert zsh_complete(directory, "bookwatch install-triggers --table ") == []
    status = {c.name: c for c in completion.read_cli(app).commands}["status"]
    assert zsh_complete(directory, "bookwatch status -") == sorted(
        name for option in status.options for name in option.names
    )


def test_tail_action_completes_the_four_actions(current: dict[str, Path]) -> None:
    if "tail" not in command_names():
        pytest.skip("no tail command yet")
    script = current["bash"]
    assert bash_complete(script, "bookwatch", "tail", "--action", "") == [
        "DELETE", "INSERT", "TRUNCATE", "UPDATE",
    ]
    assert bash_complete(script, "bookwatch", "tail", "--table", "") == []
    directory = current["zsh"].parent
    assert zsh_complete(directory, "bookwatch tail --action ") == [
        "DELETE", "INSERT", "TRUNCATE", "UPDATE"]
    assert zsh_complete(directory, "bookwatch tail -a U") == ["UPDATE"]


# -- the generator on a small app with every kind of value -------------------------------------


class Action(enum.StrEnum):
    INSERT = "INSERT"
    UPDATE = "UPDATE"
    DELETE = "DELETE"


toy = typer.Typer(add_completion=False)


@toy.callback()
def toy_options(
    profile: Annotated[
        str, typer.Option("--profile", "-p", help="A value before the command.")
    ] = "",
) -> None:
    """Toy app."""


@toy.command()
def watch(
    action: Annotated[
        list[Action] | None, typer.Option("--action", "-a", help="Only these [actions].")
    ] = None,
    table: Annotated[str | None, typer.Option("--table", help="Table's name.")] = None,
    actor: Annotated[
        str | None, typer.Option("--actor", help="Who.", autocompletion=lambda: ["Ben", "Anna"])
    ] = None,
    output: Annotated[Path | None, typer.Option("--output", help="Write here.")] = None,
    hidden: Annotated[bool, typer.Option("--secret", hidden=True)] = False,
) -> None:
    """Watch things."""


@toy.command()
def show(
    kind: Annotated[Action, typer.Argument(help="What.")],
) -> None:
    """Show: one thing."""


@pytest.fixture(scope="module")
def toy_scripts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("toy")
    paths = {}
    for shell, script in completion.generate(toy).items():
        paths[shell] = directory / completion.FILENAMES[shell]
        paths[shell].write_text(script, encoding="utf-8")
    return paths


def test_choices_and_files_in_bash(toy_scripts: dict[str, Path], tmp_path: Path) -> None:
    script = toy_scripts["bash"]
    assert bash_complete(script, "bookwatch", "watch", "--action", "") == [
        "DELETE", "INSERT", "UPDATE",
    ]
    assert bash_complete(script, "bookwatch", "watch", "-a", "U") == ["UPDATE"]
    assert bash_complete(script, "bookwatch", "watch", "--action", "=", "D") == ["DELETE"]
    assert bash_complete(script, "bookwatch", "watch", "--table", "") == []
    assert bash_complete(script, "bookwatch", "watch", "--actor", "") == ["Anna", "Ben"]
    assert "--secret" not in bash_complete(script, "bookwatch", "watch", "--")
    assert bash_complete(script, "bookwatch", "show", "I") == ["INSERT"]
    # A top-level option's value is not mistaken for the command.
    assert bash_complete(script, "bookwatch", "-p", "x", "watch", "--ta") == ["--table"]
    assert bash_complete(script, "bookwatch", "--profile", "=", "x", "watch", "--ta") == ["--table"]
    assert bash_complete(script, "bookwatch", "--profile", "") == []
    (tmp_path / "out.json").write_text("{}")
    offered = bash_complete(script, "bookwatch", "watch", "--output", str(tmp_path / "ou"))
    assert offered == [str(tmp_path / "out.json")]


def test_choices_and_files_in_zsh(toy_scripts: dict[str, Path]) -> None:
    directory = toy_scripts["zsh"].parent
    assert zsh_complete(directory, "bookwatch watch --action ") == ["DELETE", "INSERT", "UPDATE"]
    assert zsh_complete(directory, "bookwatch watch --action=D") == ["DELETE"]
    assert zsh_complete(directory, "bookwatch watch --actor ") == ["Anna", "Ben"]
    assert zsh_complete(directory, "bookwatch watch --table ") == []
    assert zsh_complete(directory, "bookwatch show I") == ["INSERT"]
    assert zsh_complete(directory, "bookwatch -p x watch --ta") == ["--table"]
    assert "--secret" not in zsh_complete(directory, "bookwatch watch --")


def test_choices_in_fish(toy_scripts: dict[str, Path], tmp_path: Path) -> None:
    script = toy_scripts["fish"]
    assert sorted(fish_complete(script, "bookwatch watch --action ", tmp_path)) == [
        "DELETE", "INSERT", "UPDATE",
    ]
    assert fish_complete(script, "bookwatch watch --table ", tmp_path) == []
    assert fish_complete(script, "bookwatch -p x watch --ta", tmp_path) == ["--table"]
    assert sorted(fish_complete(script, "bookwatch show ", tmp_path)) == [
        "DELETE", "INSERT", "UPDATE",
    ]


def test_toy_scripts_parse(toy_scripts: dict[str, Path]) -> None:
    checks = [(BASH, ["-n"], "bash"), (ZSH, ["-n"], "zsh"), (FISH, ["--no-execute"], "fish")]
    for program, flags, shell in checks:
        if program is None:
            continue
        result = subprocess.run(
            [program, *flags, str(toy_scripts[shell])], capture_output=True, text=True, timeout=30
        )
        assert result.returncode == 0, f"{shell}: {result.stderr}"
    zsh = toy_scripts["zsh"].read_text(encoding="utf-8")
    assert "'*--action=[Only these \\[actions\\].]:action:(DELETE INSERT UPDATE)'" in zsh
    assert "'(--output)--output=[Write here.]:output:_files'" in zsh
    assert "'1:kind:(DELETE INSERT UPDATE)'" in zsh
    assert "'show:Show: one thing.'" in zsh


def test_write_puts_three_files_in_place(tmp_path: Path) -> None:
    written = completion.write(tmp_path)
    assert sorted(p.name for p in written) == sorted(completion.FILENAMES.values())
    for shell, script in completion.generate().items():
        assert (tmp_path / completion.FILENAMES[shell]).read_text(encoding="utf-8") == script
