"""The CLI's commands are registered explicitly (api/cli.py COMMANDS): one a
feature module defines and nobody lists would silently not exist."""

from __future__ import annotations

import importlib
import pkgutil

import click

import snapledger.api
from snapledger.api.cli import COMMANDS, main


def test_every_command_a_cli_module_defines_is_registered() -> None:
    defined: dict[str, click.Command] = {}
    for found in pkgutil.iter_modules(snapledger.api.__path__):
        if found.name.startswith("cli_"):
            module = importlib.import_module(f"snapledger.api.{found.name}")
            defined.update({f"{found.name}.{name}": value for name, value in vars(module).items()
                            if isinstance(value, click.Command)})
    registered = list(main.commands.values())
    assert len(defined) > 20  # the modules were found
    assert [name for name, command in defined.items() if command not in registered] == []


def test_no_two_commands_share_a_name() -> None:
    # click keeps the last command of a name: an earlier one would be shadowed without a word.
    names = [command.name for command in COMMANDS]
    assert sorted(name for name in set(names) if names.count(name) > 1) == []
    assert {"restore", "update-job", "serve", "replay"} <= set(names)
