"""Two XMPP clients of one account on two real nodes (private Redis, shared PostgreSQL), as on
one server: the client that logs in on node b while the account's user is on node a is
handed off to a (b relays its socket), so both are resources of one user there.  Each sees
the other's presence, carbons copy each one's chats to the other, both are in a room under
the account's nick and get its messages and each other's, and the one that closes leaves
the other online.  Through slixmpp (SCRAM, STARTTLS, and its own stream management resuming
the session through node b after its connection is cut) and raw streams, over TCP and
WebSocket; a handed-off stream's roster, archive and stream management; how long its login takes against a local one; and its end when the
account's node dies."""

from __future__ import annotations

import base64
import statistics
import time
from collections.abc import Callable
from typing import Any

import pytest
from lxml import etree
from slixmpp import JID

from tests.cluster.test_accounts import PASSWORD, PROTOCOLS, lease_of, register, shared
from tests.cluster.test_cluster import irc
from tests.cluster.test_xmpp_handover import NS_MAM, NS_ROSTER, body, iq, left_lines, xmpp_login
from tests.hostile.clients import MUC_DOMAIN, XmppClient, local
from tests.support.postgres import PostgresServer
from tests.support.redis import RedisServer
from tests.support.server import ServerProcess
from tests.support.xmpp_client import DOMAIN, SlixmppClient
from tests.web.conftest import WsClient, ws_url

pytestmark = pytest.mark.timeout(120)

Node = Callable[..., ServerProcess]

NS_CARBONS = "urn:xmpp:carbons:2"
NS_FORWARD = "urn:xmpp:forward:0"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
NS_SM = "urn:xmpp:sm:3"
FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"
ROOM = f"dev@{MUC_DOMAIN}"


def nodes(
    make_node: Node,
    postgres: PostgresServer,
    *names: str,
    protocols: tuple[str, ...] = PROTOCOLS,
    lease: float = 3.0,
) -> list[ServerProcess]:
    """Nodes of one cluster sharing a database, each with the XMPP listener."""
    config = shared(postgres)
    return [make_node(name, protocols=protocols, overrides=config, lease=lease) for name in names]


def first_client(node: ServerProcess, account: str) -> XmppClient:
    """A new account, and its first client (``desk``) online on ``node``."""
    register(node, account).close()
    desk = xmpp_login(node, account, "desk")
    desk.send("<presence/>")
    return desk


def plain_token(account: str) -> str:
    return base64.b64encode(f"\0{account}\0{PASSWORD}".encode()).decode()


def carried(el: Any, kind: str) -> Any:
    """The message a carbon (``sent`` or ``received``) carries, or None."""
    return el.find(f"{{{NS_CARBONS}}}{kind}/{{{NS_FORWARD}}}forwarded/{{jabber:client}}message")


def presence_from(el: Any, jid: str, kind: str | None = None) -> bool:
    return local(el) == "presence" and el.get("from") == jid and el.get("type") == kind


def archived(client: XmppClient) -> list[str]:
    """The bodies of the account's archive (XEP-0313), first page."""
    query_id = client.next_id()
    client.send(
        f"<iq type='set' id='{query_id}'><query xmlns='{NS_MAM}' queryid='{query_id}'/></iq>"
    )
    bodies: list[str] = []
    while True:
        el = client.expect(lambda e: local(e) in ("iq", "message"))
        if local(el) == "iq" and el.get("id") == query_id:
            assert el.get("type") == "result", etree.tostring(el)
            return bodies
        text = el.findtext(
            f"{{{NS_MAM}}}result/{{{NS_FORWARD}}}forwarded/{{jabber:client}}message/{{jabber:client}}body"
        )
        if text is not None:
            bodies.append(text)


def enable_carbons(client: XmppClient) -> None:
    iq_id = client.next_id()
    client.send(f"<iq type='set' id='{iq_id}'><enable xmlns='{NS_CARBONS}'/></iq>")
    assert client.expect(lambda el: el.get("id") == iq_id).get("type") == "result"


def test_two_clients_of_one_account_on_two_nodes_are_one_user_on_its_node(
    make_node: Node, redis: RedisServer, postgres: PostgresServer
) -> None:
    a, b = nodes(make_node, postgres, "a", "b")
    register(a, "ann").close()
    register(b, "bob").close()

    laptop = xmpp_login(a, "ann", "laptop")
    laptop.send("<presence/>")
    enable_carbons(laptop)
    laptop.join_room("dev", "ann")
    assert lease_of(redis, "ann") == "a"

    # The phone logs in on node b, with slixmpp (STARTTLS, SCRAM: the server's signature
    # in <success/> is node a's, checked by the library).
    phone = SlixmppClient(
        b.ports["xmpp"],
        f"ann@{DOMAIN}/phone",
        PASSWORD,
        plugins=("xep_0045", "xep_0280", "xep_0198"),
        events=(
            "message",
            "carbon_sent",
            "carbon_received",
            "groupchat_message",
            "presence",
            "sm_enabled",
            "session_resumed",
        ),
        sasl_mech="SCRAM-SHA-256",
    )
    try:
        assert phone.logged_in
        assert phone.expect_event("sm_enabled", lambda _: True)["resume"] is True
        assert str(phone.xmpp.boundjid) == f"ann@{DOMAIN}/phone"
        assert lease_of(redis, "ann") == "a"
        phone.wait(phone.xmpp.plugin["xep_0280"].enable)
        phone.do(phone.xmpp.send_presence)
        # Each resource sees the other's presence.
        laptop.expect(lambda el: presence_from(el, f"ann@{DOMAIN}/phone"))
        phone.expect_event("presence", lambda p: str(p["from"]) == f"ann@{DOMAIN}/laptop")

        # bob, on node b too, writes to ann's bare JID: both resources get it.
        bob = xmpp_login(b, "bob", "desk")
        bob.send("<presence/>")
        bob.send(f"<message type='chat' to='ann@{DOMAIN}'><body>to the bare jid</body></message>")
        laptop.expect(lambda el: local(el) == "message" and body(el) == "to the bare jid")
        phone.expect_event(
            "message",
            lambda m: m["body"] == "to the bare jid" and m["from"].bare == "bob@localhost",
        )
        # To the laptop's full JID: the phone gets a received carbon.
        bob.send(
            f"<message type='chat' to='ann@{DOMAIN}/laptop'><body>to the laptop</body></message>"
        )
        laptop.expect(lambda el: local(el) == "message" and body(el) == "to the laptop")
        phone.expect_event(
            "carbon_received", lambda m: m["carbon_received"]["body"] == "to the laptop"
        )
        # What the phone writes: bob gets it from the phone, the laptop a sent carbon.
        phone.do(phone.xmpp.send_message, mto="bob@localhost", mbody="from the phone", mtype="chat")
        got = bob.expect(lambda el: local(el) == "message" and body(el) == "from the phone")
        assert got.get("from") == f"ann@{DOMAIN}/phone"
        sent = laptop.expect(lambda el: carried(el, "sent") is not None)
        assert body(carried(sent, "sent")) == "from the phone"
        # And the other way round.
        laptop.send(
            "<message type='chat' to='bob@localhost'><body>from the laptop</body></message>"
        )
        bob.expect(lambda el: local(el) == "message" and body(el) == "from the laptop")
        phone.expect_event("carbon_sent", lambda m: m["carbon_sent"]["body"] == "from the laptop")

        # Both in one room under ann's nick: an IRC user on node b talks there, both get it;
        # what the laptop says is reflected to both.
        phone.call(phone.muc.join_muc_wait(JID(ROOM), "ann", timeout=5, maxstanzas=0))
        talker = irc(b, "carl")
        talker.send("JOIN #dev")
        talker.expect(" 366 carl #dev ")
        talker.send("PRIVMSG #dev :hello both of you")
        laptop.expect(lambda el: local(el) == "message" and body(el) == "hello both of you")
        phone.expect_event(
            "groupchat_message",
            lambda m: m["body"] == "hello both of you" and str(m["from"]) == f"{ROOM}/carl",
        )
        laptop.send(
            f"<message type='groupchat' to='{ROOM}'><body>said on the laptop</body></message>"
        )
        assert talker.expect("said on the laptop").startswith(":ann!")
        laptop.expect(lambda el: local(el) == "message" and body(el) == "said on the laptop")
        phone.expect_event(
            "groupchat_message",
            lambda m: m["body"] == "said on the laptop" and str(m["from"]) == f"{ROOM}/ann",
        )
        phone.do(
            phone.xmpp.send_message, mto=JID(ROOM), mbody="said on the phone", mtype="groupchat"
        )
        assert talker.expect("said on the phone").startswith(":ann!")
        laptop.expect(lambda el: local(el) == "message" and body(el) == "said on the phone")
        phone.expect_event("groupchat_message", lambda m: m["body"] == "said on the phone")

        # The phone loses its network: the session waits on node a, and the library
        # resumes it by itself through node b, with what it was sent meanwhile.
        phone.do(lambda: phone.xmpp.transport.abort())
        time.sleep(0.5)
        bob.send(
            f"<message type='chat' to='ann@{DOMAIN}/phone'><body>while cut off</body></message>"
        )
        phone.do(phone.xmpp.connect, "127.0.0.1", b.ports["xmpp"])
        phone.expect_event("session_resumed", lambda _: True)
        phone.expect_event("message", lambda m: m["body"] == "while cut off")
        assert lease_of(redis, "ann") == "a"
    finally:
        # The phone closes its stream: its session on node a is gone, the laptop sees it
        # go and stays, in the room too.
        phone.close()
    laptop.expect(lambda el: presence_from(el, f"ann@{DOMAIN}/phone", "unavailable"))
    iq_id = laptop.next_id()
    laptop.send(
        f"<iq type='get' id='{iq_id}' to='ann@{DOMAIN}/phone'><ping xmlns='urn:xmpp:ping'/></iq>"
    )
    assert laptop.expect(lambda el: el.get("id") == iq_id).get("type") == "error"
    talker.send("PRIVMSG #dev :still there?")
    laptop.expect(lambda el: local(el) == "message" and body(el) == "still there?")
    talker.send("NAMES #dev")
    names = talker.expect(" 353 carl ").rsplit(":", 1)[1].split()
    assert "ann" in [n.lstrip("@+") for n in names], names
    assert not left_lines(talker, "ann"), talker.seen
    for client in (laptop, bob, talker):
        client.close()


def ws_login(node: ServerProcess, account: str, resource: str) -> WsClient:
    """An XMPP-over-WebSocket client (RFC 7395) bound as ``account/resource``."""
    # Patient reads: the end of a stream waits for a dead node to be noticed.
    ws = WsClient(ws_url(node, "/xmpp-websocket"), subprotocols=["xmpp"], timeout=20.0)
    opening = f"<open xmlns='{FRAMING}' to='localhost' version='1.0'/>"
    ws.send(opening)
    ws.expect("features")
    ws.send(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{plain_token(account)}</auth>")
    assert etree.fromstring(ws.recv().encode()).tag == f"{{{NS_SASL}}}success"
    ws.send(opening)
    assert etree.fromstring(ws.recv().encode()).tag == f"{{{FRAMING}}}open"
    assert "bind" in ws.recv()
    ws.send(
        "<iq xmlns='jabber:client' type='set' id='b1'>"
        f"<bind xmlns='{NS_BIND}'><resource>{resource}</resource></bind></iq>"
    )
    bound = etree.fromstring(ws.expect("b1").encode())
    assert bound.get("type") == "result", etree.tostring(bound)
    return ws


def timed_login(node: ServerProcess, account: str, resource: str) -> float:
    """How long a raw client takes from connecting to its bound resource (SASL PLAIN, the
    stream restart, binding)."""
    started = time.monotonic()
    client = xmpp_login(node, account, resource)
    took = time.monotonic() - started
    assert client.jid == f"{account}@{DOMAIN}/{resource}", client.jid
    client.close()
    return took


def test_a_handed_off_stream_over_tcp_or_websocket_is_the_accounts_nodes_until_it_dies(
    make_node: Node, redis: RedisServer, postgres: PostgresServer
) -> None:
    # A short lease: a dead node is noticed within seconds.
    a, b = nodes(make_node, postgres, "a", "b", protocols=(*PROTOCOLS, "web"), lease=2.0)
    desk = first_client(a, "cyd")

    # Raw on node b: after the handoff, node a's stream features; the resource asked for is
    # taken, so node a binds another.
    phone = XmppClient(b.ports["xmpp"], source="127.0.0.1", timeout=10.0)
    phone.send(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{plain_token('cyd')}</auth>")
    assert local(phone.expect(lambda el: local(el) in ("success", "failure"))) == "success"
    features = phone.open()
    assert features.find(f"{{{NS_BIND}}}bind") is not None
    assert features.find(f"{{{NS_SM}}}sm") is not None
    phone.send(
        f"<iq type='set' id='b1'><bind xmlns='{NS_BIND}'><resource>desk</resource></bind></iq>"
    )
    jid = phone.expect(lambda el: el.get("id") == "b1").findtext(
        f"{{{NS_BIND}}}bind/{{{NS_BIND}}}jid"
    )
    assert jid is not None and jid.startswith("cyd@localhost/") and jid != "cyd@localhost/desk"
    phone.send(f"<enable xmlns='{NS_SM}' resume='true'/>")
    enabled = phone.expect(lambda el: local(el) in ("enabled", "failed"))
    assert local(enabled) == "enabled", etree.tostring(enabled)
    previd = enabled.get("id")
    phone.send("<presence/>")
    desk.expect(lambda el: presence_from(el, jid))

    # Its socket drops: the session waits on node a; a new connection to node b is handed
    # off again and resumes it, with what it was sent meanwhile.
    phone.close()
    time.sleep(0.3)
    desk.send(f"<message type='chat' to='{jid}'><body>while you were away</body></message>")
    again = XmppClient(b.ports["xmpp"], source="127.0.0.1", timeout=10.0)
    assert local(again.auth_plain("cyd", PASSWORD)) == "success"
    again.open()
    again.send(f"<resume xmlns='{NS_SM}' previd='{previd}' h='0'/>")
    resumed = again.expect(lambda el: local(el) in ("resumed", "failed"))
    assert local(resumed) == "resumed", etree.tostring(resumed)
    again.expect(lambda el: local(el) == "message" and body(el) == "while you were away")
    # Its roster and archive are the account's, on node a.
    iq(again, "set", f"<query xmlns='{NS_ROSTER}'><item jid='bob@localhost'/></query>")
    roster = iq(again, "get", f"<query xmlns='{NS_ROSTER}'/>")
    assert [i.get("jid") for i in roster.iter(f"{{{NS_ROSTER}}}item")] == ["bob@localhost"]
    assert "while you were away" in archived(again)

    # It closes its stream: node a ends the session at once, the desk sees it go.
    again.send("<presence type='unavailable'/></stream:stream>")
    desk.expect(lambda el: presence_from(el, jid, "unavailable"))
    assert again.until_closed(5) is None
    desk.send(f"<iq type='get' id='p1' to='{jid}'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert desk.expect(lambda el: el.get("id") == "p1").get("type") == "error"

    # Over WebSocket on node b (B frames, A serves): messages both ways, and its close.
    ws = ws_login(b, "cyd", "web")
    ws.send("<presence xmlns='jabber:client'/>")
    desk.expect(lambda el: presence_from(el, f"cyd@{DOMAIN}/web"))
    desk.send(f"<message type='chat' to='cyd@{DOMAIN}/web'><body>to the browser</body></message>")
    got = etree.fromstring(ws.expect("to the browser").encode())
    assert got.tag == "{jabber:client}message" and got.get("from") == f"cyd@{DOMAIN}/desk"
    ws.send(
        f"<message xmlns='jabber:client' type='chat' to='cyd@{DOMAIN}/desk'>"
        "<body>from the browser</body></message>"
    )
    got = desk.expect(lambda el: local(el) == "message" and body(el) == "from the browser")
    assert got.get("from") == f"cyd@{DOMAIN}/web"
    ws.send(f"<close xmlns='{FRAMING}'/>")
    assert etree.fromstring(ws.expect("close").encode()).tag == f"{{{FRAMING}}}close"
    assert ws.close_code() == 1000
    ws.close()
    desk.expect(lambda el: presence_from(el, f"cyd@{DOMAIN}/web", "unavailable"))

    # How long a login takes handed off, against one on the account's node: in turns, so
    # that the machine's load weighs on both alike.
    local_times: list[float] = []
    handed_off: list[float] = []
    for n in range(20):
        local_times.append(timed_login(a, "cyd", f"l{n}"))
        handed_off.append(timed_login(b, "cyd", f"h{n}"))
    local_ms = statistics.median(local_times) * 1000
    handed_ms = statistics.median(handed_off) * 1000
    print(
        f"XMPP login (SASL PLAIN, restart, bind), median of 20: {local_ms:.1f} ms on the"
        f" account's node, {handed_ms:.1f} ms handed off from another node"
    )
    # Every login on b was served by a, which kept the account.
    assert lease_of(redis, "cyd") == "a"

    # Node a dies: node b ends the streams it relayed there, saying so, on TCP and
    # WebSocket alike.
    tcp = xmpp_login(b, "cyd", "tcp")
    ws = ws_login(b, "cyd", "web")
    a.kill()
    assert tcp.until_closed(20) == "system-shutdown", tcp.stream_error
    error = etree.fromstring(ws.expect("error", timeout=20).encode())
    assert error.find("{urn:ietf:params:xml:ns:xmpp-streams}system-shutdown") is not None
    assert etree.fromstring(ws.expect("close").encode()).tag == f"{{{FRAMING}}}close"
    for client in (desk, tcp, ws):
        client.close()
