"""One identity everywhere: accounts, passwords, nick enforcement, several connections of one
user over different protocols, and one away state.

* An account registered on any protocol (IRC NickServ, line ``/register``, XMPP in-band
  registration) logs in on every protocol (IRC SASL PLAIN and NickServ IDENTIFY, line
  ``/identify``, XMPP SASL).
* A password changed on one protocol is the password on all of them.
* Nick enforcement renames an unidentified holder of a registered nick, whichever protocol
  it came from; the owner logging in takes the nick back at once.
* Several connections of one account are one user: one member of each room, what one sends
  shows on the others, what is sent to it reaches all, and it leaves rooms only with its last
  connection (or an explicit part).
* IRC away, XMPP presence and line ``/away`` are one state.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.matrix.clients import (
    DOMAIN,
    NS_CLIENT,
    IrcLine,
    IrcPeer,
    LineClient,
    LinePeer,
    LoginFailed,
    Peer,
    XmppPeer,
    address,
    child_text,
    local,
    parse_irc,
    q,
    room_jid,
    status_codes,
)
from tests.matrix.conftest import ENFORCE_SECONDS, PASSWORD, World
from tests.matrix.forms import Ev, check_none, describe, wants
from tests.matrix.runner import enter, leave, step

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

PROTOCOLS = ("irc", "line", "xmpp")


# -- logging in, each protocol's way ------------------------------------------------------------


def irc_sasl(world: World, name: str, password: str) -> bool:
    """SASL PLAIN during IRC registration: 903 or 904."""
    client = LineClient(world.ports["irc"])
    try:
        for line in ("CAP LS 302", "CAP REQ :sasl", f"NICK {name}", f"USER {name} 0 * :x"):
            client.send(line)
        client.expect(lambda s: " ACK " in s)
        client.send("AUTHENTICATE PLAIN")
        client.expect("AUTHENTICATE +")
        blob = base64.b64encode(f"{name}\0{name}\0{password}".encode()).decode()
        client.send(f"AUTHENTICATE {blob}")
        answer = parse_irc(client.expect(lambda s: parse_irc(s).command in ("903", "904")))
        return answer.command == "903"
    finally:
        client.close()


def irc_nickserv(world: World, name: str, password: str) -> bool:
    """NickServ IDENTIFY after connecting under another nick."""
    peer = IrcPeer(world.ports["irc"], world.nick("nsid"))
    try:
        peer.msg("NickServ", f"IDENTIFY {name} {password}")
        notice = peer.expect(lambda m: m.command == "NOTICE" and m.nick == "NickServ")
        return "now logged in" in notice.last
    finally:
        peer.close()


def line_identify(world: World, name: str, password: str) -> bool:
    try:
        peer = LinePeer(world.ports["line"], name, password=password)
    except LoginFailed:
        return False
    peer.close()
    return True


def xmpp_login(world: World, name: str, password: str) -> bool:
    try:
        peer = XmppPeer(world.ports["xmpp"], name, password, presence=False)
    except LoginFailed:
        return False
    peer.close()
    return True


LOGINS: dict[str, Callable[[World, str, str], bool]] = {
    "irc-sasl": irc_sasl,
    "irc-nickserv": irc_nickserv,
    "line": line_identify,
    "xmpp": xmpp_login,
}


def register_on(world: World, protocol: str, name: str, password: str) -> None:
    if protocol == "irc":
        peer = IrcPeer(world.ports["irc"], name)
        try:
            peer.msg("NickServ", f"REGISTER {password}")
            notice = peer.expect(lambda m: m.command == "NOTICE" and m.nick == "NickServ")
            assert "registered" in notice.last, notice.raw
        finally:
            peer.close()
    elif protocol == "line":
        world.register(name, password)
    else:
        XmppPeer(world.ports["xmpp"], name, password, register=True).close()


@pytest.mark.parametrize("registered_on", PROTOCOLS)
def test_an_account_from_any_protocol_logs_in_on_all(world: World, registered_on: str) -> None:
    name = world.nick(f"reg{registered_on}")
    register_on(world, registered_on, name, PASSWORD)
    for how, login in LOGINS.items():
        assert login(world, name, PASSWORD), f"{how} refused {name}"
        assert not login(world, name, "wrong-password"), f"{how} took a wrong password"


def change_password(world: World, protocol: str, name: str, old: str, new: str) -> None:
    if protocol == "irc":
        peer = IrcPeer(world.ports["irc"], name, caps=(), sasl=(name, old))
        try:
            peer.msg("NickServ", f"SET PASSWORD {old} {new}")
            notice = peer.expect(lambda m: m.command == "NOTICE" and m.nick == "NickServ")
            assert "changed" in notice.last, notice.raw
        finally:
            peer.close()
    elif protocol == "line":
        peer = LinePeer(world.ports["line"], name, password=old)
        try:
            peer.cmd("password", old=old, new=new)
            assert peer.expect(lambda o: o.get("cmd") == "password")["type"] == "ok"
        finally:
            peer.close()
    else:
        xmpp = XmppPeer(world.ports["xmpp"], name, old)
        try:
            xmpp.raw(
                f"<iq type='set' id='pw1' to='{DOMAIN}'><query xmlns='jabber:iq:register'>"
                f"<username>{name}</username><password>{new}</password></query></iq>"
            )
            answer = xmpp.expect(lambda el: local(el) == "iq" and el.get("id") == "pw1")
            assert answer.get("type") == "result", describe(answer)
        finally:
            xmpp.close()


@pytest.mark.parametrize("changed_on", PROTOCOLS)
def test_a_password_changed_on_one_protocol_is_changed_on_all(
    world: World, changed_on: str
) -> None:
    name = world.nick(f"pw{changed_on}")
    world.register(name, PASSWORD)
    new = "a-new-secret"
    change_password(world, changed_on, name, PASSWORD, new)
    for how, login in LOGINS.items():
        assert not login(world, name, PASSWORD), f"{how} still takes the old password"
        assert login(world, name, new), f"{how} refused the new password"


# -- nick enforcement ---------------------------------------------------------------------------


def test_nick_enforcement_whatever_the_intruders_protocol(lenient: World) -> None:
    world = lenient
    owners = {p: world.nick(f"own{p}") for p in PROTOCOLS}
    for name in owners.values():
        world.register(name, PASSWORD)
    room = world.room("enf")
    host = world.xmpp(world.nick("enfhost"))
    enter(room, host)
    # An IRC user and a line user take a registered nick; an XMPP user renames itself to one
    # in a room (XMPP logins are to one's own account: a room nick is how XMPP intrudes).
    irc = world.irc(owners["irc"])
    line = world.line(owners["line"], json_mode=False)
    xmpp = world.xmpp(world.nick("enfx"))
    enter(room, xmpp)
    xmpp.rename_in(room, owners["xmpp"])

    warning = "is a registered nick. Identify within"
    irc.expect(lambda m: m.command == "NOTICE" and warning in m.last)
    line.expect(lambda s: s.startswith(f"-!- Server: {owners['line']} {warning}"))
    xmpp.expect(
        lambda el: (
            local(el) == "message"
            and el.get("from") == DOMAIN
            and warning in (child_text(el, NS_CLIENT, "body") or "")
        )
    )
    # Renamed to a guest nick when the time is up, each in its own protocol's way.
    wait = ENFORCE_SECONDS + 3
    renamed = irc.expect(lambda m: m.command == "NICK", timeout=wait)
    assert renamed.nick == owners["irc"] and renamed.params[0].startswith("Guest")
    assert line.expect(lambda s: s.startswith("*** you are now known as "), timeout=wait)
    gone = xmpp.expect(
        lambda el: local(el) == "presence" and "303" in status_codes(el), timeout=wait
    )
    assert gone.get("from") == f"{room_jid(room)}/{owners['xmpp']}"
    host.expect(lambda el: local(el) == "presence" and "303" in status_codes(el))
    leave(room, host)


@pytest.mark.parametrize("owner_on", PROTOCOLS)
def test_the_owner_logging_in_takes_its_nick_back(lenient: World, owner_on: str) -> None:
    world = lenient
    name = world.nick(f"back{owner_on}")
    world.register(name, PASSWORD)
    intruder = world.irc(name)
    if owner_on == "irc":
        # IRC: connect under another nick, then NickServ REGAIN.
        owner: Peer = world.irc(world.nick("tmp"))
        owner.msg("NickServ", f"REGAIN {name} {PASSWORD}")
    elif owner_on == "line":
        owner = world.line(name, password=PASSWORD)
    else:
        owner = world.xmpp(name)
    taken = intruder.expect(lambda m: m.command == "NICK")
    assert taken.nick == name and taken.params[0].startswith("Guest")
    if owner_on == "irc":
        assert owner.expect(lambda m: m.command == "NICK").params[0] == name
    else:
        assert owner.nick == name


# -- several connections, one user --------------------------------------------------------------


def connect_everywhere(world: World, name: str) -> dict[str, Peer]:
    """One account over IRC (SASL), line chat (/identify) and XMPP, in that order."""
    world.register(name, PASSWORD)
    irc = world.irc(name, sasl=(name, PASSWORD))
    line = world.line(name, password=PASSWORD)
    xmpp = world.xmpp(name)
    return {"irc": irc, "line": line, "xmpp": xmpp}


@pytest.fixture
def watchers(world: World) -> dict[str, Peer]:
    return {
        "irc": world.irc(world.nick("wirc"), caps=("away-notify",)),
        "line": world.line(world.nick("wline")),
        "xmpp": world.xmpp(world.nick("wxmpp")),
    }


def test_one_user_over_three_protocols_is_one_member(
    world: World, watchers: dict[str, Peer]
) -> None:
    name = world.nick("multi")
    me = connect_everywhere(world, name)
    room = world.room("mc")
    enter(room, *watchers.values())
    # Joined from IRC: the others see one join; its other connections are in the room too.
    step(
        me["irc"],
        lambda: me["irc"].join(room),
        [Ev("join", name, room)],
        [*watchers.values(), me["line"], me["xmpp"]],
    )
    names = watchers["irc"]
    names.send(f"NAMES #{room}")
    listed = names.expect(lambda m: m.command == "353").last.split()
    assert [n.lstrip("@+") for n in listed].count(name) == 1
    for sender in me.values():
        # What one connection says shows on its siblings as the user's own message.  The
        # sender sees it again only on XMPP, where the room reflects every message (an IRC
        # client without echo-message, and line chat, show what they typed themselves).
        mine = [c for c in me.values() if c is not sender or isinstance(c, XmppPeer)]
        step(
            sender,
            lambda s=sender: s.say(room, f"from my {s.protocol} client"),
            [Ev("message", name, room, f"from my {sender.protocol} client")],
            [*watchers.values(), *mine],
        )
    leave(room, *watchers.values())
    leave(room, me["irc"])


def test_private_messages_to_the_user_reach_every_connection(
    world: World, watchers: dict[str, Peer]
) -> None:
    name = world.nick("mcpm")
    me = connect_everywhere(world, name)
    for sender in watchers.values():
        # To the user: every one of its connections gets it.
        step(
            sender,
            lambda s=sender: s.msg(name, f"to you from {s.protocol}"),
            [Ev("privmsg", sender.nick, text=f"to you from {sender.protocol}")],
            list(me.values()),
        )


def copy_wants(peer: Peer, name: str, to: str, text: str) -> Callable[[Any], bool]:
    """A private message ``name`` sent to ``to`` from another connection, as ``peer`` sees it:
    IRC as a PRIVMSG from itself, line chat as ``-> *to* text``, XMPP as a carbon copy
    (XEP-0280 ``sent``)."""
    if isinstance(peer, IrcPeer):
        return lambda m: (
            isinstance(m, IrcLine)
            and m.command == "PRIVMSG"
            and m.nick == name
            and m.params == (to, text)
        )
    if isinstance(peer, LinePeer):
        return lambda o: (
            o.get("type") == "message"
            and o.get("from") == name
            and o.get("to") == to
            and o.get("text") == text
        )
    sent = q("urn:xmpp:carbons:2", "sent")

    def carbon(el: Any) -> bool:
        wrapper = el.find(sent)
        if local(el) != "message" or wrapper is None:
            return False
        inner = wrapper.find(f"{q('urn:xmpp:forward:0', 'forwarded')}/{q(NS_CLIENT, 'message')}")
        return (
            inner is not None
            and (inner.get("to") or "").split("/")[0] == address(to)
            and child_text(inner, NS_CLIENT, "body") == text
        )

    return carbon


def test_private_messages_sent_from_one_connection_show_on_the_others(
    world: World, watchers: dict[str, Peer]
) -> None:
    name = world.nick("mccc")
    me = connect_everywhere(world, name)
    # An XMPP client asks for copies of what its other clients send (XEP-0280).
    xmpp = me["xmpp"]
    assert isinstance(xmpp, XmppPeer)
    xmpp.raw("<iq type='set' id='cc1'><enable xmlns='urn:xmpp:carbons:2'/></iq>")
    enabled = xmpp.expect(lambda el: local(el) == "iq" and el.get("id") == "cc1")
    assert enabled.get("type") == "result", describe(enabled)
    target = watchers["line"]
    for sender in me.values():
        text = f"sent from {sender.protocol}"
        sender.msg(target.nick, text)
        sender.sync()
        got = target.sync()
        assert [o.get("text") for o in got if o.get("type") == "message"] == [text]
        for sibling in me.values():
            if sibling is sender:
                continue
            items = sibling.sync()
            test = copy_wants(sibling, name, target.nick, text)
            hits = [i for i in items if _safe(test, i)]
            assert len(hits) == 1, f"{sibling.label}: {[describe(i) for i in items]}"


def _safe(test: Callable[[Any], bool], item: Any) -> bool:
    try:
        return bool(test(item))
    except (AttributeError, KeyError, TypeError):
        return False


def test_leaving_rooms_only_with_the_last_connection(
    world: World, watchers: dict[str, Peer]
) -> None:
    name = world.nick("mclast")
    me = connect_everywhere(world, name)
    room, other = world.room("last"), world.room("part")
    enter(room, *watchers.values())
    enter(other, *watchers.values())
    me["line"].join(room)
    me["line"].join(other)
    for peer in (*me.values(), *watchers.values()):
        peer.sync()
    # An explicit part from one connection: every connection leaves, the others see it once.
    step(
        me["xmpp"],
        lambda: me["xmpp"].part(other, "done here"),
        [Ev("part", name, other, "done here")],
        [*watchers.values(), me["irc"], me["line"]],
    )
    # Closing connections one by one: nothing happens until the last one goes.
    quit_ev = Ev("quit", name, room, "Quit: the last one")
    part_ev = Ev("part", name, room)
    for closing in ("xmpp", "irc"):
        me[closing].close()
        # Nothing is to happen, so there is nothing to wait for but the close itself.
        time.sleep(0.3)
        for watcher in watchers.values():
            items = watcher.sync()
            check_none(watcher, items, wants(quit_ev, watcher) + wants(part_ev, watcher))
    step(
        None,
        lambda: me["line"].quit("the last one"),
        [quit_ev],
        list(watchers.values()),
        wait=True,
    )
    leave(room, *watchers.values())
    leave(other, *watchers.values())


# -- one away state -----------------------------------------------------------------------------


def away_state(world: World, nick: str) -> dict[str, str | None]:
    """The user's away message as a user of each protocol reads it (None: here)."""
    irc = world.irc(world.nick("qirc"))
    irc.send(f"WHOIS {nick}")
    irc_lines = []
    while True:
        m = irc.expect(lambda m: m.command in ("301", "318"))
        if m.command == "318":
            break
        irc_lines.append(m)
    irc.close()
    line = world.line(world.nick("qline"))
    line.cmd("whois", nick=nick)
    whois = line.expect(lambda o: o.get("cmd") == "whois")
    line.close()
    return {
        "irc": irc_lines[0].last if irc_lines else None,
        "line": whois.get("away"),
    }


def test_away_is_one_state_across_protocols(world: World, watchers: dict[str, Peer]) -> None:
    name = world.nick("mcaway")
    me = connect_everywhere(world, name)
    room = world.room("away")
    enter(room, *watchers.values())
    me["irc"].join(room)
    for peer in (*me.values(), *watchers.values()):
        peer.sync()
    viewers = [*watchers.values(), *(c for c in me.values())]
    # Set on IRC, back from line chat, away again from XMPP presence: each seen by all.
    step(
        me["irc"],
        lambda: me["irc"].away("brb"),
        [Ev("away", name, room, "brb")],
        [v for v in viewers if v is not me["irc"]],
    )
    assert away_state(world, name) == {"irc": "brb", "line": "brb"}
    step(
        me["line"],
        lambda: me["line"].away(None),
        [Ev("away", name, room, None)],
        [v for v in viewers if v is not me["line"]],
    )
    assert away_state(world, name) == {"irc": None, "line": None}
    step(
        me["xmpp"],
        lambda: me["xmpp"].away("in a meeting"),
        [Ev("away", name, room, "in a meeting")],
        [v for v in viewers if v is not me["xmpp"]],
    )
    assert away_state(world, name) == {"irc": "in a meeting", "line": "in a meeting"}
    leave(room, *watchers.values())


def subscribed_contact(world: World, contact_on: str) -> tuple[XmppPeer, Peer, str]:
    """An XMPP user subscribed to the presence of a guest on IRC or line chat, with whom it
    shares no room.  A guest has no roster to keep a request in: it is approved at once."""
    xmpp = world.xmpp(world.nick("roster"))
    nick = world.nick(f"contact{contact_on}")
    contact: Peer = world.irc(nick) if contact_on == "irc" else world.line(nick)
    # A guest's address (an account's contact is the account's: see the tests below).
    bare = address(nick)
    xmpp.do(xmpp.xmpp.send_presence, pto=bare, ptype="subscribe")
    xmpp.expect(lambda el: local(el) == "presence" and el.get("type") == "subscribed")
    xmpp.expect(presence_from(bare, None))
    return xmpp, contact, bare


def presence_from(bare: str, show: str | None, *, available: bool = True) -> Callable[[Any], bool]:
    def test(el: Any) -> bool:
        return (
            local(el) == "presence"
            and (el.get("from") or "").split("/")[0] == bare
            and (el.get("type") is None) == available
            and (not available or child_text(el, NS_CLIENT, "show") == show)
        )

    return test


@pytest.mark.parametrize("contact_on", ("irc", "line"))
def test_xmpp_contacts_see_other_protocols_users_come_and_go(world: World, contact_on: str) -> None:
    xmpp, contact, bare = subscribed_contact(world, contact_on)
    contact.quit("bye")
    xmpp.expect(presence_from(bare, None, available=False))
    nick = bare.split("@")[0].removeprefix("~")
    again = world.irc(nick) if contact_on == "irc" else world.line(nick)
    xmpp.expect(presence_from(bare, None))
    again.close()


@pytest.mark.parametrize("contact_on", ("irc", "line"))
def test_xmpp_contacts_see_other_protocols_users_away(world: World, contact_on: str) -> None:
    xmpp, contact, bare = subscribed_contact(world, contact_on)
    contact.away("gone fishing")
    contact.sync()
    away = xmpp.expect(presence_from(bare, "away"))
    assert child_text(away, NS_CLIENT, "status") == "gone fishing"
    contact.away(None)
    contact.sync()
    xmpp.expect(presence_from(bare, None))
