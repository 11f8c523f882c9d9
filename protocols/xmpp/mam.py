"""Message Archive Management (XEP-0313, ``urn:xmpp:mam:2`` and ``#extended``) with Result
Set Management paging (XEP-0059): the account's private archive at the user's bare JID, and a
room's history at the room's JID.

The ids are the core's message ids: the ``stanza-id`` of live messages, the IRC ``msgid`` and
the line-chat ``id``.  Filters: ``with`` (a user's JID for the account archive), ``start``,
``end``, ``before-id``, ``after-id``, ``ids``; pages: RSM ``max``, ``after``, ``before`` (empty: the
last page).  Preferences (``default`` ``always``, ``never`` or ``roster``, with ``always``
and ``never`` lists of JIDs) are kept per account and decide which private messages its
archive keeps.  ``roster`` keeps the messages with every JID in the account's roster,
whatever its subscription (as Prosody's ``mod_mam`` does): the core is given the roster's
JIDs when the preference is set and at start, and each change of the roster after.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from lxml import etree
from twisted.internet.defer import Deferred, succeed

from chatserver.core.events import Message
from chatserver.core.names import casefold
from protocols.xmpp import relay, stanzas
from protocols.xmpp.jid import GUEST_MARK, address_of, try_parse, user_jid
from protocols.xmpp.render import chat_text
from protocols.xmpp.router import StanzaError, handler

if TYPE_CHECKING:
    from protocols.xmpp.connection import XmppConnection

NS_MAM = "urn:xmpp:mam:2"
NS_MAM_EXTENDED = "urn:xmpp:mam:2#extended"
NS_RSM = "http://jabber.org/protocol/rsm"
NS_FORWARD = "urn:xmpp:forward:0"
# The most results one page holds; a larger ``max`` is cut to it.
PAGE_MAX = 100
PAGE_DEFAULT = 50
_LOWEST_ID = ""
_HIGHEST_ID = "\uffff"

Anchor = tuple[float, str]


@dataclass(frozen=True, slots=True)
class MamQuery:
    query_id: str | None
    with_jid: str | None
    start: float | None
    end: float | None
    after_id: str | None
    before_id: str | None
    # RSM: ``before`` None = page forwards; "" = the last page; an id = the page before it.
    page_after: str | None
    page_before: str | None
    limit: int
    # #extended ``ids``: exactly these messages.
    ids: tuple[str, ...] = ()


def _stamp_value(text: str) -> float:
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise StanzaError("bad-request", f"not a timestamp: {text}") from None
    if when.tzinfo is None:
        raise StanzaError("bad-request", f"a timestamp needs a time zone: {text}")
    return when.timestamp()


def parse_query(query: etree._Element) -> MamQuery:
    """The filters and page of a ``<query/>``; raises StanzaError bad-request."""
    fields: dict[str, str] = {}
    ids: list[str] = []
    form = query.find(f"{{{stanzas.NS_DATA}}}x")
    if form is not None:
        for field in form.findall(f"{{{stanzas.NS_DATA}}}field"):
            var = field.get("var") or ""
            if var == "ids":
                ids.extend(v.text for v in field.findall(f"{{{stanzas.NS_DATA}}}value") if v.text)
                continue
            value = field.findtext(f"{{{stanzas.NS_DATA}}}value")
            if var and value is not None:
                fields[var] = value
    if len(ids) > PAGE_MAX:
        raise StanzaError("policy-violation", f"at most {PAGE_MAX} ids")
    known = {"FORM_TYPE", "with", "start", "end", "before-id", "after-id"}
    unknown = set(fields) - known
    if unknown:
        raise StanzaError("bad-request", f"unknown field: {sorted(unknown)[0]}")
    limit = PAGE_DEFAULT
    page_after = page_before = None
    rsm = query.find(f"{{{NS_RSM}}}set")
    if rsm is not None:
        max_text = rsm.findtext(f"{{{NS_RSM}}}max")
        if max_text is not None:
            if not (max_text.strip().isascii() and max_text.strip().isdigit()):
                raise StanzaError("bad-request", "max must be a number")
            limit = min(int(max_text), PAGE_MAX)
        after = rsm.find(f"{{{NS_RSM}}}after")
        if after is not None:
            page_after = after.text or ""
            if not page_after:
                raise StanzaError("bad-request", "after needs an id")
        before = rsm.find(f"{{{NS_RSM}}}before")
        if before is not None:
            page_before = before.text or ""
    return MamQuery(
        query_id=query.get("queryid"),
        with_jid=fields.get("with"),
        start=_stamp_value(fields["start"]) if "start" in fields else None,
        end=_stamp_value(fields["end"]) if "end" in fields else None,
        after_id=fields.get("after-id") or page_after,
        before_id=fields.get("before-id") or (page_before or None),
        page_after=page_after,
        page_before=page_before,
        limit=limit,
        ids=tuple(ids),
    )


class _Archive:
    """Where a query reads: the user's private archive or a room's history."""

    def __init__(self, conn: XmppConnection, room: str | None, peer: str | None) -> None:
        self.conn = conn
        # Taken now: a page read after the stream closed still reads as this session.
        self.core = conn.core
        self.room = room
        self.peer = peer

    def find(self, msgid: str) -> Deferred:
        service = self.conn.service
        if self.room is None:
            assert self.core is not None  # MAM is answered only after login
            return service.archive_find(self.core, msgid)
        room = self.room
        return service.history_find(msgid).addCallback(
            lambda m: m if m is not None and m.room == room else None
        )

    def page(self, limit: int, after: Anchor | None, before: Anchor | None, newest: bool):
        service = self.conn.service
        if self.room is None:
            assert self.core is not None  # MAM is answered only after login
            return service.archive_query(
                self.core, self.peer, limit, after=after, before=before, newest=newest
            )
        return service.room_archive_query(
            self.room, limit, after=after, before=before, newest=newest
        )


def _anchor(archive: _Archive, msgid: str | None) -> Deferred:
    if msgid is None:
        return succeed(None)

    def found(message: Message | None) -> Anchor:
        if message is None:
            raise StanzaError("item-not-found", f"no message {msgid} in this archive")
        return (message.ts, message.id)

    return archive.find(msgid).addCallback(found)


async def _run(conn: XmppConnection, stanza: etree._Element, archive: _Archive, q: MamQuery):
    if q.ids:
        found = [await archive.find(msgid) for msgid in q.ids]
        messages = sorted((m for m in found if m is not None), key=lambda m: (m.ts, m.id))
        for message in messages:
            conn.send(_result(conn, archive, q, message))
        conn.iq_result(stanza, stanzas.element("fin", {"complete": "true"}, ns=NS_MAM))
        return
    after: Anchor | None = None
    before: Anchor | None = None
    if q.start is not None:
        after = (q.start, _LOWEST_ID)
    if q.end is not None:
        before = (q.end, _HIGHEST_ID)
    after_msg = await _anchor(archive, q.after_id)
    before_msg = await _anchor(archive, q.before_id)
    if after_msg is not None:
        after = after_msg if after is None else max(after, after_msg)
    if before_msg is not None:
        before = before_msg if before is None else min(before, before_msg)
    backwards = q.page_before is not None
    # One more than asked says whether the page reaches the end of the archive.
    messages = await archive.page(q.limit + 1, after, before, backwards) if q.limit else []
    complete = len(messages) <= q.limit
    if not complete:
        messages = messages[1:] if backwards else messages[: q.limit]
    for message in messages:
        conn.send(_result(conn, archive, q, message))
    fin = stanzas.element("fin", {"complete": "true" if complete else None}, ns=NS_MAM)
    rsm = stanzas.sub(fin, "set", ns=NS_RSM)
    if messages:
        stanzas.sub(rsm, "first", text=messages[0].id)
        stanzas.sub(rsm, "last", text=messages[-1].id)
    conn.iq_result(stanza, fin)


def _result(conn: XmppConnection, archive: _Archive, q: MamQuery, msg: Message) -> etree._Element:
    owner = conn.bare_jid if archive.room is None else f"{archive.room}@{conn.muc_domain}"
    wrapper = stanzas.element("message", {"to": conn.jid, "from": owner})
    result = stanzas.sub(wrapper, "result", {"queryid": q.query_id, "id": msg.id}, ns=NS_MAM)
    forwarded = stanzas.sub(result, "forwarded", ns=NS_FORWARD)
    stanzas.sub(forwarded, "delay", {"stamp": stamp(msg.ts)}, ns=stanzas.NS_DELAY)
    forwarded.append(archived_message(conn, msg))
    return wrapper


def archived_message(conn: XmppConnection, msg: Message) -> etree._Element:
    """A stored message as its XMPP stanza (in ``jabber:client``): the sender's own stanza,
    whole with its extensions (OMEMO, markers, …), when it came from an XMPP client, else one
    made from its text."""
    if msg.room is None:
        kept = relay.stored(msg.native, forwarded_form=True)
        if kept is not None:
            return kept
    if msg.room is not None:
        attrs = {
            "from": f"{msg.room}@{conn.muc_domain}/{msg.source.nick}",
            "type": "groupchat",
            "id": msg.id,
        }
    else:
        attrs = {
            "from": address_of(msg.source, conn.domain),
            "to": _to(conn, msg),
            "type": "chat",
            "id": msg.id,
        }
    el = stanzas.element("message", attrs, ns=stanzas.NS_CLIENT)
    stanzas.sub(el, "body", text=chat_text(msg))
    return el


def _to(conn: XmppConnection, msg: Message) -> str:
    """Where an archived private message went: this account when another sent it, else the
    other side's address."""
    user = conn.user
    account = user.account if user is not None else None
    if account is not None and (msg.source.account or "").lower() != account.lower():
        return conn.bare_jid or ""
    return user_jid(msg.target or "", conn.domain)


def stamp(ts: float) -> str:
    """An XEP-0082 UTC timestamp with milliseconds."""
    whole = int(ts)
    millis = round((ts - whole) * 1000)
    if millis >= 1000:
        whole, millis = whole + 1, millis - 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{millis:03d}Z"


def _start(conn: XmppConnection, stanza: etree._Element, archive: _Archive, q: MamQuery):
    return Deferred.fromCoroutine(_run(conn, stanza, archive, q))


@handler("iq", "set", NS_MAM)
def query_account(conn: XmppConnection, stanza: etree._Element) -> Deferred | None:
    payload = stanzas.payload(stanza)
    assert payload is not None
    to = try_parse(stanza.get("to"))
    if to is not None and to.local is not None and to.bare != conn.bare_jid:
        raise StanzaError("forbidden", "only your own archive")
    if etree.QName(payload).localname == "prefs":
        return _set_prefs(conn, stanza, payload)
    if etree.QName(payload).localname != "query":
        raise StanzaError("bad-request")
    q = parse_query(payload)
    peer = None
    if q.with_jid:
        with_jid = try_parse(q.with_jid)
        if with_jid is None or with_jid.local is None:
            raise StanzaError("bad-request", "with must be a user's JID")
        if with_jid.domain != conn.domain:
            conn.iq_result(stanza, stanzas.element("fin", {"complete": "true"}, ns=NS_MAM))
            return None
        peer = with_jid.local.removeprefix(GUEST_MARK)
    return _start(conn, stanza, _Archive(conn, None, peer), q)


@handler("iq", "get", NS_MAM)
def form_or_prefs(conn: XmppConnection, stanza: etree._Element) -> None:
    payload = stanzas.payload(stanza)
    assert payload is not None
    if etree.QName(payload).localname == "prefs":
        assert conn.core is not None  # MAM is answered only after login
        conn.iq_result(stanza, _prefs(conn, conn.service.archive_prefs(conn.core)))
        return
    conn.iq_result(stanza, query_form())


# A preference about a JID that is no user here (another server, a room) is kept as written,
# marked so: it can match nothing, but the client reads back what it set.
_OTHER = "="


def _prefs(conn: XmppConnection, prefs: Any) -> etree._Element:
    el = stanzas.element("prefs", {"default": prefs.default}, ns=NS_MAM)
    for name, peers in (("always", prefs.always), ("never", prefs.never)):
        listed = stanzas.sub(el, name)
        for peer in peers:
            jid = peer[1:] if peer.startswith(_OTHER) else f"{peer}@{conn.domain}"
            stanzas.sub(listed, "jid", text=jid)
    return el


def _peer(conn: XmppConnection, text: str) -> str:
    """A preference's JID as the archive names peers: a folded account, ``~`` and a folded
    nick for a guest, or (another server's JID) the JID as written."""
    peer = peer_of(conn.domain, text)
    if peer is None:
        raise StanzaError("jid-malformed", f"not a JID: {text}")
    return peer


def peer_of(domain: str, text: str) -> str | None:
    """A JID as the archive names peers (see :func:`_peer`); None if it is no JID."""
    jid = try_parse(text.strip())
    if jid is None:
        return None
    if jid.domain != domain or jid.local is None:
        return _OTHER + jid.bare
    if jid.local.startswith(GUEST_MARK):
        return GUEST_MARK + casefold(jid.local.removeprefix(GUEST_MARK))
    return casefold(jid.local)


def give_contacts(factory: Any, account: str) -> Deferred[Any]:
    """Tell the core the JIDs of ``account``'s roster, for its ``roster`` default."""

    def give(roster: dict[str, Any]) -> None:
        peers = (peer_of(factory.domain, jid) for jid in roster)
        factory.service.set_archive_contacts(account, [p for p in peers if p is not None])

    return factory.rosters.get(account).addCallback(give)


def roster_changed(factory: Any, account: str, jid: str, present: bool) -> None:
    """An item of ``account``'s roster was added or changed (``present``) or removed."""
    peer = peer_of(factory.domain, jid)
    if peer is not None:
        factory.service.archive_contact(account, peer, present)


def _set_prefs(conn: XmppConnection, stanza: etree._Element, payload: etree._Element) -> Deferred:
    """XEP-0313 §6.1: store what the account's archive keeps; the answer is the preferences
    as stored."""
    default = payload.get("default") or "always"
    if default not in ("always", "never", "roster"):
        raise StanzaError("bad-request", "default is always, never or roster")
    lists: dict[str, list[str]] = {"always": [], "never": []}
    for name, peers in lists.items():
        listed = payload.find(f"{{{NS_MAM}}}{name}")
        if listed is not None:
            peers.extend(_peer(conn, j.text or "") for j in listed.findall(f"{{{NS_MAM}}}jid"))
    assert conn.core is not None and conn.account is not None  # MAM is answered after login
    core, account = conn.core, conn.account

    def store(_: Any) -> Deferred[Any]:
        return conn.service.set_archive_prefs(core, default, lists["always"], lists["never"])

    # By roster: the core knows the contacts before it keeps by them.
    d = give_contacts(conn.factory, account) if default == "roster" else succeed(None)
    d.addCallback(store)
    return d.addCallback(lambda prefs: conn.iq_result(stanza, _prefs(conn, prefs)))


def query_form() -> etree._Element:
    query = stanzas.element("query", ns=NS_MAM)
    form = stanzas.sub(query, "x", {"type": "form"}, ns=stanzas.NS_DATA)
    stanzas.sub(
        stanzas.sub(form, "field", {"var": "FORM_TYPE", "type": "hidden"}), "value", text=NS_MAM
    )
    for var, kind in (
        ("ids", "text-multi"),
        ("with", "jid-single"),
        ("start", "text-single"),
        ("end", "text-single"),
        ("before-id", "text-single"),
        ("after-id", "text-single"),
    ):
        stanzas.sub(form, "field", {"var": var, "type": kind})
    return query


@handler("iq", "set", NS_MAM, service="muc")
def query_room(conn: XmppConnection, stanza: etree._Element) -> Deferred | None:
    payload = stanzas.payload(stanza)
    assert payload is not None
    to = try_parse(stanza.get("to"))
    if to is None or to.local is None or etree.QName(payload).localname != "query":
        raise StanzaError("bad-request")
    room = conn.service.get_room(to.local)
    user = conn.user
    if room is None or user is None or user not in room.members:
        # The same answer for a room that does not exist as for one the user is not in.
        raise StanzaError("forbidden", "join the room to read its archive")
    q = parse_query(payload)
    if q.with_jid:
        raise StanzaError("feature-not-implemented", "with is not supported on rooms")
    return _start(conn, stanza, _Archive(conn, room.name, None), q)


@handler("iq", "get", NS_MAM, service="muc")
def room_form(conn: XmppConnection, stanza: etree._Element) -> None:
    conn.iq_result(stanza, query_form())


FEATURES = (NS_MAM, NS_MAM_EXTENDED)
