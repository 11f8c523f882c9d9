"""Core errors as line-chat errors: one table from each core error to its code, message and
extra JSON fields.

Keyed by :data:`chatserver.core.errors.CORE_ERRORS` (a test checks that every one is here);
:func:`protocols.line.commands.describe` looks an error up with
:func:`chatserver.core.errors.entry_for`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from chatserver.core import errors as core
from protocols.line.render import room_name

# (error code, message, extra JSON fields)
Described = tuple[str, str, dict[str, Any]]

_ACCOUNT_HINTS = {
    core.AccountError.NO_ACCOUNT: " (/register <password> registers your current nick)",
    core.AccountError.NOT_LOGGED_IN: " (/identify <password> logs you in)",
}

_JOIN_HINTS = {
    core.JoinRefused.BAD_KEY: " (/join {room} <key>)",
    core.JoinRefused.INVITE_ONLY: " (a room operator can /invite you)",
    core.JoinRefused.REGISTERED_ONLY: " (/register or /identify first)",
}


def _nick_in_use(err: Any) -> Described:
    return "nick_in_use", f"{err.nick} is already in use; choose another nick", {}


def _nick_reserved(err: Any) -> Described:
    return (
        "nick_reserved",
        f"{err.nick} is a registered nick: log in with /identify {err.nick} <password>,"
        " or choose another nick",
        {},
    )


def _no_such_room(err: Any) -> Described:
    return "no_such_room", f"no such room: {room_name(err.room)}", {"room": err.room}


def _not_on_room(err: Any) -> Described:
    if err.nick:
        message = f"{err.nick} is not in {room_name(err.room)}"
    else:
        message = f"you are not in {room_name(err.room)} (/join {err.room} first)"
    return "not_on_room", message, {"room": err.room}


def _already_on_room(err: Any) -> Described:
    return (
        "already_on_room",
        f"{err.nick} is already in {room_name(err.room)}",
        {"room": err.room},
    )


def _not_permitted(err: Any) -> Described:
    return "not_permitted", err.reason, {"room": err.room} if err.room else {}


def _cannot_send(err: Any) -> Described:
    return "cannot_send", f"cannot send to {room_name(err.room)}: {err.reason}", {"room": err.room}


def _join_refused(err: Any) -> Described:
    hint = _JOIN_HINTS.get(err.why, "").format(room=err.room)
    message = f"cannot join {room_name(err.room)}: {err.reason}{hint}"
    return "join_refused", message, {"room": err.room, "why": err.why}


ERRORS: dict[type[core.ChatError], Callable[[Any], Described]] = {
    core.ChatError: lambda err: ("failed", err.reason, {}),
    core.BadName: lambda err: ("bad_name", err.reason, {}),
    core.BadText: lambda err: ("bad_text", err.reason, {}),
    core.NickInUse: _nick_in_use,
    core.NickReserved: _nick_reserved,
    core.NoSuchNick: lambda err: ("no_such_nick", f"no such nick: {err.nick}", {}),
    core.NoSuchRoom: _no_such_room,
    core.NotOnRoom: _not_on_room,
    core.AlreadyOnRoom: _already_on_room,
    core.NotPermitted: _not_permitted,
    core.CannotSend: _cannot_send,
    core.NoSuchMessage: lambda err: ("no_such_message", err.reason, {"id": err.msgid}),
    core.JoinRefused: _join_refused,
    core.UnknownMode: lambda err: (
        "unknown_mode",
        f"unknown mode: {err.mode} (/help mode lists them)",
        {},
    ),
    # Each of AccountError.CODES is its own error code.
    core.AccountError: lambda err: (err.code, err.reason + _ACCOUNT_HINTS.get(err.code, ""), {}),
    core.LimitExceeded: lambda err: ("limit_exceeded", err.reason, {}),
    core.Banned: lambda err: ("banned", err.reason, {}),
    core.StorageUnavailable: lambda err: ("unavailable", err.reason, {}),
}


def describe_chat_error(err: core.ChatError) -> Described:
    return core.entry_for(ERRORS, err)(err)
