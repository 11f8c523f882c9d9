"""Groupchat messages both ways, subjects, private messages, invitations, the render-once path."""

from __future__ import annotations

import pytest

from chatserver.core.events import Invite, Message, ModeItem
from chatserver.core.service import ChatService
from protocols.xmpp.muc import build, chat
from tests.xmpp.test_muc_harness import MUC, NS_USER, Occupant, error_condition, other

ROOM = f"dev@{MUC}"


@pytest.fixture
def room(service: ChatService) -> tuple[Occupant, Occupant, object, object]:
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


def test_groupchat_is_reflected_with_the_same_id_and_a_stanza_id(room) -> None:
    alice, carol, irc, _bob = room
    alice.feed(
        f"<message to='{ROOM}' type='groupchat' id='abc-1'><body>hello all</body>"
        "<origin-id xmlns='urn:xmpp:sid:0' id='orig-1'/></message>"
    )
    (mine,) = alice.take()
    (msg,) = irc.of(Message)
    assert msg.text == "hello all" and msg.room == "dev" and msg.kind == "privmsg"
    assert mine.get("id") == "abc-1"
    assert mine.get("from") == f"{ROOM}/alice" and mine.get("type") == "groupchat"
    assert mine.findtext("body") == "hello all"
    sid = mine.find("{urn:xmpp:sid:0}stanza-id")
    assert sid is not None and sid.get("id") == msg.id and sid.get("by") == ROOM
    origin = mine.find("{urn:xmpp:sid:0}origin-id")
    assert origin is not None and origin.get("id") == "orig-1"
    (theirs,) = carol.take()
    assert theirs.get("id") == "abc-1" and theirs.get("to") == carol.jid


def test_irc_messages_actions_and_notices_reach_xmpp_occupants(room, service) -> None:
    alice, _carol, _irc, bob = room
    service.say(bob, text="hi from irc", room="dev")
    service.say(bob, text="waves", room="dev", kind="action")
    service.say(bob, text="a notice", room="dev", kind="notice")
    out = alice.take()
    assert [m.findtext("body") for m in out] == ["hi from irc", "/me waves", "a notice"]
    assert {m.get("from") for m in out} == {f"{ROOM}/bob"}
    assert all(m.get("type") == "groupchat" for m in out)
    assert all(m.find("{urn:xmpp:sid:0}stanza-id") is not None for m in out)


def test_slash_me_becomes_an_action(room) -> None:
    alice, _carol, irc, _bob = room
    alice.feed(f"<message to='{ROOM}' type='groupchat' id='x'><body>/me dances</body></message>")
    (msg,) = irc.of(Message)
    assert msg.kind == "action" and msg.text == "dances"
    assert alice.take()[0].findtext("body") == "/me dances"


def test_a_fanned_out_message_is_serialized_once(room, service, monkeypatch) -> None:
    alice, carol, _irc, bob = room
    calls = []
    real = build.tail
    monkeypatch.setattr(chat, "tail", lambda el: calls.append(el) or real(el))
    msg = service.say(bob, text="once", room="dev")
    assert len(calls) == 1
    assert ("xmpp", "muc", "message") in msg.rendered
    (a,), (c,) = alice.out, carol.out
    assert a.replace(alice.jid.encode(), b"X") == c.replace(carol.jid.encode(), b"X")


def test_body_less_messages_reach_xmpp_whole_and_others_as_tags(room) -> None:
    alice, carol, irc, _bob = room
    alice.feed(
        f"<message to='{ROOM}' type='groupchat' id='st-1'>"
        "<active xmlns='http://jabber.org/protocol/chatstates'/></message>"
    )
    # Other protocols get the chat state as IRC's typing tag; every XMPP occupant (the
    # sender too) gets the stanza whole.
    (tagged,) = irc.events
    assert tagged.tags == (("+typing", "done"),) and tagged.room == "dev"
    for occupant in (alice, carol):
        (msg,) = occupant.take()
        assert (msg.get("from"), msg.get("id"), msg.get("to")) == (
            f"{ROOM}/alice",
            "st-1",
            occupant.jid,
        )
        assert msg.find("{http://jabber.org/protocol/chatstates}active") is not None
        assert msg.find("body") is None


def test_sending_without_being_in_the_room_is_not_acceptable(room, service) -> None:
    dave = Occupant(service, "dave")
    dave.feed(f"<message to='{ROOM}' type='groupchat' id='1'><body>hi</body></message>")
    assert error_condition(dave.take()[0]) == "not-acceptable"
    dave.feed(f"<message to='nowhere@{MUC}' type='groupchat' id='1'><body>hi</body></message>")
    assert error_condition(dave.take()[0]) == "item-not-found"


def test_unvoiced_occupants_of_a_moderated_room_are_forbidden(room, service) -> None:
    alice, carol, _irc, _bob = room
    service.set_mode(alice.core, "dev", [ModeItem(True, "moderated")])
    carol.take()
    carol.feed(f"<message to='{ROOM}' type='groupchat' id='1'><body>hi</body></message>")
    (error,) = carol.take()
    assert error_condition(error) == "forbidden"
    assert error.get("id") == "1" and error.get("from") == ROOM


def test_groupchat_to_an_occupant_is_a_bad_request(room) -> None:
    alice, _carol, _irc, _bob = room
    alice.feed(f"<message to='{ROOM}/carol' type='groupchat' id='1'><body>hi</body></message>")
    assert error_condition(alice.take()[0]) == "bad-request"


def test_subject_changes_by_those_allowed(room, service) -> None:
    alice, carol, _irc, bob = room
    alice.feed(f"<message to='{ROOM}' type='groupchat'><subject>Plans</subject></message>")
    assert service.get_room("dev").topic == "Plans"
    (subject,) = carol.take()
    assert subject.findtext("subject") == "Plans" and subject.get("from") == f"{ROOM}/alice"
    assert subject.find("body") is None
    carol.feed(f"<message to='{ROOM}' type='groupchat' id='s'><subject>Mine</subject></message>")
    assert error_condition(carol.take()[0]) == "forbidden"
    assert service.get_room("dev").topic == "Plans"
    service.set_mode(alice.core, "dev", [ModeItem(True, "op", "bob")])
    carol.take()
    service.set_topic(bob, "dev", "From IRC")
    (subject,) = carol.take()
    assert subject.findtext("subject") == "From IRC" and subject.get("from") == f"{ROOM}/bob"


def test_private_messages_between_occupants(room, service) -> None:
    alice, _carol, irc, _bob = room
    alice.feed(f"<message to='{ROOM}/bob' type='chat' id='p1'><body>psst</body></message>")
    (msg,) = irc.of(Message)
    assert msg.target == "bob" and msg.room is None and msg.text == "psst"
    assert alice.take() == []
    alice.feed(f"<message to='{ROOM}/nobody' type='chat' id='p2'><body>psst</body></message>")
    assert error_condition(alice.take()[0]) == "item-not-found"
    dave = Occupant(service, "dave")
    dave.feed(f"<message to='{ROOM}/bob' type='chat' id='p3'><body>psst</body></message>")
    assert error_condition(dave.take()[0]) == "not-acceptable"


def test_mediated_invitations_both_ways(room, service) -> None:
    alice, _carol, _irc, bob = room
    dave_irc, _dave = other(service, "dave")
    alice.feed(
        f"<message to='{ROOM}'><x xmlns='{NS_USER}'><invite to='dave@localhost'/></x></message>"
    )
    (invite,) = dave_irc.of(Invite)
    assert invite.room == "dev" and invite.target == "dave"
    erin = Occupant(service, "erin")
    service.invite(bob, "erin", "dev")
    (msg,) = erin.take()
    assert msg.get("from") == ROOM
    assert msg.find(f"{{{NS_USER}}}x/{{{NS_USER}}}invite").get("from") == "bob@localhost"
    # The room's occupants are not told of it.
    assert alice.take() == []


def test_irc_formatting_is_taken_out_of_room_messages(room, service) -> None:
    alice, _carol, _irc, bob = room
    service.say(bob, text="\x02bold\x02 \x0304,01red\x03 plain", room="dev")
    service.say(bob, text="\x1ditalic\x1d waves", room="dev", kind="action")
    bodies = [el.findtext("body") for el in alice.take()]
    # As in private messages: no codes (XML cannot carry them) and no stray colour numbers.
    assert bodies == ["bold red plain", "/me italic waves"]


def test_the_occupants_stanza_is_relayed_whole(room) -> None:
    alice, carol, irc, _bob = room
    alice.feed(
        f"<message to='{ROOM}' type='groupchat' id='m-1' xml:lang='de'><body>hallo</body>"
        "<markable xmlns='urn:xmpp:chat-markers:0'/><x xmlns='urn:example:extra' a='1'><y/></x>"
        f"<stanza-id xmlns='urn:xmpp:sid:0' by='{ROOM}' id='forged'/></message>"
    )
    (msg,) = irc.of(Message)
    for occupant in (alice, carol):
        (got,) = occupant.take()
        assert got.get("id") == "m-1" and got.get("from") == f"{ROOM}/alice"
        assert got.get("{http://www.w3.org/XML/1998/namespace}lang") == "de"
        assert got.find("{urn:xmpp:chat-markers:0}markable") is not None
        extra = got.find("{urn:example:extra}x")
        assert extra is not None and extra.get("a") == "1"
        assert extra.find("{urn:example:extra}y") is not None
        # Only the room's own stanza-id: the client's was taken out.
        [sid] = got.findall("{urn:xmpp:sid:0}stanza-id")
        assert sid.get("id") == msg.id


def test_replies_and_corrections_carry_irc_client_tags(room) -> None:
    alice, _carol, irc, _bob = room
    alice.feed(f"<message to='{ROOM}' type='groupchat' id='m-1'><body>helo</body></message>")
    first = irc.of(Message)[-1]
    alice.feed(
        f"<message to='{ROOM}' type='groupchat' id='m-2'><body>hello</body>"
        "<replace xmlns='urn:xmpp:message-correct:0' id='m-1'/></message>"
    )
    edit = irc.of(Message)[-1]
    assert edit.text == "hello" and dict(edit.tags) == {"+draft/edit": first.id}
    alice.feed(
        f"<message to='{ROOM}' type='groupchat' id='m-3'><body>indeed</body>"
        f"<reply xmlns='urn:xmpp:reply:0' to='{ROOM}/alice' id='{first.id}'/></message>"
    )
    reply = irc.of(Message)[-1]
    assert dict(reply.tags) == {"+draft/reply": first.id}
    # A correction of a message nobody knows is still said, without a tag.
    alice.feed(
        f"<message to='{ROOM}' type='groupchat' id='m-4'><body>what?</body>"
        "<replace xmlns='urn:xmpp:message-correct:0' id='unknown'/></message>"
    )
    assert irc.of(Message)[-1].tags == ()


def test_history_replays_the_occupants_stanza(room, service) -> None:
    alice, _carol, _irc, _bob = room
    alice.feed(
        f"<message to='{ROOM}' type='groupchat' id='m-1'><body>remember me</body>"
        "<markable xmlns='urn:xmpp:chat-markers:0'/></message>"
    )
    dave = Occupant(service, "dave")
    got = [el for el in dave.join("dev") if el.findtext("body") == "remember me"]
    [past] = got
    assert past.get("id") == "m-1" and past.get("from") == f"{ROOM}/alice"
    assert past.find("{urn:xmpp:chat-markers:0}markable") is not None
    assert past.find("{urn:xmpp:delay}delay") is not None
    assert past.find("{urn:xmpp:sid:0}stanza-id") is not None


def test_an_irc_reply_reaches_xmpp_as_a_reply(room, service) -> None:
    alice, _carol, _irc, bob = room
    first = service.say(bob, text="question?", room="dev")
    alice.take()
    service.say(bob, text="answer", room="dev", tags=(("+draft/reply", first.id),))
    (got,) = alice.take()
    reply = got.find("{urn:xmpp:reply:0}reply")
    assert reply is not None and reply.get("id") == first.id


def test_occupant_ids_are_stable_opaque_and_not_forged(room, service) -> None:
    alice, carol, _irc, bob = room
    alice.feed(
        f"<message to='{ROOM}' type='groupchat' id='m-1'><body>one</body>"
        "<occupant-id xmlns='urn:xmpp:occupant-id:0' id='forged'/></message>"
    )
    (first,) = carol.take()
    [oid] = first.findall("{urn:xmpp:occupant-id:0}occupant-id")
    assert oid.get("id") not in ("forged", "", None) and "alice" not in oid.get("id")
    alice.feed(
        f"<message to='{ROOM}' type='groupchat' id='m-2'>"
        "<composing xmlns='http://jabber.org/protocol/chatstates'/></message>"
    )
    (state,) = carol.take()
    assert state.find("{urn:xmpp:occupant-id:0}occupant-id").get("id") == oid.get("id")
    # An IRC member's messages and presences carry its own, also stable.
    service.say(bob, text="from irc", room="dev")
    service.set_away(bob, "lunch")
    irc_msg, irc_pres = carol.take()
    ids = {el.find("{urn:xmpp:occupant-id:0}occupant-id").get("id") for el in (irc_msg, irc_pres)}
    assert len(ids) == 1 and oid.get("id") not in ids
