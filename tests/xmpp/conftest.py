"""Fixtures for XMPP protocol tests: real streams over ``StringTransport``, a real ChatService.

Fixtures:

* ``service`` -- a started ChatService on the in-memory store and a fake clock
  (``service.clock``; tests.support.memstore.make_service).
* ``xmpp_config`` -- an XmppConfig for domain ``localhost`` with rooms at
  ``conference.localhost`` (TLS required, but not on loopback: the default).
* ``factory`` -- an XmppFactory over ``service`` whose STARTTLS uses a fake TLS transport.
* ``account`` -- ``account("alice", "secret1")`` creates an account at once.
* ``client`` -- ``client(address="127.0.0.1", direct_tls=False)`` opens a connection (from
  that address; over a direct-TLS port with ``direct_tls``) and returns an
  :class:`XmppTestClient`; ``client.login("alice", "secret1", resource="phone")`` goes through
  the stream header, SASL PLAIN, the restart and the bind (and sends initial presence with
  ``presence=True``).
* ``other_user`` -- ``other_user("bob", protocol="line")`` a recording non-XMPP client
  (tests.core.fakes.FakeClient) with a nick.

An :class:`XmppTestClient` parses what the server writes as a client would: ``header``
holds the server's stream header attributes, ``features`` the last stream features element,
``received()`` returns (and forgets) the top-level elements received so far, ``closed`` and
``stream_error`` tell how the stream ended.  Received stanzas have the ``jabber:client``
namespace taken off, like the server's handlers see them (``message``, ``body``).
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from lxml import etree
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.testing import StringTransport
from zope.interface import directlyProvides

from chatserver.config import XmppConfig, load_config
from chatserver.core.service import ChatService
from protocols.xmpp.connection import XmppConnection
from protocols.xmpp.factory import XmppFactory
from protocols.xmpp.stanzas import NS_CLIENT, NS_STREAM_ERRORS, NS_STREAMS
from tests.core.fakes import FakeClient
from tests.support.memstore import make_service

DOMAIN = "localhost"
MUC = "conference.localhost"
HEADER = (
    "<?xml version='1.0'?><stream:stream xmlns='jabber:client'"
    " xmlns:stream='http://etherx.jabber.org/streams' to='{to}' version='1.0'>"
)


def make_xmpp_config(**overrides: Any) -> XmppConfig:
    base = load_config(None).xmpp
    values = {f: getattr(base, f) for f in base.__dataclass_fields__}
    values.update(domain=DOMAIN, muc_service=MUC)
    values.update(overrides)
    return XmppConfig(**values)


class FakeTlsTransport(StringTransport):
    """A StringTransport that records STARTTLS (the stream goes on in clear in tests)."""

    def __init__(self, peer: str) -> None:
        super().__init__(peerAddress=IPv4Address("TCP", peer, 40000))
        self.tls_started = False
        self.nodelay = False

    def startTLS(self, options: Any) -> None:
        self.tls_started = True

    def setTcpNoDelay(self, enabled: bool) -> None:
        self.nodelay = enabled


class _Reader:
    """The client's side of the parse: the server's stream, element by element."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.parser = etree.XMLPullParser(events=("start", "end"), resolve_entities=False)
        self.depth = 0
        self.root: etree._Element | None = None

    def feed(self, data: bytes) -> list[etree._Element]:
        out: list[etree._Element] = []
        self.parser.feed(data)
        for event, el in self.parser.read_events():
            if event == "start":
                self.depth += 1
                if self.depth == 1:
                    self.root = el
            else:
                self.depth -= 1
                if self.depth == 1:
                    out.append(el)
        return out


class XmppTestClient:
    def __init__(
        self, factory: XmppFactory, address: str = "127.0.0.1", *, direct_tls: bool = False
    ) -> None:
        self.factory = factory
        self.transport = FakeTlsTransport(address)
        if direct_tls:
            directlyProvides(self.transport, ISSLTransport)
        self.conn: XmppConnection = factory.buildProtocol(None)
        self.conn.makeConnection(self.transport)
        self.reader = _Reader()
        self.pending: list[etree._Element] = []
        self.header: dict[str, str] = {}
        self.features: etree._Element | None = None
        self.stream_error: str | None = None
        self.stream_error_text: str | None = None
        self.closed = False
        self.ids = 0

    # -- sending ------------------------------------------------------------------------------

    def send(self, data: str | bytes) -> None:
        raw = data.encode("utf-8") if isinstance(data, str) else data
        self.conn.dataReceived(raw)
        self._pump()

    def open(self, to: str = DOMAIN) -> None:
        """Send a stream header (the reader expects a new server header)."""
        self.reader.reset()
        self.send(HEADER.format(to=to))

    def next_id(self) -> str:
        self.ids += 1
        return f"t{self.ids}"

    # -- receiving ----------------------------------------------------------------------------

    def _pump(self) -> None:
        data = self.transport.value()
        self.transport.clear()
        if data:
            for el in self.reader.feed(data):
                _strip(el)
                tag = etree.QName(el)
                if tag.namespace == NS_STREAMS and tag.localname == "features":
                    self.features = el
                elif tag.namespace == NS_STREAMS and tag.localname == "error":
                    for child in el:
                        q = etree.QName(child)
                        if q.namespace == NS_STREAM_ERRORS and q.localname != "text":
                            self.stream_error = q.localname
                        elif q.localname == "text":
                            self.stream_error_text = child.text
                else:
                    self.pending.append(el)
            if self.reader.root is not None and not self.header:
                self.header = dict(self.reader.root.attrib)
        if self.transport.disconnecting and not self.closed:
            self.closed = True
            self.conn.connectionLost(None)

    def received(self) -> list[etree._Element]:
        """Top-level elements received since the last call (stanzas, SASL replies...)."""
        self._pump()
        out, self.pending = self.pending, []
        return out

    def raw(self) -> bytes:
        data = self.transport.value()
        self.transport.clear()
        return data

    def one(self, tag: str | None = None) -> etree._Element:
        """The single element received (of ``tag`` when given); fails otherwise."""
        got = [el for el in self.received() if tag is None or el.tag == tag]
        assert len(got) == 1, [etree.tostring(e) for e in got]
        return got[0]

    def iq(self, type_: str, payload: str, to: str | None = None) -> etree._Element:
        """Send an IQ and return the reply with its id (other elements stay pending)."""
        id_ = self.next_id()
        to_attr = f" to='{to}'" if to else ""
        self.send(f"<iq type='{type_}' id='{id_}'{to_attr}>{payload}</iq>")
        replies = [el for el in self.pending if el.get("id") == id_]
        assert len(replies) == 1, [etree.tostring(e) for e in self.pending]
        # Anything else (pushes, presences) stays for received().
        self.pending.remove(replies[0])
        return replies[0]

    # -- whole sequences ----------------------------------------------------------------------

    def login(
        self,
        name: str,
        password: str,
        *,
        resource: str | None = "test",
        presence: bool = False,
    ) -> XmppTestClient:
        self.open()
        self.authenticate(name, password)
        self.open()
        self.bind(resource)
        if presence:
            self.send("<presence/>")
        self.received()
        return self

    def authenticate(self, name: str, password: str) -> etree._Element:
        token = base64.b64encode(f"\x00{name}\x00{password}".encode()).decode()
        self.send(
            f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>"
        )
        replies = self.received()
        assert replies and etree.QName(replies[-1]).localname == "success", [
            etree.tostring(e) for e in replies
        ]
        return replies[-1]

    def bind(self, resource: str | None) -> str:
        inner = f"<resource>{resource}</resource>" if resource else ""
        reply = self.iq("set", f"<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>{inner}</bind>")
        assert reply.get("type") == "result", etree.tostring(reply)
        return reply.findtext(
            "{urn:ietf:params:xml:ns:xmpp-bind}bind/{urn:ietf:params:xml:ns:xmpp-bind}jid"
        )

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.conn.connectionLost(None)


def _strip(el: etree._Element) -> None:
    prefix = "{" + NS_CLIENT + "}"
    for node in el.iter():
        if isinstance(node.tag, str) and node.tag.startswith(prefix):
            node.tag = node.tag[len(prefix) :]


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture
def service() -> ChatService:
    return make_service()


@pytest.fixture
def xmpp_config() -> XmppConfig:
    return make_xmpp_config()


@pytest.fixture
def factory(service: ChatService, xmpp_config: XmppConfig) -> XmppFactory:
    return XmppFactory(service, xmpp_config, tls_options=lambda: object(), clock=service.clock)


@pytest.fixture
def account(service: ChatService) -> Callable[..., Any]:
    def create(name: str, password: str = "secret1") -> Any:
        results: list[Any] = []
        service.accounts.create(name, password).addBoth(results.append)
        assert results and not hasattr(results[0], "raiseException"), results
        return results[0]

    return create


@pytest.fixture
def client(factory: XmppFactory) -> Iterator[Callable[..., XmppTestClient]]:
    made: list[XmppTestClient] = []

    def connect(address: str = "127.0.0.1", *, direct_tls: bool = False) -> XmppTestClient:
        c = XmppTestClient(factory, address, direct_tls=direct_tls)
        made.append(c)
        return c

    yield connect
    for c in made:
        c.close()


@pytest.fixture
def other_user(service: ChatService) -> Callable[..., FakeClient]:
    def make(nick: str, protocol: str = "line") -> FakeClient:
        fake = FakeClient(protocol=protocol)
        conn = service.connect(fake)
        service.claim_nick(conn, nick)
        fake.core = conn  # type: ignore[attr-defined]
        return fake

    return make
