"""The real server with slixmpp clients: what one XMPP client sends another arrives as itself.

Each extension that today's clients put on messages (OMEMO, receipts, markers, corrections,
replies, reactions, chat states, origin-id, thread) is sent as raw XML by one slixmpp client
and compared, child by child, with what the other receives; then carbons between two
resources, and private messages through a room.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.server import ServerProcess
from tests.support.xmpp_client import DOMAIN, SlixmppClient

pytestmark = pytest.mark.timeout(60)

PASSWORD = "correct horse"
CLIENT = "jabber:client"
ROOM = "tea@conference.localhost"

EXTENSIONS = {
    "omemo": "<encrypted xmlns='eu.siacs.conversations.axolotl'><header sid='27'>"
    "<key rid='31'>a2V5</key><iv>aXY=</iv></header><payload>cGF5</payload></encrypted>"
    "<encryption xmlns='urn:xmpp:eme:0' namespace='eu.siacs.conversations.axolotl'/>"
    "<body>I sent you an OMEMO encrypted message.</body>",
    "receipt request": "<body>hi</body><request xmlns='urn:xmpp:receipts'/>",
    "receipt": "<received xmlns='urn:xmpp:receipts' id='x-0'/>",
    "marker": "<displayed xmlns='urn:xmpp:chat-markers:0' id='x-0'/>",
    "markable": "<body>mark me</body><markable xmlns='urn:xmpp:chat-markers:0'/>",
    "correction": "<body>fixed</body><replace xmlns='urn:xmpp:message-correct:0' id='x-0'/>",
    "reply": "<body>yes</body><reply xmlns='urn:xmpp:reply:0' to='alice@localhost/a' id='x-0'/>",
    "reaction": "<reactions xmlns='urn:xmpp:reactions:0' id='x-0'><reaction>\U0001f44d"
    "</reaction></reactions><store xmlns='urn:xmpp:hints'/>",
    "chat state": "<composing xmlns='http://jabber.org/protocol/chatstates'/>",
    # An attribute value with an ampersand, as a link in an out-of-band URL or a reply
    # fallback has: relayed as written, not as "&#38;".
    "ampersand in an attribute": "<body>see</body>"
    "<x xmlns='urn:example:link' href='https://example.org/?a=1&amp;b=2' alt='&lt;&amp;&gt;'/>",
    "origin-id and thread": "<body>threaded</body><thread parent='p-1'>t-1</thread>"
    "<origin-id xmlns='urn:xmpp:sid:0' id='o-1'/>",
}


SID = "{urn:xmpp:sid:0}stanza-id"


def stamped(el: ET.Element, by: str) -> tuple[ET.Element, str | None]:
    """``el`` without the ``<stanza-id/>`` the server stamps on an archived message (by
    ``by``, XEP-0359), and that stamp's id (None when there is none)."""
    stamps = [c for c in el if c.tag == SID]
    assert len(stamps) <= 1 and all(c.get("by") == by for c in stamps)
    for c in stamps:
        el.remove(c)
    return el, stamps[0].get("id") if stamps else None


def children(el: ET.Element) -> list[tuple[str, dict[str, str], str]]:
    """Every element below ``el``: name, attributes (xml:lang aside), text."""
    out = []
    for node in el.iter():
        if node is el:
            continue
        attrs = {k: v for k, v in node.attrib.items() if not k.endswith("}lang")}
        out.append((node.tag, attrs, (node.text or "").strip()))
    return out


class Client(SlixmppClient):
    def __init__(
        self,
        port: int,
        user: str,
        resource: str,
        plugins: tuple[str, ...] = (),
        *,
        presence: bool = True,
    ) -> None:
        super().__init__(
            port,
            f"{user}@{DOMAIN}/{resource}",
            PASSWORD,
            plugins=("xep_0030", *plugins),
            events=("carbon_sent", "carbon_received"),
            setup=self._every_message,
        )
        assert self.logged_in
        if presence:
            self.do(self.xmpp.send_presence)

    def _every_message(self, xmpp: Any) -> None:
        """Queue every message stanza as "message" (slixmpp's own event wants a body)."""
        from slixmpp.xmlstream.handler import Callback
        from slixmpp.xmlstream.matcher import MatchXPath

        xmpp.register_handler(
            Callback(
                "every message",
                MatchXPath(f"{{{CLIENT}}}message"),
                lambda msg: self.events.put(("message", msg)),
            )
        )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("fidelity"), protocols=("xmpp",))
    server.start()
    for name in ("alice", "bob"):
        server.create_account(name, PASSWORD)
    yield server
    server.kill()


@pytest.fixture
def connect(server: ServerProcess) -> Iterator[Callable[..., Client]]:
    made: list[Client] = []

    def make(
        user: str, resource: str, plugins: tuple[str, ...] = (), *, presence: bool = True
    ) -> Client:
        client = Client(server.ports["xmpp"], user, resource, plugins, presence=presence)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@pytest.mark.parametrize("name", sorted(EXTENSIONS))
def test_the_stanza_arrives_as_itself(connect: Callable[..., Client], name: str) -> None:
    alice = connect("alice", "a")
    bob = connect("bob", "b")
    stanza_id = "ext-" + name.replace(" ", "-")
    raw = f"<message xmlns='{CLIENT}' to='bob@localhost' type='chat' id='{stanza_id}'>"
    raw += EXTENSIONS[name] + "</message>"
    alice.do(alice.xmpp.send_raw, raw)
    got: Any = bob.expect_event("message", lambda m: m["id"] == stanza_id)
    assert str(got["from"]) == "alice@localhost/a"
    # Only a message with a body is archived, so only it gets the server's stanza-id.
    xml, archive_id = stamped(got.xml, "bob@localhost")
    assert (archive_id is not None) == ("<body>" in raw)
    assert children(xml) == children(ET.fromstring(raw))


@pytest.mark.parametrize("name", ["receipt", "marker", "reaction"])
def test_a_bodyless_message_waits_for_the_initial_presence(
    connect: Callable[..., Client], name: str
) -> None:
    # Bob has logged in and bound a resource, but his initial presence is not there yet (a
    # client sends it right after): what comes meanwhile reaches him with that presence.
    bob = connect("bob", "b", presence=False)
    alice = connect("alice", "a")
    stanza_id = "early-" + name
    raw = f"<message xmlns='{CLIENT}' to='bob@localhost' type='chat' id='{stanza_id}'>"
    raw += EXTENSIONS[name] + "</message>"
    alice.do(alice.xmpp.send_raw, raw)
    # Alice's next stanza is answered after hers was routed.
    alice.wait(alice.xmpp.plugin["xep_0030"].get_info, jid="localhost")
    bob.do(bob.xmpp.send_presence)
    got: Any = bob.expect_event("message", lambda m: m["id"] == stanza_id)
    assert children(got.xml) == children(ET.fromstring(raw))


def test_carbons_between_two_resources(connect: Callable[..., Client]) -> None:
    phone = connect("alice", "phone", ("xep_0280",))
    desk = connect("alice", "desk", ("xep_0280",))
    bob = connect("bob", "b")
    for client in (phone, desk):
        client.wait(client.xmpp.plugin["xep_0280"].enable)
    raw = (
        f"<message xmlns='{CLIENT}' to='bob@localhost' type='chat' id='cc-1'><body>sent</body>"
        "<request xmlns='urn:xmpp:receipts'/></message>"
    )
    phone.do(phone.xmpp.send_raw, raw)
    bob.expect_event("message", lambda m: m["id"] == "cc-1")
    copy: Any = desk.expect_event("carbon_sent", lambda m: True)
    inner = copy["carbon_sent"]
    assert (inner["id"], str(inner["from"]), str(inner["to"])) == (
        "cc-1",
        "alice@localhost/phone",
        "bob@localhost",
    )
    xml, archive_id = stamped(inner.xml, "alice@localhost")
    assert archive_id is not None
    assert children(xml) == children(ET.fromstring(raw))
    bob.do(
        bob.xmpp.send_raw,
        f"<message xmlns='{CLIENT}' to='alice@localhost/phone' type='chat' id='cc-2'>"
        "<body>to the phone</body></message>",
    )
    phone.expect_event("message", lambda m: m["id"] == "cc-2")
    received: Any = desk.expect_event("carbon_received", lambda m: True)
    assert received["carbon_received"]["id"] == "cc-2"


def test_room_private_messages_come_from_the_occupant(connect: Callable[..., Client]) -> None:
    alice = connect("alice", "a", ("xep_0045",))
    bob = connect("bob", "b", ("xep_0045",))
    for client, nick in ((alice, "alice"), (bob, "bob")):
        client.wait(client.muc.join_muc_wait, ROOM, nick, maxstanzas=0)
    alice.do(
        alice.xmpp.send_raw,
        f"<message xmlns='{CLIENT}' to='{ROOM}/bob' type='chat' id='pm-1'><body>psst</body>"
        "</message>",
    )
    got: Any = bob.expect_event("message", lambda m: m["id"] == "pm-1")
    assert str(got["from"]) == f"{ROOM}/alice" and got["body"] == "psst"
    assert got.xml.find("{http://jabber.org/protocol/muc#user}x") is not None
    alice.do(
        alice.xmpp.send_raw,
        f"<message xmlns='{CLIENT}' to='{ROOM}' type='groupchat' id='gc-1'>"
        "<reactions xmlns='urn:xmpp:reactions:0' id='x'><reaction>\U0001f44d</reaction>"
        "</reactions></message>",
    )
    reaction: Any = bob.expect_event("message", lambda m: m["id"] == "gc-1")
    assert str(reaction["from"]) == f"{ROOM}/alice"
    assert reaction.xml.find("{urn:xmpp:reactions:0}reactions") is not None
