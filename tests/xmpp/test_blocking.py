"""Blocking Command (XEP-0191) over the account's one block list, through XMPP streams."""

from __future__ import annotations

from lxml import etree

from tests.xmpp.conftest import XmppTestClient

NS = "urn:xmpp:blocking"


def login(client, name: str, resource: str = "r") -> XmppTestClient:
    c = client().login(name, "secret1", resource=resource, presence=True)
    c.received()
    return c


def blocklist(c: XmppTestClient) -> list[str]:
    reply = c.iq("get", f"<blocklist xmlns='{NS}'/>")
    assert reply.get("type") == "result", etree.tostring(reply)
    return [i.get("jid") for i in reply.iter(f"{{{NS}}}item")]


def error_of(reply: etree._Element) -> str:
    error = reply.find("error")
    assert error is not None, etree.tostring(reply)
    return etree.QName(error[0]).localname


def test_block_push_and_enforcement_across_protocols(client, account, other_user, service) -> None:
    account("alice")
    alice = login(client, "alice")
    phone = login(client, "alice", "phone")
    assert blocklist(alice) == [] and blocklist(phone) == []
    mallory = other_user("mallory", protocol="irc")
    reply = alice.iq("set", f"<block xmlns='{NS}'><item jid='Mallory@localhost/x'/></block>")
    assert reply.get("type") == "result", etree.tostring(reply)
    # Both resources asked for the list: both are told (XEP-0191 §3.3).
    for c in (alice, phone):
        (push,) = [el for el in c.received() if el.tag == "iq"]
        assert push.get("type") == "set"
        assert [i.get("jid") for i in push.iter(f"{{{NS}}}item")] == ["mallory@localhost"]
    assert blocklist(phone) == ["mallory@localhost"]

    service.say(mallory.core, nick="alice", text="spam")
    assert [el for el in alice.received() + phone.received() if el.tag == "message"] == []
    carol = other_user("carol")
    service.say(carol.core, nick="alice", text="hello")
    got = [el.findtext("body") for el in alice.received() if el.tag == "message"]
    assert got == ["hello"]

    # The same list is the account's on every protocol.
    assert service.blocks(alice.conn.core) == ["mallory"]

    reply = alice.iq("set", f"<unblock xmlns='{NS}'/>")
    assert reply.get("type") == "result"
    (push,) = [el for el in phone.received() if el.tag == "iq"]
    assert push.find(f"{{{NS}}}unblock") is not None and len(push.find(f"{{{NS}}}unblock")) == 0
    phone.received()
    service.say(mallory.core, nick="alice", text="again")
    assert [el.findtext("body") for el in phone.received() if el.tag == "message"] == ["again"]


def test_bad_block_requests(client, account) -> None:
    account("alice")
    alice = login(client, "alice")
    assert error_of(alice.iq("set", f"<block xmlns='{NS}'/>")) == "bad-request"
    assert error_of(alice.iq("set", f"<block xmlns='{NS}'><item jid='@@'/></block>")) == (
        "jid-malformed"
    )
    remote = alice.iq("set", f"<block xmlns='{NS}'><item jid='x@elsewhere.example'/></block>")
    assert error_of(remote) == "not-acceptable"
    assert blocklist(alice) == []
