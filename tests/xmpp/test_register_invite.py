"""In-band registration (XEP-0077) when registration is by invitation: offered, explained in
the form, and only for invited usernames, each once."""

from __future__ import annotations

import base64
from typing import Any

from lxml import etree

from chatserver.core.service import ChatService
from chatserver.core.settings import CoreSettings
from protocols.xmpp.factory import XmppFactory
from protocols.xmpp.register import INSTRUCTIONS, INVITE_INSTRUCTIONS
from tests.support.memstore import make_service
from tests.xmpp.conftest import XmppTestClient, make_xmpp_config

NS = "jabber:iq:register"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
NOT_INVITED = "registration on this server is by invitation; ask an operator"


def setup(chat: str = "invite", **xmpp: Any) -> tuple[ChatService, XmppFactory]:
    service = make_service(CoreSettings(scram_iterations=4096, registration=chat))
    return service, XmppFactory(service, make_xmpp_config(**xmpp), clock=service.clock)


def fired(d: Any) -> Any:
    out: list[Any] = []
    d.addBoth(out.append)
    assert out and not hasattr(out[0], "raiseException"), out
    return out[0]


def register(c: XmppTestClient, name: str, password: str) -> etree._Element:
    return c.iq(
        "set",
        f"<query xmlns='{NS}'><username>{name}</username><password>{password}</password></query>",
    )


def error_of(reply: etree._Element) -> tuple[str, str | None]:
    """(condition, text) of an IQ error."""
    assert reply.get("type") == "error", etree.tostring(reply)
    error = reply.find("error")
    condition = next(
        etree.QName(child).localname for child in error if child.tag != f"{{{NS_STANZAS}}}text"
    )
    return condition, error.findtext(f"{{{NS_STANZAS}}}text")


def plain(c: XmppTestClient, name: str, password: str) -> str:
    token = base64.b64encode(f"\x00{name}\x00{password}".encode()).decode()
    c.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>")
    return etree.QName(c.received()[-1]).localname


def test_offered_with_instructions_that_say_by_invitation() -> None:
    _service, factory = setup()
    c = XmppTestClient(factory)
    c.open()
    assert "register" in [etree.QName(f).localname for f in c.features]
    form = c.iq("get", f"<query xmlns='{NS}'/>")
    assert form.findtext(f"{{{NS}}}query/{{{NS}}}instructions") == INVITE_INSTRUCTIONS
    assert INVITE_INSTRUCTIONS.startswith("Registration on this server is by invitation")

    _service, open_factory = setup("open")
    c = XmppTestClient(open_factory)
    c.open()
    form = c.iq("get", f"<query xmlns='{NS}'/>")
    assert form.findtext(f"{{{NS}}}query/{{{NS}}}instructions") == INSTRUCTIONS


def test_only_an_invited_username_registers_and_only_once() -> None:
    service, factory = setup()
    c = XmppTestClient(factory)
    c.open()
    assert error_of(register(c, "mallory", "a-secret")) == ("not-allowed", NOT_INVITED)
    fired(service.accounts.invite("Zoe"))
    assert register(c, "zoe", "zoe-secret").get("type") == "result"
    assert fired(service.accounts.get("ZOE")).name == "zoe"
    assert fired(service.accounts.invites()) == []
    # The same name again: taken.  Once dropped, it is not invited any more.
    assert error_of(register(c, "Zoe", "zoe-secret"))[0] == "conflict"
    fired(service.accounts.delete("zoe"))
    assert error_of(register(c, "zoe", "zoe-secret")) == ("not-allowed", NOT_INVITED)
    assert plain(c, "mallory", "a-secret") == "failure"
    fired(service.accounts.create("zoe", "zoe-secret"))
    assert plain(c, "zoe", "zoe-secret") == "success"


def test_the_xmpp_setting_overrides_the_core_setting_either_way() -> None:
    service, factory = setup("closed", registration="invite")
    c = XmppTestClient(factory)
    c.open()
    assert error_of(register(c, "yan", "yan-secret")) == ("not-allowed", NOT_INVITED)
    fired(service.accounts.invite("yan"))
    assert register(c, "yan", "yan-secret").get("type") == "result"

    service, factory = setup("invite", registration="open")
    c = XmppTestClient(factory)
    c.open()
    assert register(c, "xia", "xia-secret").get("type") == "result"


def test_refused_usernames_use_no_registration_try() -> None:
    service, factory = setup(require_tls=False)
    fired(service.accounts.invite("walt"))
    fired(service.accounts.invite("vera"))
    c = XmppTestClient(factory, "198.51.100.7")
    c.open()
    for i in range(5):
        assert error_of(register(c, f"nobody{i}", "a-secret"))[0] == "not-allowed"
    assert register(c, "walt", "walt-secret").get("type") == "result"
    # The burst of three for the address holds: the refusals above did not count.
    for name in ("ulla", "tom"):
        fired(service.accounts.invite(name))
        assert register(c, name, f"{name}-secret").get("type") == "result"
    condition, text = error_of(register(c, "vera", "vera-secret"))
    assert condition == "resource-constraint"
    assert text == "too many new accounts from your address; try again later"
    assert [i.name for i in fired(service.accounts.invites())] == ["vera"]
