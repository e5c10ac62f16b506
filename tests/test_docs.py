"""The command line documents itself, and README.md documents every command."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from tracker.cli import cli

README = Path(__file__).resolve().parent.parent / "README.md"


def _walk(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], click.Command]]:
    found: list[tuple[tuple[str, ...], click.Command]] = []
    for name, command in sorted(group.commands.items()):
        found.append(((*path, name), command))
        if isinstance(command, click.Group):
            found.extend(_walk(command, (*path, name)))
    return found


COMMANDS = _walk(cli)
ALL = [((), cli), *COMMANDS]
LEAVES = [(path, command) for path, command in COMMANDS if not isinstance(command, click.Group)]


def _id(path: tuple[str, ...]) -> str:
    return " ".join(path)


def test_the_command_tree_is_the_expected_one() -> None:
    # Guards the walk itself: a new command shows up here and must then pass the tests below.
    assert {_id(path) for path, _ in LEAVES} >= {
        "ingest",
        "runs list",
        "runs show",
        "history",
        "stats durations",
        "stats errors",
        "projections rebuild",
        "audit verify",
        "db upgrade",
        "db current",
        "demo",
    }


@pytest.mark.parametrize(("path", "command"), ALL, ids=[_id(path) or "tracker" for path, _ in ALL])
def test_every_command_has_help(path: tuple[str, ...], command: click.Command) -> None:
    assert (command.help or "").strip(), f"tracker {_id(path)} has no help text"
    assert command.get_short_help_str().strip()
    result = CliRunner().invoke(cli, [*path, "--help"], catch_exceptions=False)
    assert result.exit_code == 0
    assert " ".join(command.help.split("\n\n")[0].split()) in " ".join(result.stdout.split())


@pytest.mark.parametrize(("path", "command"), ALL, ids=[_id(path) or "tracker" for path, _ in ALL])
def test_every_option_has_help(path: tuple[str, ...], command: click.Command) -> None:
    undocumented = [
        parameter.opts[0]
        for parameter in command.params
        if isinstance(parameter, click.Option) and not (parameter.help or "").strip()
    ]
    assert undocumented == [], f"tracker {_id(path)}: options without help"


@pytest.mark.parametrize("path", [path for path, _ in LEAVES], ids=_id)
def test_readme_names_every_command(path: tuple[str, ...]) -> None:
    assert f"tracker {_id(path)}" in README.read_text(encoding="utf-8"), f"README.md never shows `tracker {_id(path)}`"
