"""XMPP over WebSocket (RFC 7395) and its discovery (XEP-0156), through the real server."""

from __future__ import annotations

import base64
import json
import urllib.request

import pytest
import websocket
from lxml import etree

from tests.support.server import LineClient, ServerProcess
from tests.web.conftest import TRUSTED_PROXY, WsClient, ws_url

FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"
OPEN = f"<open xmlns='{FRAMING}' to='localhost' version='1.0'/>"


def _el(message: str | bytes) -> etree._Element:
    # Each message must be a whole XML document by itself (RFC 7395 §3.3.3).
    return etree.fromstring(message.encode() if isinstance(message, str) else message)


def _log_in(server: ServerProcess, name: str) -> WsClient:
    """Register ``name`` in band, log in with SASL PLAIN and bind: a WebSocket XMPP session."""
    ws = WsClient(ws_url(server, "/xmpp-websocket"), subprotocols=["xmpp"])
    assert ws.subprotocol == "xmpp"
    ws.send(OPEN)
    opened = _el(ws.recv())
    assert opened.tag == f"{{{FRAMING}}}open" and opened.get("from") == "localhost"
    features = _el(ws.recv())
    assert features.tag == "{http://etherx.jabber.org/streams}features"
    mechanisms = [m.text for m in features.iter("{urn:ietf:params:xml:ns:xmpp-sasl}mechanism")]
    assert "PLAIN" in mechanisms
    # No STARTTLS inside a WebSocket.
    assert features.find("{urn:ietf:params:xml:ns:xmpp-tls}starttls") is None
    ws.send(
        "<iq xmlns='jabber:client' type='set' id='reg'><query xmlns='jabber:iq:register'>"
        f"<username>{name}</username><password>secret-{name}</password></query></iq>"
    )
    assert _el(ws.expect("reg")).get("type") == "result"
    token = base64.b64encode(f"\0{name}\0secret-{name}".encode()).decode()
    ws.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>")
    assert _el(ws.recv()).tag == "{urn:ietf:params:xml:ns:xmpp-sasl}success"
    ws.send(OPEN)
    assert _el(ws.recv()).tag == f"{{{FRAMING}}}open"
    assert _el(ws.recv()).find("{urn:ietf:params:xml:ns:xmpp-bind}bind") is not None
    ws.send(
        "<iq xmlns='jabber:client' type='set' id='b1'>"
        "<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>web</resource></bind></iq>"
    )
    bound = _el(ws.expect("b1"))
    assert bound.get("type") == "result"
    assert bound.tag == "{jabber:client}iq"
    return ws


def test_xmpp_websocket_room_message_across_protocols(web_server: ServerProcess) -> None:
    ws = _log_in(web_server, "webxmpp")
    irc = LineClient(web_server.ports["irc"])
    try:
        irc.send("NICK ircfox")
        irc.send("USER f 0 * :f")
        irc.expect(" 001 ircfox ")
        irc.send("JOIN #xroom")
        irc.expect(" 366 ")
        ws.send(
            "<presence xmlns='jabber:client' to='xroom@conference.localhost/webxmpp'>"
            "<x xmlns='http://jabber.org/protocol/muc'/></presence>"
        )
        ws.expect(lambda m: "status code='110'" in m or 'code="110"' in m)
        irc.expect("JOIN")
        irc.send("PRIVMSG #xroom :hi xmpp on the web")
        message = _el(ws.expect("hi xmpp on the web"))
        assert message.tag == "{jabber:client}message"
        assert message.get("from") == "xroom@conference.localhost/ircfox"
        ws.send(
            "<message xmlns='jabber:client' type='groupchat' to='xroom@conference.localhost'>"
            "<body>hello irc from a browser socket</body></message>"
        )
        assert irc.expect("hello irc from a browser socket").startswith(":webxmpp!")
        ws.send(f"<close xmlns='{FRAMING}'/>")
        assert _el(ws.expect("close")).tag == f"{{{FRAMING}}}close"
        irc.expect("QUIT")
    finally:
        ws.close()
        irc.close()


def test_xmpp_websocket_needs_its_subprotocol(web_server: ServerProcess) -> None:
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        WsClient(ws_url(web_server, "/xmpp-websocket"))
    assert refused.value.status_code == 400


def test_xmpp_websocket_bad_xml_is_a_stream_error(web_server: ServerProcess) -> None:
    ws = WsClient(ws_url(web_server, "/xmpp-websocket"), subprotocols=["xmpp"])
    try:
        ws.send(OPEN)
        ws.recv()
        ws.recv()
        ws.send("<message><unclosed></message>")
        error = _el(ws.expect("error"))
        assert error.tag == "{http://etherx.jabber.org/streams}error"
        assert error.find("{urn:ietf:params:xml:ns:xmpp-streams}not-well-formed") is not None
        assert _el(ws.recv()).tag == f"{{{FRAMING}}}close"
        assert ws.close_code() == 1000
    finally:
        ws.close()


def test_host_meta_names_the_websocket(web_server: ServerProcess) -> None:
    base = f"http://127.0.0.1:{web_server.ports['web']}"
    href = f"ws://127.0.0.1:{web_server.ports['web']}/xmpp-websocket"
    with urllib.request.urlopen(base + "/.well-known/host-meta", timeout=5) as response:
        xrd = etree.fromstring(response.read())
        assert response.headers["access-control-allow-origin"] == "*"
    link = xrd.find("{http://docs.oasis-open.org/ns/xri/xrd-1.0}Link")
    assert link is not None
    assert link.get("rel") == "urn:xmpp:alt-connections:websocket"
    assert link.get("href") == href
    with urllib.request.urlopen(base + "/.well-known/host-meta.json", timeout=5) as response:
        links = json.load(response)["links"]
    assert links == [{"rel": "urn:xmpp:alt-connections:websocket", "href": href}]


def _features_via_proxy(server: ServerProcess, headers: list[str]) -> etree._Element:
    ws = WsClient(
        ws_url(server, "/xmpp-websocket"),
        subprotocols=["xmpp"],
        source=TRUSTED_PROXY,
        header=["X-Forwarded-For: 198.51.100.7", *headers],
    )
    try:
        ws.send(OPEN)
        ws.recv()
        return _el(ws.recv())
    finally:
        ws.close()


def test_a_trusted_proxys_https_counts_as_encrypted(web_server: ServerProcess) -> None:
    sasl = "{urn:ietf:params:xml:ns:xmpp-sasl}mechanisms"
    # A client from another machine over plain ws:// may not send passwords
    # ([xmpp] require_tls): no mechanism is offered, and no STARTTLS either.
    plain = _features_via_proxy(web_server, [])
    assert plain.find(sasl) is None
    assert plain.find("{urn:ietf:params:xml:ns:xmpp-tls}starttls") is None
    # The proxy in front says the client came over HTTPS: the stream is encrypted.
    for header in ("X-Forwarded-Proto: https", "Forwarded: for=198.51.100.7;proto=https"):
        assert _features_via_proxy(web_server, [header]).find(sasl) is not None
