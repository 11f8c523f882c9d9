"""SASL (RFC 6120 §6): PLAIN, SCRAM-SHA-1 and SCRAM-SHA-256 against the shared accounts.

Credentials come from the core's AccountManager: salted SCRAM keys for SCRAM (scramp does the
exchange), a password check in a thread for PLAIN.  Failed attempts are recorded there too,
so the throttle is the same one IRC and line chat hit; a throttled attempt fails with
``temporary-auth-failure``.  PLAIN is offered only on a secure stream.
"""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING, Any

from lxml import etree
from scramp import ScramException, ScramMechanism
from twisted.logger import Logger

from chatserver.core.errors import AccountError
from chatserver.core.names import casefold
from protocols.xmpp import stanzas
from protocols.xmpp.stanzas import NS_SASL

if TYPE_CHECKING:
    from protocols.xmpp.connection import XmppConnection

log = Logger()

SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-1")
_SCRAM = {name: ScramMechanism(name) for name in SCRAM_MECHANISMS}
# Longest SASL message accepted (base64 text); real ones are a few hundred bytes.
MAX_SASL_TEXT = 8192


def mechanisms(conn: XmppConnection) -> list[str]:
    """The mechanisms offered on this stream, strongest first."""
    names = list(SCRAM_MECHANISMS)
    if conn.secure:
        names.append("PLAIN")
    return names


class SaslFailure(Exception):
    def __init__(self, condition: str, text: str | None = None) -> None:
        super().__init__(condition)
        self.condition = condition
        self.text = text


class SaslExchange:
    """One SCRAM exchange in progress (PLAIN needs no state between messages)."""

    def __init__(self, mechanism: str) -> None:
        self.mechanism = mechanism
        self.server: Any = None
        self.account: str | None = None
        self.waiting = False  # a store lookup or password check is under way


def handle(conn: XmppConnection, el: etree._Element) -> None:
    """An element of the SASL namespace from a stream that is not yet authenticated."""
    name = etree.QName(el).localname
    if name == "auth":
        _auth(conn, el)
    elif name == "response":
        _response(conn, el)
    elif name == "abort":
        conn.sasl = None
        _fail(conn, SaslFailure("aborted"), None)
    else:
        conn.stream_error("unsupported-stanza-type", None)


def _decode(el: etree._Element) -> bytes | None:
    """The message carried by ``el``: None when absent, b"" for "=" (RFC 6120 §6.4.2)."""
    text = (el.text or "").strip()
    if not text:
        return None
    if text == "=":
        return b""
    if len(text) > MAX_SASL_TEXT:
        raise SaslFailure("malformed-request", "message too long")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise SaslFailure("incorrect-encoding") from None


def _send(conn: XmppConnection, tag: str, data: bytes | None) -> None:
    el = stanzas.element(tag, ns=NS_SASL)
    if data is not None:
        el.text = base64.b64encode(data).decode("ascii") if data else "="
    conn.send(el)


def _fail(conn: XmppConnection, failure: SaslFailure, account: str | None) -> None:
    conn.sasl = None
    el = stanzas.element("failure", ns=NS_SASL)
    stanzas.sub(el, failure.condition)
    if failure.text:
        stanzas.sub(el, "text", text=failure.text)
    if failure.condition != "aborted":
        log.info(
            "xmpp login failed for {account} from {address}: {condition}",
            account=account or "-",
            address=conn.address,
            condition=failure.condition,
        )
    conn.send(el)


def _succeed(conn: XmppConnection, account: str, additional: bytes | None) -> None:
    if conn.state != "negotiating":
        return
    # Logged in first: a banned account gets a stream error, never a success it could take
    # for a way in.
    if conn.authenticated(account):
        _send(conn, "success", additional)


def _auth(conn: XmppConnection, el: etree._Element) -> None:
    if conn.tls_required():
        _fail(conn, SaslFailure("encryption-required"), None)
        return
    mechanism = el.get("mechanism", "")
    if mechanism not in mechanisms(conn):
        _fail(conn, SaslFailure("invalid-mechanism"), None)
        return
    try:
        initial = _decode(el)
    except SaslFailure as failure:
        _fail(conn, failure, None)
        return
    conn.sasl = SaslExchange(mechanism)
    if initial is None:
        # No initial response: ask for it with an empty challenge.
        _send(conn, "challenge", b"")
        return
    _step(conn, initial)


def _response(conn: XmppConnection, el: etree._Element) -> None:
    exchange = conn.sasl
    if exchange is None or exchange.waiting:
        _fail(conn, SaslFailure("malformed-request", "no exchange in progress"), None)
        return
    try:
        data = _decode(el) or b""
    except SaslFailure as failure:
        _fail(conn, failure, exchange.account)
        return
    _step(conn, data)


def _step(conn: XmppConnection, data: bytes) -> None:
    exchange = conn.sasl
    assert exchange is not None
    if exchange.mechanism == "PLAIN":
        _plain(conn, exchange, data)
    elif exchange.server is None:
        _scram_first(conn, exchange, data)
    else:
        _scram_final(conn, exchange, data)


def _plain(conn: XmppConnection, exchange: SaslExchange, data: bytes) -> None:
    try:
        authzid, authcid, password = data.decode("utf-8").split("\x00")
    except (UnicodeDecodeError, ValueError):
        _fail(conn, SaslFailure("malformed-request"), None)
        return
    if not authcid or not password:
        _fail(conn, SaslFailure("malformed-request"), None)
        return
    if authzid and casefold(authzid) not in (
        casefold(authcid),
        casefold(f"{authcid}@{conn.domain}"),
    ):
        _fail(conn, SaslFailure("invalid-authzid"), authcid)
        return
    exchange.waiting = True
    d = conn.service.accounts.verify_password(authcid, password, conn.address, conn.protocol)
    d.addCallbacks(
        lambda record: _succeed(conn, record.name, None),
        lambda f: _account_failure(conn, f, authcid),
    )


def _account_failure(conn: XmppConnection, failure: Any, account: str) -> None:
    if conn.state != "negotiating":
        return
    if failure.check(AccountError) is None:
        log.failure("checking a login for {account}", failure, account=account)
        _fail(conn, SaslFailure("temporary-auth-failure"), account)
        return
    if failure.value.code == AccountError.THROTTLED:
        _fail(conn, SaslFailure("temporary-auth-failure", failure.value.reason), account)
    else:
        _fail(conn, SaslFailure("not-authorized"), account)


def _scram_username(client_first: str) -> str:
    """The ``n=`` attribute of a SCRAM client-first message (RFC 5802 §5.1)."""
    try:
        _cbind, _authzid, bare = client_first.split(",", 2)
    except ValueError:
        raise SaslFailure("malformed-request") from None
    for attr in bare.split(","):
        if attr.startswith("n="):
            name = attr[2:].replace("=2C", ",").replace("=3D", "=")
            if name:
                return name
    raise SaslFailure("malformed-request")


def _scram_first(conn: XmppConnection, exchange: SaslExchange, data: bytes) -> None:
    try:
        client_first = data.decode("utf-8")
        name = _scram_username(client_first)
    except UnicodeDecodeError:
        _fail(conn, SaslFailure("malformed-request"), None)
        return
    except SaslFailure as failure:
        _fail(conn, failure, None)
        return
    exchange.account = name
    exchange.waiting = True
    d = conn.service.accounts.scram_credential(
        name, exchange.mechanism, conn.address, conn.protocol
    )

    def found(result: Any) -> None:
        exchange.waiting = False
        if conn.state != "negotiating" or conn.sasl is not exchange:
            return
        record, cred = result
        exchange.account = record.name
        keys = (cred.salt, cred.stored_key, cred.server_key, cred.iterations)
        server = _SCRAM[exchange.mechanism].make_server(lambda _username: keys)
        try:
            server.set_client_first(client_first)
            challenge = server.get_server_first()
        except ScramException as err:
            _fail(conn, SaslFailure("malformed-request", str(err)), name)
            return
        exchange.server = server
        _send(conn, "challenge", challenge.encode("utf-8"))

    def failed(failure: Any) -> None:
        exchange.waiting = False
        _account_failure(conn, failure, name)

    d.addCallbacks(found, failed)


def _scram_final(conn: XmppConnection, exchange: SaslExchange, data: bytes) -> None:
    server = exchange.server
    name = exchange.account or ""
    try:
        server.set_client_final(data.decode("utf-8"))
        final = server.get_server_final()
    except (ScramException, UnicodeDecodeError):
        conn.service.accounts.record_failure(name, conn.address, conn.protocol)
        _fail(conn, SaslFailure("not-authorized"), name)
        return
    _succeed(conn, name, final.encode("utf-8"))
