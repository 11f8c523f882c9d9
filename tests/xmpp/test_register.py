"""In-band registration (XEP-0077): the form, new accounts, password changes, removal."""

from __future__ import annotations

import base64

import pytest
from lxml import etree

from chatserver.core.settings import CoreSettings
from protocols.xmpp.factory import XmppFactory
from tests.support.memstore import make_service
from tests.xmpp.conftest import XmppTestClient, make_xmpp_config

NS = "jabber:iq:register"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"


def error_of(reply: etree._Element) -> str:
    assert reply.get("type") == "error", etree.tostring(reply)
    return etree.QName(reply.find("error")[0]).localname


def register(c: XmppTestClient, name: str, password: str) -> etree._Element:
    return c.iq(
        "set",
        f"<query xmlns='{NS}'><username>{name}</username><password>{password}</password></query>",
    )


def plain(c: XmppTestClient, name: str, password: str) -> str:
    token = base64.b64encode(f"\x00{name}\x00{password}".encode()).decode()
    c.send(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{token}</auth>")
    return etree.QName(c.received()[-1]).localname


def test_form_then_register_then_log_in(client, service) -> None:
    c = client()
    c.open()
    form = c.iq("get", f"<query xmlns='{NS}'/>")
    query = form.find(f"{{{NS}}}query")
    assert query.find(f"{{{NS}}}username") is not None
    assert query.find(f"{{{NS}}}password") is not None
    assert query.findtext(f"{{{NS}}}instructions")
    assert register(c, "Zoe", "zoe-secret").get("type") == "result"
    assert plain(c, "zoe", "zoe-secret") == "success"
    records = []
    service.accounts.get("zoe").addCallback(records.append)
    assert records[0].name == "Zoe"


@pytest.mark.parametrize(
    ("name", "password", "condition"),
    [
        ("taken", "whatever1", "conflict"),
        # A taken name is a conflict whatever the password: no other password would help.
        ("Taken", "x", "conflict"),
        ("ok-name", "x", "not-acceptable"),
        ("9lives", "whatever1", "not-acceptable"),
        ("", "whatever1", "not-acceptable"),
    ],
)
def test_registration_errors(client, account, name: str, password: str, condition: str) -> None:
    account("taken")
    c = client()
    c.open()
    assert error_of(register(c, name, password)) == condition


def test_removal_before_login_is_not_allowed(client) -> None:
    c = client()
    c.open()
    assert error_of(c.iq("set", f"<query xmlns='{NS}'><remove/></query>")) == "not-allowed"


def closed_factory(**xmpp: object) -> XmppFactory:
    service = make_service(CoreSettings(scram_iterations=4096, registration="closed"))
    return XmppFactory(service, make_xmpp_config(**xmpp), clock=service.clock)


def test_closed_registration_follows_the_core_setting() -> None:
    c = XmppTestClient(closed_factory())
    c.open()
    assert [etree.QName(f).localname for f in c.features] == ["mechanisms"]
    assert error_of(c.iq("get", f"<query xmlns='{NS}'/>")) == "service-unavailable"
    assert error_of(register(c, "zoe", "zoe-secret")) == "service-unavailable"


def test_xmpp_setting_overrides_the_core_setting() -> None:
    c = XmppTestClient(closed_factory(registration="open"))
    c.open()
    assert register(c, "zoe", "zoe-secret").get("type") == "result"


def test_registration_waits_for_tls_when_tls_is_required(client) -> None:
    c = client("198.51.100.7")
    c.open()
    c.send(f"<iq type='get' id='r1'><query xmlns='{NS}'/></iq>")
    assert c.stream_error == "not-authorized"


def test_new_accounts_are_rate_limited_per_address(service) -> None:
    factory = XmppFactory(service, make_xmpp_config(require_tls=False), clock=service.clock)
    c = XmppTestClient(factory, "198.51.100.7")
    c.open()
    results = [register(c, f"user{i}", "whatever1").get("type") for i in range(5)]
    assert results == ["result", "result", "result", "error", "error"]


def test_registered_query_and_password_change(client, account) -> None:
    account("alice", "old-secret")
    c = client().login("alice", "old-secret")
    reply = c.iq("get", f"<query xmlns='{NS}'/>")
    query = reply.find(f"{{{NS}}}query")
    assert query.find(f"{{{NS}}}registered") is not None
    assert query.findtext(f"{{{NS}}}username") == "alice"
    assert register(c, "alice", "new-secret").get("type") == "result"
    assert error_of(register(c, "bob", "new-secret")) == "bad-request"
    assert error_of(register(c, "alice", "x")) == "not-acceptable"
    other = client()
    other.open()
    assert plain(other, "alice", "old-secret") == "failure"
    assert plain(other, "alice", "new-secret") == "success"


def test_account_removal(client, account, service) -> None:
    account("alice")
    c = client().login("alice", "secret1", resource="a")
    sibling = client().login("alice", "secret1", resource="b")
    reply = c.iq("set", f"<query xmlns='{NS}'><remove/></query>")
    assert reply.get("type") == "result"
    assert c.stream_error == "not-authorized" and c.closed
    sibling.received()
    assert sibling.stream_error == "not-authorized"
    records = []
    service.accounts.get("alice").addCallback(records.append)
    assert records == [None]
    assert service.find_user("alice") is None


def test_an_email_is_asked_for_and_needed_when_the_core_requires_one() -> None:
    service = make_service(CoreSettings(scram_iterations=4096, registration_email_required=True))
    c = XmppTestClient(XmppFactory(service, make_xmpp_config(), clock=service.clock))
    c.open()
    query = c.iq("get", f"<query xmlns='{NS}'/>").find(f"{{{NS}}}query")
    assert query.find(f"{{{NS}}}email") is not None
    assert error_of(register(c, "zoe", "zoe-secret")) == "not-acceptable"
    with_email = (
        f"<query xmlns='{NS}'><username>zoe</username><password>zoe-secret</password>"
        "<email>zoe@example.org</email></query>"
    )
    assert c.iq("set", with_email).get("type") == "result"
    records: list = []
    service.accounts.get("zoe").addCallback(records.append)
    assert records[0].email == "zoe@example.org"
