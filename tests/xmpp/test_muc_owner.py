"""Room configuration through muc#owner: the form, instant rooms, each setting."""

from __future__ import annotations

from lxml import etree

from chatserver.core.service import ChatService
from tests.xmpp.test_muc_harness import MUC, Occupant, error_condition

ROOM = f"dev@{MUC}"
OWNER = "http://jabber.org/protocol/muc#owner"
DATA = "jabber:x:data"
DISCO = "http://jabber.org/protocol/disco#info"


def submit(occupant: Occupant, fields: dict[str, str], iq_id: str = "c1") -> etree._Element:
    body = "".join(
        f"<field var='{var}'><value>{value}</value></field>" for var, value in fields.items()
    )
    occupant.feed(
        f"<iq type='set' id='{iq_id}' to='{ROOM}'><query xmlns='{OWNER}'>"
        f"<x xmlns='{DATA}' type='submit'>"
        "<field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig</value></field>"
        f"{body}</x></query></iq>"
    )
    (iq,) = [el for el in occupant.take() if el.tag == "iq"]
    assert iq.get("id") == iq_id
    return iq


def form_of(occupant: Occupant) -> dict[str, list[str]]:
    occupant.feed(f"<iq type='get' id='g' to='{ROOM}'><query xmlns='{OWNER}'/></iq>")
    (iq,) = occupant.take()
    assert iq.get("type") == "result", etree.tostring(iq)
    form = iq.find(f"{{{OWNER}}}query/{{{DATA}}}x")
    assert form is not None and form.get("type") == "form"
    return {
        f.get("var"): [v.text or "" for v in f.iterfind(f"{{{DATA}}}value")]
        for f in form.iterfind(f"{{{DATA}}}field")
    }


def test_instant_room_accepts_the_empty_form(service: ChatService) -> None:
    alice = Occupant(service, "alice")
    alice.join("dev")
    alice.feed(
        f"<iq type='set' id='i1' to='{ROOM}'><query xmlns='{OWNER}'>"
        f"<x xmlns='{DATA}' type='submit'/></query></iq>"
    )
    (iq,) = alice.take()
    assert iq.get("type") == "result" and iq.get("from") == ROOM
    room = service.get_room("dev")
    assert room.flags == {"no_external", "topic_lock"}


def test_the_form_shows_the_room(service: ChatService) -> None:
    alice = Occupant(service, "alice")
    alice.join("dev")
    form = form_of(alice)
    assert form["FORM_TYPE"] == ["http://jabber.org/protocol/muc#roomconfig"]
    assert form["muc#roomconfig_moderatedroom"] == ["0"]
    assert form["muc#roomconfig_publicroom"] == ["1"]
    assert form["muc#roomconfig_changesubject"] == ["0"]
    assert form["muc#roomconfig_persistentroom"] == ["0"]
    assert form["muc#roomconfig_maxusers"] == ["none"]
    assert form["muc#roomconfig_whois"] == ["anyone"]


def test_submitting_settings_changes_the_room(service: ChatService) -> None:
    alice = Occupant(service, "alice")
    alice.join("dev")
    iq = submit(
        alice,
        {
            "muc#roomconfig_roomname": "Development",
            "muc#roomconfig_roomdesc": "All about dev",
            "muc#roomconfig_moderatedroom": "1",
            "muc#roomconfig_membersonly": "true",
            "muc#roomconfig_publicroom": "0",
            "muc#roomconfig_changesubject": "1",
            "muc#roomconfig_passwordprotectedroom": "1",
            "muc#roomconfig_roomsecret": "sesame",
            "muc#roomconfig_maxusers": "20",
        },
    )
    assert iq.get("type") == "result"
    room = service.get_room("dev")
    assert {"moderated", "invite_only", "secret"} <= room.flags
    assert "topic_lock" not in room.flags
    assert room.key == "sesame" and room.limit == 20 and room.topic == "All about dev"
    form = form_of(alice)
    assert form["muc#roomconfig_roomname"] == ["Development"]
    assert form["muc#roomconfig_roomsecret"] == ["sesame"]
    alice.feed(f"<iq type='get' id='d' to='{ROOM}'><query xmlns='{DISCO}'/></iq>")
    (info,) = alice.take()
    assert info.find(f"{{{DISCO}}}query/{{{DISCO}}}identity").get("name") == "Development"
    iq = submit(
        alice,
        {
            "muc#roomconfig_passwordprotectedroom": "0",
            "muc#roomconfig_maxusers": "none",
            "muc#roomconfig_moderatedroom": "0",
        },
    )
    assert room.key is None and room.limit is None and "moderated" not in room.flags


def test_a_password_protected_room_needs_a_password(service: ChatService) -> None:
    alice = Occupant(service, "alice")
    alice.join("dev")
    iq = submit(alice, {"muc#roomconfig_passwordprotectedroom": "1"})
    assert error_condition(iq) == "not-acceptable"


def test_persistence_registers_the_room_for_an_account(service: ChatService) -> None:
    guest = Occupant(service, "guest")
    guest.join("dev")
    assert error_condition(submit(guest, {"muc#roomconfig_persistentroom": "1"})) == (
        "not-authorized"
    )
    alice = Occupant(service, "alice", account="alice")
    alice.join("ops")
    alice.feed(
        f"<iq type='set' id='p' to='ops@{MUC}'><query xmlns='{OWNER}'>"
        f"<x xmlns='{DATA}' type='submit'>"
        "<field var='muc#roomconfig_persistentroom'><value>1</value></field>"
        "</x></query></iq>"
    )
    (iq,) = alice.take()
    assert iq.get("type") == "result"
    room = service.get_room("ops")
    assert room.registered and room.owner == "alice"


def test_only_operators_configure(service: ChatService) -> None:
    alice = Occupant(service, "alice")
    alice.join("dev")
    carol = Occupant(service, "carol")
    carol.join("dev")
    carol.feed(f"<iq type='get' id='g' to='{ROOM}'><query xmlns='{OWNER}'/></iq>")
    assert error_condition(carol.take()[0]) == "forbidden"
    assert error_condition(submit(carol, {"muc#roomconfig_moderatedroom": "1"})) == "forbidden"


def test_cancel_and_destroy(service: ChatService) -> None:
    alice = Occupant(service, "alice")
    alice.join("dev")
    alice.feed(
        f"<iq type='set' id='x' to='{ROOM}'><query xmlns='{OWNER}'>"
        f"<x xmlns='{DATA}' type='cancel'/></query></iq>"
    )
    assert alice.take()[0].get("type") == "result"
    alice.feed(f"<iq type='set' id='y' to='{ROOM}'><query xmlns='{OWNER}'><destroy/></query></iq>")
    assert error_condition(alice.take()[0]) == "feature-not-implemented"
