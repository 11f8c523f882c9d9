"""Core errors as IRC replies: one table from each core error to its numeric (or FAIL).

Keyed by :data:`chatserver.core.errors.CORE_ERRORS` (a test checks that every one is here);
``IrcConnection.reply_error`` looks an error up with :func:`chatserver.core.errors.entry_for`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from chatserver.core import errors as core
from protocols.irc import numerics as n
from protocols.irc.channels import channel_name, is_channel
from protocols.irc.modes import letter_of

if TYPE_CHECKING:
    from protocols.irc.connection import IrcConnection

# (connection, error, the command refused, the target it named or "")
Reply = Callable[["IrcConnection", core.ChatError, str, str], None]

# Commands whose name argument is a channel: a bad name there is "no such channel".
_CHANNEL_COMMANDS = frozenset({"JOIN", "PART", "TOPIC", "NAMES", "LIST", "INVITE", "KICK"})

# JoinRefused.why -> (numeric, text)
JOIN_REFUSALS: dict[str, tuple[str, str]] = {
    core.JoinRefused.BANNED: (n.ERR_BANNEDFROMCHAN, "Cannot join channel (+b)"),
    core.JoinRefused.INVITE_ONLY: (n.ERR_INVITEONLYCHAN, "Cannot join channel (+i)"),
    core.JoinRefused.BAD_KEY: (n.ERR_BADCHANNELKEY, "Cannot join channel (+k)"),
    core.JoinRefused.FULL: (n.ERR_CHANNELISFULL, "Cannot join channel (+l)"),
    core.JoinRefused.REGISTERED_ONLY: (
        n.ERR_NEEDREGGEDNICK,
        "Cannot join channel (+R) - you need to be logged into your account",
    ),
    core.JoinRefused.TOO_MANY_ROOMS: (n.ERR_TOOMANYCHANNELS, "You have joined too many channels"),
}


def _nick_in_use(conn: IrcConnection, err: core.ChatError, command: str, target: str) -> None:
    assert isinstance(err, core.NickInUse)
    conn.reply(n.ERR_NICKNAMEINUSE, target or err.nick, in_use_text(err))


def in_use_text(err: core.NickInUse) -> str:
    """433's text: a registered nick says how to get it (as Ergo words it)."""
    if isinstance(err, core.NickReserved):
        return "Nickname is reserved by a different account: log in (SASL or NickServ) to use it"
    return "Nickname is already in use"


def _bad_name(conn: IrcConnection, err: core.ChatError, command: str, target: str) -> None:
    assert isinstance(err, core.BadName)
    name = target or err.name
    if is_channel(name) or command in _CHANNEL_COMMANDS:
        conn.reply(n.ERR_NOSUCHCHANNEL, name, "No such channel")
    else:
        conn.reply(n.ERR_ERRONEUSNICKNAME, name, "Erroneous nickname")


def _bad_text(conn: IrcConnection, err: core.ChatError, command: str, target: str) -> None:
    # What IRC says of a line that is not UTF-8, the nearest it has to text that is not text.
    conn.fail(command, "INVALID_UTF8", description=err.reason)


def _no_such_nick(conn: IrcConnection, err: core.ChatError, command: str, target: str) -> None:
    assert isinstance(err, core.NoSuchNick)
    conn.reply(n.ERR_NOSUCHNICK, target or err.nick, "No such nick/channel")


def _no_such_room(conn: IrcConnection, err: core.ChatError, command: str, target: str) -> None:
    assert isinstance(err, core.NoSuchRoom)
    conn.reply(n.ERR_NOSUCHCHANNEL, target or channel_name(err.room), "No such channel")


def _not_on_room(conn: IrcConnection, err: core.ChatError, command: str, target: str) -> None:
    assert isinstance(err, core.NotOnRoom)
    room = channel_name(err.room)
    if err.nick:
        conn.reply(n.ERR_USERNOTINCHANNEL, err.nick, room, "They aren't on that channel")
    else:
        conn.reply(n.ERR_NOTONCHANNEL, room, "You're not on that channel")


def _already_on_room(conn: IrcConnection, err: core.ChatError, command: str, target: str) -> None:
    assert isinstance(err, core.AlreadyOnRoom)
    conn.reply(n.ERR_USERONCHANNEL, err.nick, channel_name(err.room), "is already on channel")


def _not_permitted(conn: IrcConnection, err: core.ChatError, command: str, target: str) -> None:
    assert isinstance(err, core.NotPermitted)
    if err.room is not None:
        conn.reply(n.ERR_CHANOPRIVSNEEDED, channel_name(err.room), "You're not channel operator")
    else:
        conn.reply(n.ERR_NOPRIVILEGES, "Permission Denied- You're not an IRC operator")


def _cannot_send(conn: IrcConnection, err: core.ChatError, command: str, target: str) -> None:
    assert isinstance(err, core.CannotSend)
    conn.reply(
        n.ERR_CANNOTSENDTOCHAN, channel_name(err.room), f"Cannot send to channel ({err.reason})"
    )


def _no_such_message(conn: IrcConnection, err: core.ChatError, command: str, target: str) -> None:
    assert isinstance(err, core.NoSuchMessage)
    conn.fail(
        command,
        "UNKNOWN_MSGID",
        target or err.where,
        err.msgid,
        description="This message does not exist or is too old",
    )


def _join_refused(conn: IrcConnection, err: core.ChatError, command: str, target: str) -> None:
    assert isinstance(err, core.JoinRefused)
    numeric, text = JOIN_REFUSALS.get(err.why, (n.ERR_UNKNOWNERROR, err.reason))
    conn.reply(numeric, channel_name(err.room), text)


def _unknown_mode(conn: IrcConnection, err: core.ChatError, command: str, target: str) -> None:
    assert isinstance(err, core.UnknownMode)
    conn.reply(n.ERR_UNKNOWNMODE, letter_of(err.mode), "is unknown mode char to me")


def _account(conn: IrcConnection, err: core.ChatError, command: str, target: str) -> None:
    assert isinstance(err, core.AccountError)
    # Every AccountError.CODES value becomes its FAIL code, in capitals.
    conn.fail(command, err.code.upper(), description=err.reason)


def _unavailable(conn: IrcConnection, err: core.ChatError, command: str, target: str) -> None:
    # The IRCv3 code for "try again later" (account-registration uses it for REGISTER).
    conn.fail(command, "TEMPORARILY_UNAVAILABLE", description=err.reason)


def _unknown(conn: IrcConnection, err: core.ChatError, command: str, target: str) -> None:
    conn.reply(n.ERR_UNKNOWNERROR, command, err.reason)


ERRORS: dict[type[core.ChatError], Reply] = {
    core.ChatError: _unknown,
    core.BadName: _bad_name,
    core.BadText: _bad_text,
    core.NickInUse: _nick_in_use,
    core.NickReserved: _nick_in_use,
    core.NoSuchNick: _no_such_nick,
    core.NoSuchRoom: _no_such_room,
    core.NotOnRoom: _not_on_room,
    core.AlreadyOnRoom: _already_on_room,
    core.NotPermitted: _not_permitted,
    core.CannotSend: _cannot_send,
    core.NoSuchMessage: _no_such_message,
    core.JoinRefused: _join_refused,
    core.UnknownMode: _unknown_mode,
    core.AccountError: _account,
    # A connection refused over a limit or a ban is told so by the core, which closes it;
    # a command that runs into one gets the reason.
    core.LimitExceeded: _unknown,
    core.Banned: _unknown,
    core.StorageUnavailable: _unavailable,
}


def reply_error(conn: IrcConnection, err: core.ChatError, command: str, target: str = "") -> None:
    """Answer a core refusal with the reply IRC gives it."""
    core.entry_for(ERRORS, err)(conn, err, command, target)
