"""Room display names set through the configuration form (``muc#roomconfig_roomname``).

The core has no field for them, so they live here for the life of the process and fall back
to the room's own name.
"""

from __future__ import annotations

from collections.abc import Callable

from chatserver.core.views import RoomView

_names: dict[str, str] = {}


def display_name(room: RoomView) -> str:
    return _names.get(room.name) or room.name


def set_display_name(room: RoomView, name: str) -> None:
    name = name.strip()
    if name and name != room.name:
        _names[room.name] = name[:100]
    else:
        _names.pop(room.name, None)


def forget(key: str) -> None:
    _names.pop(key, None)


def forget_gone(exists: Callable[[str], bool]) -> None:
    """Drop names of rooms that no longer exist, so that a new room of the name starts fresh."""
    for key in [k for k in _names if not exists(k)]:
        del _names[key]
