"""The bookwatch CLI as plain data (commands, options, what may follow each), read from the
Typer app for the completion generators.

The only module that touches Typer's private parts: its vendored click (``typer._click``) and
its type descriptors (``typer._coercion``), which the public API does not expose. pyproject.toml
pins typer to the range this was written against (``>=0.29,<0.30``); a new Typer release is
checked here, in one place (tests/test_completions.py exercises it).
"""

from __future__ import annotations

import re
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePath

import typer
import typer.main
from typer._click.core import Command, Parameter  # Typer vendors click as typer._click
from typer._coercion import TypeDescriptor
from typer.core import TyperArgument, TyperGroup, TyperOption

PROG = "bookwatch"

# Values go into shell words unquoted in places (compgen -W, zsh (a b c) lists).
_SAFE_WORD = re.compile(r"^[A-Za-z0-9_.,+@%/=-]+$")


@dataclass(frozen=True)
class OptionSpec:
    """One option as a shell sees it: its spellings and what may follow it."""

    names: tuple[str, ...]  # e.g. ("--table", "-t"); long names first
    takes_value: bool
    choices: tuple[str, ...]  # empty: free text (or files when ``files``)
    files: bool
    repeatable: bool
    help: str
    excludes: tuple[str, ...]  # the spellings of the same parameter (--durable/--no-durable)

    @property
    def long_names(self) -> tuple[str, ...]:
        return tuple(name for name in self.names if name.startswith("--"))

    @property
    def short_names(self) -> tuple[str, ...]:
        return tuple(name for name in self.names if not name.startswith("--"))

    @property
    def value_name(self) -> str:
        return self.long_names[0].lstrip("-") if self.long_names else "value"


@dataclass(frozen=True)
class ArgumentSpec:
    """A positional argument: its name, choices or file completion, and whether it repeats."""

    name: str
    choices: tuple[str, ...]
    files: bool
    variadic: bool


@dataclass(frozen=True)
class CommandSpec:
    name: str
    help: str
    options: tuple[OptionSpec, ...]
    arguments: tuple[ArgumentSpec, ...]


@dataclass(frozen=True)
class CliSpec:
    """The whole command line: the top-level options and the sorted commands."""

    options: tuple[OptionSpec, ...]
    commands: tuple[CommandSpec, ...]


# -- reading the app ---------------------------------------------------------------------------


def _first_paragraph(text: str | None) -> str:
    paragraph = (text or "").strip().split("\n\n")[0]
    return " ".join(paragraph.split())


def _value_kind(param: Parameter, context: typer.Context) -> tuple[tuple[str, ...], bool]:
    """(choices, completes files) for a parameter's value.

    Choices come from the parameter's own completion: Enum/Literal types, or an
    ``autocompletion=`` callback, asked once here with nothing typed (so such a callback must
    return a fixed list, not query the database).
    """
    if not isinstance(param, TyperOption | TyperArgument):
        return (), False
    descriptor = param.type_descriptor
    offered = param.shell_complete(context, "")
    choices = tuple(sorted({str(item.value) for item in offered if item.type == "plain"}))
    for choice in choices:
        if not _SAFE_WORD.match(choice):
            raise ValueError(f"choice {choice!r} of {param.name} cannot go into a completion")
    files = any(item.type in ("file", "dir") for item in offered)
    return choices, files or descriptor.is_path or _list_of_paths(descriptor)


def _list_of_paths(descriptor: TypeDescriptor) -> bool:
    """``list[Path]``: Typer's own ``is_path`` only looks at the outer type."""
    element = typing.get_args(descriptor.annotation)[:1] if descriptor.is_list else ()
    return any(isinstance(arg, type) and issubclass(arg, PurePath) for arg in element)


def _options(params: Iterable[Parameter], context: typer.Context) -> tuple[OptionSpec, ...]:
    specs: list[OptionSpec] = []
    for param in params:
        if not isinstance(param, TyperOption) or param.hidden:
            continue
        choices, files = _value_kind(param, context)
        takes_value = not (param.is_flag or param.count)
        help_text = _first_paragraph(param.help)
        spellings = tuple(sorted(param.opts + param.secondary_opts))
        # A boolean pair (--durable/--no-durable) becomes two flags that exclude each other.
        for names in (param.opts, param.secondary_opts):
            if not names:
                continue
            specs.append(
                OptionSpec(
                    names=tuple(sorted(names, key=lambda n: (not n.startswith("--"), n))),
                    takes_value=takes_value,
                    choices=choices if takes_value else (),
                    files=files and takes_value,
                    repeatable=param.multiple or param.count,
                    help=help_text,
                    excludes=spellings,
                )
            )
    return tuple(sorted(specs, key=lambda spec: spec.names))


def _arguments(params: Iterable[Parameter], context: typer.Context) -> tuple[ArgumentSpec, ...]:
    specs: list[ArgumentSpec] = []
    for param in params:
        if not isinstance(param, TyperArgument) or getattr(param, "hidden", False):
            continue
        choices, files = _value_kind(param, context)
        specs.append(ArgumentSpec(str(param.name), choices, files, param.nargs != 1))
    return tuple(specs)  # positional order is meaningful: not sorted


def read_cli(app: typer.Typer) -> CliSpec:
    """Walk the app's click command tree into plain data."""
    group = typer.main.get_command(app)
    if not isinstance(group, TyperGroup):
        raise TypeError("bookwatch's app must be a command group")
    root = typer.Context(group, info_name=PROG, **group.context_settings)
    commands: list[CommandSpec] = []
    for name in sorted(group.list_commands(root)):
        command = group.get_command(root, name)
        if command is None or command.hidden:
            continue
        if isinstance(command, TyperGroup):
            raise NotImplementedError(f"nested command group {name!r}: teach completion.py first")
        commands.append(_command(name, command, root))
    return CliSpec(options=_options(group.get_params(root), root), commands=tuple(commands))


def _command(name: str, command: Command, root: typer.Context) -> CommandSpec:
    context = typer.Context(command, info_name=name, parent=root, **command.context_settings)
    params = command.get_params(context)
    return CommandSpec(
        name=name,
        help=_first_paragraph(command.short_help or command.help),
        options=_options(params, context),
        arguments=_arguments(params, context),
    )
