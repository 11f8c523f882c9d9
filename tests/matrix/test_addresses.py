"""An address belongs to its account, on every protocol.

Who may hold a registered nick ("strict" enforcement, the default: only a session logged in
to the account), how XMPP users see someone who holds a nick without owning its account (as
the guest address ``~nick@domain``, never as the account's JID, even while "timeout"
enforcement lets them keep the nick for a while), and the names no one may take.
"""

from __future__ import annotations

import pytest

from tests.hostile.clients import XmppClient
from tests.matrix.clients import (
    DOMAIN,
    NS_CLIENT,
    LinePeer,
    child_text,
    local,
    muc_item,
    q,
    room_jid,
)
from tests.matrix.conftest import PASSWORD, World
from tests.matrix.runner import enter, leave, xmpp_error
from tests.support.server import LineClient

RESERVED_433 = "Nickname is reserved by a different account"


def test_a_registered_nick_is_kept_for_its_account_on_every_protocol(world: World) -> None:
    name = world.nick("kept")
    world.register(name)
    # IRC without logging in first: 433, at registration.
    irc = LineClient(world.ports["irc"])
    irc.send(f"NICK {name}")
    irc.send(f"USER {name} 0 * :intruder")
    assert f" 433 * {name} :{RESERVED_433}" in irc.expect(" 433 ")
    irc.close()
    # Line chat, text and JSON.
    line = LineClient(world.ports["line"])
    line.expect("*** Choose a nick:")
    line.send(name.upper())
    assert line.expect("!!! error:") == (
        f"!!! error: {name.upper()} is a registered nick: log in with"
        f" /identify {name.upper()} <password>, or choose another nick"
    )
    line.close()
    with pytest.raises(AssertionError, match="nick_reserved"):
        LinePeer(world.ports["line"], name)
    # A user logged in to another account, renaming itself: IRC, and in an XMPP room.
    other = world.nick("other")
    world.register(other)
    logged_in = world.irc(other, sasl=(other, PASSWORD))
    logged_in.rename(name)
    refused = logged_in.expect(lambda m: m.command == "433")
    assert refused.params[1:] == (name, f"{RESERVED_433}: log in (SASL or NickServ) to use it")
    xmpp = world.xmpp(world.nick("renamer"))
    room = world.room("kept")
    enter(room, xmpp)
    xmpp.rename_in(room, name)
    error = xmpp.expect(lambda el: local(el) == "presence" and el.get("type") == "error")
    assert xmpp_error(error) == "conflict"
    # The owner gets it, from any protocol.
    owner = world.irc(name, sasl=(name, PASSWORD))
    assert owner.nick == name
    leave(room, xmpp)


def test_a_guest_on_a_registered_nick_never_appears_as_the_account(lenient: World) -> None:
    world = lenient
    victim = world.nick("victim")
    world.register(victim)
    friend = world.xmpp(world.nick("friend"))
    watcher = world.irc(world.nick("watch"), caps=("extended-join",))
    room = world.room("imp")
    enter(room, friend, watcher)
    # "timeout" enforcement lets an IRC guest take the nick, for now.
    intruder = world.irc(victim)
    assert intruder.nick == victim
    intruder.join(room)
    guest = f"~{victim}@{DOMAIN}"
    joined = friend.expect(
        lambda el: local(el) == "presence" and el.get("from") == f"{room_jid(room)}/{victim}"
    )
    item = muc_item(joined)
    assert item is not None and item.get("jid") == guest
    extended = watcher.expect(lambda m: m.command == "JOIN" and m.nick == victim)
    assert extended.params[1] == "*"  # extended-join: no account

    # One-to-one: from the guest address, and the account's address does not reach it.
    intruder.msg(friend.nick, "it is me, really")
    said = friend.expect(
        lambda el: local(el) == "message" and child_text(el, NS_CLIENT, "body") is not None
    )
    assert said.get("from", "").split("/")[0] == guest
    friend.raw(
        f"<message to='{victim}@{DOMAIN}' type='chat' id='acct1'><body>for the owner</body>"
        "</message>"
    )
    # Nobody is logged in to the account: kept for its owner's next login, never given to the
    # guest on the nick (and no error: the account exists).
    assert not [el for el in friend.sync() if el.get("id") == "acct1"]
    friend.raw(f"<message to='{guest}' type='chat' id='g1'><body>for the guest</body></message>")
    got = intruder.expect(lambda m: m.command == "PRIVMSG")
    assert got.params == (victim, "for the guest")

    # The owner logs in under another nick: the account's address reaches it, and it is
    # shown as the account whatever its nick.
    owner = world.irc(world.nick("owner"), sasl=(victim, PASSWORD))
    # What was kept for the account while nobody was logged in to it comes first.
    kept = owner.expect(lambda m: m.command == "PRIVMSG")
    assert kept.params == (victim, "for the owner")
    friend.raw(f"<message to='{victim}@{DOMAIN}' type='chat' id='acct2'><body>hi</body></message>")
    assert owner.expect(lambda m: m.command == "PRIVMSG").params == (owner.nick, "hi")
    owner.msg(friend.nick, "the real one")
    real = friend.expect(
        lambda el: local(el) == "message" and child_text(el, NS_CLIENT, "body") == "the real one"
    )
    assert real.get("from", "").split("/")[0] == f"{victim}@{DOMAIN}"
    intruder.sync()
    leaked = [line for line in intruder.client.seen if "for the owner" in line or ":hi" in line]
    assert leaked == []
    leave(room, friend, watcher, intruder)


def test_a_roster_contact_is_an_account_not_a_nick(lenient: World) -> None:
    world = lenient
    contact = world.nick("contact")
    world.register(contact)
    fan = world.xmpp(world.nick("fan"))
    bare = f"{contact}@{DOMAIN}"
    fan.do(fan.xmpp.send_presence, pto=bare, ptype="subscribe")
    # The account approves from XMPP, then goes away.
    owner = world.xmpp(contact)
    owner.expect(lambda el: local(el) == "presence" and el.get("type") == "subscribe")
    owner.do(owner.xmpp.send_presence, pto=fan.jid.split("/")[0], ptype="subscribed")
    fan.expect(lambda el: local(el) == "presence" and el.get("type") == "subscribed")
    owner.quit("bye")
    fan.expect(lambda el: local(el) == "presence" and el.get("type") == "unavailable")
    # A guest on the nick is not the contact: nothing comes online at the account's address.
    squatter = world.line(contact)
    squatter.sync()
    seen = fan.sync()
    assert not any(
        local(el) == "presence"
        and (el.get("from") or "").split("/")[0] == bare
        and el.get("type") is None
        for el in seen
    ), seen
    # Logging in to the account (from line chat) brings the contact online.
    squatter.cmd("identify", nick=contact, password=PASSWORD)
    fan.expect(
        lambda el: (
            local(el) == "presence"
            and (el.get("from") or "").split("/")[0] == bare
            and el.get("type") is None
        )
    )


@pytest.mark.parametrize("name", ["NickServ", "chanserv", "Guest42"])
def test_service_and_guest_names_are_no_ones(world: World, name: str) -> None:
    line = LineClient(world.ports["line"])
    line.expect("*** Choose a nick:")
    line.send(name)
    assert line.expect("!!! error:").startswith(f"!!! error: {name} is reserved for")
    line.close()
    irc = LineClient(world.ports["irc"])
    irc.send(f"NICK {name}")
    irc.send("USER someone 0 * :someone")
    assert f" 432 * {name} " in irc.expect(" 432 ")
    irc.close()
    xmpp = XmppClient(world.ports["xmpp"])
    answer = xmpp.register(name.lower(), PASSWORD)
    assert answer.get("type") == "error"
    error = answer.find(q(NS_CLIENT, "error"))
    assert error is not None
    assert error.find("{urn:ietf:params:xml:ns:xmpp-stanzas}not-acceptable") is not None
    xmpp.close()
    # Nor may a logged-in XMPP user take it as a room nick.
    renamer = world.xmpp(world.nick("svc"))
    room = world.room("svc")
    enter(room, renamer)
    renamer.rename_in(room, name)
    error_el = renamer.expect(lambda el: local(el) == "presence" and el.get("type") == "error")
    assert xmpp_error(error_el) == "jid-malformed"
    leave(room, renamer)
