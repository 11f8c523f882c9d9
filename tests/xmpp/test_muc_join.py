"""Entering, leaving and renaming by presence; the room's state for a joiner; join errors."""

from __future__ import annotations

import pytest
from lxml import etree

from chatserver.core.events import Away, Join, ModeItem
from chatserver.core.service import ChatService
from tests.xmpp.test_muc_harness import (
    MUC,
    NS_MUC,
    Occupant,
    codes,
    error_condition,
    item,
    kinds,
    other,
)


def test_creating_a_room_gives_own_presence_with_110_and_201_then_empty_subject(
    service: ChatService,
) -> None:
    alice = Occupant(service, "alice")
    out = alice.join("dev")
    assert kinds(out) == ["presence", "message"]
    me, subject = out
    assert me.get("from") == f"dev@{MUC}/alice"
    assert me.get("to") == alice.jid
    assert {"110", "201", "100"} <= codes(me)
    assert "210" not in codes(me)
    assert item(me).get("role") == "moderator"
    assert item(me).get("affiliation") == "owner"
    assert item(me).get("jid") == "alice@localhost"
    assert subject.get("from") == f"dev@{MUC}"
    assert subject.get("type") == "groupchat"
    assert subject.findtext("subject") == ""
    assert subject.find("body") is None


def test_occupants_come_first_then_self_then_history_then_subject(service: ChatService) -> None:
    alice = Occupant(service, "alice")
    alice.join("dev")
    _irc, bob = other(service, "bob")
    service.join(bob, "dev")
    service.say(bob, text="hello", room="dev")
    service.set_topic(alice.core, "dev", "the topic")
    carol = Occupant(service, "carol")
    out = carol.join("dev")
    assert kinds(out) == ["presence", "presence", "presence", "message", "message"]
    assert [p.get("from") for p in out[:3]] == [
        f"dev@{MUC}/alice",
        f"dev@{MUC}/bob",
        f"dev@{MUC}/carol",
    ]
    assert "110" not in codes(out[0]) and "110" in codes(out[2])
    assert "201" not in codes(out[2])
    assert item(out[1]).get("role") == "participant"
    assert item(out[1]).get("affiliation") == "none"
    assert item(out[1]).get("jid") == "bob@localhost"
    history, subject = out[3], out[4]
    assert history.findtext("body") == "hello"
    assert history.get("from") == f"dev@{MUC}/bob"
    assert subject.findtext("subject") == "the topic"


def test_others_see_the_joiner_and_irc_sees_a_join(service: ChatService) -> None:
    alice = Occupant(service, "alice")
    alice.join("dev")
    irc, bob = other(service, "bob")
    service.join(bob, "dev")
    seen = alice.take()
    assert kinds(seen) == ["presence"]
    assert seen[0].get("from") == f"dev@{MUC}/bob"
    assert seen[0].get("type") is None
    carol = Occupant(service, "carol")
    carol.join("dev")
    (pres,) = alice.take()
    assert pres.get("from") == f"dev@{MUC}/carol" and "110" not in codes(pres)
    assert [e.who.nick for e in irc.of(Join)] == [
        "bob",
        "carol",
    ]


def test_a_join_under_another_nick_gets_the_session_nick_with_210(service: ChatService) -> None:
    alice = Occupant(service, "alice")
    out = alice.join("dev", nick="Wonderland")
    me = out[0]
    assert me.get("from") == f"dev@{MUC}/alice"
    assert {"110", "210"} <= codes(me)


def test_joining_twice_sends_the_room_state_again(service: ChatService) -> None:
    alice = Occupant(service, "alice")
    alice.join("dev")
    out = alice.join("dev")
    assert kinds(out) == ["presence", "message"]
    assert "110" in codes(out[0]) and "201" not in codes(out[0])


def test_a_resource_joining_a_room_its_user_is_in_gets_the_state(service: ChatService) -> None:
    alice = Occupant(service, "alice", account="alice")
    phone = Occupant(service, "alice", resource="phone", account="alice")
    assert phone.user is alice.user
    alice.join("dev")
    # The other resource is in the room with its user: it is shown the room at once.
    shown = phone.take()
    assert "110" in codes(shown[0]) and shown[-1].find("subject") is not None
    out = phone.join("dev")
    assert "110" in codes(out[0]) and "201" not in codes(out[0])
    assert alice.take() == []


@pytest.mark.parametrize(
    ("setup", "condition"),
    [
        ([ModeItem(True, "key", "sesame")], "not-authorized"),
        ([ModeItem(True, "invite_only")], "registration-required"),
        ([ModeItem(True, "ban", "carol")], "forbidden"),
        ([ModeItem(True, "limit", "1")], "service-unavailable"),
        ([ModeItem(True, "registered_only")], "registration-required"),
    ],
)
def test_refused_joins_get_the_xep_errors(
    service: ChatService, setup: list[ModeItem], condition: str
) -> None:
    alice = Occupant(service, "alice")
    alice.join("dev")
    service.set_mode(alice.core, "dev", setup)
    carol = Occupant(service, "carol")
    (error,) = carol.join("dev")
    assert error.tag == "presence"
    assert error.get("from") == f"dev@{MUC}/carol"
    assert error_condition(error) == condition
    assert carol.user not in service.get_room("dev").members


def test_the_password_child_is_the_room_key(service: ChatService) -> None:
    alice = Occupant(service, "alice")
    alice.join("dev")
    service.set_mode(alice.core, "dev", [ModeItem(True, "key", "sesame")])
    carol = Occupant(service, "carol")
    (error,) = carol.join("dev", extra="<password>wrong</password>")
    assert error_condition(error) == "not-authorized"
    out = carol.join("dev", extra="<password>sesame</password>")
    assert "110" in codes(out[-2])


def test_bad_room_names_and_missing_nicks_are_malformed(service: ChatService) -> None:
    alice = Occupant(service, "alice")
    alice.feed(f"<presence to='bad!room@{MUC}/alice'><x xmlns='{NS_MUC}'/></presence>")
    assert error_condition(alice.take()[0]) == "jid-malformed"
    alice.feed(f"<presence to='dev@{MUC}'><x xmlns='{NS_MUC}'/></presence>")
    assert error_condition(alice.take()[0]) == "jid-malformed"


def test_a_presence_without_the_muc_child_still_joins(service: ChatService) -> None:
    # The pre-XEP-0045 groupchat protocol some old clients still speak.
    alice = Occupant(service, "alice")
    alice.feed(f"<presence to='dev@{MUC}/alice'/>")
    assert "110" in codes(alice.take()[0])


def test_leaving_by_unavailable_presence(service: ChatService) -> None:
    alice = Occupant(service, "alice")
    alice.join("dev")
    carol = Occupant(service, "carol")
    carol.join("dev")
    alice.take()
    carol.feed(f"<presence to='dev@{MUC}/carol' type='unavailable'><status>bye</status></presence>")
    (mine,) = carol.take()
    assert mine.get("type") == "unavailable" and "110" in codes(mine)
    assert item(mine).get("role") == "none"
    (theirs,) = alice.take()
    assert theirs.get("type") == "unavailable" and "110" not in codes(theirs)
    assert theirs.findtext("status") == "bye"
    assert carol.user not in service.get_room("dev").members


def test_leaving_a_room_one_is_not_in_is_still_confirmed(service: ChatService) -> None:
    alice = Occupant(service, "alice")
    alice.feed(f"<presence to='nowhere@{MUC}/alice' type='unavailable'/>")
    (mine,) = alice.take()
    assert mine.get("type") == "unavailable" and "110" in codes(mine)


def test_an_irc_part_and_quit_show_as_unavailable(service: ChatService) -> None:
    alice = Occupant(service, "alice")
    alice.join("dev")
    _irc, bob = other(service, "bob")
    service.join(bob, "dev")
    service.join(bob, "ops")
    alice.take()
    service.part(bob, "dev", "later")
    (gone,) = alice.take()
    assert gone.get("type") == "unavailable" and gone.findtext("status") == "later"
    service.join(bob, "dev")
    alice.join("ops")
    alice.take()
    service.quit(bob, "Quit: zzz")
    gone = alice.take()
    assert sorted(p.get("from") for p in gone) == [f"dev@{MUC}/bob", f"ops@{MUC}/bob"]
    assert all(p.get("type") == "unavailable" for p in gone)
    assert {p.findtext("status") for p in gone} == {"Quit: zzz"}


def test_nick_change_by_presence_gives_303_then_the_new_presence(service: ChatService) -> None:
    alice = Occupant(service, "alice")
    alice.join("dev")
    carol = Occupant(service, "carol")
    carol.join("dev")
    alice.take()
    carol.feed(f"<presence to='dev@{MUC}/caroline'/>")
    old, new = carol.take()
    assert old.get("type") == "unavailable" and old.get("from") == f"dev@{MUC}/carol"
    assert codes(old) == {"303", "110"}
    assert item(old).get("nick") == "caroline"
    assert new.get("type") is None and new.get("from") == f"dev@{MUC}/caroline"
    assert "110" in codes(new)
    old, new = alice.take()
    assert codes(old) == {"303"} and item(old).get("nick") == "caroline"
    assert new.get("from") == f"dev@{MUC}/caroline" and codes(new) == set()
    assert service.find_user("caroline") is carol.user


def test_nick_change_to_a_nick_in_use_is_a_conflict(service: ChatService) -> None:
    alice = Occupant(service, "alice")
    alice.join("dev")
    other(service, "bob")
    alice.feed(f"<presence to='dev@{MUC}/bob'/>")
    (error,) = alice.take()
    assert error_condition(error) == "conflict"
    assert error.get("from") == f"dev@{MUC}/bob"


def test_an_irc_nick_change_is_seen_in_every_shared_room_once(service: ChatService) -> None:
    alice = Occupant(service, "alice")
    alice.join("dev")
    alice.join("ops")
    _irc, bob = other(service, "bob")
    service.join(bob, "dev")
    service.join(bob, "ops")
    service.join(bob, "elsewhere")
    alice.take()
    service.rename(bob, "robert")
    out = alice.take()
    assert [(p.get("from"), p.get("type")) for p in out] == [
        (f"dev@{MUC}/bob", "unavailable"),
        (f"dev@{MUC}/robert", None),
        (f"ops@{MUC}/bob", "unavailable"),
        (f"ops@{MUC}/robert", None),
    ]


def test_a_presence_update_to_a_joined_room_is_the_away_state(service: ChatService) -> None:
    alice = Occupant(service, "alice")
    alice.join("dev")
    irc, bob = other(service, "bob")
    service.join(bob, "dev")
    alice.take()
    alice.feed(f"<presence to='dev@{MUC}/alice'><show>away</show><status>brb</status></presence>")
    (pres,) = alice.take()
    assert pres.get("from") == f"dev@{MUC}/alice"
    assert (pres.findtext("show"), pres.findtext("status")) == ("away", "brb")
    assert service.find_user("alice").away == "brb"
    assert [e.message for e in irc.of(Away)] == ["brb"]
    # The same presence again changes nothing; one without <show> is back.
    alice.feed(f"<presence to='dev@{MUC}/alice'><show>away</show><status>brb</status></presence>")
    assert alice.take() == []
    alice.feed(f"<presence to='dev@{MUC}/alice'/>")
    (pres,) = alice.take()
    assert pres.find("show") is None and service.find_user("alice").away is None


def test_away_is_shown_in_occupant_presence(service: ChatService) -> None:
    alice = Occupant(service, "alice")
    alice.join("dev")
    _irc, bob = other(service, "bob")
    service.join(bob, "dev")
    alice.take()
    service.set_away(bob, "lunch")
    (pres,) = alice.take()
    assert pres.findtext("show") == "away" and pres.findtext("status") == "lunch"
    service.set_away(bob, None)
    (pres,) = alice.take()
    assert pres.find("show") is None
    carol = Occupant(service, "carol")
    service.set_away(bob, "gone")
    shown = carol.join("dev")
    assert shown[1].findtext("show") == "away"


def test_history_default_and_limits(service: ChatService) -> None:
    alice = Occupant(service, "alice")
    alice.join("dev")
    clock = service.clock
    for i in range(15):
        service.say(alice.core, text=f"line {i}", room="dev")
        clock.advance(60)
    carol = Occupant(service, "carol")

    def history(extra: str) -> list[str]:
        out = carol.join("dev", extra=extra)
        service.part(carol.core, "dev")
        carol.take()
        return [
            m.findtext("body") for m in out if m.tag == "message" and m.find("body") is not None
        ]

    default = service.settings.join_history_lines
    assert history("") == [f"line {i}" for i in range(15 - default, 15)]
    assert history("<history maxstanzas='3'/>") == ["line 12", "line 13", "line 14"]
    assert history("<history maxstanzas='0'/>") == []
    assert history("<history maxchars='0'/>") == []
    # Three minutes back: lines said at -60 s, -120 s and -180 s.
    assert history("<history seconds='180'/>") == ["line 12", "line 13", "line 14"]
    since = "2023-11-14T22:13:20Z"  # the fake clock's start: 1_700_000_000
    assert history(f"<history since='{since}' maxstanzas='50'/>") == [
        f"line {i}" for i in range(1, 15)
    ]
    out = carol.join("dev", extra="<history maxstanzas='2'/>")
    service.part(carol.core, "dev")
    carol.take()
    sizes = [len(etree.tostring(m)) for m in out[2:4]]
    assert history(f"<history maxchars='{sizes[1] + 5}'/>") == ["line 14"]
    assert history(f"<history maxchars='{sum(sizes) + 10}'/>") == ["line 13", "line 14"]


def test_history_carries_delay_and_stanza_id(service: ChatService) -> None:
    alice = Occupant(service, "alice")
    alice.join("dev")
    msg = service.say(alice.core, text="hello", room="dev")
    carol = Occupant(service, "carol")
    out = carol.join("dev")
    past = out[2]
    delay = past.find("{urn:xmpp:delay}delay")
    assert delay is not None
    assert delay.get("stamp") == "2023-11-14T22:13:20.000Z"
    assert delay.get("from") == f"dev@{MUC}"
    sid = past.find("{urn:xmpp:sid:0}stanza-id")
    assert sid is not None and sid.get("id") == msg.id and sid.get("by") == f"dev@{MUC}"
    assert past.get("to") == carol.jid


def test_presence_cache_forgets_occupants_that_are_gone(service: ChatService) -> None:
    import gc

    from protocols.xmpp.muc import presence

    alice = Occupant(service, "alice")
    alice.join("dev")
    for i in range(20):
        conn_pair = other(service, f"visitor{i}")
        service.join(conn_pair[1], "dev")
        Occupant(service, f"late{i}").join("dev")  # each join renders every occupant
        service.quit(conn_pair[1], "bye")
    gc.collect()
    cached = [u for u in presence._shown if u.key.startswith(("visitor", "late"))]
    assert cached, "the joins above should have filled the cache"
    assert all(service.find_user(u.nick) is u for u in cached)  # only users still online


def test_a_join_costs_flood_tokens_by_the_occupants_who_hear_of_it(
    service: ChatService,
) -> None:
    """Room presence is charged per delivery it causes (protocols.costs): joining a room
    of 15 costs a hundredth of a token for each of them and for the joiner, joining an
    empty room only the joiner's hundredth."""
    first = Occupant(service, "first")
    first.join("empty")
    alone = first.charged
    for i in range(15):
        _, conn = other(service, f"crowd{i}")
        service.join(conn, "full")
    late = Occupant(service, "late")
    late.join("full")
    assert alone == pytest.approx(0.01)
    assert late.charged == pytest.approx(0.16)
