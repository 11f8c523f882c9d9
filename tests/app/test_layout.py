"""The package layout reads wiring -> protocols -> core: imports go only that way.

Walks the source (not what happens to be imported) so that a lazy import inside a function
counts as much as one at the top of a module.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WIRING = ("chatserver.server", "chatserver.cli", "chatserver.__main__")


def imports_of(package: str) -> dict[str, set[str]]:
    """Every module a package's files import, by file (relative path)."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
                names.update(f"{node.module}.{a.name}" for a in node.names)
        found[str(path.relative_to(ROOT))] = names
    return found


def offenders(package: str, forbidden: tuple[str, ...]) -> list[str]:
    return sorted(
        f"{path}: {name}"
        for path, names in imports_of(package).items()
        for name in names
        if any(name == f or name.startswith(f + ".") for f in forbidden)
    )


def test_the_walk_sees_imports() -> None:
    # The wiring imports every protocol: if the walk missed that, the checks below prove nothing.
    app = imports_of("chatserver/server")["chatserver/server/app.py"]
    assert {"protocols.irc.factory", "protocols.line.factory", "protocols.xmpp.factory"} <= app


def test_protocols_import_no_wiring() -> None:
    assert offenders("protocols", WIRING) == []


def test_core_and_storage_import_no_protocol_and_no_wiring() -> None:
    assert offenders("chatserver/core", ("protocols", *WIRING)) == []
    assert offenders("chatserver/storage", ("protocols", *WIRING)) == []


def test_shared_modules_import_no_protocol_and_no_wiring() -> None:
    # config and passwords are read by the wiring, the protocols and the tests alike.
    for module in ("config.py", "passwords.py"):
        names = imports_of("chatserver")[f"chatserver/{module}"]
        assert not {n for n in names if n.startswith(("protocols", *WIRING))}, module


def test_wiring_lives_in_its_own_package() -> None:
    # Nothing that assembles or runs the server sits beside the core in chatserver/.
    top = {p.name for p in (ROOT / "chatserver").glob("*.py")}
    assert top <= {"__init__.py", "__main__.py", "cli.py", "config.py", "passwords.py"}
