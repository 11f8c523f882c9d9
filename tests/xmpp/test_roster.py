"""Rosters and presence: get/set/push, subscription states, broadcast, probes, away."""

from __future__ import annotations

import dataclasses
from typing import Any

from lxml import etree
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from chatserver.core.records import RosterItem
from protocols.xmpp.roster_store import IRosterStore
from tests.xmpp.conftest import XmppTestClient

NS_ROSTER = "jabber:iq:roster"
Q = f"{{{NS_ROSTER}}}"


def items(c: XmppTestClient) -> dict[str, dict[str, Any]]:
    reply = c.iq("get", f"<query xmlns='{NS_ROSTER}'/>")
    assert reply.get("type") == "result", etree.tostring(reply)
    return {
        i.get("jid"): {
            "name": i.get("name"),
            "subscription": i.get("subscription"),
            "ask": i.get("ask"),
            "groups": [g.text for g in i.findall(f"{Q}group")],
        }
        for i in reply.iter(f"{Q}item")
    }


def pushes(els: list[etree._Element]) -> list[tuple[str, str, str | None]]:
    out = []
    for el in els:
        item = el.find(f"{Q}query/{Q}item")
        if el.tag == "iq" and el.get("type") == "set" and item is not None:
            out.append((item.get("jid"), item.get("subscription"), item.get("ask")))
    return out


def presences(els: list[etree._Element]) -> list[tuple[str | None, str | None]]:
    return [(el.get("from"), el.get("type")) for el in els if el.tag == "presence"]


def login(client, name: str, resource: str = "r", presence: bool = True) -> XmppTestClient:
    c = client().login(name, "secret1", resource=resource)
    items(c)  # ask for the roster: this resource now gets pushes
    if presence:
        c.send("<presence/>")
    c.received()
    return c


def test_roster_set_get_update_and_remove(client, account) -> None:
    account("alice")
    c = login(client, "alice")
    other = login(client, "alice", "other")
    assert items(c) == {}
    reply = c.iq(
        "set",
        f"<query xmlns='{NS_ROSTER}'><item jid='Bob@LocalHost' name='Bobby'>"
        "<group>Friends</group><group>Work</group></item></query>",
    )
    assert reply.get("type") == "result"
    assert pushes(c.received()) == [("bob@localhost", "none", None)]
    assert pushes(other.received()) == [("bob@localhost", "none", None)]
    assert items(c) == {
        "bob@localhost": {
            "name": "Bobby",
            "subscription": "none",
            "ask": None,
            "groups": ["Friends", "Work"],
        }
    }
    c.iq("set", f"<query xmlns='{NS_ROSTER}'><item jid='bob@localhost' name='B'/></query>")
    assert items(c)["bob@localhost"]["name"] == "B"
    assert pushes(other.received()) == [("bob@localhost", "none", None)]
    c.received()
    reply = c.iq(
        "set",
        f"<query xmlns='{NS_ROSTER}'><item jid='bob@localhost' subscription='remove'/></query>",
    )
    assert reply.get("type") == "result"
    assert pushes(other.received()) == [("bob@localhost", "remove", None)]
    assert items(c) == {}


def test_roster_set_errors(client, account) -> None:
    account("alice")
    c = login(client, "alice")

    def error_of(payload: str) -> str:
        reply = c.iq("set", f"<query xmlns='{NS_ROSTER}'>{payload}</query>")
        assert reply.get("type") == "error"
        return etree.QName(reply.find("error")[0]).localname

    assert error_of("") == "bad-request"
    assert error_of("<item jid='a@localhost'/><item jid='b@localhost'/>") == "bad-request"
    assert error_of("<item jid='a@b@c'/>") == "jid-malformed"
    assert error_of("<item jid='a@localhost/res'/>") == "bad-request"
    assert error_of("<item jid='alice@localhost'/>") == "not-allowed"
    assert error_of("<item jid='x@localhost'><group></group></item>") == "not-acceptable"
    assert error_of("<item jid='x@localhost' subscription='remove'/>") == "item-not-found"
    other = c.iq("get", f"<query xmlns='{NS_ROSTER}'/>", to="bob@localhost")
    assert other.find("error/{urn:ietf:params:xml:ns:xmpp-stanzas}forbidden") is not None


def test_the_roster_is_kept_per_account(client, account) -> None:
    account("alice")
    c = login(client, "alice")
    c.iq("set", f"<query xmlns='{NS_ROSTER}'><item jid='bob@localhost'/></query>")
    c.close()
    again = login(client, "alice", "again")
    assert list(items(again)) == ["bob@localhost"]


def test_initial_presence_is_echoed_and_unavailable_too(client, account) -> None:
    account("alice")
    c = client().login("alice", "secret1", resource="r")
    c.send("<presence id='p1'><status>here</status></presence>")
    [echo] = c.received()
    assert echo.get("from") == "alice@localhost/r" and echo.get("to") == "alice@localhost/r"
    assert echo.findtext("status") == "here"
    assert c.conn.available
    c.send("<presence type='unavailable'/>")
    [echo] = c.received()
    assert echo.get("type") == "unavailable"
    assert not c.conn.available


def test_resources_of_one_account_see_each_other(client, account) -> None:
    account("alice")
    phone = login(client, "alice", "phone")
    desk = login(client, "alice", "desk")
    assert ("alice@localhost/desk", None) in presences(phone.received())
    desk.close()
    assert presences(phone.received()) == [("alice@localhost/desk", "unavailable")]


def test_subscription_between_two_accounts(client, account) -> None:
    account("alice")
    account("bob")
    alice = login(client, "alice")
    bob = login(client, "bob")

    alice.send("<presence to='bob@localhost' type='subscribe'/>")
    assert pushes(alice.received()) == [("bob@localhost", "none", "subscribe")]
    got = bob.received()
    assert presences(got) == [("alice@localhost", "subscribe")]
    assert pushes(got) == []  # a pending request does not show in bob's roster yet
    assert items(bob) == {}

    bob.send("<presence to='alice@localhost' type='subscribed'/>")
    assert pushes(bob.received()) == [("alice@localhost", "from", None)]
    got = alice.received()
    assert pushes(got) == [("bob@localhost", "to", None)]
    assert presences(got) == [("bob@localhost", "subscribed"), ("bob@localhost/r", None)]
    assert items(alice)["bob@localhost"]["subscription"] == "to"
    assert items(bob)["alice@localhost"]["subscription"] == "from"

    # Bob's presence changes reach alice; alice's do not reach bob (one direction only).
    bob.send("<presence><show>dnd</show></presence>")
    [p] = [el for el in alice.received() if el.tag == "presence"]
    assert p.get("from") == "bob@localhost/r" and p.findtext("show") == "dnd"
    bob.received()
    alice.send("<presence><show>chat</show></presence>")
    assert presences(bob.received()) == []

    # And the other direction.
    bob.send("<presence to='alice@localhost' type='subscribe'/>")
    alice.received()
    alice.send("<presence to='bob@localhost' type='subscribed'/>")
    assert items(alice)["bob@localhost"]["subscription"] == "both"
    assert items(bob)["alice@localhost"]["subscription"] == "both"
    assert ("alice@localhost/r", None) in presences(bob.received())

    # Bob goes away: alice sees him unavailable.
    bob.close()
    assert ("bob@localhost/r", "unavailable") in presences(alice.received())


def test_unsubscribe_and_unsubscribed(client, account) -> None:
    account("alice")
    account("bob")
    alice = login(client, "alice")
    bob = login(client, "bob")
    alice.send("<presence to='bob@localhost' type='subscribe'/>")
    bob.send("<presence to='alice@localhost' type='subscribed'/>")
    alice.received()
    bob.received()

    alice.send("<presence to='bob@localhost' type='unsubscribe'/>")
    got = alice.received()
    assert pushes(got) == [("bob@localhost", "none", None)]
    assert ("bob@localhost/r", "unavailable") in presences(got)
    got = bob.received()
    assert ("alice@localhost", "unsubscribe") in presences(got)
    assert pushes(got) == [("alice@localhost", "none", None)]

    # A refused request.
    alice.send("<presence to='bob@localhost' type='subscribe'/>")
    alice.received()
    bob.received()
    bob.send("<presence to='alice@localhost' type='unsubscribed'/>")
    got = alice.received()
    assert ("bob@localhost", "unsubscribed") in presences(got)
    assert pushes(got) == [("bob@localhost", "none", None)]


def test_subscribed_without_a_request_does_nothing(client, account) -> None:
    account("alice")
    account("bob")
    alice = login(client, "alice")
    bob = login(client, "bob")
    bob.send("<presence to='alice@localhost' type='subscribed'/>")
    assert alice.received() == [] and bob.received() == []
    assert items(alice) == {} and items(bob) == {}


def test_a_request_waits_for_an_offline_account(client, account) -> None:
    account("alice")
    account("bob")
    alice = login(client, "alice")
    alice.send("<presence to='bob@localhost' type='subscribe'/>")
    alice.received()
    bob = client().login("bob", "secret1", resource="r")
    bob.send("<presence/>")
    assert ("alice@localhost", "subscribe") in presences(bob.received())
    bob.send("<presence to='alice@localhost' type='subscribed'/>")
    assert items(alice)["bob@localhost"]["subscription"] == "to"


def test_subscribing_to_a_guest_is_approved_at_once(client, account, other_user, service) -> None:
    account("alice")
    other_user("carol", protocol="irc")
    alice = login(client, "alice")
    alice.send("<presence to='~carol@localhost' type='subscribe'/>")
    got = alice.received()
    assert pushes(got)[-1] == ("~carol@localhost", "to", None)
    assert ("~carol@localhost", "subscribed") in presences(got)
    assert ("~carol@localhost", None) in presences(got)


def test_contacts_on_other_protocols_come_and_go(client, account, other_user, service) -> None:
    account("alice")
    alice = login(client, "alice")
    alice.send("<presence to='~dave@localhost' type='subscribe'/>")
    alice.received()
    dave = other_user("dave", protocol="irc")
    assert presences(alice.received()) == [("~dave@localhost", None)]
    # A subscription follows the contact whether or not they share a room.
    service.set_away(dave.core, "lunch")
    [away] = alice.received()
    assert away.get("from") == "~dave@localhost" and away.findtext("show") == "away"
    assert away.findtext("status") == "lunch"
    service.quit(dave.core, "bye")
    assert presences(alice.received()) == [("~dave@localhost", "unavailable")]
    # Initial presence of a later session probes the contact.
    other_user("dave", protocol="line")
    later = client().login("alice", "secret1", resource="later")
    later.send("<presence/>")
    assert ("~dave@localhost", None) in presences(later.received())


def test_away_of_a_contact_in_a_shared_room(client, account, other_user, service) -> None:
    account("alice")
    alice = login(client, "alice")
    erin = other_user("erin", protocol="irc")
    alice.send("<presence to='~erin@localhost' type='subscribe'/>")
    service.join(erin.core, "tea")
    service.join(alice.conn.core, "tea")
    alice.received()
    service.set_away(erin.core, "brb")
    [p] = [
        el
        for el in alice.received()
        if el.tag == "presence" and el.get("from") == "~erin@localhost"
    ]
    assert p.findtext("show") == "away" and p.findtext("status") == "brb"


def test_probe_is_answered_for_subscribed_contacts(client, account, other_user) -> None:
    account("alice")
    alice = login(client, "alice")
    other_user("frank", protocol="line")
    alice.send("<presence to='~frank@localhost' type='probe'/>")
    assert alice.received() == []  # not subscribed: nothing
    alice.send("<presence to='~frank@localhost' type='subscribe'/>")
    alice.received()
    alice.send("<presence to='~frank@localhost' type='probe'/>")
    assert presences(alice.received()) == [("~frank@localhost", None)]


def test_show_maps_to_core_away(client, account, service) -> None:
    account("alice")
    c = login(client, "alice")
    user = service.find_user("alice")
    c.send("<presence><show>away</show><status>lunch</status></presence>")
    assert user.away == "lunch"
    c.send("<presence><show>xa</show></presence>")
    assert user.away == "Extended away"
    c.send("<presence><show>chat</show></presence>")
    assert user.away is None
    c.send("<presence><show>dnd</show><status>busy</status></presence>")
    assert user.away == "busy"
    c.send("<presence/>")
    assert user.away is None


def test_directed_presence(client, account) -> None:
    account("alice")
    account("bob")
    alice = login(client, "alice")
    bob = login(client, "bob")
    alice.send("<presence to='bob@localhost/r'><status>psst</status></presence>")
    [p] = bob.received()
    assert p.get("from") == "alice@localhost/r" and p.findtext("status") == "psst"


def limit_rosters(factory: Any, limit: int) -> None:
    # As a reload does: the factory's section is replaced, and every stream sees it at once.
    factory.config = dataclasses.replace(factory.config, max_roster_items=limit)


def error_condition(el: etree._Element) -> tuple[str | None, str]:
    error = el.find("error")
    assert el.get("type") == "error" and error is not None, etree.tostring(el)
    return error.get("type"), etree.QName(error[0]).localname


def stored(factory: Any, account: str) -> list[str]:
    return sorted(factory.roster_store.rosters.get(account, {}))


def test_roster_set_past_the_limit_is_refused(client, account, factory) -> None:
    account("alice")
    limit_rosters(factory, 2)
    c = login(client, "alice")
    for jid in ("a@localhost", "b@localhost"):
        assert (
            c.iq("set", f"<query xmlns='{NS_ROSTER}'><item jid='{jid}'/></query>").get("type")
            == "result"
        )
    c.received()
    reply = c.iq("set", f"<query xmlns='{NS_ROSTER}'><item jid='c@localhost'/></query>")
    assert error_condition(reply) == ("cancel", "not-allowed")
    assert reply.findtext("error/{urn:ietf:params:xml:ns:xmpp-stanzas}text") == (
        "your roster is full (limit 2)"
    )
    assert pushes(c.received()) == []
    assert list(items(c)) == ["a@localhost", "b@localhost"]
    assert stored(factory, "alice") == ["a@localhost", "b@localhost"]
    # At the limit an item already there still changes, and a removal makes room.
    reply = c.iq("set", f"<query xmlns='{NS_ROSTER}'><item jid='a@localhost' name='A'/></query>")
    assert reply.get("type") == "result"
    assert items(c)["a@localhost"]["name"] == "A"
    c.iq(
        "set", f"<query xmlns='{NS_ROSTER}'><item jid='b@localhost' subscription='remove'/></query>"
    )
    reply = c.iq("set", f"<query xmlns='{NS_ROSTER}'><item jid='c@localhost'/></query>")
    assert reply.get("type") == "result"
    assert stored(factory, "alice") == ["a@localhost", "c@localhost"]


def test_a_subscription_request_from_a_full_roster_is_refused(client, account, factory) -> None:
    account("alice")
    account("bob")
    limit_rosters(factory, 1)
    alice = login(client, "alice")
    bob = login(client, "bob")
    alice.iq("set", f"<query xmlns='{NS_ROSTER}'><item jid='x@localhost'/></query>")
    alice.received()
    alice.send("<presence to='bob@localhost' type='subscribe' id='s1'/>")
    [error] = alice.received()
    assert error.tag == "presence" and error.get("from") == "bob@localhost"
    assert error.get("id") == "s1"
    assert error_condition(error) == ("cancel", "not-allowed")
    # Nothing was stored on either side, and bob was not asked.
    assert bob.received() == []
    assert stored(factory, "alice") == ["x@localhost"]
    assert stored(factory, "bob") == []
    # A contact already in the full roster may be asked.
    alice.iq(
        "set", f"<query xmlns='{NS_ROSTER}'><item jid='x@localhost' subscription='remove'/></query>"
    )
    alice.iq("set", f"<query xmlns='{NS_ROSTER}'><item jid='bob@localhost'/></query>")
    alice.received()
    alice.send("<presence to='bob@localhost' type='subscribe'/>")
    assert pushes(alice.received()) == [("bob@localhost", "none", "subscribe")]
    assert presences(bob.received()) == [("alice@localhost", "subscribe")]


def test_a_request_to_a_full_roster_is_refused(client, account, factory) -> None:
    account("alice")
    account("bob")
    account("carol")
    limit_rosters(factory, 1)
    alice = login(client, "alice")
    carol = login(client, "carol")
    # Carol's request waits in bob's roster, hidden: it counts all the same.
    carol.send("<presence to='bob@localhost' type='subscribe'/>")
    carol.received()
    assert stored(factory, "bob") == ["carol@localhost"]
    alice.send("<presence to='bob@localhost' type='subscribe'/>")
    [error] = alice.received()
    assert error_condition(error) == ("cancel", "not-allowed")
    assert error.findtext("error/{urn:ietf:params:xml:ns:xmpp-stanzas}text") == (
        "the contact's roster is full (limit 1)"
    )
    assert stored(factory, "alice") == []
    assert stored(factory, "bob") == ["carol@localhost"]
    # Bob answers the request that waited: an update, so the full roster takes it.
    bob = client().login("bob", "secret1", resource="r")
    bob.send("<presence to='carol@localhost' type='subscribed'/>")
    assert items(bob)["carol@localhost"]["subscription"] == "from"


class SqliteRosterTests(unittest.TestCase):
    """The roster table in the real store (migration and IRosterStore methods)."""

    async def test_items_round_trip_and_go_with_the_account(self) -> None:
        import tempfile

        from chatserver.core.records import AccountRecord
        from chatserver.storage.sqlite import SqliteStore

        path = tempfile.mkdtemp()
        store = SqliteStore(f"{path}/chat.db")
        self.addCleanup(store.close)
        await store.open()
        # The wiring hands this store to XMPP as its roster store.
        self.assertTrue(verifyObject(IRosterStore, store, tentative=True))
        await store.create_account(AccountRecord("Alice", (), 1.0))
        item = RosterItem("bob@localhost", "Bobby", ("a", "b"), "to", "subscribe", pending_in=True)
        await store.set_item("alice", item)
        await store.set_item("ALICE", RosterItem("carol@localhost", in_roster=False))
        got = await store.get_roster("Alice")
        self.assertEqual(got, [item, RosterItem("carol@localhost", in_roster=False)])
        self.assertTrue(await store.remove_item("alice", "carol@localhost"))
        self.assertFalse(await store.remove_item("alice", "carol@localhost"))
        await store.delete_account("alice")
        self.assertEqual(await store.get_roster("alice"), [])


def test_roster_versioning(client, account) -> None:
    account("alice")
    c = client().login("alice", "secret1", resource="r")
    assert c.features is not None
    first = c.iq("get", f"<query xmlns='{NS_ROSTER}' ver=''/>")
    ver = first.find(f"{Q}query").get("ver")
    assert ver
    # The client's copy is current: an empty result.
    same = c.iq("get", f"<query xmlns='{NS_ROSTER}' ver='{ver}'/>")
    assert same.get("type") == "result" and len(same) == 0
    c.iq("set", f"<query xmlns='{NS_ROSTER}'><item jid='bob@localhost'/></query>")
    (push,) = [el for el in c.received() if el.tag == "iq" and el.get("type") == "set"]
    new_ver = push.find(f"{Q}query").get("ver")
    assert new_ver and new_ver != ver
    # An old version gets the whole roster with the new version.
    stale = c.iq("get", f"<query xmlns='{NS_ROSTER}' ver='{ver}'/>")
    assert stale.find(f"{Q}query").get("ver") == new_ver
    assert [i.get("jid") for i in stale.iter(f"{Q}item")] == ["bob@localhost"]
    current = c.iq("get", f"<query xmlns='{NS_ROSTER}' ver='{new_ver}'/>")
    assert len(current) == 0
