"""Message carbons (XEP-0280) across protocols, and the quit reason of a closing stream."""

from __future__ import annotations

from chatserver.core.events import Message, Quit

CARBONS = "urn:xmpp:carbons:2"
FORWARD = "urn:xmpp:forward:0"


def enable(c) -> None:  # type: ignore[no-untyped-def]
    reply = c.iq("set", f"<enable xmlns='{CARBONS}'/>")
    assert reply.get("type") == "result"


def sent_carbon(el):  # type: ignore[no-untyped-def]
    """The forwarded message inside a ``sent`` carbon (the test client strips jabber:client)."""
    return el.find(f"{{{CARBONS}}}sent/{{{FORWARD}}}forwarded/message")


def test_carbons_are_advertised(client, account) -> None:
    account("alice")
    c = client().login("alice", "secret1")
    reply = c.iq("get", "<query xmlns='http://jabber.org/protocol/disco#info'/>", to="localhost")
    features = {f.get("var") for f in reply.iter("{http://jabber.org/protocol/disco#info}feature")}
    assert CARBONS in features


def test_a_message_sent_from_another_connection_is_copied_once_enabled(
    client, account, other_user, service
) -> None:
    account("alice")
    bob = other_user("bob")
    phone = client().login("alice", "secret1", resource="phone")
    desk = client().login("alice", "secret1", resource="desk")
    # Without carbons, no copy (a client that does not know them would take it for a message
    # to it).
    phone.send("<message to='~bob@localhost' type='chat'><body>first</body></message>")
    assert desk.received() == []
    enable(desk)
    phone.send("<message to='~bob@localhost' type='chat' id='s2'><body>second</body></message>")
    [copy] = desk.received()
    assert copy.get("from") == "alice@localhost" and copy.get("to") == "alice@localhost/desk"
    inner = sent_carbon(copy)
    assert inner.get("to") == "~bob@localhost" and inner.findtext("body") == "second"
    # The forwarded stanza is the one the phone sent: its id, from the phone.
    assert (inner.get("id"), inner.get("from")) == ("s2", "alice@localhost/phone")
    assert bob.of(Message)[-1].text == "second"
    # The sender itself gets no copy, and neither does anyone else.
    assert phone.received() == []
    desk.iq("set", f"<disable xmlns='{CARBONS}'/>")
    phone.send("<message to='~bob@localhost' type='chat'><body>third</body></message>")
    assert desk.received() == []


def test_a_message_sent_from_another_protocol_is_copied(
    client, account, other_user, service
) -> None:
    account("alice")
    other_user("bob")
    desk = client().login("alice", "secret1", resource="desk")
    enable(desk)
    # Alice's line-chat connection joins her user (one account, two protocols).
    line = other_user("alice2")
    service.login(line.core, "alice")
    desk.received()
    service.say(line.core, nick="bob", text="from my terminal", kind="action")
    [copy] = desk.received()
    assert sent_carbon(copy).findtext("body") == "/me from my terminal"


def test_a_last_unavailable_presence_gives_the_quit_reason(
    client, account, other_user, service
) -> None:
    account("alice")
    bob = other_user("bob")
    c = client().login("alice", "secret1", presence=True)
    service.join(c.conn.core, "tea")
    service.join(bob.core, "tea")
    c.send("<presence type='unavailable'><status>off to bed</status></presence>")
    c.close()
    assert [e.reason for e in bob.of(Quit)] == ["Quit: off to bed"]


def test_a_stream_that_just_ends_is_disconnected(client, account, other_user, service) -> None:
    account("alice")
    bob = other_user("bob")
    c = client().login("alice", "secret1", presence=True)
    service.join(c.conn.core, "tea")
    service.join(bob.core, "tea")
    # Unavailable, then available again: the stream is not leaving after all.
    c.send("<presence type='unavailable'><status>brb</status></presence>")
    c.send("<presence/>")
    c.close()
    assert [e.reason for e in bob.of(Quit)] == ["Disconnected"]
