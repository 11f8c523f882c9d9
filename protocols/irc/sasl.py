"""IRCv3 SASL framing: AUTHENTICATE lines carrying the shared mechanisms of
:mod:`chatserver.auth.sasl` (PLAIN and SCRAM-SHA-256 are offered).

Payloads travel base64-encoded in chunks of 400 bytes; a chunk of exactly 400 means more
follows, and ``+`` stands for an empty chunk.  Checking credentials, the login throttle and
the SCRAM exchange are the shared module's; this module only frames the exchange, maps its
failures to numerics and logs the connection in with ``service.login``.  PLAIN sends the
password itself, so it is offered (CAP LS, 908) and accepted only where passwords may be sent
(:mod:`protocols.irc.security`).
"""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from chatserver.auth import sasl as mechanisms
from chatserver.auth.sasl import PASSWORD_MECHANISMS, Challenge, Failure, SaslServer, Success
from chatserver.core.errors import AccountError, Banned
from protocols.irc import handoff
from protocols.irc import numerics as n
from protocols.irc.caps import sasl_mechanisms

if TYPE_CHECKING:
    from protocols.irc.connection import IrcConnection

log = Logger()

CHUNK = 400
# The largest payload accepted once reassembled (a SCRAM or PLAIN message is far smaller).
MAX_PAYLOAD = 8192

# What 904 says for each failure of the shared mechanisms (IRCv3 has one numeric for all).
FAILURE_TEXT = {
    mechanisms.MALFORMED: "SASL authentication failed",
    mechanisms.INVALID_AUTHZID: "SASL authentication failed: you can only log in as yourself",
    mechanisms.NOT_AUTHORIZED: "SASL authentication failed",
    mechanisms.THROTTLED: "SASL authentication failed: too many failed logins; try again later",
    mechanisms.TEMPORARY: "SASL authentication failed: the server could not check it; try again",
}


class SaslSession:
    """One exchange in progress: the shared mechanism, and the base64 text gathered so far."""

    def __init__(self, server: SaslServer) -> None:
        self.server = server
        self.buffer = ""
        # SCRAM's server-final went out as a challenge (IRC has no success data): the account
        # is proven, and the client's empty answer completes the login.
        self.proven: str | None = None


def authenticate(conn: IrcConnection, arg: str) -> Deferred[None] | None:
    """Handle one AUTHENTICATE line."""
    if conn.core is None:
        return None
    if "sasl" not in conn.caps:
        conn.reply(n.ERR_SASLFAIL, "SASL authentication failed: the sasl capability is not enabled")
        return None
    if arg == "*":
        abort(conn)
        return None
    session = conn.sasl
    if session is None:
        _start(conn, arg)
        return None
    if len(arg) > CHUNK:
        conn.sasl = None
        conn.reply(n.ERR_SASLTOOLONG, "SASL message too long")
        return None
    if arg != "+":
        session.buffer += arg
    if len(session.buffer) > MAX_PAYLOAD * 4 // 3 + 4:
        # 905 is for one AUTHENTICATE line past 400 bytes (SASL 3.1); a response that
        # grows past what any mechanism needs is a failed authentication.
        conn.sasl = None
        conn.reply(n.ERR_SASLFAIL, "SASL authentication failed: response too long")
        return None
    if len(arg) == CHUNK:
        return None  # more follows
    raw, session.buffer = session.buffer, ""
    try:
        data = base64.b64decode(raw, validate=True) if raw else b""
    except (binascii.Error, ValueError):
        _failed(conn, "SASL authentication failed")
        return None
    if session.proven is not None:
        return complete_login(conn, session.proven)
    d = session.server.step(data)
    d.addCallback(lambda outcome: _answer(conn, session, outcome))
    return d


def _answer(conn: IrcConnection, session: SaslSession, outcome: Any) -> Deferred | None:
    if conn.closing or conn.sasl is not session:
        return None
    if isinstance(outcome, Challenge):
        send_payload(conn, outcome.data)
    elif isinstance(outcome, Success):
        if outcome.data is None:
            return complete_login(conn, outcome.account)
        session.proven = outcome.account
        send_payload(conn, outcome.data)
    else:
        assert isinstance(outcome, Failure)
        _failed(conn, FAILURE_TEXT[outcome.reason])
    return None


def abort(conn: IrcConnection) -> None:
    conn.sasl = None
    conn.reply(n.ERR_SASLABORTED, "SASL authentication aborted")


def _shares_its_login(conn: IrcConnection) -> bool:
    """Whether the connection is logged in with other connections of the same user: those
    would not have proven a new account, so it may not re-authenticate.  Alone, it may, at
    any time (SASL 3.2)."""
    core = conn.core
    user = core.user if core is not None else None
    return user is not None and user.account is not None and len(user.connections) > 1


def _start(conn: IrcConnection, mechanism: str) -> None:
    if _shares_its_login(conn):
        conn.reply(
            n.ERR_SASLALREADY,
            "You have already authenticated, and your other connections share the login",
        )
        return None
    mechanism = mechanism.upper()
    allowed = sasl_mechanisms(conn)
    if mechanism in PASSWORD_MECHANISMS and mechanism not in allowed:
        # Refused before the client sends the password, not after.
        conn.reply(n.RPL_SASLMECHS, ",".join(allowed), "are available SASL mechanisms")
        port = conn.factory.config.tls_port
        instead = (
            f"connect with TLS (port {port}) or use SCRAM-SHA-256" if port else "use SCRAM-SHA-256"
        )
        conn.reply(
            n.ERR_SASLFAIL,
            f"SASL authentication failed: {mechanism} is not accepted over plaintext from"
            f" another machine; {instead}",
        )
        return None
    if mechanism in allowed:
        assert conn.core is not None
        server = SaslServer(conn.service, mechanism, address=conn.address, protocol=conn.protocol)
        conn.sasl = SaslSession(server)
    else:
        conn.reply(n.RPL_SASLMECHS, ",".join(allowed), "are available SASL mechanisms")
        conn.reply(n.ERR_SASLFAIL, "SASL authentication failed")
        return None
    conn.send("AUTHENTICATE", "+")
    return None


def send_payload(conn: IrcConnection, data: bytes) -> None:
    """AUTHENTICATE lines carrying ``data`` in 400-byte base64 chunks."""
    text = base64.b64encode(data).decode("ascii")
    for start in range(0, len(text), CHUNK):
        conn.send("AUTHENTICATE", text[start : start + CHUNK])
    if len(text) % CHUNK == 0:
        conn.send("AUTHENTICATE", "+")


def _failed(conn: IrcConnection, text: str) -> None:
    conn.sasl = None
    conn.reply(n.ERR_SASLFAIL, text)
    return None


def complete_login(
    conn: IrcConnection, account: str, arrival: dict[str, Any] | None = None
) -> Deferred:
    """Log ``conn`` in to ``account``, which it has proven: 900 and 903, or 904.
    ``arrival``: a client handed to this node after registration (see ``ChatService.log_in``)."""
    conn.sasl = None
    assert conn.core is not None
    before = conn.account_numerics_sent
    # In cluster mode the account is claimed first (a round trip): the answer comes then.
    d = conn.service.log_in(conn.core, account, arrival=arrival)
    d.addCallbacks(_logged_in, _not_logged_in, (conn, account, before), None, (conn, account))
    return d


def _logged_in(_: object, conn: IrcConnection, account: str, before: int) -> None:
    if conn.closing:
        return
    if conn.account_numerics_sent == before:
        # No AccountChange reached this connection (before registration, or a move to the
        # account's user already online): say it here.
        conn.reply(n.RPL_LOGGEDIN, conn.mask, account, f"You are now logged in as {account}")
    conn.reply(n.RPL_SASLSUCCESS, "SASL authentication successful")


def _not_logged_in(failure: Any, conn: IrcConnection, account: str) -> None:
    failure.trap(Banned, AccountError)
    err = failure.value
    if isinstance(err, Banned):
        refused_by_ban(conn, err)
        return
    if err.node is not None and handoff.hand_off(conn, err.account or account, err.node):
        # (Cluster mode) the account's user is online on that node: the client goes on there.
        return
    if not conn.closing:
        # Another connection joined the user while the exchange ran, or (cluster mode)
        # the account is on another node, or its claim cannot be confirmed now.
        conn.reply(n.ERR_SASLFAIL, f"SASL authentication failed: {err}")


def refused_by_ban(conn: IrcConnection, err: Banned) -> None:
    """A login the core refused for a server ban: it has told the client and closed the
    connection already, so there is nothing to answer, only to note."""
    log.info(
        "irc connection {id}: login refused by the server ban {mask}",
        id=conn.core.id if conn.core is not None else 0,
        mask=err.mask,
    )
