"""Multi-user chat over real XMPP streams (the conftest's StringTransport clients)."""

from __future__ import annotations

from typing import Any

from chatserver.core.events import Message, ModeItem
from chatserver.core.service import ChatService
from tests.xmpp.test_muc_harness import MUC, NS_MUC, codes, error_condition, item

ROOM = f"dev@{MUC}"


def join(c: Any, nick: str = "alice", extra: str = "") -> list[Any]:
    c.send(f"<presence to='{ROOM}/{nick}'><x xmlns='{NS_MUC}'>{extra}</x></presence>")
    return c.received()


def test_join_talk_and_leave_over_a_stream(
    service: ChatService, account: Any, client: Any, other_user: Any
) -> None:
    account("alice")
    alice = client().login("alice", "secret1", presence=True)
    out = join(alice, "Alice in Wonderland")
    assert [el.tag for el in out] == ["presence", "message"]
    me, subject = out
    assert me.get("to") == "alice@localhost/test" and me.get("from") == f"{ROOM}/alice"
    assert {"110", "201", "210"} <= codes(me)
    assert item(me).get("affiliation") == "owner" and item(me).get("role") == "moderator"
    assert subject.findtext("subject") == ""

    bob = other_user("bob", protocol="irc")
    service.join(bob.core, "dev")
    (pres,) = alice.received()
    assert pres.get("from") == f"{ROOM}/bob" and item(pres).get("jid") == "~bob@localhost"

    service.say(bob.core, text="hi alice", room="dev")
    (msg,) = alice.received()
    assert msg.get("type") == "groupchat" and msg.findtext("body") == "hi alice"

    alice.send(f"<message to='{ROOM}' type='groupchat' id='m-1'><body>hi bob</body></message>")
    (echo,) = alice.received()
    assert echo.get("id") == "m-1" and echo.get("from") == f"{ROOM}/alice"
    assert [m.text for m in bob.of(Message)][-1] == "hi bob"

    alice.send(f"<presence to='{ROOM}/alice' type='unavailable'/>")
    (gone,) = alice.received()
    assert gone.get("type") == "unavailable" and "110" in codes(gone)
    assert service.get_room("dev").find_member("alice") is None


def test_a_refused_join_is_a_presence_error_from_the_occupant_jid(
    service: ChatService, account: Any, client: Any, other_user: Any
) -> None:
    bob = other_user("bob")
    service.join(bob.core, "dev")
    service.set_mode(bob.core, "dev", [ModeItem(True, "key", "sesame")])
    account("alice")
    alice = client().login("alice", "secret1")
    (error,) = join(alice)
    assert error.get("from") == f"{ROOM}/alice"
    assert error_condition(error) == "not-authorized"
    out = join(alice, extra="<password>sesame</password>")
    assert "110" in codes([el for el in out if el.tag == "presence"][-1])


def test_both_resources_of_an_account_see_the_room(
    service: ChatService, account: Any, client: Any
) -> None:
    account("alice")
    laptop = client().login("alice", "secret1", resource="laptop")
    phone = client().login("alice", "secret1", resource="phone")
    join(laptop)
    shown = phone.received()
    assert shown[0].get("to") == "alice@localhost/phone" and "110" in codes(shown[0])
    laptop.send(f"<message to='{ROOM}' type='groupchat' id='x'><body>from laptop</body></message>")
    assert laptop.received()[0].get("id") == "x"
    assert phone.received()[0].findtext("body") == "from laptop"


def test_unhandled_room_iqs_are_service_unavailable(account: Any, client: Any) -> None:
    account("alice")
    alice = client().login("alice", "secret1")
    join(alice)
    reply = alice.iq("get", "<vCard xmlns='vcard-temp'/>", to=ROOM)
    assert error_condition(reply) == "service-unavailable"
    reply = alice.iq("get", "<query xmlns='http://jabber.org/protocol/disco#info'/>", to=MUC)
    assert reply.get("type") == "result" and reply.get("from") == MUC


def test_a_reflection_comes_before_the_answer_to_a_stanza_sent_after_it(
    account: Any, client: Any
) -> None:
    """A groupchat message and a ping in one read: the room's reflection of the message
    comes first, in the order the client sent them (as Prosody answers): a client that
    pings to learn that the server has handled what it sent before finds its reflection."""
    account("alice")
    alice = client().login("alice", "secret1", presence=True)
    join(alice)
    alice.send(
        f"<message to='{ROOM}' type='groupchat' id='m-1'><body>hi</body></message>"
        "<iq type='get' id='p-1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>"
        f"<message to='{ROOM}' type='groupchat' id='m-2'><body>again</body></message>"
    )
    out = alice.received()
    assert [(el.tag, el.get("id")) for el in out] == [
        ("message", "m-1"),
        ("iq", "p-1"),
        ("message", "m-2"),
    ]
