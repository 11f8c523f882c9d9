"""Discovery of the room service and its rooms; pings to rooms and to oneself in a room."""

from __future__ import annotations

from lxml import etree

from chatserver.core.events import ModeItem
from chatserver.core.service import ChatService
from tests.xmpp.test_muc_harness import MUC, Occupant, error_condition, other

INFO = "http://jabber.org/protocol/disco#info"
ITEMS = "http://jabber.org/protocol/disco#items"
DATA = "jabber:x:data"


def query(occupant: Occupant, to: str, ns: str, node: str | None = None) -> etree._Element:
    node_attr = f" node='{node}'" if node else ""
    occupant.feed(f"<iq type='get' id='q' to='{to}'><query xmlns='{ns}'{node_attr}/></iq>")
    (iq,) = occupant.take()
    return iq


def features(iq: etree._Element) -> set[str]:
    return {f.get("var") for f in iq.iterfind(f"{{{INFO}}}query/{{{INFO}}}feature")}


def test_the_service_is_a_text_conference(service: ChatService) -> None:
    alice = Occupant(service, "alice")
    iq = query(alice, MUC, INFO)
    assert iq.get("type") == "result" and iq.get("from") == MUC
    identity = iq.find(f"{{{INFO}}}query/{{{INFO}}}identity")
    assert (identity.get("category"), identity.get("type")) == ("conference", "text")
    assert "http://jabber.org/protocol/muc" in features(iq)


def _listed(occupant: Occupant) -> list[str | None]:
    iq = query(occupant, MUC, ITEMS)
    return [i.get("jid") for i in iq.iterfind(f"{{{ITEMS}}}query/{{{ITEMS}}}item")]


def test_the_service_lists_public_rooms_and_secret_ones_to_their_members(
    service: ChatService,
) -> None:
    alice = Occupant(service, "alice")
    alice.join("dev")
    alice.join("hidden")
    service.set_mode(alice.core, "hidden", [ModeItem(True, "secret")])
    _irc, bob = other(service, "bob")
    service.join(bob, "irc-room")
    alice.take()
    carol = Occupant(service, "carol")
    assert _listed(carol) == [f"dev@{MUC}", f"irc-room@{MUC}"]
    # The core's rule: a secret room is seen by its members (and server operators).
    assert _listed(alice) == [f"dev@{MUC}", f"hidden@{MUC}", f"irc-room@{MUC}"]
    service.grant_oper(carol.core)
    carol.take()
    assert _listed(carol) == [f"dev@{MUC}", f"hidden@{MUC}", f"irc-room@{MUC}"]


def test_room_info_features_follow_its_modes(service: ChatService) -> None:
    alice = Occupant(service, "alice")
    alice.join("dev")
    service.set_topic(alice.core, "dev", "Talk")
    alice.take()
    iq = query(alice, f"dev@{MUC}", INFO)
    assert {
        "http://jabber.org/protocol/muc",
        "muc_public",
        "muc_open",
        "muc_temporary",
        "muc_unmoderated",
        "muc_unsecured",
        "muc_nonanonymous",
        "urn:xmpp:sid:0",
    } <= features(iq)
    form = iq.find(f"{{{INFO}}}query/{{{DATA}}}x")
    fields = {
        f.get("var"): f.findtext(f"{{{DATA}}}value") for f in form.iterfind(f"{{{DATA}}}field")
    }
    assert fields["FORM_TYPE"] == "http://jabber.org/protocol/muc#roominfo"
    assert fields["muc#roominfo_subject"] == "Talk"
    assert fields["muc#roominfo_description"] == "Talk"
    assert fields["muc#roominfo_occupants"] == "1"
    service.set_mode(
        alice.core,
        "dev",
        [
            ModeItem(True, "secret"),
            ModeItem(True, "invite_only"),
            ModeItem(True, "moderated"),
            ModeItem(True, "key", "k"),
        ],
    )
    alice.take()
    iq = query(alice, f"dev@{MUC}", INFO)
    assert {"muc_hidden", "muc_membersonly", "muc_moderated", "muc_passwordprotected"} <= features(
        iq
    )


def test_unknown_rooms_are_item_not_found(service: ChatService) -> None:
    alice = Occupant(service, "alice")
    assert error_condition(query(alice, f"nowhere@{MUC}", INFO)) == "item-not-found"


def test_room_items_are_empty_and_occupants_do_not_answer_disco(service: ChatService) -> None:
    alice = Occupant(service, "alice")
    alice.join("dev")
    iq = query(alice, f"dev@{MUC}", ITEMS)
    assert iq.get("type") == "result" and len(iq[0]) == 0
    assert error_condition(query(alice, f"dev@{MUC}/alice", INFO)) == "service-unavailable"


def test_reserved_nick_is_the_session_nick(service: ChatService) -> None:
    alice = Occupant(service, "alice")
    alice.join("dev")
    iq = query(alice, f"dev@{MUC}", INFO, node="x-roomuser-item")
    assert iq.find(f"{{{INFO}}}query/{{{INFO}}}identity").get("name") == "alice"


def test_self_ping_tells_whether_one_is_still_in(service: ChatService) -> None:
    alice = Occupant(service, "alice")
    alice.join("dev")
    alice.feed(f"<iq type='get' id='p' to='dev@{MUC}/alice'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert alice.take()[0].get("type") == "result"
    carol = Occupant(service, "carol")
    carol.feed(f"<iq type='get' id='p' to='dev@{MUC}/carol'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert error_condition(carol.take()[0]) == "not-acceptable"
