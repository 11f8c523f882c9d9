"""Moderation through muc#admin, and moderation from IRC seen by XMPP occupants."""

from __future__ import annotations

import pytest
from lxml import etree

from chatserver.core.events import Kick, ModeChange, ModeItem
from chatserver.core.service import ChatService
from tests.xmpp.test_muc_harness import MUC, NS_USER, Occupant, codes, error_condition, item, other

ROOM = f"dev@{MUC}"
ADMIN = "http://jabber.org/protocol/muc#admin"


@pytest.fixture
def room(service: ChatService):
    """alice (XMPP, operator), carol (XMPP), bob (IRC) in #dev."""
    alice = Occupant(service, "alice")
    alice.join("dev")
    carol = Occupant(service, "carol")
    carol.join("dev")
    irc, bob = other(service, "bob")
    service.join(bob, "dev")
    alice.take()
    carol.take()
    irc.clear()
    return alice, carol, irc, bob


def admin_set(occupant: Occupant, items: str, iq_id: str = "a1") -> list[etree._Element]:
    occupant.feed(
        f"<iq type='set' id='{iq_id}' to='{ROOM}'><query xmlns='{ADMIN}'>{items}</query></iq>"
    )
    return occupant.take()


def result_of(out: list[etree._Element], iq_id: str = "a1") -> etree._Element:
    (iq,) = [el for el in out if el.tag == "iq"]
    assert iq.get("id") == iq_id
    return iq


def test_kick_by_role_none(room, service) -> None:
    alice, carol, irc, _bob = room
    out = admin_set(alice, "<item nick='carol' role='none'><reason>noise</reason></item>")
    assert result_of(out).get("type") == "result"
    (seen,) = [el for el in out if el.tag == "presence"]
    assert seen.get("type") == "unavailable" and codes(seen) == {"307"}
    assert item(seen).find(f"{{{NS_USER}}}actor").get("nick") == "alice"
    assert item(seen).findtext(f"{{{NS_USER}}}reason") == "noise"
    (mine,) = carol.take()
    assert codes(mine) == {"307", "110"} and item(mine).get("role") == "none"
    (kick,) = irc.of(Kick)
    assert kick.target.nick == "carol" and kick.reason == "noise"
    assert carol.user not in service.get_room("dev").members


def test_only_moderators_may_kick(room) -> None:
    _alice, carol, _irc, _bob = room
    out = admin_set(carol, "<item nick='alice' role='none'/>")
    assert error_condition(result_of(out)) == "forbidden"


def test_ban_by_jid_of_an_account_bans_the_account_and_kicks(service) -> None:
    alice = Occupant(service, "alice")
    alice.join("dev")
    carol = Occupant(service, "carol", account="carol")
    carol.join("dev")
    alice.take()
    out = admin_set(alice, "<item jid='carol@localhost' affiliation='outcast'/>")
    assert result_of(out).get("type") == "result"
    assert [b.mask for b in service.get_room("dev").bans] == ["$a:carol"]
    (seen,) = [el for el in out if el.tag == "presence"]
    assert codes(seen) == {"301"} and item(seen).get("affiliation") == "outcast"
    (mine,) = carol.take()
    assert codes(mine) == {"301", "110"}
    (error,) = carol.join("dev")
    assert error_condition(error) == "forbidden"


def test_ban_of_a_guest_is_by_nick_and_is_listed(room, service) -> None:
    alice, _carol, irc, _bob = room
    admin_set(alice, "<item jid='bob@localhost' affiliation='outcast'><reason>x</reason></item>")
    assert [b.mask for b in service.get_room("dev").bans] == ["bob!*@*"]
    (kick,) = irc.of(Kick)
    assert kick.target.nick == "bob"
    alice.feed(
        f"<iq type='get' id='l1' to='{ROOM}'><query xmlns='{ADMIN}'>"
        "<item affiliation='outcast'/></query></iq>"
    )
    (iq,) = alice.take()
    items = iq.findall(f"{{{ADMIN}}}query/{{{ADMIN}}}item")
    assert [(i.get("jid"), i.get("affiliation")) for i in items] == [("bob@localhost", "outcast")]
    # Affiliation none lifts the ban.
    admin_set(alice, "<item jid='bob@localhost' affiliation='none'/>")
    assert service.get_room("dev").bans == []


def test_voice_and_moderator_grants_map_to_voice_and_op(room, service) -> None:
    alice, carol, irc, _bob = room
    service.set_mode(alice.core, "dev", [ModeItem(True, "moderated")])
    alice.take()
    carol.take()
    out = admin_set(alice, "<item nick='carol' role='participant'/>")
    (pres,) = [el for el in out if el.tag == "presence"]
    assert pres.get("from") == f"{ROOM}/carol" and item(pres).get("role") == "participant"
    assert service.get_room("dev").members[carol.user].voice
    (mine,) = carol.take()
    assert "110" in codes(mine) and item(mine).get("role") == "participant"
    admin_set(alice, "<item nick='carol' role='moderator'/>")
    assert service.get_room("dev").members[carol.user].op
    admin_set(alice, "<item nick='carol' role='visitor'/>")
    member = service.get_room("dev").members[carol.user]
    assert not member.op and not member.voice
    (last,) = [el for el in carol.take() if el.tag == "presence"][-1:]
    assert item(last).get("role") == "visitor"
    admin_set(alice, "<item jid='bob@localhost' affiliation='admin'/>")
    assert service.get_room("dev").members[service.find_user("bob")].op
    changes = [c for e in irc.of(ModeChange) for c in e.changes]
    assert ModeItem(True, "op", "bob") in changes


def test_role_of_someone_not_in_the_room_is_item_not_found(room) -> None:
    alice, _carol, _irc, _bob = room
    out = admin_set(alice, "<item nick='zed' role='participant'/>")
    assert error_condition(result_of(out)) == "item-not-found"


def test_irc_kick_and_op_reach_xmpp_occupants(room, service) -> None:
    alice, carol, _irc, bob = room
    service.set_mode(alice.core, "dev", [ModeItem(True, "op", "bob")])
    (pres,) = carol.take()
    assert pres.get("from") == f"{ROOM}/bob" and item(pres).get("role") == "moderator"
    service.kick(bob, "dev", "carol", "out")
    (mine,) = carol.take()
    assert mine.get("type") == "unavailable" and codes(mine) == {"307", "110"}
    assert item(mine).find(f"{{{NS_USER}}}actor").get("nick") == "bob"


def test_moderating_a_room_turns_the_unvoiced_into_visitors_and_says_104(room, service) -> None:
    alice, carol, _irc, _bob = room
    service.set_mode(alice.core, "dev", [ModeItem(True, "moderated")])
    out = carol.take()
    presences = [el for el in out if el.tag == "presence"]
    assert sorted(p.get("from") for p in presences) == [f"{ROOM}/bob", f"{ROOM}/carol"]
    assert {item(p).get("role") for p in presences} == {"visitor"}
    (config,) = [el for el in out if el.tag == "message"]
    assert config.get("from") == ROOM and codes(config) == {"104"}


def test_moderator_list(room, service) -> None:
    alice, carol, _irc, _bob = room
    alice.feed(
        f"<iq type='get' id='l2' to='{ROOM}'><query xmlns='{ADMIN}'>"
        "<item role='moderator'/></query></iq>"
    )
    (iq,) = alice.take()
    items = iq.findall(f"{{{ADMIN}}}query/{{{ADMIN}}}item")
    assert [(i.get("nick"), i.get("role")) for i in items] == [("alice", "moderator")]
    carol.feed(
        f"<iq type='get' id='l3' to='{ROOM}'><query xmlns='{ADMIN}'>"
        "<item role='moderator'/></query></iq>"
    )
    assert error_condition(carol.take()[0]) == "forbidden"


def test_members_of_a_members_only_room_may_join(room, service) -> None:
    alice, _carol, _irc, _bob = room
    service.set_mode(alice.core, "dev", [ModeItem(True, "invite_only")])
    out = admin_set(alice, "<item jid='dave@localhost' affiliation='member'/>")
    assert result_of(out).get("type") == "result"
    assert service.get_room("dev").invites == ["dave!*@*"]
    alice.feed(
        f"<iq type='get' id='l4' to='{ROOM}'><query xmlns='{ADMIN}'>"
        "<item affiliation='member'/></query></iq>"
    )
    (iq,) = alice.take()
    items = iq.findall(f"{{{ADMIN}}}query/{{{ADMIN}}}item")
    assert [(i.get("jid"), i.get("affiliation")) for i in items] == [("dave@localhost", "member")]
    dave = Occupant(service, "dave")
    assert "110" in codes(dave.join("dev")[-2])
    service.part(dave.core, "dev")
    admin_set(alice, "<item jid='dave@localhost' affiliation='none'/>")
    assert service.get_room("dev").invites == []
    (error,) = dave.join("dev")[-1:]
    assert error_condition(error) == "registration-required"


def test_participant_in_an_unmoderated_room_only_takes_operator_status(room, service) -> None:
    alice, carol, irc, _bob = room
    admin_set(alice, "<item nick='carol' role='moderator'/>")
    irc.clear()
    admin_set(alice, "<item nick='carol' role='participant'/>")
    member = service.get_room("dev").members[carol.user]
    assert not member.op and not member.voice
    changes = [c for e in irc.of(ModeChange) for c in e.changes]
    assert changes == [ModeItem(False, "op", "carol")]


def test_outcast_of_someone_offline_bans_the_nick_and_the_account(room, service) -> None:
    alice, _carol, _irc, _bob = room
    admin_set(alice, "<item jid='zed@localhost' affiliation='outcast'/>")
    masks = {b.mask for b in service.get_room("dev").bans}
    assert masks == {"zed!*@*", "$a:zed"}
    # Both are the one outcast JID in the list, and both go with affiliation none.
    alice.feed(
        f"<iq type='get' id='l1' to='{ROOM}'><query xmlns='{ADMIN}'>"
        "<item affiliation='outcast'/></query></iq>"
    )
    (iq,) = alice.take()
    items = iq.findall(f"{{{ADMIN}}}query/{{{ADMIN}}}item")
    assert [i.get("jid") for i in items] == ["zed@localhost"]
    admin_set(alice, "<item jid='zed@localhost' affiliation='none'/>")
    assert service.get_room("dev").bans == []
