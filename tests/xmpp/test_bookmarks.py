"""Bookmarks over the real server: XEP-0402 and XEP-0048 (private storage and PEP) are one
list, and the account's own disco#info says so."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from lxml import etree

from tests.support.raw_xmpp import RawXmppClient
from tests.support.server import ServerProcess

pytestmark = pytest.mark.timeout(60)

PASSWORD = "correct horse"
PUBSUB = "http://jabber.org/protocol/pubsub"
PRIVATE = "jabber:iq:private"
BOOKMARKS = "urn:xmpp:bookmarks:1"
LEGACY = "storage:bookmarks"
DISCO_INFO = "http://jabber.org/protocol/disco#info"


@pytest.fixture
def server(make_server: Callable[..., ServerProcess]) -> ServerProcess:
    server = make_server(protocols=("xmpp",))
    for name in ("alice", "bob"):
        server.create_account(name, PASSWORD)
    return server


def _features(client: RawXmppClient, to: str) -> set[str]:
    reply = client.iq("get", f"<query xmlns='{DISCO_INFO}'/>", to=to)
    return {f.get("var") or "" for f in reply.iter(f"{{{DISCO_INFO}}}feature")}


def test_compat_advertised_on_ones_own_account_only(server: ServerProcess) -> None:
    alice = RawXmppClient(server.ports["xmpp"], "alice", PASSWORD)
    own = _features(alice, "alice@localhost")
    assert {f"{BOOKMARKS}#compat", f"{BOOKMARKS}#compat-pep"} <= own
    assert f"{BOOKMARKS}#compat" not in _features(alice, "bob@localhost")
    alice.close()


def test_one_list_whichever_way_it_is_written(server: ServerProcess) -> None:
    alice = RawXmppClient(server.ports["xmpp"], "alice", PASSWORD)
    # Nothing yet: an empty storage from private storage.
    reply = alice.iq("get", f"<query xmlns='{PRIVATE}'><storage xmlns='{LEGACY}'/></query>")
    storage = reply.find(f"{{{PRIVATE}}}query/{{{LEGACY}}}storage")
    assert storage is not None and len(storage) == 0
    # A XEP-0402 client adds a room.
    reply = alice.iq(
        "set",
        f"<pubsub xmlns='{PUBSUB}'><publish node='{BOOKMARKS}'>"
        "<item id='tea@conference.localhost'>"
        f"<conference xmlns='{BOOKMARKS}' name='Tea' autojoin='true'><nick>al</nick>"
        "</conference></item></publish></pubsub>",
    )
    assert reply.get("type") == "result"
    # A XEP-0048 client sees it, and keeps it while adding another.
    reply = alice.iq("get", f"<query xmlns='{PRIVATE}'><storage xmlns='{LEGACY}'/></query>")
    (conference,) = reply.iter(f"{{{LEGACY}}}conference")
    assert conference.attrib == {
        "jid": "tea@conference.localhost",
        "name": "Tea",
        "autojoin": "true",
    }
    assert conference.findtext(f"{{{LEGACY}}}nick") == "al"
    reply = alice.iq(
        "set",
        f"<query xmlns='{PRIVATE}'><storage xmlns='{LEGACY}'>"
        "<conference jid='tea@conference.localhost' name='Tea' autojoin='true'><nick>al</nick>"
        "</conference><conference jid='coffee@conference.localhost' name='Coffee'/>"
        "</storage></query>",
    )
    assert reply.get("type") == "result"
    reply = alice.iq("get", f"<pubsub xmlns='{PUBSUB}'><items node='{BOOKMARKS}'/></pubsub>")
    ids = sorted(i.get("id") for i in reply.iter(f"{{{PUBSUB}}}item"))
    assert ids == ["coffee@conference.localhost", "tea@conference.localhost"]
    # The legacy PEP node reads the same list, and writing it drops what it leaves out.
    reply = alice.iq("get", f"<pubsub xmlns='{PUBSUB}'><items node='{LEGACY}'/></pubsub>")
    (item,) = reply.iter(f"{{{PUBSUB}}}item")
    assert item.get("id") == "current"
    assert len(list(item.iter(f"{{{LEGACY}}}conference"))) == 2
    reply = alice.iq(
        "set",
        f"<pubsub xmlns='{PUBSUB}'><publish node='{LEGACY}'><item id='current'>"
        f"<storage xmlns='{LEGACY}'><conference jid='coffee@conference.localhost'/></storage>"
        "</item></publish></pubsub>",
    )
    assert reply.get("type") == "result"
    reply = alice.iq("get", f"<pubsub xmlns='{PUBSUB}'><items node='{BOOKMARKS}'/></pubsub>")
    assert [i.get("id") for i in reply.iter(f"{{{PUBSUB}}}item")] == ["coffee@conference.localhost"]
    # The list is the account's: another session (after a restart of the cache) reads it.
    alice.close()
    again = RawXmppClient(server.ports["xmpp"], "alice", PASSWORD, resource="again")
    reply = again.iq("get", f"<query xmlns='{PRIVATE}'><storage xmlns='{LEGACY}'/></query>")
    assert [c.get("jid") for c in reply.iter(f"{{{LEGACY}}}conference")] == [
        "coffee@conference.localhost"
    ]
    # Not for others to read (bob is no contact of alice).
    bob = RawXmppClient(server.ports["xmpp"], "bob", PASSWORD)
    reply = bob.iq(
        "get",
        f"<pubsub xmlns='{PUBSUB}'><items node='{BOOKMARKS}'/></pubsub>",
        to="alice@localhost",
    )
    assert reply.get("type") == "error", etree.tostring(reply)
    again.close()
    bob.close()


def test_legacy_storage_of_the_wrong_shape_is_refused(server: ServerProcess) -> None:
    alice = RawXmppClient(server.ports["xmpp"], "alice", PASSWORD)
    reply = alice.iq(
        "set",
        f"<pubsub xmlns='{PUBSUB}'><publish node='{LEGACY}'><item id='current'>"
        "<note xmlns='urn:example'/></item></publish></pubsub>",
    )
    assert reply.get("type") == "error"
    assert reply.find("error/{urn:ietf:params:xml:ns:xmpp-stanzas}bad-request") is not None
    # Nothing was lost.
    reply = alice.iq("get", f"<query xmlns='{PRIVATE}'><storage xmlns='{LEGACY}'/></query>")
    assert reply.find(f"{{{PRIVATE}}}query/{{{LEGACY}}}storage") is not None
    alice.close()
