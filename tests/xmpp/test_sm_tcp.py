"""Stream management over real sockets: the real server, a raw XMPP client, a line-chat sender.

The client's TCP connection is cut with messages in flight (some read, not acknowledged, some
still to come); a new connection resumes the session and must get each message exactly once.
"""

from __future__ import annotations

import base64
import socket
import time
from collections.abc import Callable

import pytest
from lxml import etree

from tests.ops.test_metrics import get, samples
from tests.support.server import LineClient, ServerProcess, free_port

pytestmark = pytest.mark.timeout(60)

NS_SM = "urn:xmpp:sm:3"
SM = "{" + NS_SM + "}"
CLIENT = "{jabber:client}"
HEADER = (
    b"<?xml version='1.0'?><stream:stream xmlns='jabber:client'"
    b" xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>"
)


class RawStream:
    """A plain-TCP XMPP client that reads top-level elements (loopback needs no TLS)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self._new_parser()

    def _new_parser(self) -> None:
        self.parser = etree.XMLPullParser(events=("start", "end"), resolve_entities=False)
        self.depth = 0
        self.pending: list[etree._Element] = []

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def open(self) -> None:
        self._new_parser()
        self.send(HEADER)

    def read_until(self, done: Callable[[etree._Element], bool], timeout: float = 5.0):
        got: list[etree._Element] = []
        deadline = time.monotonic() + timeout
        while True:
            while self.pending:
                el = self.pending.pop(0)
                got.append(el)
                if done(el):
                    return got
            if time.monotonic() > deadline:
                raise AssertionError([etree.tostring(e) for e in got])
            self.sock.settimeout(max(0.05, deadline - time.monotonic()))
            data = self.sock.recv(65536)
            assert data, "connection closed"
            self.parser.feed(data)
            for event, el in self.parser.read_events():
                if event == "start":
                    self.depth += 1
                else:
                    self.depth -= 1
                    if self.depth == 1:
                        self.pending.append(el)

    def login(self, name: str, password: str) -> None:
        self.open()
        self.read_until(lambda el: el.tag.endswith("features"))
        token = base64.b64encode(f"\0{name}\0{password}".encode())
        self.send(
            b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>"
            + token
            + b"</auth>"
        )
        self.read_until(lambda el: el.tag.endswith("success"))
        self.open()
        self.read_until(lambda el: el.tag.endswith("features"))

    def bind(self) -> None:
        self.send(
            b"<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
            b"<resource>phone</resource></bind></iq>"
        )
        self.read_until(lambda el: el.get("id") == "b1")

    def cut(self) -> None:
        """Drop the connection without closing the stream (a phone losing its network)."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
        self.sock.close()


def _bodies(els: list[etree._Element]) -> list[tuple[str, str]]:
    return [
        (el.get("id") or "", el.findtext(CLIENT + "body") or "")
        for el in els
        if el.tag == CLIENT + "message" and el.find(CLIENT + "body") is not None
    ]


def test_dropped_connection_resumes_with_nothing_lost_or_twice(
    make_server: Callable[..., ServerProcess],
) -> None:
    metrics_port = free_port()
    server = make_server(
        protocols=("line", "xmpp"),
        overrides={
            "xmpp": {"resume_timeout": 30},
            "metrics": {"enabled": True, "port": metrics_port},
        },
    )

    def metric(name: str) -> float:
        status, _, text = get(f"http://127.0.0.1:{metrics_port}/metrics")
        assert status == 200
        return samples(text)[(name, ())]

    server.create_account("alice", "correct horse")
    phone = RawStream(server.ports["xmpp"])
    phone.login("alice", "correct horse")
    phone.bind()
    phone.send(f"<enable xmlns='{NS_SM}' resume='true'/>".encode())
    (enabled,) = phone.read_until(lambda el: el.tag == SM + "enabled")
    previd = enabled.get("id")
    carol = LineClient(server.ports["line"])
    carol.expect("*** Choose a nick:")
    carol.send("carol")
    carol.expect("*** You are carol.")
    for n in range(8):
        carol.send(f"/msg alice first {n}")
    first = _bodies(phone.read_until(lambda el: (el.findtext(CLIENT + "body") or "") == "first 7"))
    assert [b for _, b in first] == [f"first {n}" for n in range(8)]
    # The client acknowledges only three, then its connection drops.
    phone.send(f"<a xmlns='{NS_SM}' h='3'/>".encode())
    time.sleep(0.2)
    phone.cut()
    time.sleep(0.3)
    for n in range(4):
        carol.send(f"/msg alice second {n}")
    time.sleep(0.3)
    assert metric("chatserver_xmpp_sm_detached") == 1
    assert metric("chatserver_xmpp_sm_queued") == 9
    again = RawStream(server.ports["xmpp"])
    again.login("alice", "correct horse")
    # It handled all eight it read before the drop.
    again.send(f"<resume xmlns='{NS_SM}' previd='{previd}' h='8'/>".encode())
    got = again.read_until(lambda el: (el.findtext(CLIENT + "body") or "") == "second 3")
    assert got[0].tag == SM + "resumed"
    rest = _bodies(got)
    assert [b for _, b in rest] == [f"second {n}" for n in range(4)]
    ids = [i for i, _ in first + rest]
    assert len(set(ids)) == len(ids) == 12
    # The session is the same: new messages flow both ways.
    carol.send("/msg alice after")
    assert _bodies(again.read_until(lambda el: (el.findtext(CLIENT + "body") or "") == "after"))
    again.send(b"<message to='~carol@localhost' type='chat'><body>back again</body></message>")
    assert "back again" in carol.expect(lambda line: "back again" in line)
    assert metric("chatserver_xmpp_sm_resumed_total") == 1
    assert metric("chatserver_xmpp_sm_enabled_total") == 1
    assert metric("chatserver_xmpp_sm_detached") == 0
    carol.close()
    again.sock.close()


def test_ack_of_more_than_was_sent_is_handled_count_too_high(
    make_server: Callable[..., ServerProcess],
) -> None:
    """XEP-0198 §4: an ``h`` above the server's count ends the stream with
    ``<undefined-condition/>`` and ``<handled-count-too-high h=… send-count=…/>``."""
    server = make_server(protocols=("line", "xmpp"))
    server.create_account("alice", "correct horse")
    phone = RawStream(server.ports["xmpp"])
    phone.login("alice", "correct horse")
    phone.bind()
    phone.send(f"<enable xmlns='{NS_SM}'/>".encode())
    phone.read_until(lambda el: el.tag == SM + "enabled")
    phone.send(b"<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>")
    phone.read_until(lambda el: el.get("id") == "p1")
    # One stanza was sent since <enabled/>; the client claims seven.
    phone.send(f"<a xmlns='{NS_SM}' h='7'/>".encode())
    (error,) = phone.read_until(lambda el: el.tag == "{http://etherx.jabber.org/streams}error")
    streams = "{urn:ietf:params:xml:ns:xmpp-streams}"
    assert error.find(streams + "undefined-condition") is not None
    too_high = error.find(SM + "handled-count-too-high")
    assert too_high is not None
    assert (too_high.get("h"), too_high.get("send-count")) == ("7", "1")
    assert "7" in (error.findtext(streams + "text") or "")
    phone.sock.settimeout(5)
    rest = b""
    while chunk := phone.sock.recv(4096):
        rest += chunk
    assert rest.endswith(b"</stream:stream>") or rest == b""
    # Nobody else is affected: the account logs in again at once.
    again = RawStream(server.ports["xmpp"])
    again.login("alice", "correct horse")
    again.bind()
    again.sock.close()


def test_what_a_timed_out_session_never_acknowledged_waits_for_the_next_login(
    make_server: Callable[..., ServerProcess],
) -> None:
    metrics_port = free_port()
    server = make_server(
        protocols=("line", "xmpp"),
        overrides={
            "xmpp": {"resume_timeout": 1},
            "metrics": {"enabled": True, "port": metrics_port},
            "chat": {"history_flush_interval": 0.1},
        },
    )
    server.create_account("alice", "correct horse")
    phone = RawStream(server.ports["xmpp"])
    phone.login("alice", "correct horse")
    phone.bind()
    phone.send(f"<enable xmlns='{NS_SM}' resume='true'/>".encode())
    phone.read_until(lambda el: el.tag == SM + "enabled")
    carol = LineClient(server.ports["line"])
    carol.expect("*** Choose a nick:")
    carol.send("carol")
    carol.expect("*** You are carol.")
    for n in range(5):
        carol.send(f"/msg alice read {n}")
    read = phone.read_until(lambda el: (el.findtext(CLIENT + "body") or "") == "read 4")
    ids = {
        b: el.find("{urn:xmpp:sid:0}stanza-id").get("id")
        for el, (_, b) in zip(
            [e for e in read if e.tag == CLIENT + "message"], _bodies(read), strict=True
        )
    }
    # Two acknowledged; the connection drops; one more comes while the session waits.
    phone.send(f"<a xmlns='{NS_SM}' h='2'/>".encode())
    time.sleep(0.2)
    phone.cut()
    time.sleep(0.3)
    carol.send("/msg alice while detached")
    time.sleep(2.0)
    # The session is gone: nothing went back to carol, and the four are kept for alice.
    carol.send("/ping")
    seen = []
    while True:
        line = carol.read_line(5)
        if line == "*** pong":
            break
        seen.append(line)
    assert not [line for line in seen if "Not delivered" in line]
    status, _, text = get(f"http://127.0.0.1:{metrics_port}/metrics")
    assert status == 200
    found = samples(text)
    assert found[("chatserver_xmpp_sm_unacked_total", (("outcome", "kept"),))] == 4
    assert found[("chatserver_xmpp_sm_unacked_total", (("outcome", "bounced"),))] == 0
    # The next login (a fresh session) gets them, with their delay stamps and archive ids.
    again = RawStream(server.ports["xmpp"])
    again.login("alice", "correct horse")
    again.bind()
    again.send(b"<presence/>")
    got = again.read_until(lambda el: (el.findtext(CLIENT + "body") or "") == "while detached")
    offline = [el for el in got if el.tag == CLIENT + "message"]
    assert [b for _, b in _bodies(offline)] == ["read 2", "read 3", "read 4", "while detached"]
    for el in offline:
        assert el.find("{urn:xmpp:delay}delay") is not None
    kept = {
        el.findtext(CLIENT + "body"): el.find("{urn:xmpp:sid:0}stanza-id").get("id")
        for el in offline
    }
    assert all(kept[b] == ids[b] for b in ("read 2", "read 3", "read 4"))
    carol.close()
    again.sock.close()


def test_offline_messages_come_with_the_initial_presence_and_wait_for_the_next_one(
    make_server: Callable[..., ServerProcess],
) -> None:
    """As Prosody sends them: a client that reads its roster before it is available gets
    its offline messages after its presence, not among the answers; a session that ends
    before its presence leaves them for the next login."""
    server = make_server(protocols=("line", "xmpp"))
    server.create_account("alice", "correct horse")
    carol = LineClient(server.ports["line"])
    carol.expect("*** Choose a nick:")
    carol.send("carol")
    carol.expect("*** You are carol.")
    carol.send("/msg alice kept 1")
    carol.send("/msg alice kept 2")
    carol.send("/ping")
    carol.expect("*** pong")

    def session() -> tuple[RawStream, list[etree._Element]]:
        client = RawStream(server.ports["xmpp"])
        client.login("alice", "correct horse")
        client.bind()
        client.send(b"<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>")
        before = client.read_until(lambda el: el.get("id") == "r1")
        # Past the time the store takes to answer: they would have come by now.
        client.send(b"<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>")
        time.sleep(0.5)
        client.send(b"<iq type='get' id='p2'><ping xmlns='urn:xmpp:ping'/></iq>")
        before += client.read_until(lambda el: el.get("id") == "p2")
        return client, before

    first, before = session()
    assert _bodies(before) == [], [etree.tostring(e) for e in before]
    first.send(b"</stream:stream>")
    first.sock.close()
    time.sleep(0.3)

    second, before = session()
    assert _bodies(before) == [], [etree.tostring(e) for e in before]
    second.send(b"<presence/>")
    got = second.read_until(lambda el: (el.findtext(CLIENT + "body") or "") == "kept 2")
    offline = [el for el in got if el.tag == CLIENT + "message"]
    assert [b for _, b in _bodies(offline)] == ["kept 1", "kept 2"]
    for el in offline:
        assert el.find("{urn:xmpp:delay}delay") is not None
    # Taken: the next login gets them no more.
    second.sock.close()
    time.sleep(0.3)
    third, before = session()
    third.send(b"<presence/>")
    third.send(b"<iq type='get' id='p3'><ping xmlns='urn:xmpp:ping'/></iq>")
    time.sleep(0.5)
    third.send(b"<iq type='get' id='p4'><ping xmlns='urn:xmpp:ping'/></iq>")
    after = third.read_until(lambda el: el.get("id") == "p4")
    assert _bodies(before + after) == []
    carol.close()
    third.sock.close()
