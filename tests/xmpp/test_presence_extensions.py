"""What a client says in its presence, as others see it, over the real server: the avatar hash
from the stored vCard (XEP-0153) and the client's capabilities (XEP-0115) and other
extensions in its occupant presence, for XMPP occupants; an IRC user in the same room; the
account's other resources, as a resource coming online sees them."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable

import pytest
from lxml import etree

from tests.support.raw_xmpp import RawXmppClient
from tests.support.server import LineClient, ServerProcess

pytestmark = pytest.mark.timeout(60)

PASSWORD = "correct horse"
MUC = "http://jabber.org/protocol/muc"
MUC_USER = "http://jabber.org/protocol/muc#user"
CAPS = "http://jabber.org/protocol/caps"
UPDATE = "vcard-temp:x:update"
ROOM = "lounge@conference.localhost"
PHOTO = b"GIF89a not really a picture"
HASH = hashlib.sha1(PHOTO).hexdigest()


@pytest.fixture
def server(make_server: Callable[..., ServerProcess]) -> ServerProcess:
    server = make_server(protocols=("irc", "xmpp"))
    for name in ("alice", "bob"):
        server.create_account(name, PASSWORD)
    return server


def _presences(client: RawXmppClient, sender: str) -> list[etree._Element]:
    return [el for el in client.collect(0.5) if el.tag == "presence" and el.get("from") == sender]


def _caps(ver: str) -> str:
    return f"<c xmlns='{CAPS}' hash='sha-1' node='https://example.org/c' ver='{ver}'/>"


def test_avatar_hash_and_capabilities_in_occupant_presences(server: ServerProcess) -> None:
    alice = RawXmppClient(server.ports["xmpp"], "alice", PASSWORD, resource="a")
    bob = RawXmppClient(server.ports["xmpp"], "bob", PASSWORD, resource="b")
    photo = base64.b64encode(PHOTO).decode()
    reply = alice.iq(
        "set",
        "<vCard xmlns='vcard-temp'><PHOTO><TYPE>image/gif</TYPE>"
        f"<BINVAL>{photo}</BINVAL></PHOTO></vCard>",
    )
    assert reply.get("type") == "result"
    alice.send(
        f"<presence to='{ROOM}/alice'><x xmlns='{MUC}'/>{_caps('v1')}"
        "<nick xmlns='http://jabber.org/protocol/nick'>Alice A.</nick></presence>"
    )
    alice.collect()
    irc = LineClient(server.ports["irc"])
    irc.send("NICK dave")
    irc.send("USER dave 0 * :dave")
    irc.expect(" 001 dave ")
    irc.send("JOIN #lounge")
    irc.expect(" 366 ")
    bob.send(f"<presence to='{ROOM}/bob'><x xmlns='{MUC}'/></presence>")
    got = _presences(bob, f"{ROOM}/alice")
    assert len(got) == 1
    (seen,) = got
    assert seen.findtext(f"{{{UPDATE}}}x/{{{UPDATE}}}photo") == HASH
    assert seen.find(f"{{{CAPS}}}c").get("ver") == "v1"
    assert seen.findtext("{http://jabber.org/protocol/nick}nick") == "Alice A."
    assert seen.find(f"{{{MUC_USER}}}x") is not None
    # The IRC user's presence carries nothing of the kind.
    (dave,) = _presences(alice, f"{ROOM}/dave")
    assert dave.find(f"{{{CAPS}}}c") is None and dave.find(f"{{{UPDATE}}}x") is None
    # New capabilities alone: the room hears of alice again, with the client's id.
    alice.send(f"<presence to='{ROOM}/alice' id='upd-1'>{_caps('v2')}</presence>")
    (again,) = _presences(bob, f"{ROOM}/alice")
    assert again.get("id") == "upd-1"
    assert again.find(f"{{{CAPS}}}c").get("ver") == "v2"
    assert again.findtext(f"{{{UPDATE}}}x/{{{UPDATE}}}photo") == HASH
    # The same presence again changes nothing and is not repeated.
    alice.send(f"<presence to='{ROOM}/alice' id='upd-2'>{_caps('v2')}</presence>")
    assert _presences(bob, f"{ROOM}/alice") == []
    # A presence to bob directly carries the hash too; the unavailable one does not.
    alice.send("<presence to='bob@localhost/b'/>")
    (direct,) = _presences(bob, "alice@localhost/a")
    assert direct.findtext(f"{{{UPDATE}}}x/{{{UPDATE}}}photo") == HASH
    irc.close()
    alice.close()
    bob.close()


def test_an_account_left_on_irc_shows_no_client_extensions(server: ServerProcess) -> None:
    alice = RawXmppClient(server.ports["xmpp"], "alice", PASSWORD, resource="a")
    alice.send(f"<presence to='{ROOM}/alice'><x xmlns='{MUC}'/>{_caps('v1')}</presence>")
    alice.collect()
    # The same account on IRC (SASL PLAIN), then the XMPP client goes.
    irc = LineClient(server.ports["irc"])
    irc.send("CAP LS 302")
    irc.send("CAP REQ :sasl")
    irc.expect("ACK")
    irc.send("AUTHENTICATE PLAIN")
    irc.expect("AUTHENTICATE +")
    irc.send("AUTHENTICATE " + base64.b64encode(f"\0alice\0{PASSWORD}".encode()).decode())
    irc.expect(" 903 ")
    irc.send("NICK alice")
    irc.send("USER alice 0 * :alice")
    irc.send("CAP END")
    irc.expect(" 001 ")
    alice.close()
    bob = RawXmppClient(server.ports["xmpp"], "bob", PASSWORD, resource="b")
    bob.send(f"<presence to='{ROOM}/bob'><x xmlns='{MUC}'/></presence>")
    (seen,) = _presences(bob, f"{ROOM}/alice")
    assert seen.find(f"{{{CAPS}}}c") is None
    assert seen.find(f"{{{MUC_USER}}}x") is not None
    irc.close()
    bob.close()


def test_a_resource_coming_online_sees_the_accounts_other_resources(
    server: ServerProcess,
) -> None:
    desk = RawXmppClient(server.ports["xmpp"], "alice", PASSWORD, resource="desk", presence=False)
    desk.send("<presence><show>dnd</show><status>in a meeting</status></presence>")
    desk.collect()
    phone = RawXmppClient(server.ports["xmpp"], "alice", PASSWORD, resource="phone")
    # The account is subscribed to itself: each resource sees the other's presence, the
    # one already online as the new one comes, and the new one what the first says.
    seen = _presences(phone, "alice@localhost/desk")
    assert len(seen) == 1, [etree.tostring(p) for p in seen]
    assert seen[0].get("to") == "alice@localhost/phone"
    assert seen[0].findtext("show") == "dnd"
    assert seen[0].findtext("status") == "in a meeting"
    assert len(_presences(desk, "alice@localhost/phone")) == 1
