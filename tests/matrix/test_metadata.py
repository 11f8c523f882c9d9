"""Metadata across protocols through the real server: IRC ``METADATA`` (``draft/metadata-2``),
XMPP nicknames (XEP-0172) and avatar links (XEP-0084), line chat's ``metadata`` events."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.matrix.clients import IrcLine, IrcPeer, XmppPeer, child, local
from tests.matrix.conftest import PASSWORD, World
from tests.matrix.runner import enter
from tests.support.server import ServerProcess
from tests.support.xmpp_client import DOMAIN

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

CAP2 = ("draft/metadata-2", "batch")
CAP3 = ("draft/metadata-3", "batch")
NS_NICK = "http://jabber.org/protocol/nick"
NS_AVATAR_META = "urn:xmpp:avatar:metadata"
NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_EVENT = "http://jabber.org/protocol/pubsub#event"


def numerics(peer: IrcPeer, *wanted: str) -> list[IrcLine]:
    return [m for m in peer.sync() if m.command in wanted]


def batch_lines(peer: IrcPeer) -> list[IrcLine]:
    """The lines of the next ``metadata`` batch."""
    start = peer.expect(lambda m: m.command == "BATCH" and m.params[0].startswith("+"))
    assert start.params[1] == "metadata"
    ref = start.params[0][1:]
    out = []
    while True:
        m = peer.expect(lambda m: m.tags.get("batch") == ref or m.command == "BATCH")
        if m.command == "BATCH":
            assert m.params[0] == f"-{ref}"
            return out
        out.append(m)


def publish(peer: XmppPeer, node: str, payload: str, tok: str) -> None:
    peer.raw(
        f"<iq type='set' id='{tok}'><pubsub xmlns='{NS_PUBSUB}'><publish node='{node}'>"
        f"<item id='current'>{payload}</item></publish></pubsub></iq>"
    )
    done = peer.expect(lambda el: local(el) == "iq" and el.get("id") == tok)
    assert done.get("type") == "result"


@pytest.fixture(scope="module")
def pair(world: World) -> Iterator[tuple[IrcPeer, IrcPeer, str]]:
    room = world.room("meta")
    setter = world.irc(world.nick("mset"), caps=CAP2)
    watcher = world.irc(world.nick("mwatch"), caps=CAP3)
    enter(room, setter, watcher)
    setter.sync()
    watcher.sync()
    yield setter, watcher, room


def test_set_get_list_and_notifications(pair: tuple[IrcPeer, IrcPeer, str]) -> None:
    setter, watcher, _room = pair
    watcher.send("METADATA * SUB display-name status")
    ok = watcher.expect(lambda m: m.command == "770")
    assert set(ok.params[1:]) == {"display-name", "status"}
    setter.send("METADATA * SET display-name :Sam the Setter")
    answer = setter.expect(lambda m: m.command == "761")
    assert answer.params == (setter.nick, setter.nick, "display-name", "*", "Sam the Setter")
    # metadata-3: a change is a 761 numeric to subscribers.
    told = watcher.expect(lambda m: m.command == "761")
    assert told.params[1:] == (setter.nick, "display-name", "*", "Sam the Setter")
    watcher.send(f"METADATA {setter.nick} GET display-name avatar")
    got = batch_lines(watcher)
    assert [(m.command, m.params[2]) for m in got] == [("761", "display-name"), ("766", "avatar")]
    setter.send("METADATA * SET status :busy")
    setter.expect(lambda m: m.command == "761")
    watcher.expect(lambda m: m.command == "761" and m.params[2] == "status")
    setter.send("METADATA * LIST")
    listed = {m.params[2]: m.params[4] for m in batch_lines(setter)}
    assert listed == {"display-name": "Sam the Setter", "status": "busy"}
    setter.send("METADATA * SET status")
    assert setter.expect(lambda m: m.command == "766").params[2] == "status"
    assert watcher.expect(lambda m: m.command == "766").params[1:3] == (setter.nick, "status")
    # WHOIS shows the keys to clients with the capability.
    watcher.send(f"WHOIS {setter.nick}")
    whois = watcher.expect(lambda m: m.command == "760")
    assert whois.params[1:] == (setter.nick, "display-name", "*", "Sam the Setter")


def test_metadata_2_clients_get_metadata_lines(pair: tuple[IrcPeer, IrcPeer, str]) -> None:
    setter, watcher, _room = pair
    setter.send("METADATA * SUB display-name")
    setter.expect(lambda m: m.command == "770")
    watcher.send("METADATA * SET display-name :Wendy")
    watcher.expect(lambda m: m.command == "761")
    told = setter.expect(lambda m: m.command == "METADATA")
    assert told.params == (watcher.nick, "display-name", "*", "Wendy")


def test_room_metadata_and_refusals(world: World, pair: tuple[IrcPeer, IrcPeer, str]) -> None:
    setter, watcher, room = pair  # the setter joined first: it is the room's operator
    setter.send(f"METADATA #{room} SET display-name :The Meta Room")
    assert setter.expect(lambda m: m.command == "761").params[1] == f"#{room}"
    watcher.send(f"METADATA #{room} SET display-name :Mine now")
    fail = watcher.expect(lambda m: m.command == "FAIL")
    assert fail.params[:4] == ("METADATA", "KEY_NO_PERMISSION", f"#{room}", "display-name")
    watcher.send(f"METADATA {setter.nick} SET display-name :Impostor")
    fail = watcher.expect(lambda m: m.command == "FAIL")
    assert fail.params[:3] == ("METADATA", "KEY_NO_PERMISSION", setter.nick)
    watcher.send("METADATA * SET bad!key :x")
    assert watcher.expect(lambda m: m.command == "FAIL").params[1] == "KEY_INVALID"
    watcher.send("METADATA * SET display-name :" + "x" * 400)
    assert watcher.expect(lambda m: m.command == "FAIL").params[1] == "INVALID_VALUE"
    watcher.send("METADATA nosuchnick LIST")
    assert watcher.expect(lambda m: m.command == "FAIL").params[1] == "INVALID_TARGET"
    watcher.send(f"METADATA #{room} GET display-name")
    assert batch_lines(watcher)[0].params[4] == "The Meta Room"
    # Someone joining later who subscribed gets the room's and the members' values.
    late = world.irc(world.nick("mlate"), caps=CAP3)
    late.send("METADATA * SUB display-name")
    late.expect(lambda m: m.command == "770")
    late.join(room)
    got = numerics(late, "761")
    shown = {m.params[1]: m.params[4] for m in got}
    assert len(got) == len(shown), got
    assert shown[f"#{room}"] == "The Meta Room"
    assert shown[setter.nick] == "Sam the Setter"


def test_xmpp_nickname_and_avatar_reach_irc(world: World) -> None:
    room = world.room("metax")
    irc = world.irc(world.nick("mirc"), caps=CAP3)
    xmpp = world.xmpp(world.nick("mxmpp"))
    enter(room, irc, xmpp)
    irc.send("METADATA * SUB display-name avatar")
    irc.expect(lambda m: m.command == "770")
    irc.sync()
    publish(xmpp, NS_NICK, f"<nick xmlns='{NS_NICK}'>Ximena</nick>", "p1")
    told = irc.expect(lambda m: m.command == "761")
    assert told.params[1:] == (xmpp.nick, "display-name", "*", "Ximena")
    publish(
        xmpp,
        NS_AVATAR_META,
        f"<metadata xmlns='{NS_AVATAR_META}'><info id='abc' bytes='10' type='image/png' "
        "url='https://example.org/x.png'/></metadata>",
        "p2",
    )
    told = irc.expect(lambda m: m.command == "761" and m.params[2] == "avatar")
    assert told.params[4] == "https://example.org/x.png"
    irc.send(f"METADATA {xmpp.nick} LIST")
    assert {m.params[2]: m.params[4] for m in batch_lines(irc)} == {
        "display-name": "Ximena",
        "avatar": "https://example.org/x.png",
    }


def test_a_vcard_nickname_and_photo_link_are_metadata(world: World) -> None:
    room = world.room("metav")
    irc = world.irc(world.nick("mvirc"), caps=CAP3)
    xmpp = world.xmpp(world.nick("mvx"))
    enter(room, irc, xmpp)
    irc.send("METADATA * SUB display-name avatar")
    irc.expect(lambda m: m.command == "770")
    irc.sync()
    xmpp.raw(
        "<iq type='set' id='vc1'><vCard xmlns='vcard-temp'><FN>V X</FN><NICKNAME>Vee</NICKNAME>"
        "<PHOTO><EXTVAL>https://example.org/v.png</EXTVAL></PHOTO></vCard></iq>"
    )
    assert xmpp.expect(lambda el: el.get("id") == "vc1").get("type") == "result"
    got = {}
    for _ in range(2):
        m = irc.expect(lambda m: m.command == "761")
        got[m.params[2]] = m.params[4]
    assert got == {"display-name": "Vee", "avatar": "https://example.org/v.png"}


def test_irc_display_name_reaches_xmpp_as_a_nickname(world: World) -> None:
    room = world.room("metan")
    name = world.nick("mnick")
    world.register(name)
    irc = world.irc(name, caps=CAP3, sasl=(name, PASSWORD))
    xmpp = world.xmpp(world.nick("mxn"))
    # A client that asks for nickname notifications (XEP-0115 +notify).
    xmpp.do(xmpp.xmpp.plugin["xep_0030"].add_feature, f"{NS_NICK}+notify")
    xmpp.raw(
        "<presence><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' "
        "node='https://chatserver.test/matrix' ver='matrix-nick'/></presence>"
    )
    xmpp.sync()
    enter(room, irc, xmpp)
    xmpp.sync()
    irc.send("METADATA * SET display-name :Iris from IRC")
    irc.expect(lambda m: m.command == "761")

    def nick_event(el: object) -> bool:
        event = child(el, NS_EVENT, "event")  # type: ignore[arg-type]
        return event is not None and f"{{{NS_NICK}}}nick" in {c.tag for c in event.iter()}

    el = xmpp.expect(nick_event)
    assert el.get("from") == f"{name.lower()}@{DOMAIN}"
    assert [c.text for c in el.iter(f"{{{NS_NICK}}}nick")] == ["Iris from IRC"]


def test_a_published_nickname_is_metadata_after_a_restart(tmp_path: Path) -> None:
    """What an account published before the server started is its metadata once a session
    of it sends presence."""
    server = ServerProcess(tmp_path, protocols=("irc", "xmpp"))
    server.start()
    try:
        server.create_account("pubby", PASSWORD)
        xmpp = XmppPeer(server.ports["xmpp"], "pubby", PASSWORD)
        publish(xmpp, NS_NICK, f"<nick xmlns='{NS_NICK}'>Pub Lisher</nick>", "n1")
        xmpp.close()
        server.stop()
        server.start()
        xmpp = XmppPeer(server.ports["xmpp"], "pubby", PASSWORD)
        irc = IrcPeer(server.ports["irc"], "reader", caps=CAP3)
        irc.send("METADATA pubby GET display-name")
        (got,) = batch_lines(irc)
        assert got.command == "761"
        assert got.params[1:] == ("pubby", "display-name", "*", "Pub Lisher")
        xmpp.close()
        irc.close()
    finally:
        server.kill()


def test_sub_and_unsub_answer_each_invalid_key_and_keep_the_valid_ones(world: World) -> None:
    irc = world.irc(world.nick("msubs"), caps=CAP3)
    irc.sync()
    irc.send("METADATA * SUB display-name bad!key Avatar")
    got = irc.sync()
    assert [m.params[1:] for m in got if m.command == "FAIL"] == [
        ("KEY_INVALID", "bad!key", "Invalid key")
    ]
    assert [m.params[1:] for m in got if m.command == "770"] == [("display-name", "avatar")]
    irc.send("METADATA * UNSUB avatar also!bad homepage")
    got = irc.sync()
    assert [m.params[1:] for m in got if m.command == "FAIL"] == [
        ("KEY_INVALID", "also!bad", "Invalid key")
    ]
    assert [m.params[1:] for m in got if m.command == "771"] == [("avatar", "homepage")]
    irc.send("METADATA * SUBS")
    assert [m.params[1:] for m in numerics(irc, "772")] == [("display-name",)]
    # The limit: one key past it is refused by name, and what came before it is kept.
    keys = [f"k{i}" for i in range(60)]
    irc.send("METADATA * SUB " + " ".join(keys[:30]))
    irc.send("METADATA * SUB " + " ".join(keys[30:]))
    got = irc.sync()
    assert [m.params[1:3] for m in got if m.command == "FAIL"] == [("TOO_MANY_SUBS", "k49")]
    irc.send("METADATA * SUBS")
    listed = [key for m in numerics(irc, "772") for key in m.params[1:]]
    assert sorted(listed) == sorted(["display-name", *keys[:49]])
