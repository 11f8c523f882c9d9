"""NickServ and ChanServ: pseudo-users that answer PRIVMSG (and the NS / CS commands).

They hold no state of their own: every command is a call to the chat service, so an account
registered here is the same account that SASL, XMPP and line chat log in to, and nick
enforcement is the core's.  Replies are NOTICEs from the pseudo-user.

Commands that carry a password are refused, unread, where passwords may not be sent
(plaintext from another machine, see :mod:`protocols.irc.security`).  NickServ INVITE and
UNINVITE let server operators manage registration by invitation.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger

from chatserver.core.errors import AccountError, Banned, ChatError
from chatserver.core.events import ModeItem, Who
from chatserver.core.names import casefold, is_valid_room
from protocols.irc import handoff
from protocols.irc.commands import command
from protocols.irc.sasl import refused_by_ban
from protocols.irc.security import may_send_passwords, tls_advice
from protocols.irc.services_registry import service

log = Logger()


@dataclass(frozen=True, slots=True)
class PseudoUser:
    nick: str
    realname: str

    @property
    def ident(self) -> str:
        return self.nick

    def host(self, conn: Any) -> str:
        return str(conn.server_name)

    def who(self, conn: Any) -> Who:
        return Who(nick=self.nick, ident=self.ident, host=self.host(conn), realname=self.realname)

    def source(self, conn: Any) -> str:
        return f"{self.nick}!{self.ident}@{self.host(conn)}"


NICKSERV = PseudoUser("NickServ", "Nickname services")
CHANSERV = PseudoUser("ChanServ", "Channel services")
PSEUDO_USERS: dict[str, PseudoUser] = {casefold(p.nick): p for p in (NICKSERV, CHANSERV)}

Reply = Callable[[str], None]
# handler(conn, args, reply) -> None | Deferred; raising ChatError (or failing with it)
# becomes a reply with the reason.
SubHandler = Callable[[Any, list[str], Reply], "Deferred[Any] | None"]


class Usage(Exception):
    """Wrong arguments: the reply is the command's syntax."""


class PlaintextPassword(Exception):
    """A password where passwords may not travel (see :mod:`protocols.irc.security`)."""


def _notice_from(pseudo: PseudoUser) -> Callable[[Any], Reply]:
    def bind(conn: Any) -> Reply:
        def reply(text: str) -> None:
            conn.send("NOTICE", conn.nick, text, source=pseudo.source(conn))

        return reply

    return bind


def _run(
    conn: Any,
    pseudo: PseudoUser,
    table: dict[str, tuple[SubHandler, str]],
    text: str,
) -> Deferred[Any] | None:
    """Run the subcommand in ``text``; errors become NOTICEs from ``pseudo``."""
    reply = _notice_from(pseudo)(conn)
    words = text.split()
    if not words or words[0].upper() == "HELP":
        reply(f"{pseudo.nick} commands:")
        for name in sorted(table):
            reply(f"  {name} {table[name][1]}".rstrip())
        return None
    name = words[0].upper()
    entry = table.get(name)
    if entry is None:
        reply(f'Unknown command {words[0]}. Try "/msg {pseudo.nick} HELP".')
        return None
    handler, syntax = entry
    return _answered(conn, pseudo, name, syntax, maybeDeferred(handler, conn, words[1:], reply))


def _answered(
    conn: Any, pseudo: PseudoUser, name: str, syntax: str, d: Deferred[Any]
) -> Deferred[Any] | None:
    """``d``, the outcome of ``pseudo``'s command ``name``, with its failures answered as
    NOTICEs from ``pseudo``."""
    reply = _notice_from(pseudo)(conn)

    def failed(failure: Any) -> None:
        if failure.check(Usage):
            reply(f"Syntax: {name} {syntax}")
        elif failure.check(PlaintextPassword):
            reply(f"{name} refused: {tls_advice(conn)}.")
            if name == "IDENTIFY":
                reply("SASL SCRAM-SHA-256 logs you in without sending your password.")
        elif failure.check(Banned):
            # The core has told the client why and closed the connection: nothing to add.
            refused_by_ban(conn, failure.value)
        elif failure.check(ChatError):
            reply(f"{name} failed: {failure.value}")
        else:
            log.failure("{service} {command}", failure, service=pseudo.nick, command=name)
            reply(f"{name} failed: internal error")

    d.addErrback(failed)
    # A fired Deferred has done its replies: nothing to keep the reply buffer open for.
    return d if not d.called else None


def _need(args: list[str], low: int, high: int | None = None) -> None:
    if len(args) < low or (high is not None and len(args) > high):
        raise Usage()


def _password_allowed(conn: Any) -> None:
    """Refuse a command that carries a password where one may not be sent, unread."""
    if not may_send_passwords(conn):
        raise PlaintextPassword()


def _date(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _account_of(conn: Any) -> str | None:
    user = conn.core.user
    return user.account if user is not None else None


# -- NickServ ----------------------------------------------------------------------------------


def ns_register(conn: Any, args: list[str], reply: Reply) -> Deferred[Any]:
    _need(args, 1, 2)
    _password_allowed(conn)
    email = args[1] if len(args) > 1 else None
    d = conn.service.register(conn.core, args[0], email)
    d.addCallback(lambda record: reply(f"Account {record.name} registered; you are now logged in."))
    return d


def ns_identify(conn: Any, args: list[str], reply: Reply) -> Deferred[Any]:
    _need(args, 1, 2)
    _password_allowed(conn)
    account, password = (args[0], args[1]) if len(args) == 2 else (None, args[0])
    d = conn.service.identify(conn.core, password, account)
    d.addCallbacks(lambda _: _identified(conn, reply), _maybe_elsewhere, errbackArgs=(conn,))
    return d


def _identified(conn: Any, reply: Reply) -> None:
    reply(f"You are now logged in as {_account_of(conn)}.")


def _maybe_elsewhere(failure: Any, conn: Any) -> Any:
    """(Cluster mode) the account's user is online on another node: the client goes on
    there, which answers the IDENTIFY (:func:`identified_elsewhere`)."""
    err = failure.value
    if (
        isinstance(err, AccountError)
        and err.node is not None
        and err.account is not None
        and handoff.hand_off(conn, err.account, err.node, handoff.NICKSERV)
    ):
        return None
    return failure


def identified_elsewhere(conn: Any, account: str, arrival: dict[str, Any] | None) -> Deferred:
    """The IDENTIFY to ``account`` that another node handed to this one (with its client,
    ``arrival``: see ``ChatService.log_in``), logged in and answered as NickServ answers it."""
    d = conn.service.log_in(conn.core, account, arrival=arrival)
    d.addCallback(lambda _: _identified(conn, _notice_from(NICKSERV)(conn)))
    _answered(conn, NICKSERV, "IDENTIFY", NICKSERV_COMMANDS["IDENTIFY"][1], d)
    return d


def ns_logout(conn: Any, args: list[str], reply: Reply) -> None:
    _need(args, 0, 0)
    account = _account_of(conn)
    conn.service.logout(conn.core)
    reply(f"You are now logged out of {account}.")


def ns_drop(conn: Any, args: list[str], reply: Reply) -> Deferred[Any]:
    _need(args, 1, 1)
    _password_allowed(conn)
    account = _account_of(conn)
    d = conn.service.drop(conn.core, args[0])
    d.addCallback(lambda _: reply(f"Account {account} has been dropped."))
    return d


def ns_info(conn: Any, args: list[str], reply: Reply) -> Deferred[Any]:
    _need(args, 0, 1)
    name = args[0] if args else (_account_of(conn) or conn.nick)

    def show(record: Any) -> None:
        if record is None:
            reply(f"{name} is not registered.")
            return
        reply(f"Information on {record.name}:")
        reply(f"Registered: {_date(record.created_at)}")
        holder = conn.service.find_user(record.name)
        online = [
            u.nick
            for u in ([holder] if holder is not None else [])
            if u.account is not None and casefold(u.account) == casefold(record.name)
        ]
        reply("Logged in now as: " + online[0] if online else "Not logged in now.")
        if record.email and casefold(_account_of(conn) or "") == casefold(record.name):
            reply(f"Email: {record.email}")

    return conn.service.account_info(name).addCallback(show)


_ON_OFF = {"ON": True, "TRUE": True, "OFF": False, "FALSE": False}


def ns_set(conn: Any, args: list[str], reply: Reply) -> Deferred[Any]:
    if args and args[0].upper() == "ALWAYS-ON":
        return _set_always_on(conn, args[1:], reply)
    if not args or args[0].upper() != "PASSWORD" or len(args) != 3:
        raise Usage()
    _password_allowed(conn)
    d = conn.service.change_password(conn.core, args[1], args[2])
    d.addCallback(lambda _: reply("Your password has been changed."))
    return d


def _set_always_on(conn: Any, args: list[str], reply: Reply) -> Deferred[Any]:
    """SET ALWAYS-ON [ON|OFF]: stay in your rooms with your nick while no client is
    connected; without an argument, say whether it is on."""
    if not args:
        on = conn.service.is_always_on(_account_of(conn))
        reply(f"always-on is {'on' if on else 'off'} for your account.")
        return maybeDeferred(lambda: None)
    if len(args) != 1 or args[0].upper() not in _ON_OFF:
        raise Usage()

    def done(on: bool) -> None:
        if on:
            reply(
                "always-on is now on: you stay in your rooms with your nick while no client is"
                " connected, and get what you missed when you come back."
            )
        else:
            reply("always-on is now off: you leave your rooms when your last client quits.")

    return conn.service.set_always_on(conn.core, _ON_OFF[args[0].upper()]).addCallback(done)


def _claim(conn: Any, args: list[str], reply: Reply, regain: bool) -> Deferred[Any]:
    _need(args, 1, 2)
    nick = args[0]
    if casefold(nick) == casefold(conn.nick):
        raise ChatError("that is your own nick")
    if len(args) == 2:
        _password_allowed(conn)
    if len(args) == 2 and casefold(_account_of(conn) or "") != casefold(nick):
        d = conn.service.identify(conn.core, args[1], nick)
    else:
        d = maybeDeferred(lambda: None)

    def release(_: Any) -> None:
        account = _account_of(conn)
        if account is None or casefold(account) != casefold(nick):
            raise ChatError(f"log in to the account {nick} first (or give its password)")
        if not conn.service.release_nick(nick, account):
            raise ChatError(f"{nick} is already yours")
        if regain:
            conn.service.rename(conn.core, nick)
            reply(f"You have regained {nick}.")
        else:
            reply(f"{nick} has been released.")

    return d.addCallback(release)


def ns_ghost(conn: Any, args: list[str], reply: Reply) -> Deferred[Any]:
    return _claim(conn, args, reply, regain=False)


def ns_regain(conn: Any, args: list[str], reply: Reply) -> Deferred[Any]:
    return _claim(conn, args, reply, regain=True)


# What an invitation means while registration is not by invitation.
_INVITE_NOTES = {
    "open": "Registration is open on this server: anyone may register any free nick anyway.",
    "closed": 'Registration is closed on this server: the invitation counts once it is "invite".',
}


def ns_invite(conn: Any, args: list[str], reply: Reply) -> Deferred[Any]:
    _need(args, 1, 2)
    name = args[0]
    if len(args) == 1:
        d = conn.service.invite_registration(conn.core, name)
    else:
        try:
            days = float(args[1])
        except ValueError:
            raise ChatError("days must be a number, such as 7 or 0.5") from None
        d = conn.service.invite_registration(conn.core, name, days)

    def invited(expires_at: float) -> None:
        reply(f"{name} may be registered once, until {_date(expires_at)}.")
        note = _INVITE_NOTES.get(conn.service.settings.registration)
        if note is not None:
            reply(note)

    return d.addCallback(invited)


def ns_uninvite(conn: Any, args: list[str], reply: Reply) -> Deferred[Any]:
    _need(args, 1, 1)
    name = args[0]

    def withdrawn(existed: bool) -> None:
        if not existed:
            raise ChatError(f"{name} has no invitation to register")
        reply(f"The invitation to register {name} is withdrawn.")

    return conn.service.uninvite_registration(conn.core, name).addCallback(withdrawn)


def ns_block(conn: Any, args: list[str], reply: Reply) -> Deferred[Any] | None:
    """The account's one block list (every protocol): with no nick, what it holds."""
    _need(args, 0, 1)
    if not args:
        names = conn.service.blocks(conn.core)
        reply(f"You block: {' '.join(names)}" if names else "You block no one.")
        return None
    nick = args[0]
    return conn.service.block(conn.core, [nick]).addCallback(
        lambda _: reply(
            f"You block {nick}: their private messages and invitations reach"
            " none of your connections."
        )
    )


def ns_unblock(conn: Any, args: list[str], reply: Reply) -> Deferred[Any]:
    _need(args, 1, 1)
    names = None if args[0] == "*" else [args[0]]

    def done(gone: list[str]) -> None:
        if gone:
            reply(f"You no longer block {' '.join(gone)}.")
        else:
            reply(f"You did not block {args[0]}.")

    return conn.service.unblock(conn.core, names).addCallback(done)


NICKSERV_COMMANDS: dict[str, tuple[SubHandler, str]] = {
    "BLOCK": (ns_block, "[nick]"),
    "UNBLOCK": (ns_unblock, "<nick>|*"),
    "REGISTER": (ns_register, "<password> [email]"),
    "IDENTIFY": (ns_identify, "[account] <password>"),
    "LOGOUT": (ns_logout, ""),
    "DROP": (ns_drop, "<password>"),
    "INFO": (ns_info, "[account]"),
    "SET": (ns_set, "PASSWORD <current password> <new password> | ALWAYS-ON [ON|OFF]"),
    "GHOST": (ns_ghost, "<nick> [password]"),
    "REGAIN": (ns_regain, "<nick> [password]"),
    "INVITE": (ns_invite, "<nick> [days]"),
    "UNINVITE": (ns_uninvite, "<nick>"),
}


@service("NickServ")
def nickserv(conn: Any, text: str) -> Deferred[Any] | None:
    return _run(conn, NICKSERV, NICKSERV_COMMANDS, text)


# -- ChanServ ----------------------------------------------------------------------------------


def _room_arg(text: str) -> str:
    name = text[1:] if text.startswith("#") else text
    if not is_valid_room(name):
        raise ChatError(f"{text} is not a valid room name")
    return name


def cs_register(conn: Any, args: list[str], reply: Reply) -> Deferred[Any]:
    _need(args, 1, 1)
    room = _room_arg(args[0])
    d = conn.service.register_room(conn.core, room)
    d.addCallback(lambda _: reply(f"#{casefold(room)} is now registered to {_account_of(conn)}."))
    return d


def cs_drop(conn: Any, args: list[str], reply: Reply) -> Deferred[Any]:
    _need(args, 1, 1)
    room = _room_arg(args[0])
    d = conn.service.drop_room(conn.core, room)
    d.addCallback(lambda _: reply(f"#{casefold(room)} is no longer registered."))
    return d


def cs_info(conn: Any, args: list[str], reply: Reply) -> None:
    _need(args, 1, 1)
    room = conn.service.get_room(_room_arg(args[0]))
    if room is None or not room.registered:
        reply(f"{args[0]} is not registered.")
        return
    reply(f"Information on #{room.name}:")
    reply(f"Owner: {room.owner}")
    reply(f"Registered: {_date(room.created_at)}")


def cs_retention(conn: Any, args: list[str], reply: Reply) -> Deferred[Any]:
    _need(args, 2, 2)
    room = _room_arg(args[0])
    days: float | None = None
    if args[1].upper() != "OFF":
        try:
            days = float(args[1])
        except ValueError:
            raise Usage() from None
    d = conn.service.set_room_retention(conn.core, room, days)
    if days is None:
        d.addCallback(lambda _: reply(f"#{casefold(room)} keeps history as the server does."))
    else:
        d.addCallback(
            lambda deleted: reply(
                f"#{casefold(room)} keeps history {days:g} days ({deleted} older messages deleted)."
            )
        )
    return d


def _modes(mode: str, adding: bool, default_self: bool) -> SubHandler:
    def handler(conn: Any, args: list[str], reply: Reply) -> None:
        _need(args, 1 if default_self else 2, 2)
        room = _room_arg(args[0])
        arg = args[1] if len(args) > 1 else conn.nick
        applied, errors = conn.service.set_mode_registered(
            conn.core, room, [ModeItem(adding, mode, arg)], by=CHANSERV.who(conn)
        )
        if errors:
            raise errors[0]
        if not applied:
            reply(f"Nothing to change on #{casefold(room)}.")

    return handler


CHANSERV_COMMANDS: dict[str, tuple[SubHandler, str]] = {
    "REGISTER": (cs_register, "<#room>"),
    "DROP": (cs_drop, "<#room>"),
    "INFO": (cs_info, "<#room>"),
    "RETENTION": (cs_retention, "<#room> <days|OFF>"),
    "OP": (_modes("op", True, True), "<#room> [nick]"),
    "DEOP": (_modes("op", False, True), "<#room> [nick]"),
    "VOICE": (_modes("voice", True, True), "<#room> [nick]"),
    "DEVOICE": (_modes("voice", False, True), "<#room> [nick]"),
    "BAN": (_modes("ban", True, False), "<#room> <nick or mask>"),
    "UNBAN": (_modes("ban", False, False), "<#room> <nick or mask>"),
}


@service("ChanServ")
def chanserv(conn: Any, text: str) -> Deferred[Any] | None:
    return _run(conn, CHANSERV, CHANSERV_COMMANDS, text)


# -- /NS and /CS -------------------------------------------------------------------------------


def _alias(handler: Callable[[Any, str], Deferred[Any] | None]) -> Any:
    def run(conn: Any, msg: Any) -> Deferred[Any] | None:
        return handler(conn, " ".join(msg.params))

    return run


command("NS")(_alias(nickserv))
command("NICKSERV")(_alias(nickserv))
command("CS")(_alias(chanserv))
command("CHANSERV")(_alias(chanserv))
