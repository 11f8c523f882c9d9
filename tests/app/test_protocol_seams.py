"""Protocols use the core only through its API: ChatService (with its read-only views) and the
modules every side shares (errors, events, interfaces, names), never the core's objects,
the storage or the wiring.

Walks the source, so that an import inside a function or under TYPE_CHECKING counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# What a protocol may import of the core: the API and the vocabulary it speaks in.
CORE_API = frozenset(
    {
        "chatserver.core.errors",
        "chatserver.core.events",
        "chatserver.core.interfaces",
        "chatserver.core.names",
        "chatserver.core.service",
        "chatserver.core.views",
    }
)
# Value types with no core state in them, shared with other layers: the rate-limit bucket
# (the core throttles with it too) and the stored forms of an XMPP roster item and of XMPP
# personal data (the storage writes them), and of a room event in history.
CORE_VALUES = frozenset(
    {
        "chatserver.core.limits.TokenBucket",
        "chatserver.core.records.RosterItem",
        "chatserver.core.records.PepItem",
        "chatserver.core.records.PepNode",
        # A room event as history keeps it: CHATHISTORY replays it (draft/event-playback).
        "chatserver.core.records.RoomEventRecord",
    }
)
# No protocol reaches under the core's API into these, nor into the storage or the wiring.
FORBIDDEN = ("chatserver.storage", "chatserver.server", "chatserver.cli")


def imported_names(path: Path) -> set[str]:
    """Every module and ``module.name`` a file imports (absolute imports)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if not node.module.startswith("chatserver.core"):
                names.add(node.module)
                continue
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def allowed(name: str) -> bool:
    if name.startswith(FORBIDDEN):
        return False
    if name == "chatserver.core" or name.startswith("chatserver.core."):
        module = name.rsplit(".", 1)[0]
        return module in CORE_API or name in CORE_API or name in CORE_VALUES
    return True


def offenders() -> list[str]:
    return sorted(
        f"{path.relative_to(ROOT)}: {name}"
        for path in (ROOT / "protocols").rglob("*.py")
        for name in imported_names(path)
        if not allowed(name)
    )


def test_the_walk_sees_core_imports() -> None:
    # Every connection imports core errors: if the walk missed them the check proves nothing.
    names = imported_names(ROOT / "protocols" / "line" / "connection.py")
    assert any(name.startswith("chatserver.core.errors.") for name in names)
    assert not allowed("chatserver.core.rooms.Room")
    assert not allowed("chatserver.core.users")
    assert not allowed("chatserver.storage.sqlite")
    assert allowed("chatserver.core.views.RoomView")


def test_protocols_use_only_the_core_api() -> None:
    assert offenders() == []


STATE = ("rooms", "users", "accounts", "connections", "by_account", "observers")


def state_reads(source: str) -> list[int]:
    """Lines where ``service.<table>`` or ``<x>.service.<table>`` is read."""
    return [
        node.lineno
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Attribute)
        and node.attr in STATE
        and (
            (isinstance(node.value, ast.Attribute) and node.value.attr == "service")
            or (isinstance(node.value, ast.Name) and node.value.id == "service")
        )
    ]


def test_protocols_do_not_reach_into_the_service_state() -> None:
    # service.rooms, service.users, service.accounts (and the like) are the core's own
    # tables: protocols ask ChatService's queries instead.
    assert state_reads("conn.service.rooms\nx = getattr(service.accounts, 'store')") == [1, 2]
    assert state_reads("conn.service.visible_rooms(user)") == []
    found = [
        f"{path.relative_to(ROOT)}:{line}"
        for path in (ROOT / "protocols").rglob("*.py")
        for line in state_reads(path.read_text())
    ]
    assert found == []
