"""One-to-one messages across protocols, IQ routing between resources, server notices."""

from __future__ import annotations

from lxml import etree

from chatserver.core.events import Message

NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"


def messages(els: list[etree._Element]) -> list[etree._Element]:
    return [el for el in els if el.tag == "message"]


def test_xmpp_to_line_user(client, account, other_user) -> None:
    account("alice")
    bob = other_user("bob")
    c = client().login("alice", "secret1")
    c.send("<message to='~Bob@localhost' type='chat' id='m1'><body>hello bob</body></message>")
    [msg] = bob.of(Message)
    assert (msg.source.nick, msg.target, msg.text, msg.kind) == (
        "alice",
        "bob",
        "hello bob",
        "privmsg",
    )
    assert c.received() == []  # no echo of one's own chat


def test_line_user_to_xmpp(client, account, other_user, service) -> None:
    account("alice")
    bob = other_user("Bob")
    c = client().login("alice", "secret1", resource="phone")
    service.say(bob.core, nick="alice", text="hi \x02alice\x02 \x0304red")
    [msg] = c.received()
    # Bob is a guest: his address is never an account's.
    assert msg.get("from") == "~bob@localhost"
    assert msg.get("to") == "alice@localhost/phone"
    assert msg.get("type") == "chat"
    assert msg.get("id")
    assert msg.findtext("body") == "hi alice red"  # IRC formatting is not shown as junk


def test_actions_and_notices(client, account, other_user, service) -> None:
    account("alice")
    bob = other_user("bob", protocol="irc")
    c = client().login("alice", "secret1")
    service.say(bob.core, nick="alice", text="waves", kind="action")
    service.say(bob.core, nick="alice", text="fyi", kind="notice")
    bodies = [m.findtext("body") for m in messages(c.received())]
    assert bodies == ["/me waves", "fyi"]
    c.send("<message to='~bob@localhost' type='chat'><body>/me bows</body></message>")
    [msg] = [m for m in bob.of(Message) if m.source.nick == "alice"]
    assert (msg.kind, msg.text) == ("action", "bows")


def test_every_resource_gets_it_once(client, account, other_user, service) -> None:
    account("alice")
    bob = other_user("bob")
    phone = client().login("alice", "secret1", resource="phone")
    desk = client().login("alice", "secret1", resource="desk")
    service.say(bob.core, nick="alice", text="both?")
    assert [m.get("to") for m in messages(phone.received())] == ["alice@localhost/phone"]
    assert [m.get("to") for m in messages(desk.received())] == ["alice@localhost/desk"]
    # A message sent from one resource is not copied to the other (no carbons).
    phone.send("<message to='~bob@localhost' type='chat'><body>yes</body></message>")
    assert desk.received() == []


def test_message_to_an_absent_user_is_service_unavailable(client, account) -> None:
    account("alice")
    c = client().login("alice", "secret1")
    c.send("<message to='nobody@localhost' type='chat' id='lost-1'><body>anyone?</body></message>")
    [err] = c.received()
    assert err.get("type") == "error" and err.get("id") == "lost-1"
    assert err.get("from") == "nobody@localhost"
    assert err.find(f"error/{{{NS_STANZAS}}}service-unavailable") is not None


def test_message_to_another_server_is_not_federated(client, account) -> None:
    account("alice")
    c = client().login("alice", "secret1")
    c.send("<message to='bob@elsewhere.example' type='chat' id='x'><body>hi</body></message>")
    [err] = c.received()
    assert err.find(f"error/{{{NS_STANZAS}}}remote-server-not-found") is not None


def test_xmpp_to_xmpp(client, account) -> None:
    account("alice")
    account("bob")
    alice = client().login("alice", "secret1", resource="a")
    bob = client().login("bob", "secret1", resource="b")
    alice.send("<message to='bob@localhost' type='chat'><body>line one\nline two</body></message>")
    got = messages(bob.received())
    # One message, as it was sent (IRC and line chat show it as two lines), from the
    # sending resource (RFC 6120 §8.1.2.1).
    assert [(m.get("from"), m.findtext("body")) for m in got] == [
        ("alice@localhost/a", "line one\nline two"),
    ]


def test_chat_states_pass_between_xmpp_clients(client, account, other_user) -> None:
    account("alice")
    account("bob")
    alice = client().login("alice", "secret1", resource="a", presence=True)
    bob = client().login("bob", "secret1", resource="b", presence=True)
    carol = other_user("carol")
    alice.send(
        "<message to='bob@localhost' type='chat'>"
        "<composing xmlns='http://jabber.org/protocol/chatstates'/></message>"
    )
    [state] = bob.received()
    assert state.get("from") == "alice@localhost/a"
    assert state.find("{http://jabber.org/protocol/chatstates}composing") is not None
    alice.send(
        "<message to='~carol@localhost' type='chat'>"
        "<composing xmlns='http://jabber.org/protocol/chatstates'/></message>"
    )
    # To a user on another protocol: the chat state as IRC's typing tag, nothing back.
    (tagged,) = carol.events
    assert tagged.tags == (("+typing", "active"),) and tagged.target == "carol"
    assert alice.received() == []


def test_too_many_lines_is_refused(client, account, other_user) -> None:
    account("alice")
    bob = other_user("bob")
    c = client().login("alice", "secret1")
    body = "\n".join(f"line {i}" for i in range(100))
    c.send(f"<message to='~bob@localhost' type='chat' id='flood'><body>{body}</body></message>")
    [err] = c.received()
    assert err.find(f"error/{{{NS_STANZAS}}}policy-violation") is not None
    assert bob.events == []


def test_iq_to_a_full_jid_goes_to_that_resource(client, account) -> None:
    account("alice")
    account("bob")
    alice = client().login("alice", "secret1", resource="a")
    bob = client().login("bob", "secret1", resource="b")
    alice.send(
        "<iq type='get' id='v1' to='bob@localhost/b'><query xmlns='jabber:iq:version'/></iq>"
    )
    [iq] = bob.received()
    assert iq.get("from") == "alice@localhost/a" and iq.get("id") == "v1"
    bob.send("<iq type='result' id='v1' to='alice@localhost/a'/>")
    [reply] = alice.received()
    assert reply.get("type") == "result" and reply.get("from") == "bob@localhost/b"
    alice.send("<iq type='get' id='v2' to='bob@localhost/gone'><ping xmlns='urn:xmpp:ping'/></iq>")
    [err] = alice.received()
    assert err.get("id") == "v2"
    assert err.find(f"error/{{{NS_STANZAS}}}service-unavailable") is not None


def test_server_notice_comes_from_the_domain(client, account, service) -> None:
    account("alice")
    c = client().login("alice", "secret1")
    service.notice_user(c.conn.user, "maintenance at noon")
    [msg] = c.received()
    assert msg.get("from") == "localhost" and msg.findtext("body") == "maintenance at noon"


def test_stanza_ids_are_preserved(client, account) -> None:
    account("alice")
    c = client().login("alice", "secret1")
    c.send("<iq type='get' id='keep-this-1'><ping xmlns='urn:xmpp:ping'/></iq>")
    c.send("<iq type='set' id='keep-this-2'><unknown xmlns='urn:example:nothing'/></iq>")
    got = c.received()
    assert [(el.get("id"), el.get("type")) for el in got] == [
        ("keep-this-1", "result"),
        ("keep-this-2", "error"),
    ]
    assert got[1].find(f"error/{{{NS_STANZAS}}}service-unavailable") is not None


def test_iq_with_two_payloads_is_a_bad_request(client, account) -> None:
    account("alice")
    c = client().login("alice", "secret1")
    c.send("<iq type='get' id='two'><ping xmlns='urn:xmpp:ping'/><a xmlns='urn:x'/></iq>")
    [err] = c.received()
    assert err.find(f"error/{{{NS_STANZAS}}}bad-request") is not None


def test_errors_are_never_answered(client, account) -> None:
    account("alice")
    c = client().login("alice", "secret1")
    c.send("<iq type='error' id='e1' to='localhost'><error type='cancel'/></iq>")
    c.send("<message type='error' to='nobody@localhost'><error type='cancel'/></message>")
    assert c.received() == []
