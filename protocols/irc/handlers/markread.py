"""Read markers (IRCv3 ``draft/read-marker``): ``MARKREAD <target> [timestamp=…]``.

One read position per account and conversation, shared with every protocol (an XMPP client
marking a message displayed moves it too).  Setting it tells every connection of the account
with the capability (``MARKREAD <target> timestamp=…``); asking answers the same line, with
``*`` when nothing was read yet.  A user without an account has positions too, for as long as
it is online.
"""

from __future__ import annotations

from typing import Any

from chatserver.core.errors import ChatError
from chatserver.core.events import ReadMarker
from chatserver.core.names import is_valid_nick
from protocols.irc.caps import Capability, add_capability
from protocols.irc.channels import channel_name, is_channel, room_of
from protocols.irc.commands import command
from protocols.irc.handlers.chathistory import format_timestamp, parse_timestamp
from protocols.irc.render import line, renders

CAP = "draft/read-marker"
add_capability(Capability(CAP, requires_command="MARKREAD"))


def _where(target: str) -> dict[str, str] | None:
    if is_channel(target):
        key = room_of(target)
        return None if key is None else {"room": key}
    return {"nick": target} if is_valid_nick(target) else None


@command("MARKREAD")
def markread(conn: Any, msg: Any) -> Any:
    if not msg.params or not msg.params[0]:
        conn.fail("MARKREAD", "NEED_MORE_PARAMS", description="Missing parameters")
        return None
    target = msg.params[0]
    where = _where(target)
    if where is None:
        conn.fail("MARKREAD", "INVALID_PARAMS", target, description="Invalid target")
        return None
    if len(msg.params) < 2:
        d = conn.service.read_marker(conn.core, **where)
        d.addCallback(
            lambda ts: conn.send(
                "MARKREAD", target, "*" if ts is None else f"timestamp={format_timestamp(ts)}"
            )
        )
        return d.addErrback(_failed, conn, target)
    kind, _, value = msg.params[1].partition("=")
    try:
        if kind != "timestamp":
            raise ValueError(kind)
        ts = parse_timestamp(value)
    except ValueError:
        conn.fail("MARKREAD", "INVALID_PARAMS", msg.params[1], description="Invalid timestamp")
        return None
    # Every connection of the account hears the new position (ReadMarker), this one too.
    return conn.service.mark_read(conn.core, ts, **where).addErrback(_failed, conn, target)


def on_join(conn: Any, room: str) -> Any:
    """The room's read position, for a client with the capability, in the join's names
    (before 366, as the specification asks): a Deferred that fires once it is sent, or None
    for a client without the capability."""
    if CAP not in conn.caps or conn.user is None:
        return None
    target = channel_name(room)
    d = conn.service.read_marker(conn.core, room=room)
    d.addCallback(
        lambda ts: conn.send(
            "MARKREAD", target, "*" if ts is None else f"timestamp={format_timestamp(ts)}"
        )
    )
    return d.addErrback(_failed, conn, target)


def _failed(failure: Any, conn: Any, target: str) -> None:
    if not failure.check(ChatError):
        failure.raiseException()
    conn.fail("MARKREAD", "INTERNAL_ERROR", target, description=str(failure.value))


@renders(ReadMarker)
def render_read_marker(conn: Any, event: ReadMarker) -> bytes | None:
    if CAP not in conn.caps:
        return None
    target = event.target
    shown = channel_name(target[1:]) if target.startswith("#") else _nick(conn, target)
    return line(
        None, conn.server_name, "MARKREAD", (shown, f"timestamp={format_timestamp(event.read_ts)}")
    )


def _nick(conn: Any, key: str) -> str:
    user = conn.service.find_user(key)
    return user.nick if user is not None else key
