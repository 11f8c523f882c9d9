"""Room display names set through the configuration form (``muc#roomconfig_roomname``).

The core has no field for them, so they live here for the life of the process and fall back
to the room's own name.
"""

from __future__ import annotations

from chatserver.core.rooms import Room

_names: dict[str, str] = {}


def display_name(room: Room) -> str:
    return _names.get(room.name) or room.name


def set_display_name(room: Room, name: str) -> None:
    name = name.strip()
    if name and name != room.name:
        _names[room.name] = name[:100]
    else:
        _names.pop(room.name, None)


def forget(key: str) -> None:
    _names.pop(key, None)


def forget_gone(live_rooms: dict[str, Room]) -> None:
    """Drop names of rooms that no longer exist, so that a new room of the name starts fresh."""
    for key in [k for k in _names if k not in live_rooms]:
        del _names[key]
