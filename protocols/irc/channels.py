"""How a core room looks on IRC: ``#name``, its topic, its NAMES list.

Shared by the JOIN/NAMES/TOPIC handlers and by the renderer (a user's other connections are
sent the topic and names when the user joins from elsewhere).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from chatserver.core.errors import BadName
from chatserver.core.names import room_key
from chatserver.core.views import MemberView, RoomView
from protocols.irc import caps
from protocols.irc import numerics as n
from protocols.irc.modes import STATUS_PREFIX

if TYPE_CHECKING:
    from protocols.irc.connection import IrcConnection

CHANTYPES = "#"
# A NAMES line's room for the names after ``353 nick = #room :`` (RFC 2812 visibility mark).
PUBLIC, SECRET = "=", "@"


def channel_name(key: str) -> str:
    """The IRC name of a room key."""
    return "#" + key


# On every message to a channel, nearly always one of a few names: the fold and the check
# are made once per name (the answer depends on the name alone; bounded memory).
@functools.lru_cache(maxsize=4096)
def room_of(name: str) -> str | None:
    """The room key an IRC channel name stands for, or None if it is not a valid channel."""
    if not name.startswith("#"):
        return None
    try:
        return room_key(name[1:])
    except BadName:
        return None


def is_channel(target: str) -> bool:
    return target.startswith(CHANTYPES)


def prefixes(member: MemberView, multi: bool) -> str:
    """``@``, ``+``, ``@+`` (multi-prefix) or ``""``."""
    out = [STATUS_PREFIX[s] for s in member.statuses()]
    if not multi:
        out = out[:1]
    return "".join(out)


def can_see_room(conn: IrcConnection, room: RoomView) -> bool:
    """The core's rule: secret rooms are seen only by their members and server operators."""
    return conn.service.can_see_room(conn.user, room)


def send_topic(conn: IrcConnection, room: RoomView, *, quiet_if_none: bool = False) -> None:
    """332/333, or 331 when there is no topic (not sent on JOIN, as servers do)."""
    name = channel_name(room.name)
    if room.topic:
        conn.reply(n.RPL_TOPIC, name, room.topic)
        conn.reply(
            n.RPL_TOPICWHOTIME, name, room.topic_by or conn.server_name, str(int(room.topic_at))
        )
    elif not quiet_if_none:
        conn.reply(n.RPL_NOTOPIC, name, "No topic is set")


def send_names(conn: IrcConnection, room: RoomView, *, end: bool = True) -> None:
    """353 lines that fit in 512 bytes each, then 366."""
    name = channel_name(room.name)
    user = conn.user
    is_member = user is not None and user in room.members
    multi = bool(conn.cap_bits & caps.MULTI_PREFIX)
    uhnames = bool(conn.cap_bits & caps.USERHOST_IN_NAMES)
    if can_see_room(conn, room):
        entries = []
        for member_user, member in room.members.items():
            # Invisible users are listed only to those who share the room.
            if not is_member and "invisible" in member_user.modes and not conn.is_oper:
                continue
            shown = member_user.who().mask if uhnames else member_user.nick
            entries.append(prefixes(member, multi) + shown)
        kind = SECRET if "secret" in room.flags else PUBLIC
        head = f":{conn.server_name} {n.RPL_NAMREPLY} {conn.nick} {kind} {name} :"
        # Room for the names: 512 less the head and the CRLF.
        budget = 510 - len(head.encode())
        line: list[str] = []
        used = 0
        for entry in entries:
            size = len(entry.encode()) + (1 if line else 0)
            if line and used + size > budget:
                conn.reply(n.RPL_NAMREPLY, kind, name, " ".join(line))
                line, used = [], 0
                size -= 1
            line.append(entry)
            used += size
        if line:
            conn.reply(n.RPL_NAMREPLY, kind, name, " ".join(line))
    if end:
        conn.reply(n.RPL_ENDOFNAMES, name, "End of /NAMES list")
