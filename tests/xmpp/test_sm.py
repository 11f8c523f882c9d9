"""Stream management (XEP-0198) and client state indication (XEP-0352) through real streams.

Each test drives the real server's XMPP connections with raw stanzas (the ``client`` fixture:
real parsing, real ChatService, a fake clock), so acks, drops, resumption and the resume
timeout are exact and fast.  ``test_sm_tcp.py`` does the same over real sockets.
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from protocols.xmpp.sm import MODULO, NS_SM, StreamManagement, acknowledge
from tests.core.fakes import FakeClient
from tests.xmpp.conftest import XmppTestClient, make_xmpp_config

SM = "{" + NS_SM + "}"


@pytest.fixture
def xmpp_config():  # type: ignore[no-untyped-def]
    return make_xmpp_config(resume_timeout=60.0, max_unacked=50)


def _messages(els: list[etree._Element]) -> list[etree._Element]:
    return [el for el in els if el.tag == "message"]


def _enable(c: XmppTestClient, resume: bool = True) -> etree._Element:
    flag = " resume='true'" if resume else ""
    c.send(f"<enable xmlns='{NS_SM}'{flag}/>")
    got = [el for el in c.received() if el.tag.startswith(SM)]
    assert got and got[0].tag == SM + "enabled", [etree.tostring(e) for e in got]
    return got[0]


def _say(sender: Any, service: Any, to: str, text: str) -> None:
    service.say(sender.core, nick=to, text=text)


def test_features_after_sasl_offer_sm_and_csi(client, account) -> None:
    account("alice")
    c = client()
    c.open()
    c.authenticate("alice", "secret1")
    c.open()
    assert c.features is not None
    assert c.features.find(SM + "sm") is not None
    assert c.features.find("{urn:xmpp:csi:0}csi") is not None


def test_enable_and_acks_both_ways(client, account, other_user, service) -> None:
    account("alice")
    c = client().login("alice", "secret1", resource="phone", presence=True)
    enabled = _enable(c)
    assert enabled.get("resume") == "true" and enabled.get("id")
    assert enabled.get("max") == "60"
    # Our count: three stanzas handled so far (two pings to the server, one presence).
    stanzas_in = 0
    c.send("<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>")
    c.send("<iq type='get' id='p2'><ping xmlns='urn:xmpp:ping'/></iq>")
    c.send("<presence><show>away</show></presence>")
    stanzas_in += len(c.received())  # two results and the presence reflected
    c.send(f"<r xmlns='{NS_SM}'/>")
    (answer,) = [el for el in c.received() if el.tag == SM + "a"]
    assert answer.get("h") == "3"
    # The server asks once five stanzas wait, and forgets what the client acknowledges.
    bob = other_user("bob")
    for n in range(5):
        _say(bob, service, "alice", f"m{n}")
    got = c.received()
    assert len(_messages(got)) == 5
    assert [el.tag for el in got].count(SM + "r") == 1
    stanzas_in += len([el for el in got if not el.tag.startswith(SM)])
    state = c.conn.sm
    assert state is not None and len(state.queue) == stanzas_in == 8
    c.send(f"<a xmlns='{NS_SM}' h='{stanzas_in - 1}'/>")
    assert len(state.queue) == 1
    c.send(f"<a xmlns='{NS_SM}' h='{stanzas_in}'/>")
    assert len(state.queue) == 0
    assert not c.closed


def test_ack_past_what_was_sent_ends_the_stream(client, account) -> None:
    account("alice")
    c = client().login("alice", "secret1")
    _enable(c)
    c.send(f"<a xmlns='{NS_SM}' h='3'/>")
    assert c.stream_error == "undefined-condition"


def test_enable_twice_or_before_bind_fails(client, account) -> None:
    account("alice")
    c = client()
    c.open()
    c.authenticate("alice", "secret1")
    c.open()
    c.send(f"<enable xmlns='{NS_SM}'/>")
    (failed,) = c.received()
    assert failed.tag == SM + "failed"
    assert failed.find("{urn:ietf:params:xml:ns:xmpp-stanzas}unexpected-request") is not None
    c.bind("r")
    _enable(c)
    c.send(f"<enable xmlns='{NS_SM}'/>")
    assert c.received()[0].tag == SM + "failed"


def _drop(c: XmppTestClient) -> None:
    """The TCP connection is gone, without a closing tag."""
    c.closed = True
    c.conn.connectionLost(None)


def _resume(c: XmppTestClient, previd: str, h: int) -> list[etree._Element]:
    c.open()
    c.authenticate("alice", "secret1")
    c.open()
    c.send(f"<resume xmlns='{NS_SM}' previd='{previd}' h='{h}'/>")
    return c.received()


def test_drop_with_messages_in_flight_then_resume(client, account, other_user, service) -> None:
    account("alice")
    c = client().login("alice", "secret1", resource="phone", presence=True)
    previd = _enable(c).get("id")
    bob = other_user("bob")
    for n in range(3):
        _say(bob, service, "alice", f"before {n}")
    seen = _messages(c.received())
    assert [m.findtext("body") for m in seen] == ["before 0", "before 1", "before 2"]
    # The client handled only the first before its connection dropped.
    _drop(c)
    alice = service.find_user("alice")
    assert alice is not None, "a detached session keeps the user online"
    for n in range(2):
        _say(bob, service, "alice", f"while away {n}")
    assert not [n for n in bob.events if "not delivered" in str(n).lower()]
    service.clock.advance(30)
    c2 = client()
    got = _resume(c2, previd, 1)
    assert got[0].tag == SM + "resumed" and got[0].get("previd") == previd
    assert got[0].get("h") == "0"  # it sent nothing since enabling
    bodies = [m.findtext("body") for m in _messages(got)]
    assert bodies == ["before 1", "before 2", "while away 0", "while away 1"]
    # Nothing twice: the ids are those first sent, each once.
    ids = [m.get("id") for m in _messages(got)]
    assert len(set(ids)) == len(ids) == 4 and set(ids).isdisjoint(m.get("id") for m in seen[:1])
    # Sent again with when they were first sent.
    assert all(m.find("{urn:xmpp:delay}delay") is not None for m in _messages(got))
    # The resumed stream carries the session: the same full JID, stanzas flow both ways.
    reply = c2.iq("get", "<ping xmlns='urn:xmpp:ping'/>")
    assert reply.get("type") == "result"
    _say(bob, service, "alice", "after")
    assert [m.findtext("body") for m in _messages(c2.received())] == ["after"]
    c2.send("<message to='~bob@localhost' type='chat'><body>back</body></message>")
    assert any(getattr(e, "text", None) == "back" for e in bob.events)
    # The timeout no longer applies.
    service.clock.advance(120)
    assert service.find_user("alice") is not None
    assert not c2.closed


def test_resume_while_the_old_connection_still_looks_alive(
    client, account, other_user, service
) -> None:
    account("alice")
    c = client().login("alice", "secret1", resource="phone")
    previd = _enable(c).get("id")
    bob = other_user("bob")
    _say(bob, service, "alice", "one")
    c.received()
    c2 = client()
    got = _resume(c2, previd, 0)
    assert got[0].tag == SM + "resumed"
    assert [m.findtext("body") for m in _messages(got)] == ["one"]
    c._pump()
    assert c.transport.disconnecting or c.closed
    # The old connection's late close does not detach the resumed session.
    _say(bob, service, "alice", "two")
    assert [m.findtext("body") for m in _messages(c2.received())] == ["two"]


def test_resume_after_timeout_fails_and_unacked_go_back_to_senders(
    client, account, other_user, service, factory
) -> None:
    account("alice")
    c = client().login("alice", "secret1", resource="phone", presence=True)
    previd = _enable(c).get("id")
    bob = other_user("bob", protocol="irc")
    _say(bob, service, "alice", "seen and acked")
    c.received()
    c.send(f"<a xmlns='{NS_SM}' h='1'/>")
    _drop(c)
    _say(bob, service, "alice", "lost in the air")
    service.clock.advance(61)
    assert service.find_user("alice") is None
    notices = [e for e in bob.events if "Not delivered" in str(getattr(e, "text", ""))]
    assert len(notices) == 1 and "lost in the air" in notices[0].text
    assert factory.sm.bounced == 1
    c2 = client()
    got = _resume(c2, previd, 1)
    assert got[0].tag == SM + "failed"
    assert got[0].find("{urn:ietf:params:xml:ns:xmpp-stanzas}item-not-found") is not None
    assert factory.sm.resume_failed == 1
    # The failed stream may still bind afresh.
    assert c2.bind("phone")


def test_another_account_cannot_resume(client, account) -> None:
    account("alice")
    account("mallory")
    c = client().login("alice", "secret1", resource="phone")
    previd = _enable(c).get("id")
    _drop(c)
    m = client()
    m.open()
    m.authenticate("mallory", "secret1")
    m.open()
    m.send(f"<resume xmlns='{NS_SM}' previd='{previd}' h='0'/>")
    assert m.received()[0].tag == SM + "failed"


def test_unacked_queue_limit_ends_the_stream(client, account, other_user, service) -> None:
    account("alice")
    c = client().login("alice", "secret1")
    _enable(c)
    bob = other_user("bob")
    for n in range(51):
        _say(bob, service, "alice", f"m{n}")
    service.clock.advance(0)
    c.received()
    assert c.stream_error == "policy-violation"
    assert service.find_user("alice") is None


def test_without_resume_a_drop_ends_the_session(client, account) -> None:
    account("alice")
    c = client().login("alice", "secret1")
    enabled = _enable(c, resume=False)
    assert enabled.get("resume") is None and enabled.get("id") is None
    _drop(c)
    assert c.conn.service.find_user("alice") is None


@pytest.mark.parametrize("how", ["resume expired", "resumed and closed"])
def test_a_finished_session_is_freed_without_the_garbage_collector(
    factory, account, service, how: str
) -> None:
    # A burst of short connections left each one's objects to the cyclic collector, whose
    # full collections then cost a tenth of what a connection costs.
    account("alice")
    c = XmppTestClient(factory).login("alice", "secret1", presence=True)
    previd = _enable(c).get("id")
    _drop(c)
    objects = [c.conn]
    if how == "resume expired":
        service.clock.advance(61)
    else:
        carrier = XmppTestClient(factory)
        assert _resume(carrier, previd, 0)[0].tag == SM + "resumed"
        carrier.send("</stream:stream>")
        carrier.close()
        objects.append(carrier.conn)
        del carrier
    assert service.find_user("alice") is None
    refs = [weakref.ref(obj) for obj in objects]
    gc.collect()
    gc.disable()
    try:
        del c, objects
        alive = [ref() for ref in refs if ref() is not None]
        assert not alive, [gc.get_referrers(obj) for obj in alive]
    finally:
        gc.enable()


@settings(max_examples=200, deadline=None)
@given(st.integers(0, MODULO - 1), st.lists(st.integers(0, 40), max_size=30))
def test_ack_counting_wraps_at_2_32(start: int, steps: list[int]) -> None:
    """Sends and acks in any interleaving, from any starting count: the queue holds exactly
    what was sent after the last ack, across the 2^32 wrap."""
    state = StreamManagement(None)
    state.acked = start
    sent = 0
    acked = 0
    for step in steps:
        for _ in range(step):
            state.queue.append((0.0, b"<message/>"))
            sent += 1
        target = acked + (sent - acked) // 2
        assert acknowledge(state, (start + target) % MODULO)
        acked = target
        assert len(state.queue) == sent - acked
        assert state.sent == (start + sent) % MODULO
    assert not acknowledge(state, (start + sent + 1) % MODULO) or sent - acked + 1 > MODULO


# -- CSI ----------------------------------------------------------------------------------------


def _room_with(
    service: Any, other_user: Callable[..., Any], c: XmppTestClient, n: int
) -> list[Any]:
    c.send(
        "<presence to='dev@conference.localhost/alice'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
    )
    others = []
    for i in range(n):
        u = other_user(f"user{i}")
        service.join(u.core, "dev")
        others.append(u)
    c.received()
    return others


def test_csi_holds_presence_and_chatter_and_flushes_on_a_message(
    client, account, other_user, service
) -> None:
    account("alice")
    c = client().login("alice", "secret1", resource="phone", presence=True)
    others = _room_with(service, other_user, c, 3)
    c.send("<inactive xmlns='urn:xmpp:csi:0'/>")
    service.set_away(others[0].core, "lunch")
    room_say(service, others[1], "hello room")
    assert c.raw() == b""
    # A mention is urgent: what was held comes first, in order.
    room_say(service, others[2], "alice: ping")
    got = c.received()
    assert [el.tag for el in got] == ["presence", "message", "message"]
    assert got[2].findtext("body") == "alice: ping"
    # A private message is urgent; <active/> sends what waits.
    room_say(service, others[1], "more chatter")
    assert c.raw() == b""
    c.send("<active xmlns='urn:xmpp:csi:0'/>")
    assert [m.findtext("body") for m in _messages(c.received())] == ["more chatter"]


def room_say(service: Any, user: Any, text: str) -> None:
    service.say(user.core, room="dev", text=text)


class _CountingWrites:
    """Counts the writes a test client's transport gets (each one wakes a phone's radio)."""

    def __init__(self, c: XmppTestClient) -> None:
        self.writes = 0
        self.bytes = 0
        original = c.transport.write

        def write(data: bytes) -> None:
            self.writes += 1
            self.bytes += len(data)
            original(data)

        c.transport.write = write  # type: ignore[method-assign]


def test_csi_saves_an_idle_phone_bytes_and_wakeups_in_a_busy_room(
    client, account, other_user, service
) -> None:
    """Ten of thirty line-chat occupants go away and come back while others chat; an active
    and an inactive phone in the same room.  Everything the active one gets, the inactive one
    ends up with too (in the same order) except superseded presences, in far fewer writes."""
    account("active")
    account("idle")
    phones = {}
    for n, name in enumerate(("active", "idle")):
        c = client(f"127.0.0.{n + 1}").login(name, "secret1", resource="phone", presence=True)
        c.send(
            f"<presence to='dev@conference.localhost/{name}'>"
            "<x xmlns='http://jabber.org/protocol/muc'/></presence>"
        )
        phones[name] = c
    chatters = []
    for i in range(30):
        u = FakeClient(address=f"192.0.2.{i + 1}")
        u.core = service.connect(u)  # type: ignore[attr-defined]
        service.claim_nick(u.core, f"line{i}")  # type: ignore[attr-defined]
        service.join(u.core, "dev")  # type: ignore[attr-defined]
        chatters.append(u)
    for c in phones.values():
        c.received()
    phones["idle"].send("<inactive xmlns='urn:xmpp:csi:0'/>")
    counters = {name: _CountingWrites(c) for name, c in phones.items()}
    for round_ in range(20):
        for mover in chatters[:10]:
            service.set_away(mover.core, "away" if round_ % 2 == 0 else None)
        for i in range(5):
            service.say(chatters[(round_ * 5 + i) % 30].core, room="dev", text=f"chat {round_}.{i}")
    # Someone says the idle user's name: what waited comes, then the mention.
    service.say(chatters[0].core, room="dev", text="idle: are you there?")
    active = phones["active"].received()
    idle = phones["idle"].received()
    assert [m.findtext("body") for m in _messages(idle)] == [
        m.findtext("body") for m in _messages(active)
    ]
    assert len([p for p in idle if p.tag == "presence"]) == 10
    assert len([p for p in active if p.tag == "presence"]) == 200
    a, i = counters["active"], counters["idle"]
    print(
        f"\nCSI, busy room: active {a.bytes} bytes in {a.writes} writes;"
        f" inactive {i.bytes} bytes in {i.writes} writes"
        f" ({100 * (a.bytes - i.bytes) / a.bytes:.0f}% fewer bytes)"
    )
    assert i.bytes < a.bytes * 0.7
    assert i.writes <= 3


def test_unanswered_ping_detaches_a_resumable_session(client, account, other_user, service) -> None:
    account("alice")
    c = client().login("alice", "secret1", resource="phone", presence=True)
    previd = _enable(c).get("id")
    config = c.conn.config
    service.clock.advance(config.idle_timeout + 1)
    c.received()
    service.clock.advance(config.ping_timeout + 1)
    c._pump()
    assert c.transport.disconnecting
    assert c.stream_error is None, "a dead connection is left, not told off"
    assert service.find_user("alice") is not None
    bob = other_user("bob")
    _say(bob, service, "alice", "still reachable")
    c2 = client()
    got = _resume(c2, previd, 0)
    assert got[0].tag == SM + "resumed"
    assert "still reachable" in [m.findtext("body") for m in _messages(got)]


def test_closing_the_stream_ends_the_session_and_returns_what_was_unacked(
    client, account, other_user, service, factory
) -> None:
    account("alice")
    c = client().login("alice", "secret1", resource="phone", presence=True)
    previd = _enable(c).get("id")
    bob = other_user("bob")
    _say(bob, service, "alice", "read but never acknowledged")
    c.send("</stream:stream>")
    assert service.find_user("alice") is None
    notices = [e for e in bob.events if "Not delivered" in str(getattr(e, "text", ""))]
    assert len(notices) == 1 and "read but never acknowledged" in notices[0].text
    c2 = client()
    assert _resume(c2, previd, 1)[0].tag == SM + "failed"


def test_a_killed_detached_session_ends_at_once(client, account, other_user, service) -> None:
    account("alice")
    c = client().login("alice", "secret1", resource="phone", presence=True)
    previd = _enable(c).get("id")
    _drop(c)
    assert service.find_user("alice") is not None
    service.kill_user("alice", "go away")
    assert service.find_user("alice") is None
    c2 = client()
    assert _resume(c2, previd, 0)[0].tag == SM + "failed"


def test_csi_holds_chat_states_answers_iqs_and_flushes_past_its_limit(
    client, account, service, factory
) -> None:
    account("alice")
    account("bob")
    alice = client("127.0.0.1").login("alice", "secret1", resource="phone", presence=True)
    bob = client("127.0.0.2").login("bob", "secret1", resource="pc", presence=True)
    alice.send("<inactive xmlns='urn:xmpp:csi:0'/>")
    bob.send(
        "<message to='alice@localhost/phone' type='chat' id='cs1'>"
        "<composing xmlns='http://jabber.org/protocol/chatstates'/></message>"
    )
    assert alice.raw() == b""
    # An IQ is urgent, and brings the chat state with it (first).
    bob.send("<iq type='get' id='q1' to='alice@localhost/phone'><ping xmlns='urn:xmpp:ping'/></iq>")
    got = alice.received()
    assert [el.tag for el in got] == ["message", "iq"]
    assert got[0].get("id") == "cs1"
    # Past csi_max_held, everything waiting goes.
    limit = alice.conn.config.csi_max_held
    for n in range(limit + 1):
        if n % 40 == 0:
            service.clock.advance(5)  # within bob's flood budget
        bob.send(
            f"<message to='alice@localhost/phone' type='chat' id='s{n}'>"
            "<paused xmlns='http://jabber.org/protocol/chatstates'/></message>"
        )
    assert [el.get("id") for el in alice.received()] == [f"s{n}" for n in range(limit + 1)]


_OPS = st.lists(
    st.sampled_from(["say", "say", "say", "read", "ack", "answer", "drop", "resume"]),
    min_size=1,
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(_OPS)
def test_any_interleaving_of_sends_acks_drops_and_resumes_delivers_each_message_once(
    ops: list[str],
) -> None:
    """A client that reads, acknowledges, answers <r/>, loses its connection (with what was
    not yet read) and resumes, in any order: it processes every message exactly once, in
    the order sent."""
    from protocols.xmpp.factory import XmppFactory
    from tests.support.memstore import make_service

    service = make_service()
    factory = XmppFactory(
        service,
        make_xmpp_config(resume_timeout=600.0, max_unacked=10_000),
        tls_options=lambda: object(),
        clock=service.clock,
    )
    done: list[Any] = []
    service.accounts.create("alice", "secret1").addBoth(done.append)
    bob = FakeClient(address="192.0.2.9")
    bob.core = service.connect(bob)  # type: ignore[attr-defined]
    service.claim_nick(bob.core, "bob")  # type: ignore[attr-defined]

    c = XmppTestClient(factory).login("alice", "secret1", resource="phone")
    previd = _enable(c).get("id")
    handled = 0  # stanzas this client processed (its h)
    processed: list[str] = []
    sent: list[str] = []
    attached = True

    def read() -> None:
        nonlocal handled
        for el in c.received():
            if el.tag == SM + "r":
                c.send(f"<a xmlns='{NS_SM}' h='{handled}'/>")
            elif el.tag.startswith(SM):
                continue
            else:
                handled += 1
                if el.tag == "message" and el.findtext("body"):
                    processed.append(el.findtext("body"))

    for op in ops:
        if op == "say":
            text = f"m{len(sent)}"
            sent.append(text)
            service.say(bob.core, nick="alice", text=text)  # type: ignore[attr-defined]
        elif not attached:
            if op == "resume":
                c = XmppTestClient(factory)
                c.open()
                c.authenticate("alice", "secret1")
                c.open()
                c.send(f"<resume xmlns='{NS_SM}' previd='{previd}' h='{handled}'/>")
                attached = True
                read()
        elif op == "read":
            read()
        elif op == "ack":
            c.send(f"<a xmlns='{NS_SM}' h='{handled}'/>")
        elif op == "answer":
            c.send(f"<r xmlns='{NS_SM}'/>")
            read()
        elif op == "drop":
            # What the server wrote and the client never read is lost with the connection.
            c.transport.clear()
            c.closed = True
            c.conn.connectionLost(None)
            attached = False
    if not attached:
        c = XmppTestClient(factory)
        c.open()
        c.authenticate("alice", "secret1")
        c.open()
        c.send(f"<resume xmlns='{NS_SM}' previd='{previd}' h='{handled}'/>")
    read()
    assert processed == sent
    c.close()


def test_lost_carbons_are_not_returned_as_undelivered(
    client, account, other_user, service, factory
) -> None:
    account("alice")
    phone = client("127.0.0.1").login("alice", "secret1", resource="phone", presence=True)
    pc = client("127.0.0.2").login("alice", "secret1", resource="pc", presence=True)
    phone.iq("set", "<enable xmlns='urn:xmpp:carbons:2'/>")
    _enable(phone)
    bob = other_user("bob")
    pc.send("<message to='~bob@localhost' type='chat'><body>from my pc</body></message>")
    assert any(el.find("{urn:xmpp:carbons:2}sent") is not None for el in phone.received())
    _drop(phone)
    service.clock.advance(61)
    assert factory.sm.dropped == 1 and factory.sm.bounced == 0
    assert not [e for e in pc.received() if "Not delivered" in etree.tostring(e).decode()]
    assert [getattr(e, "text", None) for e in bob.events].count("from my pc") == 1


def test_a_client_may_ask_for_a_shorter_resumption_time(client, account, service) -> None:
    account("alice")
    c = client().login("alice", "secret1", resource="phone")
    c.send(f"<enable xmlns='{NS_SM}' resume='true' max='10'/>")
    (enabled,) = [el for el in c.received() if el.tag == SM + "enabled"]
    assert enabled.get("max") == "10"
    _drop(c)
    service.clock.advance(9)
    assert service.find_user("alice") is not None
    service.clock.advance(2)
    assert service.find_user("alice") is None
    # Never longer than the server allows.
    c2 = client().login("alice", "secret1", resource="phone")
    c2.send(f"<enable xmlns='{NS_SM}' resume='true' max='99999'/>")
    (enabled,) = [el for el in c2.received() if el.tag == SM + "enabled"]
    assert enabled.get("max") == "60"
