"""Line-chat commands that send messages: to rooms and to users."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred

from chatserver.core.events import Message
from chatserver.core.names import is_valid_room, room_key
from protocols.line.commands import REST, ROOM, Args, Param, Reply, command, room_of

if TYPE_CHECKING:
    from protocols.line.connection import LineConnection


@command(
    "say",
    "[#room] <text>",
    "Say something in the current room (what a plain line does), or in another room you are"
    " in. Start a line with // to say something that starts with /.",
    Param("room", ROOM),
    Param("text", REST, required=True),
    json='{"cmd": "say", "room": "dev", "text": "hello"}',
)
def do_say(c: LineConnection, a: Args) -> Reply:
    room = room_of(c, a)
    return _sent(c.service.say(c.session, text=a["text"], room=room))


@command(
    "msg",
    "<nick|#room> <text>",
    "Send a private message to a user (or a message to a room). A bare name is a nick when"
    " someone has it, else a room.",
    Param("to", required=True),
    Param("text", REST, required=True),
    json='{"cmd": "msg", "to": "bob", "text": "hi"}',
    aliases=("m", "query", "privmsg"),
)
def do_msg(c: LineConnection, a: Args) -> Reply | Deferred:
    return _deliver_message(c, a["to"], a["text"], "privmsg")


@command(
    "me",
    "[#room] <action>",
    "Describe an action in the current room: /me waves shows * alice waves.",
    Param("room", ROOM),
    Param("text", REST, required=True),
    json='{"cmd": "me", "room": "dev", "text": "waves"} (or "to": "bob" for a private one)',
    aliases=("action",),
)
def do_me(c: LineConnection, a: Args) -> Reply | Deferred:
    if a.get("to"):
        return _deliver_message(c, a["to"], a["text"], "action")
    room = room_of(c, a)
    return _sent(c.service.say(c.session, text=a["text"], room=room, kind="action"))


@command(
    "notice",
    "<nick|#room> <text>",
    "Send a notice: like a message, but bots never answer notices.",
    Param("to", required=True),
    Param("text", REST, required=True),
    json='{"cmd": "notice", "to": "bob", "text": "build finished"}',
)
def do_notice(c: LineConnection, a: Args) -> Reply | Deferred:
    return _deliver_message(c, a["to"], a["text"], "notice")


def _deliver_message(c: LineConnection, to: str, text: str, kind: Any) -> Reply | Deferred:
    """Send to ``#room`` or ``room``, or to a nick (a bare name is a nick if one is online).

    A private message to a registered account nobody is using is kept for its next login."""
    if to.startswith("#"):
        msg = c.service.say(c.session, text=text, room=room_key(to[1:]), kind=kind)
    elif (
        c.service.find_user(to) is not None
        or not is_valid_room(to)
        or (c.service.get_room(to) is None)
    ):
        if c.service.find_user(to) is None and kind != "notice":
            d = c.service.say_offline(c.session, nick=to, text=text, kind=kind)
            return d.addCallback(_sent)
        msg = c.service.say(c.session, text=text, nick=to, kind=kind)
    else:
        msg = c.service.say(c.session, text=text, room=room_key(to), kind=kind)
    return _sent(msg)


def _sent(msg: Message) -> Reply:
    fields: dict[str, Any] = {"id": msg.id}
    if msg.room is not None:
        fields["room"] = msg.room
    else:
        fields["to"] = msg.target
    return Reply(fields=fields)
