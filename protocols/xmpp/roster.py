"""Rosters (RFC 6121 §2): get, set, remove and pushes, stored per account.

:class:`Rosters` keeps the rosters of accounts it has loaded in memory (the store stays the
source of truth: every change is written through).  A roster belongs to an account, so all
resources of the account see the same one, and subscription changes made by other users
(:mod:`protocols.xmpp.presence`) land in it whether or not its owner is online.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from lxml import etree
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from chatserver.core.names import casefold
from chatserver.core.records import RosterItem
from protocols.xmpp import stanzas
from protocols.xmpp.jid import InvalidJid, parse_jid
from protocols.xmpp.router import StanzaError, handler
from protocols.xmpp.stanzas import NS_ROSTER

if TYPE_CHECKING:
    from protocols.xmpp.connection import XmppConnection
    from protocols.xmpp.factory import XmppFactory

log = Logger()

NAME_MAX = 200
GROUPS_MAX = 20
_push_ids = itertools.count(1)
# conn.extra key: the client asked for the roster, so it gets pushes (RFC 6121 §2.1.6).
INTERESTED = "roster.interested"


class Rosters:
    """Loaded rosters by account: ``{casefold(account): {jid: RosterItem}}``."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.cache: dict[str, dict[str, RosterItem]] = {}
        self._loading: dict[str, Deferred[dict[str, RosterItem]]] = {}
        # Told of every item added or changed (True) or removed (False): (account, jid, present).
        self.watchers: list[Callable[[str, str, bool], None]] = []

    def get(self, account: str) -> Deferred[dict[str, RosterItem]]:
        """Fire with the account's roster (every item, hidden ones included)."""
        key = casefold(account)
        if key in self.cache:
            return succeed(self.cache[key])
        pending = self._loading.get(key)
        if pending is None:
            pending = self._loading[key] = Deferred()

            def loaded(items: list[RosterItem]) -> None:
                self._loading.pop(key, None)
                roster = self.cache.setdefault(key, {item.jid: item for item in items})
                pending.callback(roster)

            def failed(f: Any) -> None:
                self._loading.pop(key, None)
                pending.errback(f)

            self.store.get_roster(account).addCallbacks(loaded, failed)
        d: Deferred[dict[str, RosterItem]] = Deferred()

        def passed(roster: dict[str, RosterItem]) -> dict[str, RosterItem]:
            d.callback(roster)
            return roster

        def failed_too(f: Any) -> None:
            d.errback(f)

        pending.addCallbacks(passed, failed_too)
        return d

    def put(self, account: str, item: RosterItem) -> Deferred[None]:
        self.cache.get(casefold(account), {})[item.jid] = item
        for watcher in self.watchers:
            watcher(account, item.jid, True)
        d = self.store.set_item(account, item)
        d.addErrback(lambda f: log.failure("saving a roster item of {account}", f, account=account))
        return d

    def remove(self, account: str, jid: str) -> Deferred[Any]:
        self.cache.get(casefold(account), {}).pop(jid, None)
        for watcher in self.watchers:
            watcher(account, jid, False)
        d = self.store.remove_item(account, jid)
        d.addErrback(
            lambda f: log.failure("removing a roster item of {account}", f, account=account)
        )
        return d

    def forget(self, account: str) -> None:
        """Drop a roster from memory (its account has no session left, or was deleted)."""
        self.cache.pop(casefold(account), None)


# A full roster is <not-allowed/> (type "cancel"), not <resource-constraint/> (type "wait"):
# RFC 6120 §8.3.3 gives resource-constraint to a server short of resources for now, which a
# retry may get past, and not-allowed to what the server's policy forbids.  A configured cap on
# contacts is policy and does not lift by waiting; a client told to wait would only try again.
FULL_CONDITION = "not-allowed"


def refuse_if_full(
    factory: XmppFactory, roster: dict[str, RosterItem], jid: str, whose: str
) -> None:
    """Raise a stanza error when storing ``jid`` would take ``roster`` past ``[xmpp]
    max_roster_items``; an item already there may always change.

    Hidden items (requests waiting for an answer) count: they are stored all the same, and
    a flood of requests must not grow a roster without bound.  ``whose`` names the roster in
    the error text ("your", "the contact's").
    """
    limit = factory.config.max_roster_items
    if jid not in roster and len(roster) >= limit:
        raise StanzaError(FULL_CONDITION, f"{whose} roster is full (limit {limit})")


def item_element(item: RosterItem, *, removed: bool = False) -> etree._Element:
    el = stanzas.element(
        "item",
        {
            "jid": item.jid,
            "name": item.name,
            "subscription": "remove" if removed else item.subscription,
            "ask": None if removed else item.ask,
        },
        ns=NS_ROSTER,
    )
    if not removed:
        for group in item.groups:
            stanzas.sub(el, "group", text=group)
    return el


def version(roster: dict[str, RosterItem]) -> str:
    """The roster's version (RFC 6121 §2.6): a hash of what a client is shown of it, so
    equal rosters have equal versions and nothing more needs storing."""
    digest = hashlib.sha1()
    for jid in sorted(roster):
        item = roster[jid]
        if item.in_roster:
            digest.update(stanzas.to_bytes(item_element(item)))
    return digest.hexdigest()[:16]


def push(factory: XmppFactory, account: str, item: RosterItem, *, removed: bool = False) -> None:
    """Send a roster push to every resource of ``account`` that asked for its roster."""
    if not item.in_roster and not removed:
        return
    from protocols.xmpp.jid import user_jid

    cached = factory.rosters.cache.get(casefold(account))
    ver = version(cached) if cached is not None else None
    for conn in factory.resources(user_jid(account, factory.domain)):
        if not conn.extra.get(INTERESTED):
            continue
        query = stanzas.element("query", {"ver": ver}, ns=NS_ROSTER)
        query.append(item_element(item, removed=removed))
        iq = stanzas.iq("set", f"push-{next(_push_ids)}", to=conn.jid)
        iq.append(query)
        conn.send(iq)


@handler("iq", "get", NS_ROSTER)
def roster_get(conn: XmppConnection, stanza: etree._Element) -> Deferred[None]:
    _own_roster(conn, stanza)
    assert conn.account is not None

    asked = stanzas.payload(stanza)
    known = asked.get("ver") if asked is not None else None

    def answer(roster: dict[str, RosterItem]) -> None:
        conn.extra[INTERESTED] = True
        ver = version(roster)
        if known is not None and known == ver:
            # The client's copy is current: an empty result, changes come as pushes.
            conn.iq_result(stanza)
            return
        query = stanzas.element("query", {"ver": ver}, ns=NS_ROSTER)
        for jid in sorted(roster):
            item = roster[jid]
            if item.in_roster:
                query.append(item_element(item))
        conn.iq_result(stanza, query)

    return conn.factory.rosters.get(conn.account).addCallback(answer)


@handler("iq", "set", NS_ROSTER)
def roster_set(conn: XmppConnection, stanza: etree._Element) -> Deferred[None]:
    _own_roster(conn, stanza)
    assert conn.account is not None
    query = stanzas.payload(stanza)
    items = [] if query is None else query.findall(f"{{{NS_ROSTER}}}item")
    if len(items) != 1:
        raise StanzaError("bad-request", "a roster set carries exactly one item")
    el = items[0]
    try:
        jid = parse_jid(el.get("jid", ""))
    except InvalidJid:
        raise StanzaError("jid-malformed") from None
    if jid.resource is not None:
        raise StanzaError("bad-request", "roster items are bare JIDs")
    contact = jid.bare
    if contact == conn.bare_jid:
        raise StanzaError("not-allowed", "you cannot add yourself")
    account = conn.account
    factory = conn.factory

    if el.get("subscription") == "remove":
        from protocols.xmpp import presence

        def remove(roster: dict[str, RosterItem]) -> Deferred[None] | None:
            item = roster.get(contact)
            if item is None or not item.in_roster:
                raise StanzaError("item-not-found")
            conn.iq_result(stanza)
            return presence.remove_contact(conn, item)

        return factory.rosters.get(account).addCallback(remove)

    name = el.get("name") or None
    if name is not None and len(name) > NAME_MAX:
        raise StanzaError("not-acceptable", "the name is too long")
    groups: list[str] = []
    for group in el.findall(f"{{{NS_ROSTER}}}group"):
        text = (group.text or "").strip()
        if not text:
            raise StanzaError("not-acceptable", "empty group name")
        if text not in groups:
            groups.append(text)
    if len(groups) > GROUPS_MAX:
        raise StanzaError("not-acceptable", "too many groups")

    def update(roster: dict[str, RosterItem]) -> None:
        refuse_if_full(factory, roster, contact, "your")
        old = roster.get(contact)
        base = old or RosterItem(jid=contact)
        item = dataclasses.replace(base, name=name, groups=tuple(groups), in_roster=True)
        factory.rosters.put(account, item)
        conn.iq_result(stanza)
        push(factory, account, item)

    return factory.rosters.get(account).addCallback(update)


def _own_roster(conn: XmppConnection, stanza: etree._Element) -> None:
    to = stanza.get("to")
    if to is not None and to not in (conn.bare_jid, conn.jid):
        # Another user's roster is nobody's business (RFC 6121 §2.1.5).
        raise StanzaError("forbidden")
