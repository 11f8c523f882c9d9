"""Questions about users and the server: WHO (and WHOX), WHOIS, WHOWAS, ISON, USERHOST,
TIME, VERSION, INFO and ADMIN.

Hosts are the core's cloaks, so nothing here can reveal a client's address; WHOX's IP field
is always the placeholder ``255.255.255.255``.  Visibility follows the usual rules: an
invisible (+i) user shows in WHO only to those who share a room with it, and a secret room
(+s) only to its members (operators see everything).
"""

from __future__ import annotations

import datetime
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from chatserver.core.names import casefold, glob_match
from protocols.irc import caps
from protocols.irc import numerics as n
from protocols.irc.channels import can_see_room, channel_name, prefixes, room_of
from protocols.irc.commands import command
from protocols.irc.handlers import metadata
from protocols.irc.handlers.registration import send_isupport
from protocols.irc.handlers.services import PSEUDO_USERS, PseudoUser

HIDDEN_IP = "255.255.255.255"
# Bot mode (IRCv3 bot-mode): WHOIS says the user is a bot.
RPL_WHOISBOT = "335"
# WHOX fields in the order the reply lists them, whatever order the request used.
WHOX_ORDER = "tcuihsnfdlaor"
# WHO on a mask (not a room) stops after this many users, so one command cannot list a
# whole large server.
WHO_MAX_RESULTS = 500
# As ISUPPORT TARGMAX says (WHOIS:1).
WHOIS_MAX_TARGETS = 1
WHOWAS_DEFAULT = 10
USERHOST_MAX = 5
# Room names per 319 line: keeps the line well under 512 bytes with the longest names.
WHOIS_ROOMS_PER_LINE = 8


@dataclass(frozen=True, slots=True)
class WhoxRequest:
    """The part of ``WHO <mask> [flags][%fields[,token]]`` after the mask."""

    flags: str
    fields: str  # empty: a classic WHO (352)
    token: str | None


def parse_whox(text: str) -> WhoxRequest:
    """Split the second WHO parameter into flags, WHOX fields and query token.

    Unknown field letters are dropped; the token is kept only when the ``t`` field asks
    for it and it is 1-3 digits (the WHOX rule), else it is ``0``.
    """
    flags, percent, rest = text.partition("%")
    if not percent:
        return WhoxRequest(flags=flags, fields="", token=None)
    fields, _comma, token = rest.partition(",")
    chosen = "".join(f for f in WHOX_ORDER if f in fields)
    if "t" not in chosen:
        token_value = None
    elif token.isascii() and token.isdigit() and 1 <= len(token) <= 3:
        token_value = token
    else:
        token_value = "0"
    # "%" with no known field still means WHOX: at least an empty 354 shape.
    return WhoxRequest(flags=flags, fields=chosen or "n", token=token_value)


# -- helpers -----------------------------------------------------------------------------------


def _multi_prefix(conn: Any) -> bool:
    return bool(conn.cap_bits & caps.MULTI_PREFIX)


def _is_oper(user: Any) -> bool:
    return "oper" in user.modes


def _shares_room(a: Any, b: Any) -> bool:
    if len(a.rooms) > len(b.rooms):
        a, b = b, a
    return any(key in b.rooms for key in a.rooms)


def _now(conn: Any) -> float:
    return float(conn.service.clock.seconds())


def _is_our_server(conn: Any, name: str) -> bool:
    """Whether a server parameter names this server (or a user on it, as RFC 2812 allows)."""
    if glob_match(name, conn.server_name):
        return True
    return conn.service.find_user(name) is not None


def check_server(conn: Any, msg: Any, index: int = 0) -> bool:
    """Whether the server parameter at ``index`` (if any) is this server; 402 if not."""
    if len(msg.params) > index and not _is_our_server(conn, msg.params[index]):
        conn.reply(n.ERR_NOSUCHSERVER, msg.params[index], "No such server")
        return False
    return True


# -- WHO ---------------------------------------------------------------------------------------


def _who_flags(conn: Any, user: Any, member: Any | None) -> str:
    flags = "G" if user.away is not None else "H"
    if _is_oper(user):
        flags += "*"
    if "bot" in user.modes:
        flags += "B"
    if member is not None:
        flags += prefixes(member, _multi_prefix(conn))
    return flags


def _who_rows(conn: Any, mask: str, opers_only: bool) -> Iterator[tuple[Any, Any, Any | None]]:
    """(user, room or None, member or None) for each user the mask selects that may be seen."""
    viewer = conn.user
    see_all = _is_oper(viewer)
    if mask.startswith("#"):
        key = room_of(mask)
        room = conn.service.get_room(key) if key is not None else None
        if room is None or not can_see_room(conn, room):
            return
        is_member = viewer in room.members
        for user, member in list(room.members.items()):
            if opers_only and not _is_oper(user):
                continue
            if not (is_member or see_all or "invisible" not in user.modes):
                continue
            yield user, room, member
        return
    everyone = mask in ("", "*", "0")
    if not everyone and "*" not in mask and "?" not in mask:
        user = conn.service.find_user(mask)
        if user is not None:
            # Asked for by exact nick: shown even when invisible, as WHOIS shows it.
            if not opers_only or _is_oper(user):
                yield user, None, None
            return
    count = 0
    for user in conn.service.online_users():
        if opers_only and not _is_oper(user):
            continue
        visible = (
            user is viewer or see_all or "invisible" not in user.modes or _shares_room(user, viewer)
        )
        if not visible:
            continue
        who = user.who()
        if not everyone and not (
            glob_match(mask, user.nick)
            or glob_match(mask, who.mask)
            or glob_match(mask, user.host)
            or glob_match(mask, user.realname)
        ):
            continue
        yield user, None, None
        count += 1
        if count >= WHO_MAX_RESULTS:
            return


@command("WHO", min_params=1, cost=2.0)
def who(conn: Any, msg: Any) -> None:
    mask = msg.params[0]
    request = parse_whox(msg.param(1))
    opers_only = "o" in request.flags
    now = _now(conn)
    for user, room, member in _who_rows(conn, mask, opers_only):
        channel = channel_name(room.name) if room is not None else "*"
        flags = _who_flags(conn, user, member)
        if not request.fields:
            conn.reply(
                "352",
                channel,
                user.ident,
                user.host,
                conn.server_name,
                user.nick,
                flags,
                f"0 {user.realname}",
            )
            continue
        values = {
            "t": request.token or "0",
            "c": channel,
            "u": user.ident,
            "i": HIDDEN_IP,
            "h": user.host,
            "s": conn.server_name,
            "n": user.nick,
            "f": flags,
            "d": "0",
            "l": str(max(int(now - user.last_active), 0)),
            "a": user.account or "0",
            "o": "n/a",
            "r": user.realname,
        }
        conn.reply(n.RPL_WHOSPCRPL, *(values[f] for f in request.fields))
    conn.reply(n.RPL_ENDOFWHO, mask, "End of WHO list")


# -- WHOIS -------------------------------------------------------------------------------------


def _whois_rooms(conn: Any, user: Any) -> list[str]:
    viewer = conn.user
    multi = _multi_prefix(conn)
    names = []
    for room in list(user.rooms.values()):
        if user is not viewer and not can_see_room(conn, room):
            continue
        member = room.members.get(user)
        marks = prefixes(member, multi) if member is not None else ""
        names.append(marks + channel_name(room.name))
    return names


def _chunks(items: list[str], size: int) -> Iterable[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _whois_pseudo(conn: Any, pseudo: PseudoUser) -> None:
    conn.reply(n.RPL_WHOISUSER, pseudo.nick, pseudo.ident, pseudo.host(conn), "*", pseudo.realname)
    conn.reply(n.RPL_WHOISSERVER, pseudo.nick, conn.server_name, conn.server.description)
    conn.reply(n.RPL_WHOISSPECIAL, pseudo.nick, "is a network service")


def whois_user(conn: Any, user: Any) -> None:
    """The WHOIS numerics for one online user, without the closing 318."""
    nick = user.nick
    conn.reply(n.RPL_WHOISUSER, nick, user.ident, user.host, "*", user.realname)
    rooms = _whois_rooms(conn, user)
    for chunk in _chunks(rooms, WHOIS_ROOMS_PER_LINE):
        conn.reply(n.RPL_WHOISCHANNELS, nick, " ".join(chunk))
    conn.reply(n.RPL_WHOISSERVER, nick, conn.server_name, conn.server.description)
    if user.away is not None:
        conn.reply(n.RPL_AWAY, nick, user.away)
    if _is_oper(user):
        conn.reply(n.RPL_WHOISOPERATOR, nick, "is an IRC operator")
    if "bot" in user.modes:
        conn.reply(RPL_WHOISBOT, nick, f"is a bot on {conn.server.network}")
    if user.account is not None:
        conn.reply(n.RPL_WHOISACCOUNT, nick, user.account, "is logged in as")
    if user.connections and user.secure:
        conn.reply(n.RPL_WHOISSECURE, nick, "is using a secure connection")
    metadata.whois_lines(conn, user)
    idle = max(int(_now(conn) - user.last_active), 0)
    conn.reply(
        n.RPL_WHOISIDLE, nick, str(idle), str(int(user.created_at)), "seconds idle, signon time"
    )


@command("WHOIS", min_params=1, cost=1.5)
def whois(conn: Any, msg: Any) -> None:
    # "WHOIS <server> <nick>" asks a given server; there is one server, so the nick is last.
    targets = msg.params[-1] if len(msg.params) > 1 else msg.params[0]
    nicks = [n for n in targets.split(",") if n][:WHOIS_MAX_TARGETS]
    if not nicks:
        conn.reply(n.ERR_NONICKNAMEGIVEN, "No nickname given")
        return
    for nick in nicks:
        pseudo = PSEUDO_USERS.get(casefold(nick))
        user = conn.service.find_user(nick)
        if user is not None:
            whois_user(conn, user)
        elif pseudo is not None:
            _whois_pseudo(conn, pseudo)
        else:
            conn.reply(n.ERR_NOSUCHNICK, nick, "No such nick/channel")
        conn.reply(n.RPL_ENDOFWHOIS, user.nick if user is not None else nick, "End of /WHOIS list")


# -- WHOWAS ------------------------------------------------------------------------------------


def _human_time(ts: float) -> str:
    when = datetime.datetime.fromtimestamp(ts, datetime.UTC)
    return when.strftime("%a %b %d %H:%M:%S %Y UTC")


@command("WHOWAS", min_params=1)
def whowas(conn: Any, msg: Any) -> None:
    nick = msg.params[0].split(",")[0]
    limit = WHOWAS_DEFAULT
    count = msg.param(1)
    if count.isascii() and count.isdigit() and int(count) > 0:
        limit = min(int(count), WHOWAS_DEFAULT)
    entries = conn.service.whowas(nick, limit)
    if not entries:
        conn.reply(n.ERR_WASNOSUCHNICK, nick, "There was no such nickname")
    for who_, ts in entries:
        conn.reply(n.RPL_WHOWASUSER, who_.nick, who_.ident, who_.host, "*", who_.realname)
        conn.reply(n.RPL_WHOISSERVER, who_.nick, conn.server_name, _human_time(ts))
        if who_.account is not None:
            conn.reply(n.RPL_WHOISACCOUNT, who_.nick, who_.account, "was logged in as")
    conn.reply(n.RPL_ENDOFWHOWAS, nick, "End of WHOWAS")


# -- ISON, USERHOST ----------------------------------------------------------------------------


def _online_nick(conn: Any, nick: str) -> str | None:
    user = conn.service.find_user(nick)
    if user is not None:
        return str(user.nick)
    pseudo = PSEUDO_USERS.get(casefold(nick))
    return pseudo.nick if pseudo is not None else None


@command("ISON", min_params=1)
def ison(conn: Any, msg: Any) -> None:
    # Clients send the nicks as several parameters or as one trailing parameter.
    asked = " ".join(msg.params).split()
    online = [n for n in (_online_nick(conn, nick) for nick in asked) if n is not None]
    conn.reply(n.RPL_ISON, " ".join(online))


@command("USERHOST", min_params=1)
def userhost(conn: Any, msg: Any) -> None:
    replies = []
    for nick in " ".join(msg.params).split()[:USERHOST_MAX]:
        user = conn.service.find_user(nick)
        if user is None:
            continue
        oper = "*" if _is_oper(user) else ""
        away = "-" if user.away is not None else "+"
        replies.append(f"{user.nick}{oper}={away}{user.ident}@{user.host}")
    conn.reply(n.RPL_USERHOST, " ".join(replies))


# -- the server --------------------------------------------------------------------------------


@command("TIME")
def time_(conn: Any, msg: Any) -> None:
    if not check_server(conn, msg):
        return
    now = _now(conn)
    conn.reply(n.RPL_TIME, conn.server_name, str(int(now)), "0", _human_time(now))


@command("VERSION")
def version(conn: Any, msg: Any) -> None:
    if not check_server(conn, msg):
        return
    conn.reply(n.RPL_VERSION, conn.factory.version, conn.server_name, conn.server.description)
    send_isupport(conn)


INFO_LINES = (
    "chatserver: one process, one Twisted reactor,",
    "where IRC, XMPP and plain-line clients meet in the same rooms.",
    "Accounts are shared by every protocol; hosts are cloaks.",
    f"Running on Python {'.'.join(map(str, sys.version_info[:3]))}.",
)


@command("INFO")
def info(conn: Any, msg: Any) -> None:
    if not check_server(conn, msg):
        return
    for line in INFO_LINES:
        conn.reply(n.RPL_INFO, line)
    started = conn.service.started_at
    conn.reply(n.RPL_INFO, f"Up since {_human_time(started)}")
    conn.reply(n.RPL_ENDOFINFO, "End of INFO list")


@command("ADMIN")
def admin(conn: Any, msg: Any) -> None:
    if not check_server(conn, msg):
        return
    conn.reply(n.RPL_ADMINME, conn.server_name, "Administrative info")
    conn.reply(n.RPL_ADMINLOC1, conn.server.description)
    conn.reply(n.RPL_ADMINLOC2, f"Network {conn.server.network}")
    conn.reply(n.RPL_ADMINEMAIL, "Ask a server operator (see OPER) for help")


@command("LINKS")
def links(conn: Any, msg: Any) -> None:
    """``LINKS [[server] mask]``: this server is the whole network (hop count 0)."""
    if len(msg.params) > 1 and not check_server(conn, msg):
        return
    mask = msg.params[-1] if msg.params else "*"
    if glob_match(mask, conn.server_name):
        conn.reply(n.RPL_LINKS, conn.server_name, conn.server_name, f"0 {conn.server.description}")
    conn.reply(n.RPL_ENDOFLINKS, mask, "End of /LINKS list")
