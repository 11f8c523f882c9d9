"""Server operators: OPER (credentials from the config's ``[[operators]]``), KILL, WALLOPS.

Operator passwords are scrypt hashes (:mod:`chatserver.passwords`); checking one is slow on
purpose, so it runs through the account manager's ``run_in_thread``, off the reactor.
Failed attempts count against the same per-address budget as failed logins.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred

from chatserver.core.names import casefold
from chatserver.passwords import hash_password, verify_password, verify_password_in_thread
from protocols.irc import numerics as n
from protocols.irc.commands import command
from protocols.irc.handlers.services import PSEUDO_USERS
from protocols.irc.security import may_send_passwords, tls_advice

# Checked when the name is unknown, so that a wrong name costs as long as a wrong password.
_DUMMY_HASH = hash_password("not an operator password", n=1 << 14, r=8, p=1)


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
    accounts = conn.service.accounts
    if accounts.throttled(None, conn.address):
        conn.reply(n.ERR_PASSWDMISMATCH, "Too many failed attempts; try again later")
        return None
    entry = next((op for op in operators_of(conn) if op.name == name), None)
    stored = entry.password if entry is not None else _DUMMY_HASH
    d: Deferred[Any] = verify_password_in_thread(
        accounts.run_in_thread, verify_password, password, stored
    )

    def checked(ok: bool) -> None:
        if entry is None:
            accounts.record_failure(None, conn.address, conn.protocol)
            conn.reply(n.ERR_NOOPERHOST, "No operator block for your name")
        elif not ok:
            accounts.record_failure(None, conn.address, conn.protocol)
            conn.reply(n.ERR_PASSWDMISMATCH, "Password incorrect")
        elif conn.core is not None and conn.core.user is not None:
            conn.service.grant_oper(conn.core)
            conn.reply(n.RPL_YOUREOPER, "You are now an IRC operator")

    return d.addCallback(checked)


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
