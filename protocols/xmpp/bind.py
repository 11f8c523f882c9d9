"""Resource binding (RFC 6120 §7) and the legacy session establishment (RFC 3921 §3).

Binding is where an XMPP stream becomes a core user: the account's user if it is already
online over any protocol (several resources, an IRC client and a phone all share one user),
else a new user whose nick is the account name (a guest holding that nick is moved aside).
"""

from __future__ import annotations

import os
import unicodedata
from typing import TYPE_CHECKING

from lxml import etree
from twisted.logger import Logger

from chatserver.core.errors import Banned, ChatError, NickInUse
from protocols import connlog
from protocols.xmpp import stanzas
from protocols.xmpp.jid import user_jid
from protocols.xmpp.router import handler
from protocols.xmpp.stanzas import NS_BIND, NS_SESSION

if TYPE_CHECKING:
    from protocols.xmpp.connection import XmppConnection

log = Logger()

# Resources one account may bind at once; more is almost surely a reconnect loop.
MAX_RESOURCES = 16
RESOURCE_MAX_BYTES = 1023


def _valid_resource(resource: str) -> bool:
    if not resource or len(resource.encode("utf-8")) > RESOURCE_MAX_BYTES:
        return False
    return all(unicodedata.category(ch) not in ("Cc", "Cn", "Cs", "Co") for ch in resource)


def before_bind(conn: XmppConnection, stanza: etree._Element) -> None:
    """A stanza on an authenticated stream that has no resource yet."""
    query = stanzas.payload(stanza)
    if (
        stanzas.kind_of(stanza) == "iq"
        and stanza.get("type") == "set"
        and query is not None
        and query.tag == f"{{{NS_BIND}}}bind"
    ):
        _bind(conn, stanza, query)
    elif stanzas.kind_of(stanza) == "iq" and stanza.get("type") in ("get", "set"):
        conn.send_error(stanza, "auth", "not-authorized", "bind a resource first")


def _bind(conn: XmppConnection, stanza: etree._Element, query: etree._Element) -> None:
    assert conn.account is not None and conn.core is not None
    bare = user_jid(conn.account, conn.domain)
    wanted = (stanzas.child_text(query, "resource", NS_BIND) or "").strip()
    if wanted and not _valid_resource(wanted):
        conn.send_error(stanza, "modify", "bad-request", "that resource is not valid")
        return
    taken = conn.factory.resources(bare)
    if len(taken) >= MAX_RESOURCES:
        conn.send_error(stanza, "wait", "resource-constraint", "too many resources")
        return
    resource = wanted or _generated()
    while conn.factory.session(bare, resource) is not None:
        # RFC 6120 §7.7.2.2: the server may give a conflicting request a resource of its own.
        resource = f"{wanted or 'res'}-{os.urandom(3).hex()}"
    try:
        user = _claim(conn)
    except Banned as err:
        # A ban on the nick (or one set since login): the core has logged it and closed the
        # stream; a stanza error would never reach the client.
        conn.stream_error("policy-violation", err.reason)
        return
    except ChatError as err:
        conn.send_error(stanza, "cancel", "not-allowed", err.reason)
        return
    conn.bound(resource)
    # Personal data is read by the first presence (its avatar hash, XEP-0153) and by most
    # clients' first requests: start loading it now.
    conn.factory.pep.get(conn.account or bare).addErrback(lambda _: None)
    connlog.registered("xmpp", conn.core.id, conn.address, user.nick, jid=conn.jid)
    result = stanzas.element("bind", ns=NS_BIND)
    stanzas.sub(result, "jid", text=conn.jid)
    conn.send(_result(stanza, result))


def _claim(conn: XmppConnection):  # -> User
    service = conn.service
    core = conn.core
    account = conn.account
    assert core is not None and account is not None
    try:
        return service.claim_nick(core, account)
    except NickInUse:
        # A guest (or another account) holds the account's nick: its owner takes it back.
        service.release_nick(account, account)
        return service.claim_nick(core, account)


def _generated() -> str:
    return f"chatserver-{os.urandom(4).hex()}"


def _result(stanza: etree._Element, payload: etree._Element) -> etree._Element:
    reply = stanzas.iq("result", stanza.get("id") or "")
    reply.append(payload)
    return reply


@handler("iq", "set", NS_SESSION)
def session(conn: XmppConnection, stanza: etree._Element) -> None:
    """Legacy session establishment: offered as optional, accepted as a no-op."""
    conn.session_started = True
    conn.iq_result(stanza)


@handler("iq", "set", NS_BIND)
def bind_again(conn: XmppConnection, stanza: etree._Element) -> None:
    """One resource per stream: a second bind is refused."""
    conn.send_error(stanza, "cancel", "not-allowed", "this stream already has a resource")
