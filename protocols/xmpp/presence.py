"""Presence (RFC 6121 §3-4): broadcast, probes, directed presence and subscriptions.

Everything here is between users of this one server, so there are no remote probes: a
contact's presence is read from its bound XMPP sessions, or, for a contact on IRC or line
chat, from the core (online or not, away or not).

Subscription requests to an account wait in that account's roster (``pending_in``) until its
owner answers from an XMPP client; a request to a nick with no account (a guest, who has no
roster to keep an answer in) is approved at once: its online state is public anyway (IRC
WHOIS shows it).

Show and status map onto the core's away state: ``away``, ``xa`` and ``dnd`` are away with
the status text as the message; ``chat`` or no show is back.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from lxml import etree
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from chatserver.core.records import RosterItem
from protocols.costs import FANOUT
from protocols.xmpp import avatar_hash, caps, metadata, render, roster, stanzas
from protocols.xmpp.jid import address_of, local_user, try_parse, user_jid
from protocols.xmpp.router import handler

if TYPE_CHECKING:
    from protocols.xmpp.connection import XmppConnection
    from protocols.xmpp.factory import XmppFactory

log = Logger()

AWAY_SHOWS = frozenset({"away", "xa", "dnd"})
SHOWS = AWAY_SHOWS | {"chat"}
STATUS_MAX = 1024
XML_LANG = f"{{{stanzas.NS_XML}}}lang"
_SHOW_TEXT = {"away": "Away", "xa": "Extended away", "dnd": "Do not disturb"}


# -- sending --------------------------------------------------------------------------------


def _send_all(conns: Iterable[XmppConnection], el: etree._Element) -> None:
    """Send ``el`` (no ``to``) to each connection with its own ``to`` spliced in."""
    data: bytes | None = None
    for conn in conns:
        if data is None:
            data = stanzas.to_bytes(el)
        conn.send(stanzas.splice_to(data, conn.jid or ""))


def _presence(from_: str, type_: str | None = None) -> etree._Element:
    return stanzas.element("presence", {"from": from_, "type": type_})


def _local(bare: str) -> str:
    return bare.partition("@")[0]


def _contact_presences(
    factory: XmppFactory, contact: str, *, offline: bool
) -> list[etree._Element]:
    """What a subscriber sees of ``contact`` now: one presence per available resource, or
    one from the bare JID for a contact on another protocol; ``offline`` adds an unavailable
    presence when there is nothing else to say."""
    found = [
        etree.fromstring(c.presence) for c in factory.available(contact) if c.presence is not None
    ]
    if found:
        return found
    user = local_user(factory.service, _local(contact))
    if user is not None and not _on_xmpp(user):
        el = _presence(contact)
        if user.away is not None:
            stanzas.sub(el, "show", text="away")
            stanzas.sub(el, "status", text=user.away)
        return [el]
    return [_presence(contact, "unavailable")] if offline else []


def _on_xmpp(user: Any) -> bool:
    return any(c.protocol == "xmpp" for c in user.connections)


# -- the handler ----------------------------------------------------------------------------


@handler("presence", None, None, per_delivery=FANOUT)
def presence(conn: XmppConnection, stanza: etree._Element) -> Deferred[Any] | None:
    type_ = stanzas.type_of(stanza)
    if type_ == "error":
        return None
    if type_ == "available" and conn.account and not avatar_hash.loaded(conn.factory, conn.account):
        # The avatar hash (XEP-0153) comes from the account's personal data, whose loading
        # began at binding: wait for it once rather than announce "no avatar".
        return conn.factory.pep.get(conn.account).addCallback(lambda _: _route(conn, stanza))
    return _route(conn, stanza)


def _route(conn: XmppConnection, stanza: etree._Element) -> Deferred[Any] | None:
    type_ = stanzas.type_of(stanza)
    to = stanza.get("to")
    if to is None:
        if type_ in ("available", "unavailable"):
            return broadcast(conn, stanza)
        return None
    target = try_parse(to)
    if target is None or target.domain != conn.domain or target.local is None:
        return None
    if type_ in ("available", "unavailable"):
        _directed(conn, stanza, target.bare, target.resource)
        return None
    contact = target.bare
    if contact == conn.bare_jid:
        return None
    flow = _SUBSCRIPTION_FLOWS.get(type_)
    if flow is not None:
        return flow(conn, contact)
    if type_ == "probe":
        return _probe(conn, contact)
    return None


def broadcast(conn: XmppConnection, stanza: etree._Element) -> Deferred[Any]:
    """Initial, updated or final presence of a resource (RFC 6121 §4.2-4.5)."""
    available = stanzas.type_of(stanza) == "available"
    el = copy.deepcopy(stanza)
    for attr in ("to", "id"):
        el.attrib.pop(attr, None)
    el.set("from", conn.jid or "")
    _stamp_lang(conn, el)
    first = available and not conn.available
    if available:
        assert conn.account is not None
        avatar_hash.inject(conn.factory, conn.account, el)
        show = stanzas.child_text(el, "show")
        status = stanzas.child_text(el, "status")
        conn.presence_show = show if show in SHOWS else None
        conn.presence_status = status[:STATUS_MAX] if status else None
        # Kept as bytes: an element would hold a libxml2 document (about 0.9 KiB) for every
        # session, and only a new subscriber or a probe ever reads it again.
        conn.presence = etree.tostring(el)
        conn.available = True
        conn.quit_reason = None
        _sync_away(conn)
    else:
        # A client going offline says why in its last presence (as IRC's QUIT does): that is
        # the quit reason if the stream ends now.  Marked as the user's words, as IRC and
        # line chat mark theirs.
        status = stanzas.child_text(el, "status")
        conn.quit_reason = f"Quit: {status[:STATUS_MAX]}" if status else "Quit"
        conn.available = False
        conn.presence = None
        conn.presence_show = conn.presence_status = None
    assert conn.bare_jid is not None and conn.account is not None
    own = list(conn.factory.available(conn.bare_jid))
    if not available:
        own.append(conn)
    _send_all(own, el)
    if first:
        # An account is subscribed to itself (RFC 6121 §4.2.2): a resource coming online
        # learns what the account's other resources are doing, as a subscriber would.
        for sibling in own:
            if sibling is not conn and sibling.presence is not None:
                conn.send(stanzas.splice_to(sibling.presence, conn.jid or ""))
    d = _to_subscribers(conn.factory, conn.account, conn, el, first)
    if available:
        # After the contacts' presences, so that PEP's last items follow them.
        caps.received(conn, el)
    if first:
        from protocols.xmpp import im

        im.release_held(conn)
        render.release_offline(conn)
        metadata.first_presence(conn)
    if first and conn.user is not None and conn.user.rooms:
        _show_rooms(conn)
    return d


def _show_rooms(conn: XmppConnection) -> None:
    try:
        from protocols.xmpp.muc.join import show_rooms
    except ImportError as err:
        if err.name not in ("protocols.xmpp.muc", "protocols.xmpp.muc.join"):
            raise
        return
    show_rooms(conn)


def went_offline(conn: XmppConnection) -> None:
    """The stream of an available resource closed: tell its subscribers and siblings."""
    conn.available = False
    conn.presence = None
    el = _presence(conn.jid or "", "unavailable")
    assert conn.bare_jid is not None and conn.account is not None
    _send_all([c for c in conn.factory.available(conn.bare_jid) if c is not conn], el)
    _to_subscribers(conn.factory, conn.account, None, el, False)


def _to_subscribers(
    factory: XmppFactory,
    account: str,
    conn: XmppConnection | None,
    el: etree._Element,
    first: bool,
) -> Deferred[Any]:
    def send(items: dict[str, RosterItem]) -> None:
        for item in list(items.values()):
            if item.subscription in ("from", "both"):
                _send_all(factory.available(item.jid), el)
        if not first or conn is None:
            return
        # Initial presence: what the contacts are doing now, and requests that waited.
        for item in list(items.values()):
            if item.subscription in ("to", "both"):
                for p in _contact_presences(factory, item.jid, offline=False):
                    _send_all([conn], p)
            if item.pending_in:
                _send_all([conn], _presence(item.jid, "subscribe"))

    return factory.rosters.get(account).addCallback(send)


def away_text(show: str | None, status: str | None) -> str | None:
    """The core's away message for a presence's show and status (None: not away)."""
    if show in AWAY_SHOWS:
        return status[:STATUS_MAX] if status else _SHOW_TEXT[show]
    return None


def sync_away(conn: XmppConnection, show: str | None, status: str | None) -> None:
    """Make the user's away state what a presence with ``show`` and ``status`` says."""
    user = conn.user
    if user is None or conn.core is None:
        return
    wanted = away_text(show, status)
    if user.away != wanted:
        conn.service.set_away(conn.core, wanted)


def _sync_away(conn: XmppConnection) -> None:
    sync_away(conn, conn.presence_show, conn.presence_status)


def _stamp_lang(conn: XmppConnection, el: etree._Element) -> None:
    # A presence relayed to others says its language as the sender's stream did (RFC 6120
    # §4.7.4), as messages do.
    if el.get(XML_LANG) is None and conn.lang:
        el.set(XML_LANG, conn.lang)


def _directed(conn: XmppConnection, stanza: etree._Element, bare: str, resource: str | None):
    el = copy.deepcopy(stanza)
    el.attrib.pop("to", None)
    _stamp_lang(conn, el)
    if conn.account is not None:
        avatar_hash.inject(conn.factory, conn.account, el)
    if resource is not None:
        target = conn.factory.session(bare, resource)
        targets = [target] if target is not None else []
    else:
        targets = list(conn.factory.available(bare))
    _send_all(targets, el)


def _probe(conn: XmppConnection, contact: str) -> Deferred[Any]:
    assert conn.account is not None

    def answer(items: dict[str, RosterItem]) -> None:
        item = items.get(contact)
        if item is None or item.subscription not in ("to", "both"):
            return
        for p in _contact_presences(conn.factory, contact, offline=True):
            _send_all([conn], p)

    return conn.factory.rosters.get(conn.account).addCallback(answer)


# -- subscriptions --------------------------------------------------------------------------


def _account_of(conn: XmppConnection, bare: str) -> Deferred[str | None]:
    """The account name behind a local bare JID, or None for a nick with no account."""
    d = conn.service.account_info(_local(bare))
    return d.addCallback(lambda record: record.name if record is not None else None)


def _update(
    factory: XmppFactory, account: str, contact: str, **changes: Any
) -> Deferred[RosterItem | None]:
    """Change one item of a roster (creating it hidden when missing) and push it if shown.

    ``changes`` may hold callables, applied to the old value.  Creating an item in a full
    roster fails with the roster's stanza error (callers check first, so that a refused
    request changes nothing).
    """

    def apply(items: dict[str, RosterItem]) -> RosterItem:
        old = items.get(contact) or RosterItem(jid=contact, in_roster=False)
        values = {k: (v(getattr(old, k)) if callable(v) else v) for k, v in changes.items()}
        new = dataclasses.replace(old, **values)
        if new != old:
            if not new.in_roster and not new.pending_in and new.subscription == "none":
                if contact in items:
                    factory.rosters.remove(account, contact)
            else:
                roster.refuse_if_full(factory, items, contact, "the")
                factory.rosters.put(account, new)
            roster.push(factory, account, new)
        return new

    return factory.rosters.get(account).addCallback(apply)


def _add(sub: str, side: str) -> str:
    """Add the ``to`` or ``from`` half to a subscription state."""
    states = {"none": set(), "to": {"to"}, "from": {"from"}, "both": {"to", "from"}}[sub] | {side}
    return "both" if len(states) == 2 else side


def _drop(sub: str, side: str) -> str:
    states = {"none": set(), "to": {"to"}, "from": {"from"}, "both": {"to", "from"}}[sub] - {side}
    return states.pop() if states else "none"


def _notify(factory: XmppFactory, bare: str, el: etree._Element) -> None:
    _send_all(factory.available(bare), el)


def _subscribe(conn: XmppConnection, contact: str) -> Deferred[Any]:
    factory, me, my_bare = conn.factory, conn.account, conn.bare_jid
    assert me is not None and my_bare is not None

    def mine(items: dict[str, RosterItem]) -> Deferred[Any] | None:
        item = items.get(contact)
        if item is not None and item.subscription in ("to", "both"):
            # Already subscribed: answer for the contact (RFC 6121 §3.1.3).
            _send_all([conn], _presence(contact, "subscribed"))
            return None
        roster.refuse_if_full(factory, items, contact, "your")
        return _account_of(conn, contact).addCallback(theirs)

    def ask() -> Deferred[Any]:
        # Both rosters are checked before this first change, so that a refused request
        # leaves them as they were (_update checks again: the sender's roster may have
        # filled while the contact's was read).
        return _update(factory, me, contact, ask="subscribe", in_roster=True)

    def theirs(account: str | None) -> Deferred[Any] | None:
        if account is None:
            return ask().addCallback(lambda _: _approved(conn, me, my_bare, contact, None))

        def check(items: dict[str, RosterItem]) -> Deferred[Any] | None:
            item = items.get(my_bare)
            if item is not None and item.subscription in ("from", "both"):
                d = ask()
                return d.addCallback(lambda _: _approved(conn, me, my_bare, contact, account))
            roster.refuse_if_full(factory, items, my_bare, "the contact's")
            d = ask()

            def waiting(_: Any) -> Deferred[Any]:
                _notify(factory, contact, _presence(my_bare, "subscribe"))
                return _update(factory, account, my_bare, pending_in=True)

            return d.addCallback(waiting)

        return factory.rosters.get(account).addCallback(check)

    return factory.rosters.get(me).addCallback(mine)


def _approved(
    conn: XmppConnection, account: str, bare: str, contact: str, contact_account: str | None
) -> Deferred[Any]:
    """``contact`` approved the subscription of ``account`` (``bare``) to its presence."""
    factory = conn.factory
    d = _update(factory, account, contact, ask=None, subscription=lambda s: _add(s, "to"))

    def tell(_: Any) -> Deferred[Any] | None:
        _notify(factory, bare, _presence(contact, "subscribed"))
        for p in _contact_presences(factory, contact, offline=False):
            _notify(factory, bare, p)
        if contact_account is None:
            return None
        return _update(
            factory,
            contact_account,
            bare,
            pending_in=False,
            in_roster=True,
            subscription=lambda s: _add(s, "from"),
        )

    return d.addCallback(tell)


def _subscribed(conn: XmppConnection, subscriber: str) -> Deferred[Any]:
    """This user approves ``subscriber``'s request."""
    me, my_bare = conn.account, conn.bare_jid
    assert me is not None and my_bare is not None

    def check(account: str | None) -> Deferred[Any] | None:
        if account is None:
            return None

        def asked(items: dict[str, RosterItem]) -> Deferred[Any] | None:
            item = items.get(my_bare)
            if item is None or item.ask != "subscribe":
                # Nothing to approve: no pre-approvals here (RFC 6121 §3.4).
                return None
            return _approved(conn, account, subscriber, my_bare, me)

        return conn.factory.rosters.get(account).addCallback(asked)

    return _account_of(conn, subscriber).addCallback(check)


def _unsubscribe(conn: XmppConnection, contact: str) -> Deferred[Any]:
    """This user stops following ``contact``'s presence."""
    factory, me, my_bare = conn.factory, conn.account, conn.bare_jid
    assert me is not None and my_bare is not None
    d: Deferred[Any] = _update(
        factory, me, contact, ask=None, subscription=lambda s: _drop(s, "to")
    )

    def theirs(account: str | None) -> Deferred[Any] | None:
        _notify(factory, contact, _presence(my_bare, "unsubscribe"))
        for c in factory.available(contact):
            _notify(factory, my_bare, _presence(c.jid or contact, "unavailable"))
        if account is None:
            return None
        return _update(
            factory,
            account,
            my_bare,
            pending_in=False,
            subscription=lambda s: _drop(s, "from"),
        )

    d.addCallback(lambda _: _account_of(conn, contact))
    d.addCallback(theirs)
    return d


def _unsubscribed(conn: XmppConnection, subscriber: str) -> Deferred[Any]:
    """This user refuses or cancels ``subscriber``'s subscription."""
    factory, me, my_bare = conn.factory, conn.account, conn.bare_jid
    assert me is not None and my_bare is not None
    d: Deferred[Any] = _update(
        factory, me, subscriber, pending_in=False, subscription=lambda s: _drop(s, "from")
    )

    def theirs(account: str | None) -> Any:
        if account is None:
            return None
        _notify(factory, subscriber, _presence(my_bare, "unsubscribed"))
        for c in factory.available(my_bare):
            _notify(factory, subscriber, _presence(c.jid or my_bare, "unavailable"))
        return _update(factory, account, my_bare, ask=None, subscription=lambda s: _drop(s, "to"))

    d.addCallback(lambda _: _account_of(conn, subscriber))
    d.addCallback(theirs)
    return d


def remove_contact(conn: XmppConnection, item: RosterItem) -> Deferred[Any]:
    """Roster removal (RFC 6121 §2.5.2): cancel both directions, then drop the item."""
    factory, me = conn.factory, conn.account
    assert me is not None
    d: Deferred[Any] = succeed(None)
    if item.subscription in ("to", "both") or item.ask:
        d.addCallback(lambda _: _unsubscribe(conn, item.jid))
    if item.subscription in ("from", "both") or item.pending_in:
        d.addCallback(lambda _: _unsubscribed(conn, item.jid))

    def drop(_: Any) -> None:
        factory.rosters.remove(me, item.jid)
        roster.push(factory, me, item, removed=True)

    return d.addCallback(drop)


_SUBSCRIPTION_FLOWS = {
    "subscribe": _subscribe,
    "subscribed": _subscribed,
    "unsubscribe": _unsubscribe,
    "unsubscribed": _unsubscribed,
}


# -- contacts on other protocols ------------------------------------------------------------


def contact_away(factory: XmppFactory, who: Any) -> None:
    """A user went away or came back (a core observer): subscribers on XMPP see it when the
    user is not itself on XMPP (XMPP sessions announce their own presence), whether or not
    they share a room with it."""
    if not factory.rosters.cache:
        return  # no roster loaded: no one to tell
    contact = address_of(who, factory.domain)
    user = local_user(factory.service, _local(contact))
    if user is None or _on_xmpp(user):
        return
    _to_contact_subscribers(
        factory, contact, lambda: _contact_presences(factory, contact, offline=False)
    )


def core_presence(factory: XmppFactory, contact: str, online: bool) -> None:
    """Someone came online or went offline at the bare JID ``contact`` (core observers: a
    user connecting or leaving, changing nick, logging in or out): subscribers on XMPP hear
    of it when the user is not itself on XMPP (XMPP sessions announce themselves)."""
    if not factory.rosters.cache:
        # No roster loaded, so no subscriber online: the common case of a user coming or
        # going on another protocol costs nothing more.
        return
    user = local_user(factory.service, _local(contact))
    if online:
        if user is None or _on_xmpp(user):
            return
        _to_contact_subscribers(
            factory, contact, lambda: _contact_presences(factory, contact, offline=False)
        )
    elif user is None:
        _to_contact_subscribers(factory, contact, lambda: [_presence(contact, "unavailable")])
    # else: still there (an account's user changing nick): the address did not change.


def _to_contact_subscribers(
    factory: XmppFactory, contact: str, presences: Callable[[], list[etree._Element]]
) -> None:
    """Send the stanzas ``presences()`` of ``contact`` to the online accounts subscribed to
    it; made only when there is one (most users coming online have no XMPP subscriber)."""
    made: list[etree._Element] | None = None
    for key, items in list(factory.rosters.cache.items()):
        item = items.get(contact)
        if item is None or item.subscription not in ("to", "both"):
            continue
        targets = list(factory.available(user_jid(key, factory.domain)))
        if made is None:
            made = presences()
        for p in made:
            _send_all(targets, p)
