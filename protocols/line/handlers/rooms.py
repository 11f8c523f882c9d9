"""Line-chat commands about rooms: joining and leaving, listing, members, topic, history."""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred

from chatserver.core.errors import ChatError, NoSuchNick, NotOnRoom
from chatserver.core.events import Message
from chatserver.core.names import casefold, is_valid_room
from protocols.costs import FANOUT
from protocols.line.commands import (
    REST,
    ROOM,
    Args,
    CommandError,
    Param,
    Reply,
    account_reply,
    bare_room,
    command,
    room_of,
    split_word,
    visible_room,
)
from protocols.line.render import (
    INFO,
    clean,
    duration,
    history_text,
    members_json,
    members_text,
    message_json,
    room_name,
    topic_text,
)

if TYPE_CHECKING:
    from protocols.line.connection import LineConnection


HISTORY_DEFAULT = 20
HISTORY_MAX = 200


@command(
    "join",
    "<room>[,<room>...] [key[,key...]]",
    "Join rooms (created if they do not exist: you are then their operator). The last one"
    " joined becomes your current room, where plain lines go. Joining a room you are in"
    " makes it current.",
    Param("room", required=True),
    Param("key"),
    json='{"cmd": "join", "room": "dev"}',
    aliases=("j",),
    per_delivery=FANOUT,
)
def do_join(c: LineConnection, a: Args) -> Reply:
    names = [n for n in a["room"].split(",") if n]
    keys = a.get("key", "").split(",")
    reply = Reply()
    joined: list[str] = []
    last: Exception | None = None
    previous = c.current_room
    for i, name in enumerate(names):
        key = keys[i] if i < len(keys) and keys[i] else None
        try:
            result = c.service.join(c.session, bare_room(name), key)
        except ChatError as err:
            reply.errors.append((err, {"room": bare_room(name)}))
            last = err
            continue
        if not result.already_member:
            c.joined(result.room)
        joined.append(result.room.name)
    if not joined:
        assert last is not None
        reply.errors.pop()
        reply.error = last
        return reply
    c.current_room = joined[-1]
    if previous != c.current_room:
        reply.lines.append(f"{INFO}now talking in {room_name(c.current_room)}")
    reply.fields.update(room=c.current_room, rooms=joined)
    return reply


def _parse_part(c: LineConnection, text: str) -> Args:
    word, rest = split_word(text)
    user = c.user
    if word.startswith("#") or (
        user is not None and is_valid_room(word) and casefold(word) in user.rooms
    ):
        args = {"room": word}
        if rest:
            args["reason"] = rest
        return args
    return {"reason": text.strip()} if text.strip() else {}


@command(
    "part",
    "[room] [reason]",
    "Leave a room (the current one unless the first word is a #room or a room you are in).",
    Param("room", ROOM),
    Param("reason", REST),
    json='{"cmd": "part", "room": "dev", "reason": "bye"}',
    parse=_parse_part,
    aliases=("leave",),
    per_delivery=FANOUT,
)
def do_part(c: LineConnection, a: Args) -> Reply:
    room = room_of(c, a)
    c.service.part(c.session, room, a.get("reason", ""))
    return Reply(fields={"room": room})


@command(
    "rooms",
    "",
    "List the rooms with their member counts and topics.",
    json='{"cmd": "rooms"}',
    aliases=("list",),
)
def do_rooms(c: LineConnection, a: Args) -> Reply:
    rooms = c.service.visible_rooms(c.user)
    if not rooms:
        return Reply([f"{INFO}no rooms yet: /join one to create it"], {"rooms": []})
    lines = [f"{INFO}{len(rooms)} room{'s' if len(rooms) != 1 else ''}:"]
    data = []
    for room in rooms:
        count = len(room.members)
        line = f"{INFO}  {room_name(room.name)} ({count} member{'s' if count != 1 else ''})"
        if room.topic:
            line += f": {clean(room.topic)}"
        lines.append(line)
        data.append({"room": room.name, "members": count, "topic": room.topic})
    return Reply(lines, {"rooms": data})


@command(
    "who",
    "[room]",
    "List the members of a room (the current one by default): @ operator, + voiced.",
    Param("room"),
    json='{"cmd": "who", "room": "dev"}',
    aliases=("names",),
)
def do_who(c: LineConnection, a: Args) -> Reply:
    room = visible_room(c, room_of(c, a))
    return Reply([members_text(room)], {"room": room.name, "members": members_json(room)})


@command(
    "whois",
    "<nick>",
    "Show who a user is: account, rooms, away message, idle time.",
    Param("nick", required=True),
    json='{"cmd": "whois", "nick": "bob"}',
)
def do_whois(c: LineConnection, a: Args) -> Reply:
    user = c.service.find_user(a["nick"])
    if user is None:
        raise NoSuchNick(a["nick"])
    who = user.who()
    now = c.clock.seconds()
    rooms = []
    for room in user.rooms.values():
        if not c.service.can_see_room(c.user, room):
            continue
        member = room.members.get(user)
        prefix = "@" if member and member.op else "+" if member and member.voice else ""
        rooms.append((prefix, room.name))
    idle = max(0, int(now - user.last_active))
    lines = [
        f"{INFO}{who.nick} is {who.mask}" + (f" ({clean(who.realname)})" if who.realname else "")
    ]
    if who.account:
        lines.append(f"{INFO}{who.nick} is logged in as {who.account}")
    if rooms:
        lines.append(f"{INFO}{who.nick} is in " + " ".join(p + room_name(r) for p, r in rooms))
    if who.away:
        lines.append(f"{INFO}{who.nick} is away: {clean(who.away)}")
    lines.append(f"{INFO}{who.nick} has been idle {duration(idle)}")
    # Addresses are for operators only: everyone else sees the cloak in the mask.
    viewer = c.user
    addresses = []
    if viewer is not None and "oper" in viewer.modes:
        addresses = [
            {"protocol": conn.protocol, "address": conn.address} for conn in user.connections
        ]
        shown = ", ".join(f"{item['address']} ({item['protocol']})" for item in addresses)
        lines.append(f"{INFO}{who.nick} is connected from {shown}")
    if "oper" in user.modes:
        lines.append(f"{INFO}{who.nick} is a server operator")
    lines.append(f"{INFO}end of whois {who.nick}")
    fields = {
        "nick": who.nick,
        "mask": who.mask,
        "realname": who.realname,
        "account": who.account,
        "away": who.away,
        "rooms": [{"room": r, "status": p} for p, r in rooms],
        "idle": idle,
        "bot": who.bot,
    }
    fields["oper"] = "oper" in user.modes
    if addresses:
        fields["addresses"] = addresses
    return Reply(lines, fields)


@command(
    "topic",
    "[#room] [text]",
    "Show the topic of the current room, or set it (a single - clears it).",
    Param("room", ROOM),
    Param("text", REST),
    json='{"cmd": "topic", "room": "dev", "text": "release on Friday"}',
    per_delivery=FANOUT,
)
def do_topic(c: LineConnection, a: Args) -> Reply:
    name = room_of(c, a)
    if "text" not in a:
        room = visible_room(c, name)
        return Reply(
            [topic_text(room)],
            {
                "room": room.name,
                "topic": room.topic,
                "topic_by": room.topic_by.split("!", 1)[0] or None,
                "topic_at": room.topic_at or None,
            },
        )
    text = a["text"]
    if text.strip() == "-":
        text = ""
    c.service.set_topic(c.session, name, text)
    return Reply(fields={"room": name, "topic": text})


@command(
    "register-room",
    "[#room]",
    "Register the current room to your account: its topic, modes, bans and operators then"
    " survive restarts. You must be logged in and its operator.",
    Param("room", ROOM),
    json='{"cmd": "register-room", "room": "dev"}',
    aliases=("registerroom",),
)
def do_register_room(c: LineConnection, a: Args) -> Deferred:
    name = room_of(c, a)
    d = c.service.register_room(c.session, name)
    return d.addCallback(
        account_reply(
            [f"{INFO}{room_name(name)} is now registered: its topic, modes and operators are kept"],
            room=name,
        )
    )


@command(
    "retention",
    "[#room] <days|off>",
    "Keep a registered room's history fewer days than the server does (its operators only);"
    " older messages are deleted at once. off: as the server does.",
    Param("room", ROOM),
    Param("days", required=True),
    json='{"cmd": "retention", "room": "dev", "days": 7}',
)
def do_retention(c: LineConnection, a: Args) -> Deferred:
    name = room_of(c, a)
    text = a["days"]
    days: float | None = None
    if text.lower() != "off":
        try:
            days = float(text)
        except ValueError:
            raise CommandError("bad_argument", "days must be a number or off", usage=True) from None

    def done(deleted: int) -> Reply:
        if days is None:
            return Reply(
                [f"{INFO}{room_name(name)} keeps history as the server does"], {"room": name}
            )
        return Reply(
            [
                f"{INFO}{room_name(name)} keeps history {days:g} days ({deleted} older messages deleted)"
            ],
            {"room": name, "days": days, "deleted": deleted},
        )

    return c.service.set_room_retention(c.session, name, days).addCallback(done)


@command(
    "history",
    "[#room|nick] [count]",
    f"Show the last messages of a room, or of your private conversation with a nick (kept"
    f" while you are logged in to an account), default {HISTORY_DEFAULT}, at most {HISTORY_MAX}.",
    Param("room", ROOM),
    Param("nick"),
    Param("count"),
    json='{"cmd": "history", "room": "dev", "count": 50} or {"cmd": "history", "nick": "bob"}',
)
def do_history(c: LineConnection, a: Args) -> Deferred:
    nick = a.get("nick")
    count_text = a.get("count")
    if (
        nick is not None
        and count_text is None
        and ((nick.isascii() and nick.isdigit()) or a.get("room"))
    ):
        # "/history 20" and "/history #dev 20": a count, not a nick.
        nick, count_text = None, nick
    if count_text is None:
        count_text = str(HISTORY_DEFAULT)
    if (
        not (count_text.isascii() and count_text.isdigit())
        or not 1 <= int(count_text) <= HISTORY_MAX
    ):
        raise CommandError(
            "bad_argument", f"count must be a number from 1 to {HISTORY_MAX}", usage=True
        )
    if nick is not None and not a.get("room"):
        return _private_history(c, nick, int(count_text))
    name = room_of(c, a)
    room = visible_room(c, name)
    if c.user not in room.members:
        raise NotOnRoom(room.name)

    def show(messages: list[Message]) -> Reply:
        now = c.clock.seconds()
        lines = [f"{INFO}history of {room_name(room.name)} ({len(messages)} messages):"]
        lines.extend(history_text(m, now) for m in messages)
        lines.append(f"{INFO}end of history of {room_name(room.name)}")
        data = [{**message_json(m), "history": True} for m in messages]
        return Reply(lines, {"room": room.name, "messages": data})

    return c.service.history_latest(room.name, int(count_text)).addCallback(show)


def _private_history(c: LineConnection, nick: str, count: int) -> Deferred:
    if c.user is None or c.user.account is None:
        raise CommandError(
            "not_logged_in", "private messages are kept for accounts: /identify first"
        )

    def show(messages: list[Message]) -> Reply:
        now = c.clock.seconds()
        lines = [f"{INFO}history with {nick} ({len(messages)} messages):"]
        lines.extend(history_text(m, now) for m in messages)
        lines.append(f"{INFO}end of history with {nick}")
        data = [{**message_json(m), "history": True} for m in messages]
        return Reply(lines, {"nick": nick, "messages": data})

    return c.service.archive_query(c.session, nick, count).addCallback(show)
