"""XMPP to XMPP, stanzas relayed whole: one-to-one, carbons, and private messages in rooms.

What another protocol's user gets of the same message is in test_im.py and tests/matrix.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from chatserver.core.events import Message

CARBONS = "urn:xmpp:carbons:2"
FORWARD = "urn:xmpp:forward:0"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
MUC = "conference.localhost"

EXTENSIONS = (
    "<thread>th-1</thread>"
    "<request xmlns='urn:xmpp:receipts'/>"
    "<markable xmlns='urn:xmpp:chat-markers:0'/>"
    "<origin-id xmlns='urn:xmpp:sid:0' id='o-1'/>"
    "<active xmlns='http://jabber.org/protocol/chatstates'/>"
    "<encrypted xmlns='eu.siacs.conversations.axolotl'><header sid='7'><key rid='9'>a2V5"
    "</key><iv>aXY=</iv></header><payload>cGF5</payload></encrypted>"
)


def shape(el) -> list[tuple[str, dict[str, str], str]]:  # type: ignore[no-untyped-def]
    """Every element below ``el``: tag, attributes, text (what "arrives as itself" means)."""
    return [(c.tag, dict(c.attrib), (c.text or "").strip()) for c in el.iter() if c is not el]


def two(client, account):  # type: ignore[no-untyped-def]
    account("alice")
    account("bob")
    alice = client().login("alice", "secret1", resource="a", presence=True)
    bob = client().login("bob", "secret1", resource="b", presence=True)
    alice.received()
    bob.received()
    return alice, bob


def test_a_message_arrives_as_it_was_sent(client, account, other_user) -> None:
    alice, bob = two(client, account)
    carol = other_user("carol", protocol="irc")
    sent = f"<message to='bob@localhost' type='chat' id='m-1'><body>hi</body>{EXTENSIONS}</message>"
    alice.send(sent)
    [got] = bob.received()
    assert (got.get("from"), got.get("to"), got.get("id")) == (
        "alice@localhost/a",
        "bob@localhost",
        "m-1",
    )
    assert got.get(XML_LANG) == "en"
    original = etree.fromstring(sent.replace("<message ", "<message xmlns='jabber:client' "))
    for node in original.iter():
        node.tag = node.tag.replace("{jabber:client}", "")
    assert shape(got) == shape(original)
    # Not for carol: an XMPP message to bob is for bob.
    assert carol.of(Message) == []


def test_body_less_messages_and_receipts_arrive_as_themselves(client, account) -> None:
    alice, bob = two(client, account)
    for payload in (
        "<received xmlns='urn:xmpp:receipts' id='m-1'/>",
        "<displayed xmlns='urn:xmpp:chat-markers:0' id='m-1'/>",
        "<composing xmlns='http://jabber.org/protocol/chatstates'/>",
        "<reactions xmlns='urn:xmpp:reactions:0' id='m-1'><reaction>\U0001f44d</reaction>"
        "</reactions>",
    ):
        bob.send(f"<message to='alice@localhost/a' type='chat' id='r-1'>{payload}</message>")
        [got] = alice.received()
        assert got.get("id") == "r-1" and got.get("from") == "bob@localhost/b"
        [child] = list(got)
        assert child.tag.startswith("{") and len(shape(got)) >= 1


def test_corrections_and_replies_keep_their_references(client, account, other_user) -> None:
    alice, bob = two(client, account)
    alice.send(
        "<message to='bob@localhost' type='chat' id='m-2'><body>hello, bob</body>"
        "<replace xmlns='urn:xmpp:message-correct:0' id='m-1'/></message>"
    )
    [got] = bob.received()
    assert got.find("{urn:xmpp:message-correct:0}replace").get("id") == "m-1"
    bob.send(
        "<message to='alice@localhost' type='chat' id='m-3'><body>&gt; hello\nhi</body>"
        "<reply xmlns='urn:xmpp:reply:0' to='alice@localhost/a' id='m-1'/></message>"
    )
    [got] = alice.received()
    assert got.find("{urn:xmpp:reply:0}reply").get("id") == "m-1"


def test_a_stanza_id_from_a_client_is_not_passed_on(client, account) -> None:
    alice, bob = two(client, account)
    alice.send(
        "<message to='bob@localhost' type='chat' id='m-1'><body>trust me</body>"
        "<stanza-id xmlns='urn:xmpp:sid:0' by='bob@localhost' id='forged'/></message>"
    )
    [got] = bob.received()
    assert got.find("{urn:xmpp:sid:0}stanza-id") is None


def test_a_message_to_ones_own_full_jid_is_delivered(client, account) -> None:
    account("alice")
    a = client().login("alice", "secret1", resource="a", presence=True)
    b = client().login("alice", "secret1", resource="b", presence=True)
    a.received()
    b.received()
    a.send("<message to='alice@localhost/a' type='chat' id='n-1'><body>note</body></message>")
    [got] = a.received()
    assert got.get("id") == "n-1" and got.findtext("body") == "note"
    assert b.received() == []
    a.send("<message to='alice@localhost/b' type='chat' id='n-2'><body>to b</body></message>")
    [got] = b.received()
    assert got.get("id") == "n-2" and a.received() == []


def test_a_message_to_a_resource_goes_to_it_and_carbons_to_the_others(client, account) -> None:
    alice, bob = two(client, account)
    desk = client().login("alice", "secret1", resource="desk", presence=True)
    plain = client().login("alice", "secret1", resource="plain", presence=True)
    for c in (alice, desk, plain):
        c.received()
    reply = desk.iq("set", f"<enable xmlns='{CARBONS}'/>")
    assert reply.get("type") == "result"
    bob.send("<message to='alice@localhost/a' type='chat' id='x-1'><body>for a</body></message>")
    [direct] = alice.received()
    assert direct.get("id") == "x-1"
    [copy] = desk.received()
    inner = copy.find(f"{{{CARBONS}}}received/{{{FORWARD}}}forwarded/message")
    assert copy.get("from") == "alice@localhost" and copy.get("to") == "alice@localhost/desk"
    assert (inner.get("id"), inner.get("from"), inner.get("to")) == (
        "x-1",
        "bob@localhost/b",
        "alice@localhost/a",
    )
    assert plain.received() == []  # no carbons asked for
    # To a resource that is not there: as to the bare JID, every resource.
    bob.send("<message to='alice@localhost/gone' type='chat' id='x-2'><body>?</body></message>")
    for c in (alice, desk, plain):
        assert [m.get("id") for m in c.received()] == ["x-2"]


def test_private_messages_are_not_copied(client, account) -> None:
    alice, bob = two(client, account)
    desk = client().login("alice", "secret1", resource="desk", presence=True)
    desk.received()
    desk.iq("set", f"<enable xmlns='{CARBONS}'/>")
    alice.send(
        "<message to='bob@localhost' type='chat' id='s-1'><body>secret</body>"
        f"<private xmlns='{CARBONS}'/></message>"
    )
    [got] = bob.received()
    # The note to the server is taken off the stanza on its way.
    assert got.find(f"{{{CARBONS}}}private") is None and got.findtext("body") == "secret"
    assert desk.received() == []
    alice.send("<message to='bob@localhost' type='chat' id='s-2'><body>copied</body></message>")
    [copy] = desk.received()
    assert copy.find(f"{{{CARBONS}}}sent") is not None


def test_room_private_messages_come_from_the_occupant_jid(
    client, account, other_user, service
) -> None:
    alice, bob = two(client, account)
    dan = other_user("dan", protocol="irc")
    for c in (alice, bob):
        c.send(
            f"<presence to='dev@{MUC}/{c.conn.account}'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
        )
        c.received()
    service.join(dan.core, "dev")
    alice.received()
    bob.received()
    alice.send(
        f"<message to='dev@{MUC}/bob' type='chat' id='p-1'><body>psst</body>"
        "<request xmlns='urn:xmpp:receipts'/></message>"
    )
    [got] = bob.received()
    assert (got.get("from"), got.get("to"), got.get("id")) == (
        f"dev@{MUC}/alice",
        "bob@localhost/b",
        "p-1",
    )
    assert got.find("{http://jabber.org/protocol/muc#user}x") is not None
    assert got.find("{urn:xmpp:receipts}request") is not None
    assert alice.received() == []
    # To an IRC occupant: a private message from alice, as IRC has them.
    alice.send(f"<message to='dev@{MUC}/dan' type='chat' id='p-2'><body>hi dan</body></message>")
    [msg] = dan.of(Message)
    assert (msg.source.nick, msg.target, msg.text) == ("alice", "dan", "hi dan")
    # Chat states through the room: to XMPP occupants only.
    alice.send(
        f"<message to='dev@{MUC}/bob' type='chat'>"
        "<composing xmlns='http://jabber.org/protocol/chatstates'/></message>"
    )
    [state] = bob.received()
    assert state.get("from") == f"dev@{MUC}/alice"


def test_client_state_indication_does_not_end_the_stream(client, account) -> None:
    alice, bob = two(client, account)
    alice.send("<inactive xmlns='urn:xmpp:csi:0'/>")
    assert alice.stream_error is None and not alice.closed
    bob.send(
        "<message to='alice@localhost' type='chat' id='i-1'><body>still there?</body></message>"
    )
    alice.send("<active xmlns='urn:xmpp:csi:0'/>")
    assert [m.get("id") for m in alice.received() if m.tag == "message"] == ["i-1"]
    assert alice.stream_error is None and not alice.closed


def test_a_chat_state_to_someone_not_connected_is_service_unavailable(
    client, account, other_user
) -> None:
    alice, _bob = two(client, account)
    alice.send(
        "<message to='nobody@localhost' type='chat' id='z-1'>"
        "<composing xmlns='http://jabber.org/protocol/chatstates'/></message>"
    )
    [err] = alice.received()
    assert (err.get("type"), err.get("id"), err.get("from")) == ("error", "z-1", "nobody@localhost")
    assert err.find("error/{urn:ietf:params:xml:ns:xmpp-stanzas}service-unavailable") is not None
    # Someone connected on IRC only: nothing for them to see, and nothing to complain of.
    # (dan is a guest: his address is ~dan@localhost.)
    other_user("dan", protocol="irc")
    alice.send(
        "<message to='~dan@localhost' type='chat' id='z-2'>"
        "<composing xmlns='http://jabber.org/protocol/chatstates'/></message>"
    )
    assert alice.received() == []


# -- any extension, relayed as itself --------------------------------------------------------

_XML_TEXT = st.text(
    st.characters(
        codec="utf-8",
        exclude_categories=("Cs", "Cc"),
        exclude_characters="\ufffe\uffff",
    ),
    max_size=20,
)
_NAMES = st.from_regex(r"[a-z][a-z0-9_-]{0,7}", fullmatch=True)
_NAMESPACES = st.sampled_from(
    ["urn:example:a", "urn:xmpp:reactions:0", "eu.siacs.conversations.axolotl", "urn:x:b"]
)


@st.composite
def _extension(draw, depth: int = 0):  # type: ignore[no-untyped-def]
    ns = draw(_NAMESPACES)
    el = etree.Element(f"{{{ns}}}{draw(_NAMES)}", nsmap={None: ns})
    for key, value in draw(st.dictionaries(_NAMES, _XML_TEXT, max_size=3)).items():
        el.set(key, value)
    el.text = draw(_XML_TEXT)
    if depth < 2:
        for child in draw(st.lists(_extension(depth + 1), max_size=2)):
            el.append(child)
    return el


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(extensions=st.lists(_extension(), min_size=1, max_size=3))
def test_any_extension_arrives_as_itself(client, account, service, extensions) -> None:
    # Fixtures are shared by the examples: one pair of clients for them all.
    pair = _pairs.get(id(service))
    if pair is None:
        _pairs.clear()
        pair = _pairs[id(service)] = two(client, account)
    alice, bob = pair
    # Each example is a moment later, within the flood budget.
    service.clock.advance(1)
    sent = etree.Element("message", {"to": "bob@localhost", "type": "chat", "id": "h-1"})
    etree.SubElement(sent, "body").text = "with extensions"
    for ext in extensions:
        sent.append(ext)
    alice.send(etree.tostring(sent))
    [got] = bob.received()
    assert shape(got) == shape(sent)


_pairs: dict[int, tuple[object, object]] = {}
