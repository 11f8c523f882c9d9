"""RENAME (IRCv3 draft/channel-rename): room operators rename a room.

``RENAME <#old> <#new> [:reason]``.  Members that negotiated ``draft/channel-rename`` get
``RENAME``; the others see themselves part the old channel and join the new one (with its
topic and names), as the specification asks.  Modes, registration and history follow the
room (``ChatService.rename_room``).
"""

from __future__ import annotations

from typing import Any

from chatserver.core.errors import BadName, NoSuchRoom, NotOnRoom, NotPermitted
from chatserver.core.events import RoomRenamed
from protocols.irc import caps
from protocols.irc import numerics as n
from protocols.irc.caps import Capability, add_capability
from protocols.irc.channels import channel_name, room_of, send_names, send_topic
from protocols.irc.commands import command
from protocols.irc.render import event_tags, line, renders

CAP = "draft/channel-rename"
add_capability(Capability(CAP, requires_command="RENAME"))


@command("RENAME", min_params=2, cost=2.0)
def rename(conn: Any, msg: Any) -> None:
    old_name, new_name = msg.params[0], msg.params[1]
    reason = msg.params[2] if len(msg.params) > 2 else ""
    old = room_of(old_name)
    room = conn.service.get_room(old) if old is not None else None
    if room is None:
        conn.reply(n.ERR_NOSUCHCHANNEL, old_name, "No such channel")
        return
    new = room_of(new_name)
    if new is None:
        conn.fail("RENAME", "CANNOT_RENAME", old_name, new_name, description="Invalid channel name")
        return
    try:
        conn.service.rename_room(conn.core, room.name, new, reason)
    except NotOnRoom:
        conn.reply(n.ERR_NOTONCHANNEL, old_name, "You're not on that channel")
    except NotPermitted:
        conn.reply(n.ERR_CHANOPRIVSNEEDED, old_name, "You're not a channel operator")
    except NoSuchRoom:
        conn.reply(n.ERR_NOSUCHCHANNEL, old_name, "No such channel")
    except BadName as err:
        code = "CHANNEL_NAME_IN_USE" if conn.service.get_room(new) else "CANNOT_RENAME"
        conn.fail("RENAME", code, old_name, new_name, description=err.reason)


@renders(RoomRenamed)
def render_rename(conn: Any, event: RoomRenamed) -> bytes | None:
    old, new = channel_name(event.old), channel_name(event.new)
    if CAP in conn.caps:
        tags = event_tags(event.ts, event.who, conn.cap_bits)
        return line(tags, event.who.mask, "RENAME", (old, new), event.reason)
    # Without the capability: the client leaves the old channel and joins the new one.
    reason = event.reason or f"Channel renamed to {new}"
    user = conn.user
    if user is None:
        return None
    me = user.who()
    tags = event_tags(event.ts, me, conn.cap_bits)
    conn.emit(line(tags, me.mask, "PART", (old,), reason))
    if conn.cap_bits & caps.EXTENDED_JOIN:
        conn.emit(line(tags, me.mask, "JOIN", (new, me.account or "*"), me.realname))
    else:
        conn.emit(line(tags, me.mask, "JOIN", (new,)))
    room = conn.service.get_room(event.new)
    if room is not None:
        send_topic(conn, room, quiet_if_none=True)
        send_names(conn, room)
    return None
