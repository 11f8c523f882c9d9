"""Ad-hoc commands (XEP-0050) at the server's address: account settings that have no XMPP
protocol of their own.

One command, ``always-on``: a form with one boolean field; submitting it turns the account's
always-on on or off (its user stays in its rooms with its nick while no client is connected,
as NickServ ``SET ALWAYS-ON`` and line chat ``/set always-on`` do).  Each execution is one
request and one answer: the form comes back with a session id, and a submission with any
session id is taken (nothing is kept between the two).
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

from lxml import etree
from twisted.internet.defer import Deferred

from protocols.xmpp import stanzas
from protocols.xmpp.jid import try_parse
from protocols.xmpp.router import StanzaError, handler

if TYPE_CHECKING:
    from protocols.xmpp.connection import XmppConnection

NS_COMMANDS = "http://jabber.org/protocol/commands"
ALWAYS_ON = "always-on"
# node -> its name in disco#items.
COMMANDS = {ALWAYS_ON: "Always-on: stay in your rooms while no client is connected"}
_TRUE = ("1", "true")


def list_commands(conn: XmppConnection, query: etree._Element) -> None:
    """The disco#items of the commands node (XEP-0050 §2.2)."""
    if conn.user is None or conn.user.account is None:
        return
    for node, name in COMMANDS.items():
        stanzas.sub(query, "item", {"jid": conn.domain, "node": node, "name": name})


@handler("iq", "set", NS_COMMANDS)
def execute(conn: XmppConnection, stanza: etree._Element) -> Deferred | None:
    to = try_parse(stanza.get("to"))
    if to is not None and to.local is not None:
        raise StanzaError("service-unavailable")
    command = stanzas.payload(stanza)
    assert command is not None
    node = command.get("node")
    if node not in COMMANDS:
        raise StanzaError("item-not-found", "no such command")
    if conn.user is None or conn.user.account is None or conn.core is None:
        raise StanzaError("forbidden", "log in to an account first")
    action = command.get("action") or "execute"
    session = command.get("sessionid") or secrets.token_hex(8)
    if action == "cancel":
        conn.iq_result(stanza, _command(node, session, "canceled"))
        return None
    form = command.find(f"{{{stanzas.NS_DATA}}}x")
    if form is None or form.get("type") != "submit":
        if action not in ("execute", "next"):
            raise StanzaError("bad-request", "execute, complete or cancel")
        conn.iq_result(stanza, _form(conn, node, session))
        return None
    value = None
    for field in form.findall(f"{{{stanzas.NS_DATA}}}field"):
        if field.get("var") == ALWAYS_ON:
            value = (field.findtext(f"{{{stanzas.NS_DATA}}}value") or "").strip().lower()
    if value is None:
        raise StanzaError("bad-request", "the form needs the always-on field")
    on = value in _TRUE

    def done(now_on: bool) -> None:
        answer = _command(node, session, "completed")
        stanzas.sub(
            answer, "note", {"type": "info"}, text=f"always-on is {'on' if now_on else 'off'}"
        )
        conn.iq_result(stanza, answer)

    return conn.service.set_always_on(conn.core, on).addCallback(done)


def _command(node: str, session: str, status: str) -> etree._Element:
    return stanzas.element(
        "command", {"node": node, "sessionid": session, "status": status}, ns=NS_COMMANDS
    )


def _form(conn: XmppConnection, node: str, session: str) -> etree._Element:
    command = _command(node, session, "executing")
    actions = stanzas.sub(command, "actions", {"execute": "complete"})
    stanzas.sub(actions, "complete")
    form = stanzas.sub(command, "x", {"type": "form"}, ns=stanzas.NS_DATA)
    stanzas.sub(form, "title", text="Always-on")
    stanzas.sub(
        form,
        "instructions",
        text="Stay in your rooms with your nick while none of your clients is connected, and"
        " get what you missed when you come back (on any protocol).",
    )
    field = stanzas.sub(form, "field", {"var": ALWAYS_ON, "type": "boolean", "label": "Always-on"})
    assert conn.user is not None
    on = conn.service.is_always_on(conn.user.account)
    stanzas.sub(field, "value", text="1" if on else "0")
    return command
