"""Renderers for line chat: a table from event type to text, and one to JSON objects.

Text lines have stable prefixes that scripts can match (see README.md beside this file):
``[#room] `` for room messages, ``-!- `` for events, ``*** `` for command results and things
about yourself, ``!!! `` for errors.  Text from other users is cleaned of control characters
(terminal escapes, IRC formatting), so that nobody can draw on another user's terminal or
forge a line; a message with several lines becomes several lines with the same prefix.

The views of rooms, members, bans and invitations that command replies show are here too, so
that what a user sees is decided in one file.

Renderings that do not depend on who reads them are cached on the event by the connection,
once per mode, so a room message reaches many line users for one rendering per mode.
"""

from __future__ import annotations

import heapq
import json
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from chatserver.core.events import (
    AccountChange,
    Away,
    Event,
    HostChange,
    Invite,
    Join,
    Kick,
    Message,
    MetadataChange,
    MissedMessages,
    ModeChange,
    ModeItem,
    NickChange,
    OfflineMessages,
    Part,
    Quit,
    ReadMarker,
    RealnameChange,
    Redaction,
    RoomRenamed,
    ServerNotice,
    TagMessage,
    Topic,
    UserModeChange,
    Wallops,
    Who,
)
from chatserver.core.names import casefold
from protocols.line.modes import format_changes

if TYPE_CHECKING:
    from chatserver.core.views import (
        MemberView,
        RegistrationInvite,
        RoomView,
        ServerBan,
        UserView,
    )

TEXT_KEY = ("line", "text")
JSON_KEY = ("line", "json")

EVENT = "-!- "
INFO = "*** "
ERROR = "!!! "

# IRC colour codes with their digits, hex colours, every other C0/C1 control but TAB and LF,
# and the Unicode line and paragraph separators (which str.splitlines() treats as line ends).
_CONTROLS = re.compile(
    r"\x03(?:\d{1,2}(?:,\d{1,2})?)?|\x04(?:[0-9a-fA-F]{6}(?:,[0-9a-fA-F]{6})?)?"
    r"|[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]"
)


def clean(text: str) -> str:
    """One line of display text: controls removed, line breaks made spaces."""
    if "\n" in text:
        text = text.replace("\r\n", " ").replace("\n", " ")
    return _CONTROLS.sub("", text)


def clean_lines(text: str) -> list[str]:
    """Message text as display lines (a message may hold line breaks, e.g. from XMPP)."""
    if "\n" not in text:
        return [_CONTROLS.sub("", text)]
    return [_CONTROLS.sub("", part) for part in text.replace("\r\n", "\n").split("\n")]


def room_name(room: str) -> str:
    return f"#{room}"


def _same(nick: str, me: str | None) -> bool:
    return me is not None and casefold(nick) == casefold(me)


def _reason(reason: str) -> str:
    return f" ({clean(reason)})" if reason else ""


def clock_time(ts: float, now: float) -> str:
    """``12:03`` for today (UTC), ``2024-05-01 12:03`` for older."""
    stamp = time.gmtime(ts)
    if time.gmtime(now)[:3] == stamp[:3]:
        return time.strftime("%H:%M", stamp)
    return time.strftime("%Y-%m-%d %H:%M", stamp)


# -- text: messages ------------------------------------------------------------------------


def _message_text(msg: Message, me: str | None, stamp: str = "") -> str:
    nick = msg.source.nick
    if msg.room is not None:
        prefix = "[" + (_STATUS_PREFIX.get(msg.status or "", "")) + room_name(msg.room) + "] "
        prefix += stamp
        if msg.kind == "action":
            head = f"{prefix}* {nick} "
        elif msg.kind == "notice":
            head = f"{prefix}-{nick}- "
        else:
            head = f"{prefix}<{nick}> "
    elif _same(nick, me) and not _same(msg.target or "", me):
        # Sent by this user from another connection (or replayed): show where it went.
        target = msg.target or ""
        if msg.kind == "action":
            head = f"-> *{target}* {stamp}* {nick} "
        elif msg.kind == "notice":
            head = f"-> -{target}- {stamp}"
        else:
            head = f"-> *{target}* {stamp}"
    elif msg.kind == "action":
        head = f"{stamp}* {nick} "
    elif msg.kind == "notice":
        head = f"-{nick}- {stamp}"
    else:
        head = f"*{nick}* {stamp}"
    return "\r\n".join(head + line for line in clean_lines(msg.text))


_STATUS_PREFIX = {"op": "@", "voice": "+"}


def history_text(msg: Message, now: float) -> str:
    """A replayed message: the live form with the time after the room, ``[#dev] [12:03] <a> hi``."""
    return _message_text(msg, None, f"[{clock_time(msg.ts, now)}] ")


# -- text: everything else -----------------------------------------------------------------


def _join(e: Join, me: str | None) -> str:
    if _same(e.who.nick, me):
        return f"{INFO}you joined {room_name(e.room)}"
    return f"{EVENT}{e.who.nick} joined {room_name(e.room)}"


def _part(e: Part, me: str | None) -> str:
    if _same(e.who.nick, me):
        return f"{INFO}you left {room_name(e.room)}{_reason(e.reason)}"
    return f"{EVENT}{e.who.nick} left {room_name(e.room)}{_reason(e.reason)}"


def _quit(e: Quit, me: str | None) -> str:
    return f"{EVENT}{e.who.nick} quit{_reason(e.reason)}"


def _nick(e: NickChange, me: str | None) -> str:
    if _same(e.new_nick, me):
        return f"{INFO}you are now known as {e.new_nick}"
    return f"{EVENT}{e.who.nick} is now known as {e.new_nick}"


def _topic(e: Topic, me: str | None) -> str:
    if not e.text:
        return f"{EVENT}{e.who.nick} cleared the topic of {room_name(e.room)}"
    return f"{EVENT}{e.who.nick} changed the topic of {room_name(e.room)} to: {clean(e.text)}"


def _kick(e: Kick, me: str | None) -> str:
    if _same(e.target.nick, me):
        return f"{INFO}{e.who.nick} kicked you from {room_name(e.room)}{_reason(e.reason)}"
    return f"{EVENT}{e.who.nick} kicked {e.target.nick} from {room_name(e.room)}{_reason(e.reason)}"


def _renamed(e: RoomRenamed, me: str | None) -> str:
    return (
        f"{EVENT}{e.who.nick} renamed {room_name(e.old)} to {room_name(e.new)}"
        f"{_reason(e.reason)}: you are in {room_name(e.new)}"
    )


def _mode(e: ModeChange, me: str | None) -> str:
    return (
        f"{EVENT}{e.who.nick} sets mode {clean(format_changes(e.changes))} on {room_name(e.room)}"
    )


def _usermode(e: UserModeChange, me: str | None) -> str:
    return f"{INFO}your modes changed: {format_changes(e.changes)}"


def _away(e: Away, me: str | None) -> str:
    if _same(e.who.nick, me):
        if e.message is None:
            return f"{INFO}you are back"
        return f"{INFO}you are away: {clean(e.message)}"
    if e.message is None:
        return f"{EVENT}{e.who.nick} is back"
    return f"{EVENT}{e.who.nick} is away: {clean(e.message)}"


def _invite(e: Invite, me: str | None) -> str:
    if _same(e.target, me):
        return f"{EVENT}{e.who.nick} invites you to {room_name(e.room)}"
    return f"{EVENT}{e.who.nick} invited {e.target} to {room_name(e.room)}"


def _realname(e: RealnameChange, me: str | None) -> str:
    return f"{EVENT}{e.who.nick} set their real name to: {clean(e.realname)}"


def _host(e: HostChange, me: str | None) -> str:
    return f"{EVENT}{e.who.nick} is now {e.who.nick}!{e.ident}@{e.host}"


def _account(e: AccountChange, me: str | None) -> str:
    if _same(e.who.nick, me):
        if e.account is None:
            return f"{INFO}you are now logged out"
        return f"{INFO}you are now logged in as {e.account}"
    if e.account is None:
        return f"{EVENT}{e.who.nick} logged out"
    return f"{EVENT}{e.who.nick} is now logged in as {e.account}"


def _server_notice(e: ServerNotice, me: str | None) -> str:
    return "\r\n".join(f"{EVENT}Server: {line}" for line in clean_lines(e.text))


def _wallops(e: Wallops, me: str | None) -> str:
    return f"{EVENT}Wallops from {e.who.nick}: {clean(e.text)}"


def _offline(e: OfflineMessages, me: str | None) -> str:
    count = len(e.messages)
    lines = [f"{INFO}while you were away ({count} message{'s' if count != 1 else ''}):"]
    lines.extend(_message_text(m, me, f"[{clock_time(m.ts, e.ts)}] ") for m in e.messages)
    lines.append(f"{INFO}end of messages while you were away")
    return "\r\n".join(lines)


def _missed(e: MissedMessages, me: str | None) -> str:
    count = len(e.messages)
    room = room_name(e.room)
    lines = [f"{INFO}while you were away in {room} ({count} message{'s' if count != 1 else ''}):"]
    lines.extend(_message_text(m, me, f"[{clock_time(m.ts, e.ts)}] ") for m in e.messages)
    lines.append(f"{INFO}end of messages in {room} while you were away")
    return "\r\n".join(lines)


def _read_marker(e: ReadMarker, me: str | None) -> str:
    where = room_name(e.target[1:]) if e.target.startswith("#") else e.target
    return f"{INFO}read up to {clock_time(e.read_ts, e.ts)} in {where}"


def _redaction(e: Redaction, me: str | None) -> str:
    where = room_name(e.room) if e.room is not None else "your conversation"
    whose = "their" if e.sender.key == e.who.key else f"{e.sender.nick}'s"
    return f"{EVENT}{e.who.nick} removed {whose} message {e.msgid} in {where}{_reason(e.reason)}"


def _metadata(e: MetadataChange, me: str | None) -> str:
    whose = room_name(e.room) if e.room is not None else e.target
    if e.value is None:
        return f"{EVENT}{e.who.nick} removed {e.key} of {whose}"
    return f"{EVENT}{e.who.nick} set {e.key} of {whose} to: {clean(e.value)}"


def reaction(e: TagMessage) -> tuple[str, str] | None:
    """(emoji, message id) of a reaction; typing notices and other tags are not shown."""
    tags = dict(e.tags)
    react, msgid = tags.get("+draft/react"), tags.get("+draft/reply")
    return (react, msgid) if react and msgid else None


def _reaction_text(e: TagMessage, me: str | None) -> str:
    found = reaction(e)
    if found is None:
        return ""
    where = room_name(e.room) if e.room is not None else "your conversation"
    return f"{EVENT}{e.source.nick} reacted {clean(found[0])} to message {found[1]} in {where}"


TextRenderer = Callable[[Any, str | None], str]

TEXT_RENDERERS: dict[type[Event], TextRenderer] = {
    Message: _message_text,
    Join: _join,
    Part: _part,
    Quit: _quit,
    NickChange: _nick,
    Topic: _topic,
    Kick: _kick,
    RoomRenamed: _renamed,
    ModeChange: _mode,
    UserModeChange: _usermode,
    Away: _away,
    Invite: _invite,
    RealnameChange: _realname,
    HostChange: _host,
    AccountChange: _account,
    ServerNotice: _server_notice,
    Wallops: _wallops,
    OfflineMessages: _offline,
    MissedMessages: _missed,
    ReadMarker: _read_marker,
    Redaction: _redaction,
    TagMessage: _reaction_text,
    MetadataChange: _metadata,
}


def _about_me(event: Any, me: str) -> bool:
    who: Who | None = getattr(event, "who", None)
    return who is not None and who.key == me


# Which events read differently to the user they are about (so are not cached), given the
# casefolded nick of that user: asked for every member an event reaches, so it compares
# the casefolded nicks the events carry.
TEXT_PERSONAL: dict[type[Event], Callable[[Any, str], bool]] = {
    Message: lambda e, me: e.room is None and e.source.key == me,
    Join: _about_me,
    Part: _about_me,
    NickChange: lambda e, me: e.who.key == me or casefold(e.new_nick) == me,
    Kick: lambda e, me: e.target.key == me,
    Away: _about_me,
    Invite: lambda e, me: casefold(e.target) == me,
    AccountChange: _about_me,
}


def render_text(event: Event, me: str | None) -> str | None:
    """The text lines (joined by CRLF, without the last one) for ``event``, None if unknown."""
    renderer = TEXT_RENDERERS.get(type(event))
    if renderer is None:
        return None
    return renderer(event, me)


def text_is_personal(event: Event, me_key: str | None) -> bool:
    """Whether ``event`` reads differently to the user whose casefolded nick is ``me_key``."""
    if me_key is None:
        return False
    test = TEXT_PERSONAL.get(type(event))
    return test is not None and test(event, me_key)


# -- JSON ----------------------------------------------------------------------------------


def _who(who: Who) -> dict[str, Any]:
    return {"from": who.nick, "account": who.account}


def _changes(changes: tuple[ModeItem, ...]) -> list[dict[str, Any]]:
    return [{"adding": c.adding, "mode": c.mode, "arg": c.arg} for c in changes]


def message_json(m: Message) -> dict[str, Any]:
    return {
        "type": "message",
        "id": m.id,
        "ts": m.ts,
        "kind": m.kind,
        **_who(m.source),
        "room": m.room,
        "to": m.target,
        "status": m.status,
        "text": m.text,
    }


JSON_RENDERERS: dict[type[Event], Callable[[Any], dict[str, Any] | None]] = {
    Message: message_json,
    ReadMarker: lambda e: {
        "type": "read",
        "ts": e.ts,
        "room": e.target[1:] if e.target.startswith("#") else None,
        "nick": None if e.target.startswith("#") else e.target,
        "read_ts": e.read_ts,
    },
    OfflineMessages: lambda e: {
        "type": "offline",
        "ts": e.ts,
        "messages": [{**message_json(m), "history": True} for m in e.messages],
    },
    MissedMessages: lambda e: {
        "type": "missed",
        "ts": e.ts,
        "room": e.room,
        "since": e.since,
        "messages": [{**message_json(m), "history": True} for m in e.messages],
    },
    Join: lambda e: {"type": "join", "ts": e.ts, "room": e.room, **_who(e.who)},
    Part: lambda e: {
        "type": "part",
        "ts": e.ts,
        "room": e.room,
        **_who(e.who),
        "reason": e.reason,
    },
    Quit: lambda e: {"type": "quit", "ts": e.ts, **_who(e.who), "reason": e.reason},
    NickChange: lambda e: {"type": "nick", "ts": e.ts, **_who(e.who), "nick": e.new_nick},
    Topic: lambda e: {"type": "topic", "ts": e.ts, "room": e.room, **_who(e.who), "text": e.text},
    Kick: lambda e: {
        "type": "kick",
        "ts": e.ts,
        "room": e.room,
        **_who(e.who),
        "target": e.target.nick,
        "reason": e.reason,
    },
    RoomRenamed: lambda e: {
        "type": "rename",
        "ts": e.ts,
        "room": e.new,
        "old": e.old,
        **_who(e.who),
        "reason": e.reason,
    },
    ModeChange: lambda e: {
        "type": "mode",
        "ts": e.ts,
        "room": e.room,
        **_who(e.who),
        "changes": _changes(e.changes),
        "text": format_changes(e.changes),
    },
    UserModeChange: lambda e: {
        "type": "usermode",
        "ts": e.ts,
        **_who(e.who),
        "changes": _changes(e.changes),
        "text": format_changes(e.changes),
    },
    Away: lambda e: {"type": "away", "ts": e.ts, **_who(e.who), "text": e.message},
    Invite: lambda e: {
        "type": "invite",
        "ts": e.ts,
        "room": e.room,
        **_who(e.who),
        "target": e.target,
    },
    RealnameChange: lambda e: {
        "type": "realname",
        "ts": e.ts,
        **_who(e.who),
        "realname": e.realname,
    },
    HostChange: lambda e: {
        "type": "host",
        "ts": e.ts,
        **_who(e.who),
        "ident": e.ident,
        "host": e.host,
    },
    AccountChange: lambda e: {
        "type": "account",
        "ts": e.ts,
        **_who(e.who),
        "account": e.account,
    },
    ServerNotice: lambda e: {"type": "server", "ts": e.ts, "text": e.text},
    MetadataChange: lambda e: {
        "type": "metadata",
        "ts": e.ts,
        **_who(e.who),
        "room": e.room,
        "nick": None if e.room is not None else e.target,
        "key": e.key,
        "value": e.value,
    },
    Redaction: lambda e: {
        "type": "redact",
        "ts": e.ts,
        "room": e.room,
        "nick": e.target,
        **_who(e.who),
        "id": e.msgid,
        "sender": e.sender.nick,
        "reason": e.reason,
    },
    Wallops: lambda e: {"type": "wallops", "ts": e.ts, **_who(e.who), "text": e.text},
}


def _reaction_json(e: TagMessage) -> dict[str, Any] | None:
    found = reaction(e)
    if found is None:
        return None
    return {
        "type": "react",
        "ts": e.ts,
        "room": e.room,
        "to": e.target,
        **_who(e.source),
        "react": found[0],
        "id": found[1],
    }


# Reactions only: a typing notice at every pause of the keyboard would flood a terminal.
JSON_RENDERERS[TagMessage] = _reaction_json


def render_json(event: Event) -> dict[str, Any] | None:
    renderer = JSON_RENDERERS.get(type(event))
    return None if renderer is None else renderer(event)


_JSON_SEPARATORS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def dump(obj: dict[str, Any]) -> bytes:
    """One JSON Lines record.

    JSON escapes the C0 controls; the other characters that some line readers take for a line
    end (NEL, U+2028, U+2029) are escaped too, so one record is always exactly one line.
    """
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    if "\x85" in text or "\u2028" in text or "\u2029" in text:
        text = text.translate(_JSON_SEPARATORS)
    try:
        return text.encode("utf-8") + b"\n"
    except UnicodeEncodeError:
        # Text the edges let through holds no surrogate; should one come all the same, it
        # is written escaped rather than costing the reader the record (or its connection).
        return json.dumps(obj, ensure_ascii=True, separators=(",", ":")).encode() + b"\n"


# -- views for command replies -------------------------------------------------------------
# What /who, /topic, /mode, /whois, the operators' lists and the join burst show: functions of
# the state they are given, shared by the command handlers and the connection.


def _rank(item: tuple[UserView, MemberView]) -> tuple[int, str]:
    return (0 if item[1].op else 1 if item[1].voice else 2, item[0].key)


def member_list(room: RoomView, limit: int | None = None) -> list[tuple[str, UserView, MemberView]]:
    """(nick with @ or +, user, status) of every member (the first ``limit``): operators,
    voiced, then the rest."""
    if limit is not None and len(room.members) > limit:
        ranked = heapq.nsmallest(limit, room.members.items(), key=_rank)
    else:
        ranked = sorted(room.members.items(), key=_rank)
    return [(("@" if m.op else "+" if m.voice else "") + user.nick, user, m) for user, m in ranked]


def members_json(room: RoomView) -> list[dict[str, Any]]:
    return [
        {
            "nick": user.nick,
            "op": member.op,
            "voice": member.voice,
            "account": user.account,
            "away": user.away,
        }
        for _shown, user, member in member_list(room)
    ]


def members_text(room: RoomView, limit: int | None = None) -> str:
    """The members line: all of them, or the first ``limit`` and how many more."""
    names = " ".join(shown for shown, _user, _member in member_list(room, limit))
    more = len(room.members) - limit if limit is not None else 0
    if more > 0:
        names += f" and {more} more (/who {room_name(room.name)} lists them all)"
    return f"{INFO}members of {room_name(room.name)} ({len(room.members)}): {names}"


def topic_text(room: RoomView) -> str:
    if not room.topic:
        return f"{INFO}{room_name(room.name)} has no topic"
    by = room.topic_by.split("!", 1)[0]
    return f"{INFO}topic of {room_name(room.name)}: {clean(room.topic)} (set by {by})"


def room_json(room: RoomView, *, show_key: bool) -> dict[str, Any]:
    return {
        "room": room.name,
        "topic": room.topic,
        "topic_by": room.topic_by.split("!", 1)[0] or None,
        "topic_at": room.topic_at or None,
        "modes": sorted(room.flags),
        "key": room.key if show_key else (None if room.key is None else "*"),
        "limit": room.limit,
        "registered": room.registered,
        "members": members_json(room),
    }


def duration(seconds: int) -> str:
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def ban_json(ban: ServerBan) -> dict[str, Any]:
    return {
        "mask": ban.mask,
        "reason": ban.reason,
        "set_by": ban.set_by,
        "set_at": ban.set_at or None,
        "config": ban.from_config,
    }


def utc(ts: float) -> str:
    # Always with the date: an expiry is days ahead, where clock_time would show a bare time.
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts))


def invite_json(invite: RegistrationInvite) -> dict[str, Any]:
    return {
        "name": invite.name,
        "invited_by": invite.invited_by or None,
        "created_at": invite.created_at,
        "expires_at": invite.expires_at,
    }
