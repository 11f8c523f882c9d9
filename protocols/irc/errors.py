"""Core errors as IRC replies: one table from each core error to its numeric (or FAIL).

Keyed by :data:`chatserver.core.errors.CORE_ERRORS` (a test checks that every one is here);
``IrcConnection.reply_error`` looks an error up with :func:`chatserver.core.errors.entry_for`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from chatserver.core.errors import (
    AccountError,
    AlreadyOnRoom,
    BadName,
    BadText,
    Banned,
    CannotSend,
    ChatError,
    JoinRefused,
    LimitExceeded,
    NickInUse,
    NoSuchNick,
    NoSuchRoom,
    NotOnRoom,
    NotPermitted,
    UnknownMode,
    entry_for,
)
from protocols.irc import numerics as n
from protocols.irc.channels import channel_name, is_channel
from protocols.irc.modes import letter_of

if TYPE_CHECKING:
    from protocols.irc.connection import IrcConnection

# (connection, error, the command refused, the target it named or "")
Reply = Callable[["IrcConnection", ChatError, str, str], None]

# Commands whose name argument is a channel: a bad name there is "no such channel".
_CHANNEL_COMMANDS = frozenset({"JOIN", "PART", "TOPIC", "NAMES", "LIST", "INVITE", "KICK"})

# JoinRefused.why -> (numeric, text)
JOIN_REFUSALS: dict[str, tuple[str, str]] = {
    JoinRefused.BANNED: (n.ERR_BANNEDFROMCHAN, "Cannot join channel (+b)"),
    JoinRefused.INVITE_ONLY: (n.ERR_INVITEONLYCHAN, "Cannot join channel (+i)"),
    JoinRefused.BAD_KEY: (n.ERR_BADCHANNELKEY, "Cannot join channel (+k)"),
    JoinRefused.FULL: (n.ERR_CHANNELISFULL, "Cannot join channel (+l)"),
    JoinRefused.REGISTERED_ONLY: (
        n.ERR_NEEDREGGEDNICK,
        "Cannot join channel (+R) - you need to be logged into your account",
    ),
    JoinRefused.TOO_MANY_ROOMS: (n.ERR_TOOMANYCHANNELS, "You have joined too many channels"),
}


def _nick_in_use(conn: IrcConnection, err: ChatError, command: str, target: str) -> None:
    assert isinstance(err, NickInUse)
    conn.reply(n.ERR_NICKNAMEINUSE, target or err.nick, "Nickname is already in use")


def _bad_name(conn: IrcConnection, err: ChatError, command: str, target: str) -> None:
    assert isinstance(err, BadName)
    name = target or err.name
    if is_channel(name) or command in _CHANNEL_COMMANDS:
        conn.reply(n.ERR_NOSUCHCHANNEL, name, "No such channel")
    else:
        conn.reply(n.ERR_ERRONEUSNICKNAME, name, "Erroneous nickname")


def _bad_text(conn: IrcConnection, err: ChatError, command: str, target: str) -> None:
    # What IRC says of a line that is not UTF-8, the nearest it has to text that is not text.
    conn.fail(command, "INVALID_UTF8", description=err.reason)


def _no_such_nick(conn: IrcConnection, err: ChatError, command: str, target: str) -> None:
    assert isinstance(err, NoSuchNick)
    conn.reply(n.ERR_NOSUCHNICK, target or err.nick, "No such nick/channel")


def _no_such_room(conn: IrcConnection, err: ChatError, command: str, target: str) -> None:
    assert isinstance(err, NoSuchRoom)
    conn.reply(n.ERR_NOSUCHCHANNEL, target or channel_name(err.room), "No such channel")


def _not_on_room(conn: IrcConnection, err: ChatError, command: str, target: str) -> None:
    assert isinstance(err, NotOnRoom)
    room = channel_name(err.room)
    if err.nick:
        conn.reply(n.ERR_USERNOTINCHANNEL, err.nick, room, "They aren't on that channel")
    else:
        conn.reply(n.ERR_NOTONCHANNEL, room, "You're not on that channel")


def _already_on_room(conn: IrcConnection, err: ChatError, command: str, target: str) -> None:
    assert isinstance(err, AlreadyOnRoom)
    conn.reply(n.ERR_USERONCHANNEL, err.nick, channel_name(err.room), "is already on channel")


def _not_permitted(conn: IrcConnection, err: ChatError, command: str, target: str) -> None:
    assert isinstance(err, NotPermitted)
    if err.room is not None:
        conn.reply(n.ERR_CHANOPRIVSNEEDED, channel_name(err.room), "You're not channel operator")
    else:
        conn.reply(n.ERR_NOPRIVILEGES, "Permission Denied- You're not an IRC operator")


def _cannot_send(conn: IrcConnection, err: ChatError, command: str, target: str) -> None:
    assert isinstance(err, CannotSend)
    conn.reply(
        n.ERR_CANNOTSENDTOCHAN, channel_name(err.room), f"Cannot send to channel ({err.reason})"
    )


def _join_refused(conn: IrcConnection, err: ChatError, command: str, target: str) -> None:
    assert isinstance(err, JoinRefused)
    numeric, text = JOIN_REFUSALS.get(err.why, (n.ERR_UNKNOWNERROR, err.reason))
    conn.reply(numeric, channel_name(err.room), text)


def _unknown_mode(conn: IrcConnection, err: ChatError, command: str, target: str) -> None:
    assert isinstance(err, UnknownMode)
    conn.reply(n.ERR_UNKNOWNMODE, letter_of(err.mode), "is unknown mode char to me")


def _account(conn: IrcConnection, err: ChatError, command: str, target: str) -> None:
    assert isinstance(err, AccountError)
    # Every AccountError.CODES value becomes its FAIL code, in capitals.
    conn.fail(command, err.code.upper(), description=err.reason)


def _unknown(conn: IrcConnection, err: ChatError, command: str, target: str) -> None:
    conn.reply(n.ERR_UNKNOWNERROR, command, err.reason)


ERRORS: dict[type[ChatError], Reply] = {
    ChatError: _unknown,
    BadName: _bad_name,
    BadText: _bad_text,
    NickInUse: _nick_in_use,
    NoSuchNick: _no_such_nick,
    NoSuchRoom: _no_such_room,
    NotOnRoom: _not_on_room,
    AlreadyOnRoom: _already_on_room,
    NotPermitted: _not_permitted,
    CannotSend: _cannot_send,
    JoinRefused: _join_refused,
    UnknownMode: _unknown_mode,
    AccountError: _account,
    # A connection refused over a limit or a ban is told so by the core, which closes it;
    # a command that runs into one gets the reason.
    LimitExceeded: _unknown,
    Banned: _unknown,
}


def reply_error(conn: IrcConnection, err: ChatError, command: str, target: str = "") -> None:
    """Answer a core refusal with the reply IRC gives it."""
    entry_for(ERRORS, err)(conn, err, command, target)
