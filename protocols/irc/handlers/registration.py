"""Connection registration: PASS, NICK, USER, CAP, AUTHENTICATE, QUIT, PING, PONG; the
welcome burst (001-005, LUSERS, MOTD); LUSERS and MOTD on request.

Registration completes when the client has given NICK and USER and is not negotiating
capabilities (CAP LS/REQ hold it until CAP END).
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatserver.auth.server_password import ServerPasswordRefused, check_server_password
from chatserver.core.errors import AccountError, BadName, NickInUse
from chatserver.core.names import NICK_MAX, ROOM_MAX, is_valid_nick
from protocols import connlog
from protocols.costs import FANOUT
from protocols.irc import caps, sasl
from protocols.irc import numerics as n
from protocols.irc.channels import channel_name, send_names, send_topic
from protocols.irc.commands import COMMANDS, command
from protocols.irc.errors import in_use_text
from protocols.irc.message import MAX_BODY_BYTES, IrcMessage, serialize_fitted
from protocols.irc.modes import CHANMODES_TOKEN, CHANNEL_LETTERS, USER_LETTERS, user_mode_string
from protocols.irc.security import may_send_passwords, tls_advice
from protocols.irc.services_registry import is_service_nick

if TYPE_CHECKING:
    from protocols.irc.connection import IrcConnection

log = Logger()

MAX_TARGETS = 4
MODES_PER_LINE = 4
USERLEN = 16
_IDENT_RE = re.compile(r"[^A-Za-z0-9._-]")
# 005 tokens per line (the Modern docs suggest at most 13, and ending with the text).
ISUPPORT_PER_LINE = 13

# Extra ISUPPORT tokens from other modules: name -> value (or a function of the connection
# giving it; None leaves the token out).
EXTRA_ISUPPORT: dict[str, str | Callable[[IrcConnection], str | None]] = {}


# -- registration ------------------------------------------------------------------------------


@command("PASS", min_params=1, pre_registration=True)
def pass_(conn: IrcConnection, msg: IrcMessage) -> Deferred[None] | None:
    if conn.registered:
        conn.reply(n.ERR_ALREADYREGISTERED, "You may not reregister")
        return None
    stored = conn.factory.config.password
    if not stored:
        # No server password: PASS is accepted and ignored, as clients send one anyway.
        return None
    if not may_send_passwords(conn):
        _refuse_password(conn, tls_advice(conn), "Insecure password")
        return None
    # NICK and USER wait for the check (commands are answered in order), so registration
    # sees its outcome.
    d = check_server_password(
        conn.service, stored, msg.params[0], address=conn.address, protocol=conn.protocol
    )

    def accepted(_: None) -> None:
        conn.server_password_ok = True

    def refused(failure: Failure) -> None:
        failure.trap(ServerPasswordRefused, AccountError)
        if isinstance(failure.value, AccountError):
            _refuse_password(conn, "Too many failed attempts; try again later", "Throttled")
        else:
            _refuse_password(conn, "Password incorrect", "Bad password")

    return d.addCallbacks(accepted, refused)


def _refuse_password(conn: IrcConnection, text: str, reason: str) -> None:
    """464, then ERROR and the end of the connection (Modern IRC: a wrong server password
    closes the connection)."""
    conn.reply(n.ERR_PASSWDMISMATCH, text)
    conn.disconnect(reason)


@command("NICK", pre_registration=True, cost=2.0, per_delivery=FANOUT)
def nick(conn: IrcConnection, msg: IrcMessage) -> None:
    if not msg.params or not msg.params[0]:
        conn.reply(n.ERR_NONICKNAMEGIVEN, "No nickname given")
        return
    wanted = msg.params[0]
    if is_service_nick(wanted):
        conn.reply(n.ERR_ERRONEUSNICKNAME, wanted, "Nickname is reserved for services")
        return
    if not is_valid_nick(wanted):
        conn.reply(n.ERR_ERRONEUSNICKNAME, wanted, "Erroneous nickname")
        return
    if conn.registered:
        assert conn.core is not None
        try:
            conn.service.rename(conn.core, wanted)
        except NickInUse as err:
            conn.reply(n.ERR_NICKNAMEINUSE, wanted, in_use_text(err))
        except BadName as err:
            conn.reply(n.ERR_ERRONEUSNICKNAME, wanted, erroneous_text(err))
        return
    holder = conn.service.find_user(wanted)
    # A connection logged in by SASL joins its account's user whatever nick it asks for.  While
    # capabilities are negotiated SASL may still come, so the nick of an account's user waits
    # for the end of registration (a client of an always-on account asks for its own nick
    # before it authenticates); without that account it is refused then.
    if (
        holder is not None
        and (conn.core is None or conn.core.account is None)
        and not (conn.cap_negotiating and holder.account is not None)
    ):
        conn.refused_nick = wanted
        conn.reply(n.ERR_NICKNAMEINUSE, wanted, "Nickname is already in use")
        return
    conn.pending_nick = wanted
    try_register(conn)


@command("USER", min_params=4, pre_registration=True)
def user(conn: IrcConnection, msg: IrcMessage) -> None:
    if conn.registered:
        conn.reply(n.ERR_ALREADYREGISTERED, "You may not reregister")
        return
    ident = _IDENT_RE.sub("", msg.params[0])[:USERLEN]
    if not msg.params[0] or not msg.params[3]:
        # An empty username or realname is a missing one (Modern IRC: 461).
        conn.reply(n.ERR_NEEDMOREPARAMS, "USER", "Not enough parameters")
        return
    conn.ident = ident or "user"
    conn.realname = msg.params[3]
    try_register(conn)


def erroneous_text(err: BadName) -> str:
    """432's text: a reserved name says so."""
    return err.reason if is_valid_nick(err.name) else "Erroneous nickname"


def try_register(conn: IrcConnection) -> None:
    """Finish registration if everything it needs is there."""
    if conn.registered or conn.closing or conn.core is None:
        return
    if conn.cap_negotiating or conn.pending_nick is None or conn.ident is None:
        return
    if conn.factory.config.password and not conn.server_password_ok:
        _refuse_password(conn, "This server needs a password: send PASS first", "No password")
        return
    if conn.sasl is not None:
        sasl.abort(conn)
    wanted = conn.pending_nick
    # Notices the core sends on claiming a nick (nick enforcement) follow the welcome burst.
    conn.hold_events()
    try:
        try:
            user = conn.service.claim_nick(
                conn.core, wanted, ident=conn.ident, realname=conn.realname
            )
        except NickInUse as err:
            conn.pending_nick = None
            conn.reply(n.ERR_NICKNAMEINUSE, wanted, in_use_text(err))
            return
        except BadName as err:
            conn.pending_nick = None
            conn.reply(n.ERR_ERRONEUSNICKNAME, wanted, erroneous_text(err))
            return
        conn.registered = True
        conn.factory.connection_registered(conn)
        conn.registration_done()
        connlog.registered("irc", conn.core.id, conn.address, user.nick)
        welcome(conn)
        # Attached to a user already online (same account elsewhere): show its rooms.
        for room in list(user.rooms.values()):
            conn.send("JOIN", channel_name(room.name), source=user.who().mask)
            send_topic(conn, room, quiet_if_none=True)
            send_names(conn, room)
    finally:
        conn.release_events()


Reply = tuple[str, tuple[str, ...]]


def welcome(conn: IrcConnection) -> None:
    user = conn.user
    assert user is not None
    welcome_text = f"Welcome to the {conn.server.network} IRC Network {user.who().mask}"
    _send_own(conn, [(n.RPL_WELCOME, (welcome_text,))])
    head, motd = _welcome_templates(conn)
    _send_template(conn, head)
    send_lusers(conn)
    _send_template(conn, motd)
    if user.modes:
        conn.reply(n.RPL_UMODEIS, user_mode_string(user.modes))


def _server_replies(conn: IrcConnection) -> list[Reply]:
    """002-005: the same for every client of a listener but for the nick."""
    me = conn.server_name
    created = datetime.datetime.fromtimestamp(conn.factory.created_at, datetime.UTC)
    user_modes = "".join(sorted(USER_LETTERS.values(), key=str.lower))
    chan_modes = "".join(sorted(CHANNEL_LETTERS.values(), key=str.lower))
    return [
        (n.RPL_YOURHOST, (f"Your host is {me}, running version {conn.factory.version}",)),
        (n.RPL_CREATED, (f"This server was created {created:%Y-%m-%d %H:%M:%S} UTC",)),
        (n.RPL_MYINFO, (me, conn.factory.version, user_modes, chan_modes, "Ibklov")),
        *isupport_replies(conn),
    ]


# Each line as (bytes before the nick, bytes after it), or the replies themselves when a
# line could pass 512 bytes with a long nick (they are then fitted one by one).
Template = list[tuple[bytes, bytes]] | list[Reply]


class _WelcomeTemplates:
    """The welcome burst's replies that differ between clients only in the nick, rendered
    once (per configuration) as the bytes before and after the nick: a registration then
    joins bytes instead of building and serializing some twenty replies."""

    __slots__ = ("head", "motd", "sources")

    def __init__(self, sources: tuple[object, ...], head: Template, motd: Template) -> None:
        self.sources = sources
        self.head = head
        self.motd = motd


def _welcome_templates(conn: IrcConnection) -> tuple[Template, Template]:
    factory = conn.factory
    # What the lines are made of: a reload replaces these objects, never changes them.
    sources = (conn.server, conn.service.settings, factory.motd_lines)
    cached: _WelcomeTemplates | None = factory.welcome_templates
    if cached is None or any(a is not b for a, b in zip(cached.sources, sources, strict=True)):
        cached = _WelcomeTemplates(
            sources,
            _template(conn, _server_replies(conn)),
            _template(conn, motd_replies(conn)),
        )
        factory.welcome_templates = cached
    return cached.head, cached.motd


def _template(conn: IrcConnection, replies: list[Reply]) -> Template:
    me = conn.server_name
    lines: list[tuple[bytes, bytes]] = []
    for numeric, params in replies:
        line = serialize_fitted(
            IrcMessage(numeric, ("*", *params), me), force_trailing=bool(params)
        )
        before = f":{me} {numeric} ".encode()
        if not line.startswith(before + b"* ") or len(line) - 1 + NICK_MAX > MAX_BODY_BYTES + 2:
            return replies
        lines.append((before, line[len(before) + 1 :]))
    return lines


def _send_template(conn: IrcConnection, template: Template) -> None:
    nick = conn.nick.encode()
    for first, second in template:
        if isinstance(first, bytes):
            conn.queue_line(first + nick + second)  # type: ignore[operator]
        else:
            conn.reply(first, *second)


def isupport_tokens(conn: IrcConnection) -> list[str]:
    """The 005 tokens, reflecting the commands that exist now."""
    settings = conn.service.settings
    targmax = f"JOIN:,KICK:4,LIST:,NAMES:,NOTICE:{MAX_TARGETS},PART:,PRIVMSG:{MAX_TARGETS},TAGMSG:{MAX_TARGETS},WHOIS:1"
    tokens: dict[str, str | None] = {
        # Ban masks may name an account: $a:<account> (IRCv3 account-extban).
        "ACCOUNTEXTBAN": "a",
        "AWAYLEN": str(settings.away_max),
        "BOT": "B",
        "CASEMAPPING": "ascii",
        "CHANLIMIT": f"#:{settings.max_rooms_per_user}",
        "CHANMODES": CHANMODES_TOKEN,
        "CHANNELLEN": str(ROOM_MAX + 1),
        "CHANTYPES": "#",
        "ELIST": "CMNTU",
        # $a:<account> and the mute $m:<mask> (one may speak only with voice).
        "EXCEPTS": "e",
        "EXTBAN": "$,am",
        "HOSTLEN": "64",
        "INVEX": "I",
        "KICKLEN": str(settings.kick_reason_max),
        "MAXLIST": "beI:100",
        "MAXTARGETS": str(MAX_TARGETS),
        "MODES": str(MODES_PER_LINE),
        "NETWORK": conn.server.network,
        "NICKLEN": str(NICK_MAX),
        "PREFIX": "(ov)@+",
        "SAFELIST": "",
        "STATUSMSG": "@+",
        "TARGMAX": targmax,
        "TOPICLEN": str(settings.topic_max),
        "USERLEN": str(USERLEN),
        "UTF8ONLY": "",
    }
    if "CHATHISTORY" in COMMANDS:
        tokens["CHATHISTORY"] = "100"
        tokens["MSGREFTYPES"] = "msgid,timestamp"
    if "MONITOR" in COMMANDS:
        tokens["MONITOR"] = "100"
    if "WHO" in COMMANDS:
        tokens["WHOX"] = ""
    for name, value in EXTRA_ISUPPORT.items():
        tokens[name] = value(conn) if callable(value) else value
    return [f"{k}={v}" if v else k for k, v in sorted(tokens.items()) if v is not None]


def isupport_replies(conn: IrcConnection) -> list[Reply]:
    tokens = isupport_tokens(conn)
    return [
        (
            n.RPL_ISUPPORT,
            (*tokens[start : start + ISUPPORT_PER_LINE], "are supported by this server"),
        )
        for start in range(0, len(tokens), ISUPPORT_PER_LINE)
    ]


def send_isupport(conn: IrcConnection) -> None:
    for numeric, params in isupport_replies(conn):
        conn.reply(numeric, *params)


def _send_own(conn: IrcConnection, replies: list[Reply]) -> None:
    """Queue replies made only of the server's own words, numbers and the user's mask, as
    one piece: they need none of the checks and fitting that :meth:`IrcConnection.reply`
    gives parameters echoed from the client (no CR/LF, far below 512 bytes)."""
    head = f":{conn.server_name} "
    nick = conn.nick
    body = "\n".join(
        f"{head}{numeric} {nick} {' '.join(params[:-1])}{' ' if len(params) > 1 else ''}"
        f":{params[-1]}"
        for numeric, params in replies
    )
    if "\r" in body or "\x00" in body or body.count("\n") != len(replies) - 1:
        # Not what the server makes (a gateway's odd host in the mask): the careful way.
        for numeric, params in replies:
            conn.reply(numeric, *params)
        return
    conn.queue_line(body.replace("\n", "\r\n").encode() + b"\r\n")


def send_lusers(conn: IrcConnection) -> None:
    """251-255, 265, 266 from the counters the service and the listener keep running, as one
    piece: only numbers and the (valid) nick go into them, so they need none of the checks
    of :meth:`IrcConnection.reply`, and every registration sends them."""
    service = conn.service
    invisible = service.mode_count("invisible")
    opers = service.mode_count("oper")
    total = service.user_count()
    peak = max(service.max_users_seen, total)
    unknown = conn.factory.unregistered_count()
    rooms = service.room_count()
    head = f":{conn.server_name} "
    nick = conn.nick
    conn.queue_line(
        f"{head}{n.RPL_LUSERCLIENT} {nick} :There are {total - invisible} users and"
        f" {invisible} invisible on 1 servers\r\n"
        f"{head}{n.RPL_LUSEROP} {nick} {opers} :operator(s) online\r\n"
        f"{head}{n.RPL_LUSERUNKNOWN} {nick} {unknown} :unknown connection(s)\r\n"
        f"{head}{n.RPL_LUSERCHANNELS} {nick} {rooms} :channels formed\r\n"
        f"{head}{n.RPL_LUSERME} {nick} :I have {total} clients and 0 servers\r\n"
        f"{head}{n.RPL_LOCALUSERS} {nick} {total} {peak} :Current local users {total},"
        f" max {peak}\r\n"
        f"{head}{n.RPL_GLOBALUSERS} {nick} {total} {peak} :Current global users {total},"
        f" max {peak}\r\n".encode()
    )


def motd_replies(conn: IrcConnection) -> list[Reply]:
    lines = conn.factory.motd_lines
    if lines is None:
        return [(n.ERR_NOMOTD, ("MOTD File is missing",))]
    return [
        (n.RPL_MOTDSTART, (f"- {conn.server_name} Message of the day - ",)),
        *((n.RPL_MOTD, (f"- {text}",)) for text in lines),
        (n.RPL_ENDOFMOTD, ("End of /MOTD command.",)),
    ]


def send_motd(conn: IrcConnection) -> None:
    for numeric, params in motd_replies(conn):
        conn.reply(numeric, *params)


@command("LUSERS")
def lusers(conn: IrcConnection, msg: IrcMessage) -> None:
    send_lusers(conn)


@command("MOTD")
def motd(conn: IrcConnection, msg: IrcMessage) -> None:
    send_motd(conn)


# -- capabilities ------------------------------------------------------------------------------


@command("CAP", min_params=1, pre_registration=True)
def cap(conn: IrcConnection, msg: IrcMessage) -> None:
    sub = msg.params[0].upper()
    handler = _CAP_SUBCOMMANDS.get(sub)
    if handler is None:
        conn.reply(n.ERR_INVALIDCAPCMD, msg.params[0], "Invalid CAP command")
        return
    handler(conn, msg)


def _cap_target(conn: IrcConnection) -> str:
    return conn.nick


def _cap_ls(conn: IrcConnection, msg: IrcMessage) -> None:
    if not conn.registered:
        conn.cap_negotiating = True
    version = msg.params[1] if len(msg.params) > 1 else ""
    if version.isascii() and version.isdigit():
        conn.cap_version = max(conn.cap_version, int(version))
    if conn.cap_version >= 302 and "cap-notify" not in conn.caps:
        # CAP LS 302 turns cap-notify on implicitly.
        conn.set_caps(conn.caps | {"cap-notify"})
    tokens = caps.ls_tokens(conn, conn.cap_version)
    _send_cap_list(conn, "LS", tokens)


def _send_cap_list(conn: IrcConnection, sub: str, tokens: list[str]) -> None:
    target = _cap_target(conn)
    head = len(f":{conn.server_name} CAP {target} {sub} * :") + 2
    budget = 510 - head
    lines: list[list[str]] = [[]]
    used = 0
    for token in tokens:
        size = len(token.encode()) + (1 if lines[-1] else 0)
        if lines[-1] and used + size > budget:
            lines.append([])
            used = 0
            size = len(token.encode())
        lines[-1].append(token)
        used += size
    # Only 3.2 clients understand the continuation marker; others get everything on one line.
    if conn.cap_version < 302 and len(lines) > 1:
        lines = [[t for chunk in lines for t in chunk]]
    for index, chunk in enumerate(lines):
        more = index < len(lines) - 1
        params = [target, sub] + (["*"] if more else []) + [" ".join(chunk)]
        # COMPAT: some clients (older HexChat, naive bots) expect the list after " :".
        conn.send("CAP", *params, force_trailing=True)


def _cap_list(conn: IrcConnection, msg: IrcMessage) -> None:
    _send_cap_list(conn, "LIST", sorted(conn.caps))


def _cap_req(conn: IrcConnection, msg: IrcMessage) -> None:
    if not conn.registered:
        conn.cap_negotiating = True
    text = msg.params[1] if len(msg.params) > 1 else ""
    wanted = text.split()
    enabled = set(conn.caps)
    ok = bool(wanted)
    for token in wanted:
        name = token[1:] if token.startswith("-") else token
        if not caps.is_offered(name):
            ok = False
            break
        if token.startswith("-"):
            enabled.discard(name)
        else:
            enabled.add(name)
    target = _cap_target(conn)
    if not ok:
        conn.send("CAP", target, "NAK", text, force_trailing=True)
        return
    conn.set_caps(enabled)
    conn.send("CAP", target, "ACK", text, force_trailing=True)


def _cap_end(conn: IrcConnection, msg: IrcMessage) -> None:
    if conn.registered:
        return
    conn.cap_negotiating = False
    try_register(conn)


_CAP_SUBCOMMANDS: dict[str, Callable[[IrcConnection, IrcMessage], None]] = {
    "LS": _cap_ls,
    "LIST": _cap_list,
    "REQ": _cap_req,
    "END": _cap_end,
}


# -- SASL --------------------------------------------------------------------------------------


@command("AUTHENTICATE", min_params=1, pre_registration=True)
def authenticate(conn: IrcConnection, msg: IrcMessage) -> Deferred[None] | None:
    return sasl.authenticate(conn, msg.params[0])


# -- keeping alive and leaving -----------------------------------------------------------------


@command("PING", min_params=1, pre_registration=True, cost=0.5)
def ping(conn: IrcConnection, msg: IrcMessage) -> None:
    conn.send("PONG", conn.server_name, msg.params[0])


@command("PONG", pre_registration=True, cost=0.0)
def pong(conn: IrcConnection, msg: IrcMessage) -> None:
    # Any input proves the client alive (the connection noted the time); nothing to answer.
    return None


@command("QUIT", pre_registration=True, cost=0.0)
def quit_(conn: IrcConnection, msg: IrcMessage) -> None:
    text = msg.params[0] if msg.params else ""
    reason = f"Quit: {text}" if text else "Quit"
    conn.quit(reason)
