"""Line-chat commands about who you are: nick, accounts, away."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred

from chatserver.core.errors import NickInUse
from chatserver.core.names import casefold
from protocols.costs import FANOUT
from protocols.line.commands import REST, Args, CommandError, Param, Reply, account_reply, command
from protocols.line.render import INFO

if TYPE_CHECKING:
    from protocols.line.connection import LineConnection


@command(
    "nick",
    "<nick>",
    "Choose your nick, or change it. Before you have one, a line with just the nick works too.",
    Param("nick", required=True),
    json='{"cmd": "nick", "nick": "alice"}',
    before_nick=True,
    per_delivery=FANOUT,
)
def do_nick(c: LineConnection, a: Args) -> Reply:
    nick = a["nick"]
    if c.user is None:
        claimed = c.service.claim_nick(c.session, nick)
        c.welcome(claimed)
        return Reply(fields={"nick": claimed.nick, "account": claimed.account})
    user = c.user
    if nick == user.nick:
        return Reply([f"{INFO}you are already {nick}"], {"nick": nick})
    c.service.rename(c.session, nick)
    return Reply(fields={"nick": user.nick})


def _parse_identify(c: LineConnection, text: str) -> Args:
    words = text.split()
    if len(words) > 2:
        raise CommandError("bad_argument", "too many arguments", usage=True)
    if len(words) == 2:
        return {"nick": words[0], "password": words[1]}
    return {"password": words[0]} if words else {}


@command(
    "identify",
    "[nick] <password>",
    "Log in to a registered nick (your current nick if none is given). Works before you have"
    " a nick too: you then get the account's nick, and join its other sessions if it is"
    " online elsewhere.",
    Param("password", required=True),
    json='{"cmd": "identify", "nick": "alice", "password": "secret"}',
    before_nick=True,
    parse=_parse_identify,
    aliases=("login",),
    password=True,
)
def do_identify(c: LineConnection, a: Args) -> Deferred:
    account = a.get("nick") or a.get("account")
    before = c.user
    already = (
        before is not None
        and before.account is not None
        and casefold(before.account) == casefold(account or before.nick)
    )

    def done(user: Any) -> Reply:
        if c.conn is None or c.user is None:
            return logged_in_before_nick(c, account)
        return logged_in_with_nick(c, before, already=already)

    if c.user is None and not account:
        raise CommandError(
            "missing_argument",
            "before you have a nick, say which: /identify <nick> <password>",
            usage=True,
        )
    return c.service.identify(c.session, a["password"], account).addCallback(done)


def logged_in_with_nick(c: LineConnection, before: Any, *, already: bool) -> Reply:
    """The reply to a login by a user that had a nick (``before``; None: it had it on
    another node, which handed the client here)."""
    user = c.user
    if user is None:
        # Closed meanwhile.
        return Reply()
    lines = []
    if already:
        lines.append(f"{INFO}you are already logged in as {user.account}")
    elif user is not before:
        lines.append(f"{INFO}you are now logged in as {user.account} (with your other session)")
    return Reply(lines, {"nick": user.nick, "account": user.account})


def logged_in_before_nick(c: LineConnection, account: str | None) -> Reply:
    """The reply to a login before a nick was chosen, which takes the account's nick."""
    if c.conn is None:
        # Closed while the password was being checked.
        return Reply()
    nick = c.session.account or account or ""
    try:
        user = c.service.claim_nick(c.session, nick)
    except NickInUse:
        # Someone not logged in to the account holds its nick: the owner takes it
        # back (they are renamed to a guest nick), as an XMPP login does.
        c.service.release_nick(nick, nick)
        user = c.service.claim_nick(c.session, nick)
    c.welcome(user)
    return Reply(fields={"nick": user.nick, "account": user.account})


@command(
    "register",
    "<password> [email]",
    "Register your current nick as an account (and log in to it). When registration on the"
    " server is by invitation, only a nick that an operator has invited can be registered.",
    Param("password", required=True),
    Param("email"),
    json='{"cmd": "register", "password": "secret"}',
    password=True,
)
def do_register(c: LineConnection, a: Args) -> Deferred:
    d = c.service.register(c.session, a["password"], a.get("email"))
    return d.addCallback(
        lambda record: Reply([f"{INFO}{record.name} is now registered"], {"account": record.name})
    )


@command(
    "password",
    "<old password> <new password>",
    "Change the password of the account you are logged in to.",
    Param("old", required=True),
    Param("new", required=True),
    json='{"cmd": "password", "old": "secret", "new": "better secret"}',
    password=True,
)
def do_password(c: LineConnection, a: Args) -> Deferred:
    d = c.service.change_password(c.session, a["old"], a["new"])
    return d.addCallback(account_reply([f"{INFO}password changed"]))


@command(
    "logout",
    "",
    "Log out of your account (you keep your nick; a registered nick must be identified to).",
    json='{"cmd": "logout"}',
)
def do_logout(c: LineConnection, a: Args) -> Reply:
    c.service.logout(c.session)
    return Reply()


@command(
    "drop",
    "<password>",
    "Delete the account you are logged in to: every session of it ends, this one once told."
    " Its nick becomes free for anyone.",
    Param("password", required=True),
    json='{"cmd": "drop", "password": "secret"}',
    password=True,
)
def do_drop(c: LineConnection, a: Args) -> Deferred:
    account = c.user.account if c.user else None
    d = c.service.drop(c.session, a["password"])
    return d.addCallback(account_reply([f"{INFO}account {account} dropped"], account=account))


@command(
    "away",
    "[message]",
    "Mark yourself away with a message; without one, mark yourself back.",
    Param("text", REST),
    json='{"cmd": "away", "text": "lunch"}',
    per_delivery=FANOUT,
)
def do_away(c: LineConnection, a: Args) -> Reply:
    c.service.set_away(c.session, a.get("text") or None)
    return Reply(fields={"away": a.get("text") or None})


@command(
    "block",
    "[nick]",
    "Block a user: their private messages and invitations reach none of your connections,"
    " on any protocol (your account keeps one list). Without a nick, list whom you block.",
    Param("nick"),
    json='{"cmd": "block", "nick": "mallory"}',
)
def do_block(c: LineConnection, a: Args) -> Reply | Deferred:
    nick = a.get("nick")
    if not nick:
        names = c.service.blocks(c.session)
        lines = [f"{INFO}you block: {' '.join(names)}" if names else f"{INFO}you block no one"]
        return Reply(lines, {"blocked": names})
    return c.service.block(c.session, [nick]).addCallback(
        lambda _: Reply([f"{INFO}you block {nick}"], {"blocked": nick})
    )


@command(
    "unblock",
    "<nick>|*",
    "Unblock a user (* unblocks everyone).",
    Param("nick", required=True),
    json='{"cmd": "unblock", "nick": "mallory"}',
)
def do_unblock(c: LineConnection, a: Args) -> Deferred:
    nick = a["nick"]
    names = None if nick == "*" else [nick]

    def done(gone: list[str]) -> Reply:
        if not gone:
            return Reply([f"{INFO}you did not block {nick}"], {"unblocked": []})
        return Reply([f"{INFO}you no longer block {' '.join(gone)}"], {"unblocked": gone})

    return c.service.unblock(c.session, names).addCallback(done)


@command(
    "set",
    "always-on [on|off]",
    "Account settings. always-on: stay in your rooms with your nick while none of your"
    " clients is connected (shown away), and get what you missed when you come back, on any"
    " protocol. Without on or off, say whether it is on.",
    Param("setting", required=True),
    Param("value"),
    json='{"cmd": "set", "setting": "always-on", "value": "on"}',
)
def do_set(c: LineConnection, a: Args) -> Reply | Deferred:
    if a["setting"].lower() != "always-on":
        raise CommandError("bad_argument", "the setting is always-on", usage=True)
    value = (a.get("value") or "").lower()
    if not value:
        on = c.service.is_always_on(c.user.account if c.user else None)
        return Reply([f"{INFO}always-on: {'on' if on else 'off'}"], {"always-on": on})
    if value not in ("on", "off"):
        raise CommandError("bad_argument", "always-on is on or off", usage=True)
    return c.service.set_always_on(c.session, value == "on").addCallback(
        lambda on: Reply([f"{INFO}always-on: {'on' if on else 'off'}"], {"always-on": on})
    )
