"""A closed WebSocket leaves no reference cycle: the web site's own request handling and the
protocol under it, in this process (so that the garbage collector can be watched), driven
with a real WebSocket client's bytes (wsproto)."""

from __future__ import annotations

import gc
import weakref
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransportWithDisconnection
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Request, TextMessage

from chatserver.config import LineConfig, load_config
from protocols.line.factory import LineFactory
from protocols.web.site import build_site
from protocols.web.websocket import WebSocketChannel
from protocols.xmpp.factory import XmppFactory
from tests.support.memstore import make_service
from tests.xmpp.conftest import make_xmpp_config

# Each endpoint: its path, subprotocol, and a first message its protocol answers.
ENDPOINTS = {
    "line": ("/line", "json.line.chatserver", '{"cmd": "nick", "nick": "leaver"}'),
    "xmpp": (
        "/xmpp-websocket",
        "xmpp",
        "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='localhost' version='1.0'/>",
    ),
}


@pytest.mark.parametrize("endpoint", sorted(ENDPOINTS))
@pytest.mark.parametrize("how", ["lost", "closed by the client"])
def test_a_closed_websocket_is_freed_without_the_garbage_collector(endpoint: str, how: str) -> None:
    # A burst of short connections left each one's objects to the cyclic collector, whose
    # full collections then cost a tenth of what a connection costs.
    service = make_service()
    factories: dict[str, Any] = {
        "line": LineFactory(service, LineConfig()),
        "xmpp": XmppFactory(
            service, make_xmpp_config(), tls_options=lambda: object(), clock=service.clock
        ),
    }
    site = build_site(load_config(None), factories=factories, clock=service.clock)
    path, subprotocol, hello = ENDPOINTS[endpoint]
    raw = StringTransportWithDisconnection(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
    http: Any = site.buildProtocol(raw.getPeer())
    http.callLater = service.clock.callLater
    raw.protocol = http
    http.makeConnection(raw)
    client = WSConnection(ConnectionType.CLIENT)
    upgrade = Request(host="localhost", target=path, subprotocols=[subprotocol])
    http.dataReceived(client.send(upgrade))
    client.receive_data(raw.value())
    raw.clear()
    assert isinstance(next(client.events()), AcceptConnection)
    http.dataReceived(client.send(TextMessage(hello)))
    client.receive_data(raw.value())
    assert any(isinstance(e, TextMessage) for e in client.events())
    # The socket is the WebSocket's now (the HTTP channel hands its input on to it).
    channel = http.connectionLost.__self__
    assert isinstance(channel, WebSocketChannel)
    refs = [weakref.ref(o) for o in (http, channel, channel.inner)]
    del channel
    if how == "lost":
        raw.loseConnection()
    else:
        # The client's close frame: the server answers it and closes the socket.
        http.dataReceived(client.send(CloseConnection(1000)))
        assert not raw.connected
    gc.collect()
    gc.disable()
    try:
        # What Twisted's TCP transport does once the connection is lost: let go of the protocol.
        raw.protocol = None
        del http
        alive = [ref() for ref in refs if ref() is not None]
        assert not alive, [gc.get_referrers(obj) for obj in alive]
    finally:
        gc.enable()
