"""Server bans for IRC operators: KLINE, UNKLINE and STATS k, on the core's server bans.

The bans are the same ones line chat's ``/kline`` sets and ``[[bans]]`` configures: they
apply on every protocol, the core disconnects the users a new one matches, and those set
here are kept across restarts.  Masks take the core's forms (``nick!ident@host`` with ``*``
and ``?``, ``ident@host``, a bare address or network, a bare nick, ``$a:account``).

Bans never expire, so a duration is refused rather than silently made permanent (``0``,
permanent in the ircds that take one, is accepted).  Both argument orders in use are
understood: ``KLINE [duration] <mask> :<reason>`` (solanum, charybdis, hybrid) and
``KLINE <mask> <duration> :<reason>`` (InspIRCd, ngIRCd).
"""

from __future__ import annotations

import re
from typing import Any

from chatserver.core.errors import ChatError, NotPermitted
from protocols.irc import numerics as n
from protocols.irc.commands import command
from protocols.irc.handlers.query import check_server

# Minutes (solanum), seconds (ngIRCd) or InspIRCd's 1h30m: a mask never looks like these,
# since nicks do not start with a digit and a bare address has dots or colons.
_DURATION = re.compile(r"\d+|(?:\d+[smhdwy])+", re.IGNORECASE)


def _is_duration(text: str) -> bool:
    return _DURATION.fullmatch(text) is not None


def _is_permanent(duration: str) -> bool:
    return not any(ch in "123456789" for ch in duration)


def kline_arguments(params: tuple[str, ...]) -> tuple[str | None, str, str]:
    """``(duration or None, mask, reason)`` from KLINE's parameters, in either order."""
    if len(params) >= 2 and _is_duration(params[0]):
        return params[0], params[1], " ".join(params[2:])
    if len(params) >= 3 and _is_duration(params[1]):
        return params[1], params[0], " ".join(params[2:])
    return None, params[0], " ".join(params[1:])


def _server_notice(conn: Any, text: str) -> None:
    conn.send("NOTICE", conn.nick, f"*** {text}")


@command("KLINE", min_params=1, oper_only=True)
def kline(conn: Any, msg: Any) -> None:
    duration, mask, reason = kline_arguments(msg.params)
    if duration is not None and not _is_permanent(duration):
        _server_notice(
            conn,
            f"K-line on {mask} not added: K-lines here do not expire; leave out the duration"
            " for a permanent one (UNKLINE lifts it)",
        )
        return
    try:
        ban, gone = conn.service.add_server_ban(conn.core, mask, reason)
    except NotPermitted:
        raise
    except ChatError as err:
        _server_notice(conn, f"K-line on {mask} not added: {err.reason}")
        return
    _server_notice(conn, f"Added K-line on {ban.mask}" + (f": {ban.reason}" if ban.reason else ""))
    if gone:
        _server_notice(conn, f"K-line on {ban.mask} disconnected: {' '.join(gone)}")


@command("UNKLINE", min_params=1, oper_only=True)
def unkline(conn: Any, msg: Any) -> None:
    mask = msg.params[0]
    try:
        ban = conn.service.remove_server_ban(conn.core, mask)
    except NotPermitted:
        raise
    except ChatError as err:
        _server_notice(conn, f"K-line on {mask} not removed: {err.reason}")
        return
    _server_notice(conn, f"Removed K-line on {ban.mask}")


@command("STATS")
def stats(conn: Any, msg: Any) -> None:
    query = msg.param(0)[:1]
    if not check_server(conn, msg, 1):
        return
    if query in ("k", "K"):
        if not conn.is_oper:
            conn.reply(n.ERR_NOPRIVILEGES, "Permission Denied- You're not an IRC operator")
            return
        for ban in conn.service.server_bans:
            # InspIRCd's layout after the RFC 1459 letter: mask, set time, duration (0:
            # permanent), who set it, reason.
            conn.reply(
                n.RPL_STATSKLINE,
                "K",
                ban.mask,
                str(int(ban.set_at)),
                "0",
                "<config>" if ban.from_config else ban.set_by,
                ban.reason or "No reason given",
            )
    conn.reply(n.RPL_ENDOFSTATS, query or "*", "End of /STATS report")
