"""The IRC README's command table names the file that holds each command's handler."""

from __future__ import annotations

import re
from pathlib import Path

import protocols.irc.handlers  # noqa: F401  (registers every command)
from protocols.irc.commands import COMMANDS

README = Path(__file__).parents[2] / "protocols" / "irc" / "README.md"


def _table() -> dict[str, set[str]]:
    """Command -> the files its row of the README's command table names."""
    rows: dict[str, set[str]] = {}
    for row in README.read_text().splitlines():
        if not row.startswith("| `"):
            continue
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", row.strip())[1:-1]]
        if len(cells) != 3:
            continue
        files = set(re.findall(r"`(\w+\.py)`", cells[2]))
        # A row may name a file per command: `query.py` (`ISON`, `USERHOST`).
        per_file = re.findall(r"`(\w+\.py)` \(([^)]*)\)", cells[2])
        for name in re.findall(r"`([A-Z]+)", cells[0]):
            named = {f for f, cmds in per_file if f"`{name}`" in cmds}
            rows.setdefault(name, set()).update(named or files)
    return rows


def test_readme_names_the_file_of_every_command() -> None:
    rows = _table()
    assert set(COMMANDS) <= set(rows), sorted(set(COMMANDS) - set(rows))
    for name, spec in COMMANDS.items():
        module = spec.handler.__module__
        assert module.startswith("protocols.irc.handlers."), name
        assert module.rsplit(".", 1)[1] + ".py" in rows[name], (name, rows[name])
