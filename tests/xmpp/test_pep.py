"""PEP (XEP-0163) over PubSub (XEP-0060), entity capabilities (XEP-0115), private XML storage
(XEP-0049) and vCard-temp (XEP-0054), through real streams of the XMPP factory."""

from __future__ import annotations

import dataclasses

from lxml import etree
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from chatserver.core.records import PepItem, PepNode
from protocols.xmpp import caps
from protocols.xmpp.pep_store import IPepStore, MemoryPepStore
from tests.xmpp.conftest import XmppTestClient, make_xmpp_config

PS = "http://jabber.org/protocol/pubsub"
EV = "http://jabber.org/protocol/pubsub#event"
OWNER = "http://jabber.org/protocol/pubsub#owner"
ERRS = "http://jabber.org/protocol/pubsub#errors"
DISCO = "http://jabber.org/protocol/disco#info"
AXOLOTL = "eu.siacs.conversations.axolotl.devicelist"
STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"


def login(client, name: str, resource: str = "r") -> XmppTestClient:
    c = client().login(name, "secret1", resource=resource)
    c.iq("get", "<query xmlns='jabber:iq:roster'/>")
    c.received()
    return c


def befriend(a: XmppTestClient, a_name: str, b: XmppTestClient, b_name: str) -> None:
    """Each subscribed to the other's presence."""
    for x, y, y_name, x_name in ((a, b, b_name, a_name), (b, a, a_name, b_name)):
        x.send(f"<presence to='{y_name}@localhost' type='subscribe'/>")
        y.send(f"<presence to='{x_name}@localhost' type='subscribed'/>")
    a.received()
    b.received()


def options(**fields: str) -> str:
    inner = "".join(
        f"<field var='pubsub#{k}'><value>{v}</value></field>" for k, v in fields.items()
    )
    return (
        "<publish-options><x xmlns='jabber:x:data' type='submit'>"
        f"<field var='FORM_TYPE' type='hidden'><value>{PS}#publish-options</value></field>"
        f"{inner}</x></publish-options>"
    )


def publish(
    c: XmppTestClient, node: str, payload: str, item_id: str | None = "current", opts: str = ""
) -> etree._Element:
    id_attr = f" id='{item_id}'" if item_id else ""
    return c.iq(
        "set",
        f"<pubsub xmlns='{PS}'><publish node='{node}'><item{id_attr}>{payload}</item>"
        f"</publish>{opts}</pubsub>",
    )


def get_items(c: XmppTestClient, owner: str, node: str, extra: str = "") -> etree._Element:
    return c.iq("get", f"<pubsub xmlns='{PS}'><items node='{node}'{extra}/></pubsub>", to=owner)


def item_ids(reply: etree._Element) -> list[str]:
    return [i.get("id") for i in reply.iter(f"{{{PS}}}item")]


def condition(reply: etree._Element) -> tuple[str | None, list[str]]:
    error = reply.find("error")
    assert error is not None, etree.tostring(reply)
    names = [etree.QName(c).localname for c in error]
    return error.get("type"), [n for n in names if n != "text"]


def announce_caps(c: XmppTestClient, features: list[str]) -> None:
    """Send presence with caps and answer the server's disco#info query as a client does."""
    info = etree.Element(f"{{{DISCO}}}query", nsmap={None: DISCO})
    identity = etree.SubElement(info, f"{{{DISCO}}}identity")
    identity.attrib.update({"category": "client", "type": "pc", "name": "t"})
    for var in features:
        etree.SubElement(info, f"{{{DISCO}}}feature").set("var", var)
    ver = caps.ver_of(info)
    node = "https://example.org/client"
    c.send(
        f"<presence><c xmlns='{caps.NS_CAPS}' hash='sha-1' node='{node}' ver='{ver}'/></presence>"
    )
    queries = [
        el for el in c.pending if el.tag == "iq" and el.find(f"{{{DISCO}}}query") is not None
    ]
    if not queries:
        return  # known ver: no question asked
    (query,) = queries
    c.pending.remove(query)
    assert query.get("type") == "get" and query.get("to") == c.conn.jid
    assert query.find(f"{{{DISCO}}}query").get("node") == f"{node}#{ver}"
    info.set("node", f"{node}#{ver}")
    c.send(
        f"<iq type='result' id='{query.get('id')}' to='{query.get('from')}'>"
        + etree.tostring(info).decode()
        + "</iq>"
    )


def events(els: list[etree._Element]) -> list[tuple[str, str, list[str]]]:
    out = []
    for el in els:
        items = el.find(f"{{{EV}}}event/{{{EV}}}items")
        if el.tag == "message" and items is not None:
            ids = [i.get("id") for i in items if isinstance(i.tag, str)]
            out.append((el.get("from"), items.get("node"), ids))
    return out


def test_caps_verification_string_matches_xep_0115_example() -> None:
    info = etree.fromstring(
        f"<query xmlns='{DISCO}'><identity category='client' type='pc' name='Exodus 0.9.1'/>"
        "<feature var='http://jabber.org/protocol/caps'/>"
        f"<feature var='{DISCO}'/>"
        "<feature var='http://jabber.org/protocol/disco#items'/>"
        "<feature var='http://jabber.org/protocol/muc'/></query>"
    )
    assert caps.ver_of(info) == "QgayPKawpkPSDYmwT/WM94uAlu0="


def test_account_disco_advertises_pep_and_publish_options(client, account) -> None:
    account("alice")
    c = login(client, "alice")
    reply = c.iq("get", f"<query xmlns='{DISCO}'/>", to="alice@localhost")
    identities = {(i.get("category"), i.get("type")) for i in reply.iter(f"{{{DISCO}}}identity")}
    features = {f.get("var") for f in reply.iter(f"{{{DISCO}}}feature")}
    assert ("pubsub", "pep") in identities
    assert f"{PS}#publish-options" in features and f"{PS}#publish" in features
    server = c.iq("get", f"<query xmlns='{DISCO}'/>", to="localhost")
    server_features = {f.get("var") for f in server.iter(f"{{{DISCO}}}feature")}
    assert {"vcard-temp", "jabber:iq:private", caps.NS_CAPS} <= server_features


def test_publish_then_items_for_owner_and_subscriber_not_stranger(client, account) -> None:
    for name in ("alice", "bob", "eve"):
        account(name)
    alice, bob, eve = login(client, "alice"), login(client, "bob"), login(client, "eve")
    befriend(alice, "alice", bob, "bob")
    reply = publish(
        alice, "urn:xmpp:avatar:metadata", "<metadata xmlns='urn:xmpp:avatar:metadata'/>"
    )
    assert reply.get("type") == "result", etree.tostring(reply)
    assert item_ids(reply) == ["current"]
    own = get_items(alice, "alice@localhost", "urn:xmpp:avatar:metadata")
    assert item_ids(own) == ["current"]
    assert own.find(f".//{{{PS}}}item/{{urn:xmpp:avatar:metadata}}metadata") is not None
    assert item_ids(get_items(bob, "alice@localhost", "urn:xmpp:avatar:metadata")) == ["current"]
    # The default access model is presence: eve does not receive alice's presence.
    refused = get_items(eve, "alice@localhost", "urn:xmpp:avatar:metadata")
    assert refused.get("type") == "error"
    assert condition(refused) == ("auth", ["not-authorized", "presence-subscription-required"])
    missing = get_items(bob, "alice@localhost", "nothing-here")
    assert condition(missing) == ("cancel", ["item-not-found"])


def test_open_access_model_and_precondition(client, account) -> None:
    account("alice")
    account("eve")
    alice, eve = login(client, "alice"), login(client, "eve")
    devices = "<list xmlns='eu.siacs.conversations.axolotl'><device id='1234'/></list>"
    reply = publish(alice, AXOLOTL, devices, opts=options(access_model="open"))
    assert reply.get("type") == "result", etree.tostring(reply)
    got = get_items(eve, "alice@localhost", AXOLOTL)
    assert got.find(".//{eu.siacs.conversations.axolotl}device").get("id") == "1234"
    # Publishing with options the node does not have is refused, and nothing is lost.
    clash = publish(alice, AXOLOTL, devices, opts=options(access_model="whitelist"))
    assert condition(clash) == ("cancel", ["conflict", "precondition-not-met"])
    assert item_ids(get_items(eve, "alice@localhost", AXOLOTL)) == ["current"]
    # The owner reconfigures the node; then the same publication goes through.
    form = (
        "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>"
        f"<value>{PS}#node_config</value></field>"
        "<field var='pubsub#access_model'><value>whitelist</value></field></x>"
    )
    configured = alice.iq(
        "set", f"<pubsub xmlns='{OWNER}'><configure node='{AXOLOTL}'>{form}</configure></pubsub>"
    )
    assert configured.get("type") == "result", etree.tostring(configured)
    config = alice.iq("get", f"<pubsub xmlns='{OWNER}'><configure node='{AXOLOTL}'/></pubsub>")
    values = {
        f.get("var"): f.findtext("{jabber:x:data}value")
        for f in config.iter("{jabber:x:data}field")
    }
    assert values["pubsub#access_model"] == "whitelist"
    assert (
        publish(alice, AXOLOTL, devices, opts=options(access_model="whitelist")).get("type")
        == "result"
    )
    assert condition(get_items(eve, "alice@localhost", AXOLOTL))[1][0] == "not-authorized"


def test_only_the_owner_publishes(client, account) -> None:
    account("alice")
    account("eve")
    login(client, "alice")
    eve = login(client, "eve")
    reply = eve.iq(
        "set",
        f"<pubsub xmlns='{PS}'><publish node='n'><item><x xmlns='urn:x'/></item></publish></pubsub>",
        to="alice@localhost",
    )
    assert condition(reply) == ("auth", ["forbidden"])


def test_max_items_keeps_newest_and_items_filters(client, account) -> None:
    account("alice")
    alice = login(client, "alice")
    node = "urn:xmpp:bookmarks:1"
    for room in ("a", "b", "c", "d"):
        reply = publish(
            alice,
            node,
            f"<conference xmlns='urn:xmpp:bookmarks:1' name='{room}'/>",
            item_id=f"{room}@conference.localhost",
            opts=options(access_model="whitelist", max_items="3", persist_items="true"),
        )
        assert reply.get("type") == "result", etree.tostring(reply)
    ids = item_ids(get_items(alice, "alice@localhost", node))
    # Newest first; the oldest went past max_items.
    assert ids == ["d@conference.localhost", "c@conference.localhost", "b@conference.localhost"]
    assert item_ids(get_items(alice, "alice@localhost", node, " max_items='1'")) == [
        "d@conference.localhost"
    ]
    one = alice.iq(
        "get",
        f"<pubsub xmlns='{PS}'><items node='{node}'><item id='c@conference.localhost'/></items>"
        "</pubsub>",
    )
    assert item_ids(one) == ["c@conference.localhost"]
    # Republishing an id replaces it (and makes it the newest).
    publish(
        alice,
        node,
        "<conference xmlns='urn:xmpp:bookmarks:1' name='B2'/>",
        item_id="b@conference.localhost",
        opts=options(access_model="whitelist", max_items="3", persist_items="true"),
    )
    got = get_items(alice, "alice@localhost", node)
    assert item_ids(got)[0] == "b@conference.localhost" and len(item_ids(got)) == 3
    # Retract, then the node is one shorter.
    retracted = alice.iq(
        "set",
        f"<pubsub xmlns='{PS}'><retract node='{node}'><item id='c@conference.localhost'/>"
        "</retract></pubsub>",
    )
    assert retracted.get("type") == "result"
    assert "c@conference.localhost" not in item_ids(get_items(alice, "alice@localhost", node))
    gone = alice.iq(
        "set",
        f"<pubsub xmlns='{PS}'><retract node='{node}'><item id='nope'/></retract></pubsub>",
    )
    assert condition(gone) == ("cancel", ["item-not-found"])
    deleted = alice.iq("set", f"<pubsub xmlns='{OWNER}'><delete node='{node}'/></pubsub>")
    assert deleted.get("type") == "result"
    # The owner's own absent node reads as empty (others get item-not-found).
    after = get_items(alice, "alice@localhost", node)
    assert after.get("type") == "result" and item_ids(after) == []


def test_generated_item_id_and_bad_publications(client, account) -> None:
    account("alice")
    alice = login(client, "alice")
    reply = publish(
        alice,
        "urn:xmpp:nick",
        "<nick xmlns='http://jabber.org/protocol/nick'>A</nick>",
        item_id=None,
    )
    (generated,) = item_ids(reply)
    assert generated
    empty = alice.iq("set", f"<pubsub xmlns='{PS}'><publish node='x'><item/></publish></pubsub>")
    assert condition(empty) == ("modify", ["bad-request", "invalid-payload"])
    no_node = alice.iq(
        "set", f"<pubsub xmlns='{PS}'><publish><item><x xmlns='urn:x'/></item></publish></pubsub>"
    )
    assert condition(no_node) == ("modify", ["not-acceptable", "nodeid-required"])
    bad_model = publish(alice, "n", "<x xmlns='urn:x'/>", opts=options(access_model="roster"))
    assert condition(bad_model) == ("modify", ["not-acceptable"])


def test_account_limits_refuse_cleanly(client, account, service) -> None:
    from protocols.xmpp.factory import XmppFactory

    config = make_xmpp_config(pep_max_items=3, pep_max_bytes=4096)
    factory = XmppFactory(service, config, tls_options=lambda: object(), clock=service.clock)
    account("alice")
    alice = XmppTestClient(factory).login("alice", "secret1", resource="r")
    for n in range(3):
        assert publish(alice, f"node{n}", "<x xmlns='urn:x'/>").get("type") == "result"
    full = publish(alice, "node3", "<x xmlns='urn:x'/>")
    assert condition(full) == ("cancel", ["not-allowed"])
    assert "3 items" in full.findtext(f"error/{{{STANZAS}}}text")
    # Replacing an item of a full account is fine: it does not grow.
    assert publish(alice, "node0", "<y xmlns='urn:x'/>").get("type") == "result"
    big = "<x xmlns='urn:x'>" + "a" * 5000 + "</x>"
    too_big = publish(alice, "node1", big)
    assert condition(too_big) == ("cancel", ["not-allowed"])
    assert "bytes" in too_big.findtext(f"error/{{{STANZAS}}}text")
    # Private storage and vCards count towards the same limit.
    priv = alice.iq("set", "<query xmlns='jabber:iq:private'><p xmlns='urn:p'/></query>")
    assert condition(priv) == ("cancel", ["not-allowed"])
    # What was there is intact.
    assert item_ids(get_items(alice, "alice@localhost", "node1")) == ["current"]
    alice.close()


def test_notifications_follow_caps_notify(client, account) -> None:
    account("alice")
    account("bob")
    alice, bob = login(client, "alice"), login(client, "bob")
    bob2 = login(client, "bob", "two")
    befriend(alice, "alice", bob, "bob")
    announce_caps(bob, [DISCO, f"{AXOLOTL}+notify"])
    bob2.send("<presence/>")  # available, but no +notify
    announce_caps(alice, [DISCO, f"{AXOLOTL}+notify"])
    for c in (alice, bob, bob2):
        c.received()
    devices = "<list xmlns='eu.siacs.conversations.axolotl'><device id='7'/></list>"
    assert publish(alice, AXOLOTL, devices, opts=options(access_model="open")).get("type") == (
        "result"
    )
    assert events(bob.received()) == [("alice@localhost", AXOLOTL, ["current"])]
    assert events(alice.received()) == [("alice@localhost", AXOLOTL, ["current"])]
    assert events(bob2.received()) == []
    # A node nobody asked for notifies nobody.
    publish(alice, "urn:other", "<x xmlns='urn:x'/>")
    assert events(bob.received()) == []


def test_last_item_on_caps_and_ver_cache(client, account, factory) -> None:
    account("alice")
    account("bob")
    alice, bob = login(client, "alice"), login(client, "bob")
    befriend(alice, "alice", bob, "bob")
    devices = "<list xmlns='eu.siacs.conversations.axolotl'><device id='7'/></list>"
    publish(alice, AXOLOTL, devices, opts=options(access_model="open"))
    bob.received()
    later = login(client, "bob", "later")
    announce_caps(later, [DISCO, f"{AXOLOTL}+notify"])
    got = later.received()
    assert ("alice@localhost", AXOLOTL, ["current"]) in events(got)
    # The ver is now known: a second client with it is not asked again.
    assert len(factory.caps) == 1
    third = login(client, "bob", "third")
    announce_caps(third, [DISCO, f"{AXOLOTL}+notify"])
    assert ("alice@localhost", AXOLOTL, ["current"]) in events(third.received())


def test_caps_answer_not_matching_its_hash_is_not_cached(client, account, factory) -> None:
    account("alice")
    alice = login(client, "alice")
    alice.send(
        f"<presence><c xmlns='{caps.NS_CAPS}' hash='sha-1' node='n' ver='bogus'/></presence>"
    )
    (query,) = [el for el in alice.received() if el.tag == "iq"]
    alice.send(
        f"<iq type='result' id='{query.get('id')}' to='localhost'><query xmlns='{DISCO}'>"
        f"<feature var='{AXOLOTL}+notify'/></query></iq>"
    )
    assert factory.caps == {}
    assert f"{AXOLOTL}+notify" in caps.features(alice.conn)


def test_private_storage(client, account) -> None:
    account("alice")
    account("eve")
    alice, eve = login(client, "alice"), login(client, "eve")
    query = "<query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'/></query>"
    empty = alice.iq("get", query)
    assert empty.find("{jabber:iq:private}query/{storage:bookmarks}storage") is not None
    stored = alice.iq(
        "set",
        "<query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'>"
        "<conference jid='a@conference.localhost' autojoin='true'/></storage></query>",
    )
    assert stored.get("type") == "result"
    got = alice.iq("get", query)
    conf = got.find(
        "{jabber:iq:private}query/{storage:bookmarks}storage/{storage:bookmarks}conference"
    )
    assert conf is not None and conf.get("jid") == "a@conference.localhost"
    assert condition(eve.iq("get", query, to="alice@localhost")) == ("auth", ["forbidden"])
    bad = alice.iq("get", "<query xmlns='jabber:iq:private'><x/></query>")
    assert condition(bad) == ("modify", ["not-acceptable"])


def test_vcard_set_get_by_others(client, account) -> None:
    account("alice")
    account("eve")
    alice, eve = login(client, "alice"), login(client, "eve")
    mine = alice.iq("get", "<vCard xmlns='vcard-temp'/>")
    assert mine.get("type") == "result"
    assert condition(eve.iq("get", "<vCard xmlns='vcard-temp'/>", to="alice@localhost"))[1] == [
        "item-not-found"
    ]
    assert (
        alice.iq(
            "set", "<vCard xmlns='vcard-temp'><FN>Alice A</FN><NICKNAME>al</NICKNAME></vCard>"
        ).get("type")
        == "result"
    )
    theirs = eve.iq("get", "<vCard xmlns='vcard-temp'/>", to="alice@localhost")
    assert theirs.findtext("{vcard-temp}vCard/{vcard-temp}FN") == "Alice A"
    forged = eve.iq("set", "<vCard xmlns='vcard-temp'><FN>x</FN></vCard>", to="alice@localhost")
    assert condition(forged) == ("auth", ["forbidden"])


class MemoryPepStoreTest(unittest.TestCase):
    def test_interface_and_round_trip(self) -> None:
        store = MemoryPepStore()
        verifyObject(IPepStore, store)
        node = PepNode("n", items=(PepItem("1", "<x xmlns='urn:x'/>", 1.0),))
        store.save_pep_node("Alice", node)
        got: list = []
        store.get_pep("alice").addCallback(got.append)
        assert got == [[node]]
        removed: list = []
        store.delete_pep_node("ALICE", "pep", "n").addCallback(removed.append)
        assert removed == [True]


def test_server_caps_in_stream_features_match_its_disco(client, account) -> None:
    account("alice")
    c = client()
    c.open()
    c.authenticate("alice", "secret1")
    c.open()
    c.received()
    advertised = c.features.find(f"{{{caps.NS_CAPS}}}c")
    assert advertised is not None and advertised.get("hash") == "sha-1"
    c.bind("r")
    info = c.iq("get", f"<query xmlns='{DISCO}'/>", to="localhost")
    assert caps.ver_of(info.find(f"{{{DISCO}}}query")) == advertised.get("ver")


def test_server_caps_follow_a_change_of_its_features(service, client, account) -> None:
    # Closing in-band registration (a reload) takes jabber:iq:register out of the server's
    # disco#info: the ver advertised from then on is that of the new feature set.
    account("alice")

    def advertised_and_disco() -> tuple[str, str]:
        c = client()
        c.open()
        c.authenticate("alice", "secret1")
        c.open()
        c.received()
        advertised = c.features.find(f"{{{caps.NS_CAPS}}}c")
        assert advertised is not None
        c.bind("r")
        info = c.iq("get", f"<query xmlns='{DISCO}'/>", to="localhost")
        return advertised.get("ver"), caps.ver_of(info.find(f"{{{DISCO}}}query"))

    open_ver, open_disco = advertised_and_disco()
    service.apply_settings(dataclasses.replace(service.settings, registration="closed"))
    closed_ver, closed_disco = advertised_and_disco()
    assert open_ver == open_disco and closed_ver == closed_disco
    assert open_ver != closed_ver
