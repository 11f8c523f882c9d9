"""SASL framing (RFC 6120 §6): ``<auth>``, ``<challenge>``, ``<response>``, ``<success>`` and
``<failure>`` carrying the shared mechanisms of :mod:`chatserver.auth.sasl` (SCRAM-SHA-256,
SCRAM-SHA-1, and PLAIN on a secure stream).

Checking credentials, the login throttle (the same one IRC and line chat hit) and the SCRAM
exchange are the shared module's; this module frames the exchange and maps each failure to
its RFC 6120 condition (a throttled attempt fails with ``temporary-auth-failure``).
"""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING, Any

from lxml import etree

from chatserver.auth import sasl as shared
from chatserver.auth.sasl import Challenge, SaslServer, Success
from protocols.xmpp import stanzas
from protocols.xmpp.stanzas import NS_SASL

if TYPE_CHECKING:
    from protocols.xmpp.connection import XmppConnection

# Longest SASL message accepted (base64 text); real ones are a few hundred bytes.
MAX_SASL_TEXT = 8192

# The RFC 6120 §6.5 condition for each failure of the shared mechanisms.
CONDITIONS = {
    shared.MALFORMED: "malformed-request",
    shared.INVALID_AUTHZID: "invalid-authzid",
    shared.NOT_AUTHORIZED: "not-authorized",
    shared.THROTTLED: "temporary-auth-failure",
    shared.TEMPORARY: "temporary-auth-failure",
}


def mechanisms(conn: XmppConnection) -> list[str]:
    """The mechanisms offered on this stream, strongest first."""
    return [m for m in shared.MECHANISMS if conn.secure or m not in shared.PASSWORD_MECHANISMS]


class SaslFailure(Exception):
    def __init__(self, condition: str, text: str | None = None) -> None:
        super().__init__(condition)
        self.condition = condition
        self.text = text


def handle(conn: XmppConnection, el: etree._Element) -> None:
    """An element of the SASL namespace from a stream that is not yet authenticated."""
    name = etree.QName(el).localname
    if name == "auth":
        _auth(conn, el)
    elif name == "response":
        _response(conn, el)
    elif name == "abort":
        conn.sasl = None
        _fail(conn, SaslFailure("aborted"))
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


def _fail(conn: XmppConnection, failure: SaslFailure) -> None:
    conn.sasl = None
    el = stanzas.element("failure", ns=NS_SASL)
    stanzas.sub(el, failure.condition)
    if failure.text:
        stanzas.sub(el, "text", text=failure.text)
    conn.send(el)


def _auth(conn: XmppConnection, el: etree._Element) -> None:
    if conn.tls_required():
        _fail(conn, SaslFailure("encryption-required"))
        return
    mechanism = el.get("mechanism", "")
    if mechanism not in mechanisms(conn):
        _fail(conn, SaslFailure("invalid-mechanism"))
        return
    try:
        initial = _decode(el)
    except SaslFailure as failure:
        _fail(conn, failure)
        return
    conn.sasl = SaslServer(
        conn.service, mechanism, address=conn.address, protocol=conn.protocol, realm=conn.domain
    )
    if initial is None:
        # No initial response: ask for it with an empty challenge.
        _send(conn, "challenge", b"")
        return
    _step(conn, initial)


def _response(conn: XmppConnection, el: etree._Element) -> None:
    if conn.sasl is None or conn.sasl.busy:
        _fail(conn, SaslFailure("malformed-request", "no exchange in progress"))
        return
    try:
        data = _decode(el) or b""
    except SaslFailure as failure:
        _fail(conn, failure)
        return
    _step(conn, data)


def _step(conn: XmppConnection, data: bytes) -> None:
    server = conn.sasl
    assert server is not None
    server.step(data).addCallback(lambda outcome: _answer(conn, server, outcome))


def succeeded(conn: XmppConnection, data: bytes | None) -> None:
    """The login is done: ``<success/>``, with the mechanism's final data if any."""
    _send(conn, "success", data)


def fail(conn: XmppConnection, condition: str, text: str | None = None) -> None:
    """The exchange failed with RFC 6120 §6.5 ``condition`` (the stream stays open)."""
    _fail(conn, SaslFailure(condition, text))


def _answer(conn: XmppConnection, server: SaslServer, outcome: Any) -> None:
    if conn.state != "negotiating" or conn.sasl is not server:
        return
    if isinstance(outcome, Challenge):
        _send(conn, "challenge", outcome.data)
    elif isinstance(outcome, Success):
        # Logged in first: a banned account gets a stream error, never a success it could
        # take for a way in (the connection sends the success once logged in).
        conn.authenticated(outcome.account, outcome.data)
    else:
        _fail(conn, SaslFailure(CONDITIONS[outcome.reason], outcome.text or None))
