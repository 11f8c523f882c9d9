"""Line-chat commands of room operators: kicks, bans, invitations, status and modes."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from chatserver.core.events import ModeItem
from protocols.costs import FANOUT
from protocols.line.commands import (
    REST,
    ROOM,
    Args,
    CommandError,
    Handler,
    Param,
    Reply,
    command,
    room_of,
    split_word,
    visible_room,
)
from protocols.line.modes import ModeSyntaxError, format_changes, parse_changes
from protocols.line.render import INFO, clock_time, room_json, room_name

if TYPE_CHECKING:
    from protocols.line.connection import LineConnection


@command(
    "kick",
    "[#room] <nick> [reason]",
    "Remove a user from the current room (operators only).",
    Param("room", ROOM),
    Param("nick", required=True),
    Param("reason", REST),
    json='{"cmd": "kick", "room": "dev", "nick": "bob", "reason": "spam"}',
    per_delivery=FANOUT,
)
def do_kick(c: LineConnection, a: Args) -> Reply:
    room = room_of(c, a)
    c.service.kick(c.session, room, a["nick"], a.get("reason", ""))
    return Reply(fields={"room": room, "nick": a["nick"]})


@command(
    "ban",
    "[#room] [nick|mask]",
    "Ban a nick (nick!*@*), a mask (nick!ident@host, * and ? match) or an account"
    " ($a:name) from the current room, or mute one ($m:mask: may stay, may not speak);"
    " without one, list the bans.",
    Param("room", ROOM),
    Param("mask"),
    json='{"cmd": "ban", "room": "dev", "mask": "bob"}',
    per_delivery=FANOUT,
)
def do_ban(c: LineConnection, a: Args) -> Reply:
    name = room_of(c, a)
    if a.get("mask"):
        return _apply_modes(c, name, [ModeItem(True, "ban", a["mask"])])
    room = visible_room(c, name)
    bans = [{"mask": b.mask, "set_by": b.set_by, "set_at": b.set_at} for b in room.bans]
    if not bans:
        return Reply([f"{INFO}no bans in {room_name(room.name)}"], {"room": room.name, "bans": []})
    lines = [f"{INFO}bans of {room_name(room.name)} ({len(bans)}):"]
    now = c.clock.seconds()
    lines.extend(
        f"{INFO}  {b.mask} (by {b.set_by.split('!', 1)[0]}, {clock_time(b.set_at, now)})"
        for b in room.bans
    )
    return Reply(lines, {"room": room.name, "bans": bans})


@command(
    "unban",
    "[#room] <mask>",
    "Lift a ban (as /ban lists it, or the nick it was set on).",
    Param("room", ROOM),
    Param("mask", required=True),
    json='{"cmd": "unban", "room": "dev", "mask": "bob!*@*"}',
    per_delivery=FANOUT,
)
def do_unban(c: LineConnection, a: Args) -> Reply:
    return _apply_modes(c, room_of(c, a), [ModeItem(False, "ban", a["mask"])])


@command(
    "invite",
    "<nick> [room]",
    "Invite a user to a room (the current one by default); they may then join it past"
    " invite-only, a key or a limit.",
    Param("nick", required=True),
    Param("room"),
    json='{"cmd": "invite", "nick": "bob", "room": "dev"}',
)
def do_invite(c: LineConnection, a: Args) -> Reply:
    room = room_of(c, a)
    target = c.service.invite(c.session, a["nick"], room)
    return Reply(fields={"room": room, "nick": target.nick})


def _status_command(mode: str, adding: bool) -> Handler:
    def handler(c: LineConnection, a: Args) -> Reply:
        room = room_of(c, a)
        nicks = [n for n in re.split(r"[\s,]+", a["nick"]) if n]
        return _apply_modes(c, room, [ModeItem(adding, mode, n) for n in nicks])

    return handler


for _name, _mode, _adding, _what in (
    ("op", "op", True, "Make users operators of the current room"),
    ("deop", "op", False, "Take operator status away"),
    ("voice", "voice", True, "Let users speak in a moderated room"),
    ("devoice", "voice", False, "Take voice away"),
):
    command(
        _name,
        "[#room] <nick>[ <nick>...]",
        f"{_what} (operators only).",
        Param("room", ROOM),
        Param("nick", REST, required=True),
        json=f'{{"cmd": "{_name}", "room": "dev", "nick": "bob"}}',
    )(_status_command(_mode, _adding))


def _parse_mode(c: LineConnection, text: str) -> Args:
    word, rest = split_word(text)
    if not word:
        return {}
    if word.startswith(("+", "-")):
        return {"changes": text.strip()}
    args = {"room": word}
    if rest:
        args["changes"] = rest
    return args


MODE_HELP = (
    "Show the modes of a room, or change them (operators only). Write modes as words or"
    " letters: +moderated/+m (only voiced members speak), +invite_only/+i, +topic_lock/+t"
    " (only operators set the topic), +no_external/+n (only members send), +secret/+s"
    " (hidden from /rooms), +registered_only/+R, +no_ctcp/+C, +key/+k <key>,"
    " +limit/+l <count>,"
    " +ban/+b <mask>, +invite/+I <mask> (may join past invite-only), +op/+o <nick>,"
    " +voice/+v <nick>. Several at once: /mode dev +mt-s or /mode dev +moderated -secret."
)


@command(
    "mode",
    "[room] [+/-modes [args]]",
    MODE_HELP,
    Param("room"),
    Param("changes", REST),
    json='{"cmd": "mode", "room": "dev", "changes": "+moderated +key secret"}',
    parse=_parse_mode,
    per_delivery=FANOUT,
)
def do_mode(c: LineConnection, a: Args) -> Reply:
    name = room_of(c, a)
    changes = a.get("changes", "").split()
    if changes:
        try:
            items = parse_changes(changes)
        except ModeSyntaxError as err:
            raise CommandError("bad_argument", str(err), usage=True) from None
        return _apply_modes(c, name, items)
    room = visible_room(c, name)
    member = c.user in room.members
    state = [
        ModeItem(True, mode, arg if (mode != "key" or member) else None)
        for mode, arg in room.mode_state()
    ]
    shown = format_changes(state) or "none"
    fields = room_json(room, show_key=member)
    del fields["members"]
    return Reply([f"{INFO}modes of {room_name(room.name)}: {shown}"], fields)


def _apply_modes(c: LineConnection, room: str, items: list[ModeItem]) -> Reply:
    applied, errors = c.service.set_mode(c.session, room, items)
    if not applied and errors:
        return Reply(errors=[(err, {}) for err in errors[:-1]], error=errors[-1])
    reply = Reply(
        fields={
            "room": room,
            "applied": [{"adding": i.adding, "mode": i.mode, "arg": i.arg} for i in applied],
        },
        errors=[(err, {}) for err in errors],
    )
    if not applied:
        reply.lines.append(f"{INFO}no change to the modes of {room_name(room)}")
    return reply
