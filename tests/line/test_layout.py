"""The line-chat README's command table names the file that holds each command's handler."""

from __future__ import annotations

import re
from pathlib import Path

import protocols.line.handlers  # noqa: F401  (registers every command)
from protocols.line.commands import COMMANDS

README = Path(__file__).parents[2] / "protocols" / "line" / "README.md"


def _table() -> dict[str, str]:
    """Command name -> the file the README's command table names for it."""
    files: dict[str, str] = {}
    for row in README.read_text().splitlines():
        match = re.match(r"\| (`/.*?) \| .* \| `(\w+\.py)` \|$", row)
        if match is None:
            continue
        for name in re.findall(r"`/([\w-]+)", match.group(1)):
            files[name] = match.group(2)
    return files


def test_readme_names_the_file_of_every_command() -> None:
    files = _table()
    assert set(files) == set(COMMANDS)
    for name, cmd in COMMANDS.items():
        module = cmd.handler.__module__
        assert module.startswith("protocols.line.handlers."), name
        assert module.rsplit(".", 1)[1] + ".py" == files[name], name
