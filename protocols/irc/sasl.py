"""IRCv3 SASL: AUTHENTICATE with PLAIN and SCRAM-SHA-256 against the shared accounts.

Payloads travel base64-encoded in chunks of 400 bytes; a chunk of exactly 400 means more
follows, and ``+`` stands for an empty chunk.  Password checks and failed-login throttling are
the core's (``identify``, ``accounts.scram_credential`` / ``record_failure``); this module only
speaks the exchange and logs the connection in with ``service.login``.  PLAIN sends the
password itself, so it is offered (CAP LS, 908) and accepted only where passwords may be sent
(:mod:`protocols.irc.security`).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from scramp import ScramException, ScramMechanism
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatserver.core.errors import AccountError, Banned
from protocols.irc import numerics as n
from protocols.irc.caps import PASSWORD_MECHANISMS, sasl_mechanisms

if TYPE_CHECKING:
    from protocols.irc.connection import IrcConnection

log = Logger()

CHUNK = 400
# The largest payload accepted once reassembled (a SCRAM or PLAIN message is far smaller).
MAX_PAYLOAD = 8192

Step = Callable[["IrcConnection", "SaslSession", bytes], "Deferred[None] | None"]


class SaslSession:
    """One exchange in progress."""

    def __init__(self, mechanism: str, step: Step) -> None:
        self.mechanism = mechanism
        self.step = step
        self.buffer = ""
        self.account: str | None = None
        self.scram: Any = None


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
        return _start(conn, arg)
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
        return _failed(conn, "invalid base64")
    return session.step(conn, session, data)


def abort(conn: IrcConnection) -> None:
    conn.sasl = None
    conn.reply(n.ERR_SASLABORTED, "SASL authentication aborted")


def _logged_in(conn: IrcConnection) -> bool:
    core = conn.core
    if core is None:
        return False
    user = core.user
    return core.account is not None or (user is not None and user.account is not None)


def _start(conn: IrcConnection, mechanism: str) -> None:
    if _logged_in(conn):
        conn.reply(n.ERR_SASLALREADY, "You have already authenticated using SASL")
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
    if mechanism == "PLAIN":
        conn.sasl = SaslSession(mechanism, _plain)
    elif mechanism == "SCRAM-SHA-256":
        conn.sasl = SaslSession(mechanism, _scram_first)
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


def _failed(conn: IrcConnection, why: str = "") -> None:
    conn.sasl = None
    conn.reply(n.ERR_SASLFAIL, "SASL authentication failed")
    return None


def _succeeded(conn: IrcConnection, account: str) -> None:
    conn.sasl = None
    assert conn.core is not None
    before = conn.account_numerics_sent
    try:
        conn.service.login(conn.core, account)
    except Banned as err:
        refused_by_ban(conn, err)
        return
    if conn.account_numerics_sent == before:
        # No AccountChange reached this connection (before registration, or a move to the
        # account's user already online): say it here.
        conn.reply(n.RPL_LOGGEDIN, conn.mask, account, f"You are now logged in as {account}")
    conn.reply(n.RPL_SASLSUCCESS, "SASL authentication successful")


def refused_by_ban(conn: IrcConnection, err: Banned) -> None:
    """A login the core refused for a server ban: it has told the client and closed the
    connection already, so there is nothing to answer, only to note."""
    log.info(
        "irc connection {id}: login refused by the server ban {mask}",
        id=conn.core.id if conn.core is not None else 0,
        mask=err.mask,
    )


# -- PLAIN (RFC 4616) --------------------------------------------------------------------------


def _plain(conn: IrcConnection, session: SaslSession, data: bytes) -> Deferred[None] | None:
    parts = data.split(b"\x00")
    if len(parts) != 3:
        return _failed(conn, "malformed PLAIN")
    try:
        authzid, authcid, password = (p.decode("utf-8") for p in parts)
    except UnicodeDecodeError:
        return _failed(conn, "PLAIN is not UTF-8")
    if not authcid or (authzid and authzid.lower() != authcid.lower()):
        return _failed(conn, "authorization identity differs")
    assert conn.core is not None
    d = conn.service.accounts.verify_password(authcid, password, conn.address, conn.protocol)

    def ok(record: Any) -> None:
        if conn.closing:
            return
        _succeeded(conn, record.name)

    def bad(failure: Failure) -> None:
        failure.trap(AccountError)
        if not conn.closing:
            _failed(conn)

    d.addCallbacks(ok, bad)
    return d


# -- SCRAM-SHA-256 (RFC 5802, RFC 7677) --------------------------------------------------------

_SCRAM = ScramMechanism("SCRAM-SHA-256")


def _saslname(value: str) -> str:
    return value.replace("=2C", ",").replace("=3D", "=")


def _scram_user(client_first: str) -> str | None:
    """The username of a client-first message (``n,,n=user,r=nonce``), or None."""
    parts = client_first.split(",", 2)
    if len(parts) < 3 or parts[0] not in ("n", "y"):
        # 'p=' asks for channel binding, which SCRAM-SHA-256 (without -PLUS) cannot give.
        return None
    for attr in parts[2].split(","):
        if attr.startswith("n="):
            return _saslname(attr[2:])
    return None


def _scram_first(conn: IrcConnection, session: SaslSession, data: bytes) -> Deferred[None] | None:
    try:
        client_first = data.decode("utf-8")
    except UnicodeDecodeError:
        return _failed(conn, "not UTF-8")
    name = _scram_user(client_first)
    if not name:
        return _failed(conn, "malformed client-first")
    d = conn.service.accounts.scram_credential(name, "SCRAM-SHA-256", conn.address, conn.protocol)

    def found(result: Any) -> None:
        if conn.closing or conn.sasl is not session:
            return
        record, cred = result
        server = _SCRAM.make_server(
            lambda _user: (cred.salt, cred.stored_key, cred.server_key, cred.iterations)
        )
        try:
            server.set_client_first(client_first)
            server_first = server.get_server_first()
        except ScramException:
            _failed(conn, "bad client-first")
            return
        session.scram = server
        session.account = record.name
        session.step = _scram_final
        send_payload(conn, server_first.encode("utf-8"))

    def bad(failure: Failure) -> None:
        failure.trap(AccountError)
        if not conn.closing:
            _failed(conn)

    d.addCallbacks(found, bad)
    return d


def _scram_final(conn: IrcConnection, session: SaslSession, data: bytes) -> None:
    try:
        session.scram.set_client_final(data.decode("utf-8"))
        server_final = session.scram.get_server_final()
    except (ScramException, UnicodeDecodeError):
        conn.service.accounts.record_failure(session.account, conn.address, conn.protocol)
        return _failed(conn, "bad proof")
    session.step = _scram_done
    send_payload(conn, server_final.encode("utf-8"))
    return None


def _scram_done(conn: IrcConnection, session: SaslSession, data: bytes) -> None:
    # The client has checked the server's signature and sent an empty response.
    assert session.account is not None
    _succeeded(conn, session.account)
    return None
