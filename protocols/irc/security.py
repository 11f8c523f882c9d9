"""Whether a connection may carry passwords, and what to tell a client when it may not.

Anyone on the path can read a password sent over plaintext from another machine, so unless
``[irc] plaintext_passwords`` allows it, the commands that carry one (SASL PLAIN, NickServ,
REGISTER, OPER) are refused there before the password is looked at.  SASL SCRAM-SHA-256
proves the password without sending it and is always offered.  TLS and loopback count as
secure (``IrcConnection.secure``).
"""

from __future__ import annotations

from typing import Any

PLAINTEXT_REFUSAL = "passwords are not accepted over plaintext from another machine"


def may_send_passwords(conn: Any) -> bool:
    """Whether a password may be sent on ``conn``: over TLS, from loopback, or when allowed."""
    # The factory's section, not the connection's copy: a reload may change the key.
    return bool(conn.secure or conn.factory.config.plaintext_passwords)


def tls_advice(conn: Any, refusal: str = PLAINTEXT_REFUSAL) -> str:
    """``refusal``, and where to connect instead."""
    port = conn.factory.config.tls_port
    if port:
        return f"{refusal}: connect with TLS to port {port}"
    return f"{refusal}, and this server has no TLS port"
