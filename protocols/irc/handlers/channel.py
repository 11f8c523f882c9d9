"""Channel commands: JOIN, PART, TOPIC, NAMES, LIST, KICK, INVITE and MODE (channel modes;
MODE on a nick goes to :mod:`protocols.irc.handlers.usermode`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred

from chatserver.core.errors import ChatError, NoSuchNick
from chatserver.core.events import ModeItem
from chatserver.core.names import glob_match
from chatserver.core.views import RoomView
from protocols.costs import FANOUT
from protocols.irc import caps
from protocols.irc import numerics as n
from protocols.irc.channels import (
    can_see_room,
    channel_name,
    is_channel,
    room_of,
    send_names,
    send_topic,
)
from protocols.irc.commands import command
from protocols.irc.handlers import markread, metadata
from protocols.irc.handlers.usermode import user_mode
from protocols.irc.modes import CHANNEL_LETTERS, CHANNEL_MODES, format_changes

if TYPE_CHECKING:
    from protocols.irc.connection import IrcConnection
    from protocols.irc.message import IrcMessage

MODES_PER_COMMAND = 4
MAX_LIST_ENTRIES = 100
# The list modes (MAXLIST) and each one's entries.
_LISTS: dict[str, Callable[[RoomView], Sequence[object]]] = {
    "ban": lambda room: room.bans,
    "except": lambda room: room.excepts,
    "invite": lambda room: room.invites,
}
KEY_MAX = 23


def _room_or_error(conn: IrcConnection, name: str) -> RoomView | None:
    key = room_of(name)
    room = conn.service.get_room(key) if key is not None else None
    if room is None:
        conn.reply(n.ERR_NOSUCHCHANNEL, name, "No such channel")
    return room


# -- JOIN / PART -------------------------------------------------------------------------------


@command("JOIN", min_params=1, cost=2.0, per_delivery=FANOUT)
def join(conn: IrcConnection, msg: IrcMessage) -> Deferred[Any] | None:
    assert conn.core is not None and conn.user is not None
    if msg.params[0] == "0":
        for room in list(conn.user.rooms.values()):
            conn.service.part(conn.core, room.name, "Left all channels")
        return None
    names = msg.params[0].split(",")
    keys = msg.params[1].split(",") if len(msg.params) > 1 else []
    # A join may wait for the room's read position (from the store): the rooms after it
    # wait their turn, so that each room's replies stay together and in order.
    waiting: Deferred[Any] | None = None
    for index, name in enumerate(names):
        if not name:
            continue
        key = keys[index] if index < len(keys) and keys[index] else None
        if waiting is None:
            waiting = _join_one(conn, name, key)
        else:
            waiting.addCallback(_join_next, conn, name, key)
    return waiting


def _join_next(_: Any, conn: IrcConnection, name: str, key: str | None) -> Any:
    return _join_one(conn, name, key)


def _join_one(conn: IrcConnection, name: str, key: str | None) -> Deferred[Any] | None:
    assert conn.core is not None
    room_key = room_of(name)
    if room_key is None:
        conn.reply(n.ERR_NOSUCHCHANNEL, name, "No such channel")
        return None
    try:
        result = conn.service.join(conn.core, room_key, key)
    except ChatError as err:
        conn.reply_error(err, "JOIN", name)
        return None
    if result.already_member:
        return None
    room = result.room
    send_topic(conn, room, quiet_if_none=True)
    send_names(conn, room, end=False)

    def rest(_: Any = None) -> None:
        conn.reply(n.RPL_ENDOFNAMES, channel_name(room.name), "End of /NAMES list")
        _replay_recent(conn, room)
        metadata.after_join(conn, room.name)

    marker = markread.on_join(conn, room.name)
    if marker is None:
        rest()
        return None
    return marker.addCallback(rest)


def _replay_recent(conn: IrcConnection, room: RoomView) -> None:
    """Recent messages for clients that can tell them from new ones (server-time and batch)
    and that do not fetch history themselves (draft/chathistory)."""
    wanted = caps.SERVER_TIME | caps.BATCH
    if conn.cap_bits & wanted != wanted or "draft/chathistory" in conn.caps:
        return
    count = conn.service.settings.join_history_lines
    messages = conn.service.recent(room.name, count) if count > 0 else []
    if not messages:
        return
    batch_id = conn.start_batch("chathistory", channel_name(room.name))
    conn.queue_history(messages, batch_id)
    conn.end_batch(batch_id)


@command("PART", min_params=1, per_delivery=FANOUT)
def part(conn: IrcConnection, msg: IrcMessage) -> None:
    assert conn.core is not None
    reason = msg.params[1] if len(msg.params) > 1 else ""
    for name in msg.params[0].split(","):
        if not name:
            continue
        key = room_of(name)
        if key is None:
            conn.reply(n.ERR_NOSUCHCHANNEL, name, "No such channel")
            continue
        try:
            conn.service.part(conn.core, key, reason)
        except ChatError as err:
            conn.reply_error(err, "PART", name)


# -- TOPIC / NAMES / LIST ----------------------------------------------------------------------


@command("TOPIC", min_params=1, cost=1.5, per_delivery=FANOUT)
def topic(conn: IrcConnection, msg: IrcMessage) -> None:
    assert conn.core is not None
    name = msg.params[0]
    room = _room_or_error(conn, name)
    if room is None:
        return
    if len(msg.params) < 2:
        if not can_see_room(conn, room):
            conn.reply(n.ERR_NOTONCHANNEL, name, "You're not on that channel")
            return
        send_topic(conn, room)
        return
    try:
        conn.service.set_topic(conn.core, room.name, msg.params[1])
    except ChatError as err:
        conn.reply_error(err, "TOPIC", name)


@command("NAMES", cost=2.0)
def names(conn: IrcConnection, msg: IrcMessage) -> None:
    if not msg.params or not msg.params[0]:
        conn.reply(n.RPL_ENDOFNAMES, "*", "End of /NAMES list")
        return
    names = [name for name in msg.params[0].split(",") if name]
    # Several rooms: the names of each, then one 366 for the whole request.
    several = len(names) != 1
    for name in names:
        key = room_of(name)
        room = conn.service.get_room(key) if key is not None else None
        if room is None or not can_see_room(conn, room):
            if not several:
                conn.reply(n.RPL_ENDOFNAMES, name, "End of /NAMES list")
            continue
        send_names(conn, room, end=not several)
    if several:
        conn.reply(n.RPL_ENDOFNAMES, msg.params[0], "End of /NAMES list")


def _list_filter(conn: IrcConnection, spec: str) -> list[tuple[str, str]]:
    """ELIST conditions of a LIST parameter: (kind, value) pairs."""
    conditions = []
    for token in spec.split(","):
        if not token:
            continue
        if token[0] in "<>" and token[1:].isascii() and token[1:].isdigit():
            conditions.append(("U" + token[0], token[1:]))
        elif (
            len(token) > 2
            and token[0] in "CTct"
            and token[1] in "<>"
            and token[2:].isascii()
            and token[2:].isdigit()
        ):
            conditions.append((token[0].upper() + token[1], token[2:]))
        elif token.startswith("!"):
            conditions.append(("N", token[1:]))
        else:
            conditions.append(("M", token))
    return conditions


def _list_matches(room: RoomView, conditions: list[tuple[str, str]], now: float) -> bool:
    masks = [v for k, v in conditions if k == "M"]
    name = channel_name(room.name)
    if masks and not any(glob_match(mask, name) for mask in masks):
        return False
    for kind, value in conditions:
        if kind == "N" and glob_match(value, name):
            return False
        if kind in ("U>", "U<"):
            count = len(room.members)
            limit = int(value)
            if (kind == "U>" and not count > limit) or (kind == "U<" and not count < limit):
                return False
        if kind[0] in "CT" and kind[1] in "<>":
            stamp = room.created_at if kind[0] == "C" else room.topic_at
            if kind[0] == "T" and not room.topic:
                return False
            minutes = (now - stamp) / 60.0
            # C<n: created less than n minutes ago; C>n: more than n minutes ago (ELIST).
            if (kind[1] == "<" and not minutes < int(value)) or (
                kind[1] == ">" and not minutes > int(value)
            ):
                return False
    return True


@command("LIST", cost=3.0)
def list_(conn: IrcConnection, msg: IrcMessage) -> None:
    conditions = _list_filter(conn, msg.params[0]) if msg.params else []
    now = conn.service.clock.seconds()
    conn.reply(n.RPL_LISTSTART, "Channel", "Users  Name")
    for room in conn.service.visible_rooms(conn.user):
        if not room.members:
            continue
        if conditions and not _list_matches(room, conditions, now):
            continue
        flags = format_changes(
            ModeItem(True, f) for f, _arg in room.mode_state() if f not in ("key",)
        )
        modes = f"[{flags[0]}] " if flags else ""
        conn.reply(n.RPL_LIST, channel_name(room.name), str(len(room.members)), modes + room.topic)
    conn.reply(n.RPL_LISTEND, "End of /LIST")


# -- KICK / INVITE -----------------------------------------------------------------------------


@command("KICK", min_params=2, per_delivery=FANOUT)
def kick(conn: IrcConnection, msg: IrcMessage) -> None:
    assert conn.core is not None
    rooms = [r for r in msg.params[0].split(",") if r]
    nicks = [u for u in msg.params[1].split(",") if u]
    reason = msg.params[2] if len(msg.params) > 2 else ""
    if len(rooms) == 1:
        pairs = [(rooms[0], nick) for nick in nicks]
    else:
        pairs = list(zip(rooms, nicks, strict=False))
    for name, nick in pairs[:4]:
        key = room_of(name)
        if key is None:
            conn.reply(n.ERR_NOSUCHCHANNEL, name, "No such channel")
            continue
        try:
            conn.service.kick(conn.core, key, nick, reason)
        except ChatError as err:
            conn.reply_error(err, "KICK", name if _is_room_error(err) else nick)


def _is_room_error(err: ChatError) -> bool:
    return not isinstance(err, NoSuchNick)


@command("INVITE", cost=2.0)
def invite(conn: IrcConnection, msg: IrcMessage) -> None:
    assert conn.core is not None
    if not msg.params:
        conn.reply(n.RPL_ENDOFINVITELIST, "End of /INVITE list")
        return
    if len(msg.params) < 2:
        conn.reply(n.ERR_NEEDMOREPARAMS, "INVITE", "Not enough parameters")
        return
    nick, name = msg.params[0], msg.params[1]
    key = room_of(name)
    if key is None:
        conn.reply(n.ERR_NOSUCHCHANNEL, name, "No such channel")
        return
    try:
        target = conn.service.invite(conn.core, nick, key)
    except ChatError as err:
        conn.reply_error(err, "INVITE", nick if isinstance(err, NoSuchNick) else "")
        return
    conn.reply(n.RPL_INVITING, target.nick, channel_name(key))
    if target.away:
        conn.reply(n.RPL_AWAY, target.nick, target.away)


# -- MODE --------------------------------------------------------------------------------------


@command("MODE", min_params=1, per_delivery=FANOUT)
def mode(conn: IrcConnection, msg: IrcMessage) -> None:
    target = msg.params[0]
    if not is_channel(target):
        user_mode(conn, msg)
        return
    room = _room_or_error(conn, target)
    if room is None:
        return
    if len(msg.params) == 1:
        _send_modes(conn, room)
        return
    _change_modes(conn, room, msg.params[1], list(msg.params[2:]))


def _send_modes(conn: IrcConnection, room: RoomView) -> None:
    name = channel_name(room.name)
    member = conn.user is not None and conn.user in room.members
    letters = "+"
    args: list[str] = []
    for mode_name, arg in room.mode_state():
        letters += CHANNEL_LETTERS[mode_name]
        if arg is not None:
            # The key is shown to members only.
            args.append(arg if mode_name != "key" or member or conn.is_oper else "*")
    conn.reply(n.RPL_CHANNELMODEIS, name, letters, *args)
    conn.reply(n.RPL_CREATIONTIME, name, str(int(room.created_at)))


def _send_list(conn: IrcConnection, room: RoomView, mode_name: str) -> None:
    name = channel_name(room.name)
    if mode_name == "ban":
        for ban in room.bans:
            conn.reply(
                n.RPL_BANLIST, name, ban.mask, ban.set_by or conn.server_name, str(int(ban.set_at))
            )
        conn.reply(n.RPL_ENDOFBANLIST, name, "End of channel ban list")
    elif mode_name == "except":
        for mask in room.excepts:
            conn.reply(n.RPL_EXCEPTLIST, name, mask)
        conn.reply(n.RPL_ENDOFEXCEPTLIST, name, "End of channel exception list")
    else:
        for mask in room.invites:
            conn.reply(n.RPL_INVEXLIST, name, mask)
        conn.reply(n.RPL_ENDOFINVEXLIST, name, "End of Channel Invite Exception List")


def _change_modes(conn: IrcConnection, room: RoomView, modestring: str, args: list[str]) -> None:
    assert conn.core is not None
    name = channel_name(room.name)
    items: list[ModeItem] = []
    lists_shown: set[str] = set()
    adding = True
    with_param = 0
    for letter in modestring:
        if letter in "+-":
            adding = letter == "+"
            continue
        mode_name = CHANNEL_MODES.get(letter)
        if mode_name is None:
            conn.reply(n.ERR_UNKNOWNMODE, letter, "is unknown mode char to me")
            continue
        if mode_name in _LISTS:
            if not args:
                if mode_name not in lists_shown:
                    lists_shown.add(mode_name)
                    _send_list(conn, room, mode_name)
                continue
            arg = args.pop(0)
            current = _LISTS[mode_name](room)
            if adding and len(current) >= MAX_LIST_ENTRIES:
                conn.reply(n.ERR_BANLISTFULL, name, letter, "Channel list is full")
                continue
            items.append(ModeItem(adding, mode_name, arg))
        elif mode_name in ("op", "voice") or (mode_name == "key" and adding):
            if not args:
                conn.reply(
                    n.ERR_INVALIDMODEPARAM,
                    name,
                    letter,
                    "*",
                    "You must specify a parameter for this mode",
                )
                continue
            arg = args.pop(0)
            if mode_name == "key" and (not arg or len(arg) > KEY_MAX or "," in arg or " " in arg):
                # The key is not repeated back: '*' stands for it.
                conn.reply(n.ERR_INVALIDMODEPARAM, name, letter, "*", "Invalid key")
                continue
            items.append(ModeItem(adding, mode_name, arg))
        elif mode_name == "key":
            if args:
                args.pop(0)  # '-k key': the key is not needed to remove it
            items.append(ModeItem(False, "key"))
        elif mode_name == "limit" and adding:
            if not args:
                conn.reply(
                    n.ERR_INVALIDMODEPARAM,
                    name,
                    letter,
                    "*",
                    "You must specify a parameter for this mode",
                )
                continue
            arg = args.pop(0)
            if not (arg.isascii() and arg.isdigit()) or int(arg) <= 0:
                conn.reply(n.ERR_INVALIDMODEPARAM, name, letter, arg, "Invalid limit")
                continue
            items.append(ModeItem(True, "limit", str(int(arg))))
        else:
            items.append(ModeItem(adding, mode_name))
        if items and items[-1].arg is not None:
            with_param += 1
            if with_param > MODES_PER_COMMAND:
                items.pop()
    if not items:
        return
    try:
        _applied, errors = conn.service.set_mode(conn.core, room.name, items)
    except ChatError as err:
        conn.reply_error(err, "MODE", name)
        return
    for problem in errors:
        conn.reply_error(problem, "MODE", problem.nick if isinstance(problem, NoSuchNick) else "")
