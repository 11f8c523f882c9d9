"""Server operators: OPER (credentials from the config's ``[[operators]]``), KILL, WALLOPS.

The check is the shared one (:func:`chatserver.auth.operators.check_operator`): an unknown
name and a wrong password get the same answer, 464, so OPER does not tell which operator
names exist; attempts count against the same per-address budget as logins.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from chatserver.auth.operators import OperatorRefused, check_operator
from chatserver.core.errors import AccountError
from chatserver.core.names import casefold
from protocols.irc import numerics as n
from protocols.irc.commands import command
from protocols.irc.handlers.services import PSEUDO_USERS
from protocols.irc.security import may_send_passwords, tls_advice


def operators_of(conn: Any) -> tuple[Any, ...]:
    """The configured operators (``OperatorConfig``: name, password hash)."""
    return tuple(getattr(conn.factory, "operators", ()))


@command("OPER", min_params=2)
def oper(conn: Any, msg: Any) -> Deferred[Any] | None:
    name, password = msg.params[0], msg.params[1]
    if not may_send_passwords(conn):
        # Not a failed attempt: the password is not checked, so it does not count either.
        conn.reply(
            n.ERR_NOOPERHOST,
            tls_advice(
                conn, "Operator passwords are not accepted over plaintext from another machine"
            ),
        )
        return None
    d = check_operator(
        conn.service,
        operators_of(conn),
        name,
        password,
        address=conn.address,
        protocol=conn.protocol,
    )

    def granted(_entry: Any) -> None:
        if conn.core is not None and conn.core.user is not None:
            conn.service.grant_oper(conn.core)
            conn.reply(n.RPL_YOUREOPER, "You are now an IRC operator")

    def refused(failure: Failure) -> None:
        failure.trap(OperatorRefused, AccountError)
        if isinstance(failure.value, AccountError):
            conn.reply(n.ERR_PASSWDMISMATCH, "Too many failed attempts; try again later")
        else:
            conn.reply(n.ERR_PASSWDMISMATCH, "Password incorrect")

    return d.addCallbacks(granted, refused)


@command("KILL", min_params=1, oper_only=True)
def kill(conn: Any, msg: Any) -> None:
    nick = msg.params[0]
    reason = msg.param(1) or "No reason given"
    if casefold(nick) in PSEUDO_USERS:
        conn.reply(n.ERR_CANTKILLSERVER, "You cannot kill a network service")
        return
    conn.service.kill(conn.core, nick, reason)


@command("WALLOPS", min_params=1, oper_only=True)
def wallops(conn: Any, msg: Any) -> None:
    conn.service.wallops(conn.core, msg.params[0])
