"""Multi-user chat against Prosody: joining, groupchat with extensions, body-less messages,
private messages through the room, presence updates to the room."""

from __future__ import annotations

import pytest

from tests.support.xmpp_differential import (
    Session,
    archive_stanza_id,
    assert_same,
    body_less_stanza_id,
    occupant_presence,
    room_logged,
)

pytestmark = pytest.mark.timeout(120)

ROOM = "tea@conference.localhost"
ROOM2 = "coffee@conference.localhost"
ROOM3 = "juice@conference.localhost"
ROOM4 = "water@conference.localhost"
MUC = "http://jabber.org/protocol/muc"
RULES = (
    archive_stanza_id,
    body_less_stanza_id,
    occupant_presence,
    room_logged,
)


def join(s: Session, name: str, room: str = ROOM) -> None:
    s.send(
        name,
        f"<presence to='{room}/{name}' id='c-join-{name}'>"
        f"<x xmlns='{MUC}'><history maxstanzas='0'/></x></presence>",
    )


def room_chat(s: Session) -> None:
    s.login("alice", "alice", "a")
    s.login("bob", "bob", "b")
    s.drain()
    join(s, "alice")
    s.settle()
    join(s, "bob")
    s.settle()
    s.send(
        "alice",
        f"<message to='{ROOM}' type='groupchat' id='c-1'><body>hello room</body>"
        "<markable xmlns='urn:xmpp:chat-markers:0'/>"
        "<origin-id xmlns='urn:xmpp:sid:0' id='c-1'/></message>",
    )
    s.settle()
    s.send(
        "alice",
        f"<message to='{ROOM}' type='groupchat' id='c-2'><body>hello, room</body>"
        "<replace xmlns='urn:xmpp:message-correct:0' id='c-1'/></message>",
    )
    s.send(
        "bob",
        f"<message to='{ROOM}' type='groupchat' id='c-3'><body>&gt; hello\nhi</body>"
        f"<reply xmlns='urn:xmpp:reply:0' to='{ROOM}/alice' id='c-1'/></message>",
    )
    s.settle()


def test_room_chat(run) -> None:
    ours, theirs = run(room_chat, rules=RULES)
    assert_same(ours, theirs)


def reflection_before_later_answers(s: Session) -> None:
    """Groupchat messages and a ping in one write: the reflections and the ping's result
    come back in the order they were sent."""
    s.login("alice", "alice", "a")
    s.drain()
    join(s, "alice", ROOM4)
    s.settle()
    s.send(
        "alice",
        f"<message to='{ROOM4}' type='groupchat' id='c-9'><body>first</body></message>"
        "<iq type='get' id='c-ping' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>"
        f"<message to='{ROOM4}' type='groupchat' id='c-10'><body>second</body></message>",
    )
    s.settle(ordered=True)


def test_reflections_and_answers_in_the_order_sent(run) -> None:
    ours, theirs = run(reflection_before_later_answers, rules=RULES)
    assert_same(ours, theirs)
    ids = ("c-9", "c-ping", "c-10")

    def answered(transcript: dict[str, list[list[str]]]) -> list[str]:
        """The ids of alice's stanzas' answers, in the order she got them."""
        lines = [line for step in transcript["alice"] for line in step]
        return [i for line in lines for i in ids if f"id='{i}'" in line or f'id="{i}"' in line]

    # assert_same compares each step's stanzas whatever their order: here it counts (the
    # step is recorded in the order it arrived).
    assert answered(ours) == answered(theirs) == list(ids)


def body_less(s: Session) -> None:
    s.login("alice", "alice", "a")
    s.login("bob", "bob", "b")
    s.drain()
    join(s, "alice", ROOM2)
    s.drain()
    join(s, "bob", ROOM2)
    s.drain()
    s.send(
        "bob",
        f"<message to='{ROOM2}' type='groupchat' id='c-4'>"
        "<reactions xmlns='urn:xmpp:reactions:0' id='c-1'><reaction>\U0001f44d</reaction>"
        "</reactions><store xmlns='urn:xmpp:hints'/></message>",
    )
    s.settle()
    s.send(
        "bob",
        f"<message to='{ROOM2}' type='groupchat' id='c-5'>"
        "<composing xmlns='http://jabber.org/protocol/chatstates'/></message>",
    )
    s.settle()
    s.send(
        "bob",
        f"<message to='{ROOM2}' type='groupchat' id='c-6'>"
        "<displayed xmlns='urn:xmpp:chat-markers:0' id='c-1'/></message>",
    )
    s.settle()


def test_body_less_room_messages(run) -> None:
    ours, theirs = run(body_less, rules=RULES)
    assert_same(ours, theirs)


def private_and_presence(s: Session) -> None:
    s.login("alice", "alice", "a")
    s.login("bob", "bob", "b")
    s.drain()
    join(s, "alice", ROOM3)
    s.drain()
    join(s, "bob", ROOM3)
    s.drain()
    s.send(
        "bob",
        f"<message to='{ROOM3}/alice' type='chat' id='c-7'><body>psst</body>"
        f"<x xmlns='{MUC}#user'/></message>",
    )
    s.settle()
    s.send(
        "alice",
        f"<message to='{ROOM3}/bob' type='chat' id='c-8'>"
        "<composing xmlns='http://jabber.org/protocol/chatstates'/></message>",
    )
    s.settle()
    s.send(
        "alice", f"<presence to='{ROOM3}/alice'><show>away</show><status>brb</status></presence>"
    )
    s.settle()


def test_private_messages_and_presence(run) -> None:
    ours, theirs = run(private_and_presence, rules=RULES)
    assert_same(ours, theirs)


CAPS = "http://jabber.org/protocol/caps"


def client_extensions(s: Session) -> None:
    """What a client puts in its presence to the room (capabilities, its own extensions) is
    in its occupant presence, for the others and for itself; a change of them alone is
    announced again."""
    room = "soda@conference.localhost"
    s.login("alice", "alice", "a")
    s.login("bob", "bob", "b")
    s.drain()
    s.send(
        "alice",
        f"<presence to='{room}/alice' id='c-join-alice'>"
        f"<x xmlns='{MUC}'><history maxstanzas='0'/></x>"
        f"<c xmlns='{CAPS}' hash='sha-1' node='https://example.org/a' ver='QgayPKawpkPSDYmwT/WM94uAlu0='/>"
        "<mood xmlns='http://jabber.org/protocol/mood'><happy/></mood></presence>",
    )
    s.drain()
    s.send(
        "bob",
        f"<presence to='{room}/bob' id='c-join-bob'><x xmlns='{MUC}'><history maxstanzas='0'/></x>"
        f"<c xmlns='{CAPS}' hash='sha-1' node='https://example.org/b' ver='q07IKJEyjvHSyhy//CH0CxmKi8w='/>"
        "</presence>",
    )
    s.settle()
    s.send(
        "alice",
        f"<presence to='{room}/alice' id='c-update'>"
        f"<c xmlns='{CAPS}' hash='sha-1' node='https://example.org/a' ver='AAAAKawpkPSDYmwT/WM94uAlu0='/>"
        "</presence>",
    )
    s.settle()


def test_client_extensions_in_occupant_presences(run) -> None:
    ours, theirs = run(client_extensions, rules=RULES)
    assert_same(ours, theirs)
    # The rule that evens out presences touches neither caps nor the client's own children.
    (alice_seen,) = [p for p in ours["bob"][0] if "alice" in p and "c-join-bob" not in p]
    assert "QgayPKawpkPSDYmwT" in alice_seen and "mood" in alice_seen
