"""A raw XMPP client over a blocking socket: it writes the stanzas a test gives it, byte for
byte, and returns the top-level elements the server sends, parsed.

Enough of a client to log in to any server (SASL PLAIN without TLS, on loopback, then resource
binding), so the same scripted session can run against chatserver and a reference server.
Received stanzas keep their namespaces except ``jabber:client``, which is taken off (so a
message is ``message`` and its body ``body``, as in the server's own handlers).
"""

from __future__ import annotations

import base64
import itertools
import select
import socket
import time
from collections.abc import Sequence

from lxml import etree

NS_CLIENT = "jabber:client"
NS_STREAMS = "http://etherx.jabber.org/streams"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
NS_SESSION = "urn:ietf:params:xml:ns:xmpp-session"

HEADER = (
    "<?xml version='1.0'?><stream:stream xmlns='jabber:client'"
    " xmlns:stream='http://etherx.jabber.org/streams' to='{to}' version='1.0'>"
)

_ids = itertools.count(1)


def strip_client_namespace(el: etree._Element) -> etree._Element:
    prefix = "{" + NS_CLIENT + "}"
    for node in el.iter():
        if isinstance(node.tag, str) and node.tag.startswith(prefix):
            node.tag = node.tag[len(prefix) :]
    etree.cleanup_namespaces(el)
    return el


class RawXmppClient:
    """Logged in as ``user@domain/resource`` once constructed (``presence`` sends initial
    presence).  :meth:`send` writes raw XML; :meth:`collect` gathers what arrives."""

    def __init__(
        self,
        port: int,
        user: str,
        password: str,
        *,
        domain: str = "localhost",
        resource: str = "test",
        presence: bool = True,
        timeout: float = 5.0,
    ) -> None:
        self.domain = domain
        self.timeout = timeout
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.pending: list[etree._Element] = []
        self._open()
        features = self._features()
        mechanisms = [m.text for m in features.iter(f"{{{NS_SASL}}}mechanism")]
        assert "PLAIN" in mechanisms, f"no PLAIN in {mechanisms}"
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        self.send(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{token}</auth>")
        outcome = self._next()
        assert etree.QName(outcome).localname == "success", etree.tostring(outcome)
        self._open()
        features = self._features()
        reply = self.iq("set", f"<bind xmlns='{NS_BIND}'><resource>{resource}</resource></bind>")
        assert reply.get("type") == "result", etree.tostring(reply)
        self.jid = reply.findtext(f"{{{NS_BIND}}}bind/{{{NS_BIND}}}jid") or ""
        session = features.find(f"{{{NS_SESSION}}}session")
        if session is not None and session.find(f"{{{NS_SESSION}}}optional") is None:
            self.iq("set", f"<session xmlns='{NS_SESSION}'/>")
        if presence:
            self.send("<presence/>")

    # -- the stream ---------------------------------------------------------------------------

    def _open(self) -> None:
        self.parser = etree.XMLPullParser(events=("start", "end"), resolve_entities=False)
        self.depth = 0
        self.send(HEADER.format(to=self.domain))

    def _features(self) -> etree._Element:
        el = self._next()
        assert etree.QName(el).localname == "features", etree.tostring(el)
        return el

    def send(self, data: str) -> None:
        self.sock.sendall(data.encode("utf-8"))

    def _read(self, timeout: float) -> bool:
        """Parse what arrives within ``timeout``; False when nothing did."""
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return False
        except OSError:
            return False
        if not data:
            raise ConnectionError("the server closed the stream")
        self.parser.feed(data)
        for event, el in self.parser.read_events():
            if event == "start":
                self.depth += 1
            else:
                self.depth -= 1
                if self.depth == 1:
                    self.pending.append(strip_client_namespace(el))
        return True

    def _next(self) -> etree._Element:
        deadline = time.monotonic() + self.timeout
        while not self.pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError("nothing arrived in time")
            self._read(remaining)
        return self.pending.pop(0)

    def iq(self, type_: str, payload: str, to: str | None = None) -> etree._Element:
        """Send an IQ and return its answer (other stanzas that arrive meanwhile are kept)."""
        id_ = f"iq-{next(_ids)}"
        to_attr = f" to='{to}'" if to else ""
        self.send(f"<iq type='{type_}' id='{id_}'{to_attr}>{payload}</iq>")
        deadline = time.monotonic() + self.timeout
        while True:
            for el in self.pending:
                if el.tag == "iq" and el.get("id") == id_:
                    self.pending.remove(el)
                    return el
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no answer to iq {id_}")
            self._read(remaining)

    def collect(self, quiet: float = 0.3) -> list[etree._Element]:
        """Everything received until nothing more arrives for ``quiet`` seconds."""
        deadline = time.monotonic() + self.timeout
        while self._read(quiet) and time.monotonic() < deadline:
            pass
        out, self.pending = self.pending, []
        return out

    def close(self) -> None:
        try:
            self.send("</stream:stream>")
        except OSError:
            pass
        self.sock.close()


def round_trip(port: int, domain: str = "localhost", timeout: float = 10.0) -> None:
    """A stream header to the server on a connection of its own, and the server's features
    back: by then the server has read (and handled, but for work it waits on) whatever
    other connections sent before, however busy the machine."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(HEADER.format(to=domain).encode())
        data = b""
        while b"features" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"the server closed the stream: {data!r}")
            data += chunk


def collect_all(clients: Sequence[RawXmppClient], quiet: float = 0.3) -> list[list[etree._Element]]:
    """What each of ``clients`` received until none of them has received anything for
    ``quiet`` seconds (at most the longest client timeout in all): one quiet wait for all,
    where :meth:`RawXmppClient.collect` on each in turn waits once per client."""
    deadline = time.monotonic() + max((c.timeout for c in clients), default=0.0)
    socks = {c.sock: c for c in clients}
    while time.monotonic() < deadline:
        ready, _, _ = select.select(list(socks), [], [], quiet)
        if not ready:
            break
        for sock in ready:
            socks[sock]._read(0.001)
    out = []
    for client in clients:
        out.append(client.pending)
        client.pending = []
    return out
