"""Static shell completion scripts for bash, zsh and fish, generated from the Typer app.

The scripts list every command and option themselves, so pressing TAB never starts Python
(which would cost a few hundred milliseconds per keystroke). The committed copies live in
``completions/``; regenerate them after adding or changing a command or an option::

    python -m devtools.completion --write     # rewrite completions/ from the current CLI
    python -m devtools.completion             # print all three scripts to stdout

``tests/test_completions.py`` fails when the committed files no longer match the CLI.

An option's values are completed from its Enum/Literal type or its ``autocompletion=``
callback (called once, at generation time); other values are free text and get no offers.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import typer

from devtools.cli_model import (
    PROG,
    ArgumentSpec,
    CliSpec,
    OptionSpec,
    read_cli,
)

REGENERATE = "python -m devtools.completion --write"
HEADER = f"generated from the bookwatch CLI by `{REGENERATE}`; do not edit by hand"

# How each shell's file is named in completions/ (bash-completion, zsh fpath, fish conventions).
FILENAMES = {"bash": f"{PROG}.bash", "zsh": f"_{PROG}", "fish": f"{PROG}.fish"}
COMPLETIONS_DIR = Path(__file__).resolve().parent.parent / "completions"


# -- bash --------------------------------------------------------------------------------------


_BASH_FILES = "compopt -o filenames 2>/dev/null; _bookwatch_reply -f"


def _bash_value_cases(options: Iterable[OptionSpec], indent: str) -> list[str]:
    """``case "$prev"`` lines: what to offer right after an option that takes a value."""
    by_action: dict[str, list[str]] = {}
    for option in options:
        if not option.takes_value:
            continue
        if option.choices:
            action = f'_bookwatch_reply -W "{" ".join(option.choices)}"'
        elif option.files:
            action = _BASH_FILES
        else:
            action = "COMPREPLY=()"  # free text: nothing sensible to offer
        by_action.setdefault(action, []).extend(option.names)
    if not by_action:
        return []
    lines = [f'{indent}case "$prev" in']
    for action, names in sorted(by_action.items(), key=lambda item: sorted(item[1])):
        lines.append(f"{indent}    {'|'.join(sorted(names))}) {action}; return ;;")
    return [*lines, f"{indent}esac"]


def _bash_words(options: Iterable[OptionSpec]) -> str:
    return " ".join(sorted(name for option in options for name in option.names))


def _bash_positional(arguments: tuple[ArgumentSpec, ...]) -> str:
    choices = sorted({choice for argument in arguments for choice in argument.choices})
    if choices:
        return f'_bookwatch_reply -W "{" ".join(choices)}"'
    if any(argument.files for argument in arguments):
        return _BASH_FILES
    return "COMPREPLY=()"


def render_bash(spec: CliSpec) -> str:
    valued_globals = [name for o in spec.options if o.takes_value for name in o.names]
    lines = [
        f"# bash completion for {PROG} -- {HEADER}.",
        "# Install: source this file, or copy it to",
        f"# ~/.local/share/bash-completion/completions/{PROG}",
        "",
        "_bookwatch_reply() {",
        '    mapfile -t COMPREPLY < <(compgen "$@" -- "$cur")',
        "}",
        "",
        "_bookwatch() {",
        '    local cur="${COMP_WORDS[COMP_CWORD]}" prev="" command="" word i',
        '    ((COMP_CWORD > 0)) && prev="${COMP_WORDS[COMP_CWORD - 1]}"',
        "    # COMP_WORDBREAKS splits --option=value into '--option' '=' 'value'.",
        '    if [[ $cur == "=" ]]; then',
        '        cur=""',
        '    elif [[ $prev == "=" ]] && ((COMP_CWORD > 1)); then',
        '        prev="${COMP_WORDS[COMP_CWORD - 2]}"',
        "    fi",
        "    for ((i = 1; i < COMP_CWORD; i++)); do",
        '        word="${COMP_WORDS[i]}"',
        '        case "$word" in',
    ]
    if valued_globals:
        # Skip the option's value (and the '=' of --option=value) when looking for the command.
        lines.append(
            f"            {'|'.join(valued_globals)})"
            ' [[ ${COMP_WORDS[i + 1]} == "=" ]] && ((i++)); ((i++)) ;;'
        )
    lines += [
        "            -*) ;;",
        '            *) command="$word"; break ;;',
        "        esac",
        "    done",
        '    case "$command" in',
        '        "")',
        *_bash_value_cases(spec.options, "            "),
        '            if [[ $cur == -* ]]; then',
        f'                _bookwatch_reply -W "{_bash_words(spec.options)}"',
        "            else",
        f'                _bookwatch_reply -W "{" ".join(c.name for c in spec.commands)}"',
        "            fi",
        "            ;;",
    ]
    for command in spec.commands:
        lines += [
            f"        {command.name})",
            *_bash_value_cases(command.options, "            "),
            '            if [[ $cur == -* ]]; then',
            f'                _bookwatch_reply -W "{_bash_words(command.options)}"',
            "            else",
            f"                {_bash_positional(command.arguments)}",
            "            fi",
            "            ;;",
        ]
    lines += [
        "    esac",
        "}",
        "",
        f"complete -F _bookwatch {PROG}",
        "",
    ]
    return "\n".join(lines)


# -- zsh ---------------------------------------------------------------------------------------


def _zsh_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def _zsh_description(text: str) -> str:
    return text.replace("\\", "\\\\").replace("[", "\\[").replace("]", "\\]")


def _zsh_value_action(choices: tuple[str, ...], files: bool) -> str:
    if choices:
        return f"({' '.join(choices)})"
    return "_files" if files else " "  # a blank action: free text, zsh shows the message only


def _zsh_option_specs(options: Iterable[OptionSpec]) -> list[str]:
    specs: list[str] = []
    for option in options:
        prefix = "*" if option.repeatable else f"({' '.join(option.excludes)})"
        for name in option.names:
            spec = prefix + name
            if option.takes_value:
                spec += "=" if name.startswith("--") else "+"
            spec += f"[{_zsh_description(option.help)}]"
            if option.takes_value:
                action = _zsh_value_action(option.choices, option.files)
                spec += f":{option.value_name}:{action}"
            specs.append(_zsh_quote(spec))
    return specs


def _zsh_argument_specs(arguments: Iterable[ArgumentSpec]) -> list[str]:
    specs: list[str] = []
    for position, argument in enumerate(arguments, start=1):
        where = "*" if argument.variadic else str(position)
        action = _zsh_value_action(argument.choices, argument.files)
        specs.append(_zsh_quote(f"{where}:{argument.name}:{action}"))
    return specs


def _zsh_function(name: str) -> str:
    return "_bookwatch_" + name.replace("-", "_")


def _zsh_arguments_call(specs: list[str], indent: str, extra: tuple[str, ...] = ()) -> list[str]:
    words = ["_arguments -s -S", *extra, *specs]
    lines = [indent + words[0] + " \\"]
    lines += [indent + "    " + word + " \\" for word in words[1:-1]]
    return [*lines, indent + "    " + words[-1]]


def render_zsh(spec: CliSpec) -> str:
    lines = [
        f"#compdef {PROG}",
        f"# zsh completion for {PROG} -- {HEADER}.",
        "# Install: put this file (named _bookwatch) in a directory on $fpath, then compinit.",
        "",
    ]
    for command in spec.commands:
        specs = _zsh_option_specs(command.options) + _zsh_argument_specs(command.arguments)
        lines += [f"{_zsh_function(command.name)}() {{"]
        lines += _zsh_arguments_call(specs, "    ")
        lines += ["}", ""]
    lines += [
        "_bookwatch_commands() {",
        "    local -a commands",
        "    commands=(",
        *(
            "        " + _zsh_quote(f"{c.name}:{c.help}".replace("\n", " "))
            for c in spec.commands
        ),
        "    )",
        f"    _describe -t commands '{PROG} command' commands",
        "}",
        "",
        "_bookwatch() {",
        '    local curcontext="$curcontext" state line',
        "    typeset -A opt_args",
        *_zsh_arguments_call(
            [*_zsh_option_specs(spec.options), "': :_bookwatch_commands'", "'*:: :->command'"],
            "    ",
            extra=("-C",),
        ),
        "    [[ $state == command ]] || return",
        f'    curcontext="${{curcontext%:*:*}}:{PROG}-$words[1]:"',
        "    case $words[1] in",
        *(
            f"        {c.name}) {_zsh_function(c.name)} ;;"
            for c in spec.commands
        ),
        "    esac",
        "}",
        "",
        '_bookwatch "$@"',
        "",
    ]
    return "\n".join(lines)


# -- fish --------------------------------------------------------------------------------------


def _fish_quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _fish_option(condition: str, option: OptionSpec) -> str:
    parts = [f"complete -c {PROG} -n {_fish_quote(condition)}"]
    parts += [f"-l {name[2:]}" for name in option.long_names]
    for name in option.short_names:
        # fish's -s takes one character; longer single-dash names are "old style" (-o).
        parts.append(f"-s {name[1:]}" if len(name) == 2 else f"-o {name[1:]}")
    if option.takes_value:
        if option.choices:
            parts.append(f"-x -a {_fish_quote(' '.join(option.choices))}")
        elif option.files:
            parts.append("-r -F")
        else:
            parts.append("-x")
    if option.help:
        parts.append(f"-d {_fish_quote(option.help)}")
    return " ".join(parts)


def _fish_arguments(condition: str, arguments: tuple[ArgumentSpec, ...]) -> list[str]:
    lines: list[str] = []
    choices = sorted({choice for argument in arguments for choice in argument.choices})
    if choices:
        lines.append(
            f"complete -c {PROG} -n {_fish_quote(condition)} -a {_fish_quote(' '.join(choices))}"
        )
    if any(argument.files for argument in arguments):
        lines.append(f"complete -c {PROG} -n {_fish_quote(condition)} -F")
    return lines


def render_fish(spec: CliSpec) -> str:
    top = "__fish_use_subcommand"  # true until a non-option word (the command) is typed
    lines = [
        f"# fish completion for {PROG} -- {HEADER}.",
        f"# Install: copy to ~/.config/fish/completions/{PROG}.fish",
        "",
        f"complete -c {PROG} -f",  # no file names unless an option or argument asks for them
        "",
    ]
    lines += [_fish_option(top, option) for option in spec.options]
    lines += [
        f"complete -c {PROG} -n {_fish_quote(top)} -a {c.name} -d {_fish_quote(c.help)}"
        for c in spec.commands
    ]
    for command in spec.commands:
        condition = f"__fish_seen_subcommand_from {command.name}"
        lines += ["", f"# {command.name}"]
        lines += [_fish_option(condition, option) for option in command.options]
        lines += _fish_arguments(condition, command.arguments)
    lines.append("")
    return "\n".join(lines)


# -- entry point -------------------------------------------------------------------------------

RENDERERS: dict[str, Callable[[CliSpec], str]] = {
    "bash": render_bash,
    "zsh": render_zsh,
    "fish": render_fish,
}


def generate(app: typer.Typer | None = None) -> dict[str, str]:
    """Every shell's script for ``app`` (default: bookwatch's own), keyed by shell name."""
    if app is None:
        from pgwatch_cli.cli import app as bookwatch_app

        app = bookwatch_app
    spec = read_cli(app)
    return {shell: render(spec) for shell, render in RENDERERS.items()}


def write(directory: Path = COMPLETIONS_DIR) -> list[Path]:
    """Write the three scripts into ``directory``; returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for shell, script in generate().items():
        path = directory / FILENAMES[shell]
        path.write_text(script, encoding="utf-8")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.completion", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument(
        "--write", action="store_true", help=f"write the scripts into {COMPLETIONS_DIR}"
    )
    parser.add_argument("--shell", choices=sorted(RENDERERS), help="print only this shell's")
    options = parser.parse_args(argv)
    if options.write:
        for path in write():
            print(f"wrote {path}", file=sys.stderr)
        return
    scripts = generate()
    for shell in [options.shell] if options.shell else sorted(scripts):
        sys.stdout.write(scripts[shell])


if __name__ == "__main__":
    main()
