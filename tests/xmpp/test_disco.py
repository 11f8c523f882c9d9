"""Service discovery of the server and of users, ping, version, unhandled IQs."""

from __future__ import annotations

import pytest
from lxml import etree

INFO = "http://jabber.org/protocol/disco#info"
ITEMS = "http://jabber.org/protocol/disco#items"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"


@pytest.fixture
def alice(client, account):
    account("alice")
    return client().login("alice", "secret1")


def error_of(reply: etree._Element) -> str:
    assert reply.get("type") == "error", etree.tostring(reply)
    return etree.QName(reply.find("error")[0]).localname


@pytest.mark.parametrize("to", ["localhost", None])
def test_server_info(alice, to: str | None) -> None:
    reply = alice.iq("get", f"<query xmlns='{INFO}'/>", to=to)
    assert reply.get("type") == "result"
    if to:
        assert reply.get("from") == "localhost"
    identity = reply.find(f"{{{INFO}}}query/{{{INFO}}}identity")
    assert (identity.get("category"), identity.get("type")) == ("server", "im")
    features = {f.get("var") for f in reply.iter(f"{{{INFO}}}feature")}
    assert {
        INFO,
        ITEMS,
        "urn:xmpp:ping",
        "jabber:iq:version",
        "jabber:iq:register",
        "jabber:iq:roster",
    } <= features


def test_server_items_list_the_room_service(alice) -> None:
    reply = alice.iq("get", f"<query xmlns='{ITEMS}'/>", to="localhost")
    jids = [i.get("jid") for i in reply.iter(f"{{{ITEMS}}}item")]
    assert jids == ["conference.localhost"]


def test_unknown_node_is_item_not_found(alice) -> None:
    reply = alice.iq("get", f"<query xmlns='{INFO}' node='nope'/>", to="localhost")
    assert error_of(reply) == "item-not-found"


def test_user_info_is_answered_for_the_user(alice, other_user) -> None:
    other_user("bob", protocol="irc")
    # Bob is a guest: answered at his guest address, and not as an account.
    reply = alice.iq("get", f"<query xmlns='{INFO}'/>", to="~bob@localhost")
    identity = reply.find(f"{{{INFO}}}query/{{{INFO}}}identity")
    assert (identity.get("category"), identity.get("type")) == ("account", "anonymous")
    not_him = alice.iq("get", f"<query xmlns='{INFO}'/>", to="bob@localhost")
    assert error_of(not_him) == "service-unavailable"
    own = alice.iq("get", f"<query xmlns='{ITEMS}'/>", to="alice@localhost")
    assert own.get("type") == "result"
    absent = alice.iq("get", f"<query xmlns='{INFO}'/>", to="nobody@localhost")
    assert error_of(absent) == "service-unavailable"


def test_ping(alice) -> None:
    assert alice.iq("get", "<ping xmlns='urn:xmpp:ping'/>", to="localhost").get("type") == "result"
    assert alice.iq("get", "<ping xmlns='urn:xmpp:ping'/>").get("type") == "result"


def test_version(alice) -> None:
    reply = alice.iq("get", "<query xmlns='jabber:iq:version'/>", to="localhost")
    assert reply.findtext("{jabber:iq:version}query/{jabber:iq:version}name") == "chatserver"
    assert reply.findtext("{jabber:iq:version}query/{jabber:iq:version}version")
    of_user = alice.iq("get", "<query xmlns='jabber:iq:version'/>", to="alice@localhost")
    assert error_of(of_user) == "service-unavailable"


@pytest.mark.parametrize(
    "payload",
    ["<query xmlns='jabber:iq:last'/>", "<x xmlns='urn:x'/>"],
)
def test_unhandled_iqs_are_service_unavailable(alice, payload: str) -> None:
    assert error_of(alice.iq("get", payload, to="localhost")) == "service-unavailable"
    assert error_of(alice.iq("set", payload)) == "service-unavailable"


@pytest.mark.parametrize(
    "payload",
    [
        "<vCard xmlns='vcard-temp'/>",
        "<query xmlns='jabber:iq:private'><p xmlns='urn:p'/></query>",
        "<pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='n'/></pubsub>",
    ],
)
def test_the_server_itself_keeps_no_personal_data(alice, payload: str) -> None:
    assert error_of(alice.iq("get", payload, to="localhost")) == "service-unavailable"


@pytest.mark.parametrize(
    "payload",
    [
        "<ping xmlns='urn:xmpp:ping'/>",
        f"<query xmlns='{INFO}'/>",
        f"<query xmlns='{ITEMS}'/>",
        "<query xmlns='jabber:iq:version'/>",
    ],
)
def test_set_on_a_read_only_namespace_is_not_implemented(alice, payload: str) -> None:
    assert error_of(alice.iq("set", payload, to="localhost")) == "feature-not-implemented"
