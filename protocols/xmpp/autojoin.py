"""An always-on account's rooms as autojoin bookmarks (XEP-0402), and the rooms a resource
is shown when it comes online.

While an account is always-on, every room it joins (on any protocol) is an item of its
``urn:xmpp:bookmarks:1`` node with ``autojoin='true'``, and every room it leaves is taken out
again (a bookmark the user named or extended keeps its item, with ``autojoin='false'``).
Clients that keep bookmarks (Conversations, Gajim, Dino) then rejoin the rooms themselves
and catch up through MAM, as they do on any server.

A resource's first presence finds its user in rooms already (kept by always-on, or joined
from another client).  A room that is not an autojoin bookmark is shown at once, as on
joining.  An autojoin bookmark is left to the client when the client shows that it reads
bookmarks: it fetched them (XEP-0402 items, XEP-0048 private storage or legacy PEP) or its
capabilities ask for their notifications.  A client that shows neither within
``AUTOJOIN_WAIT`` seconds of its first presence, and has not joined the room by itself, is
shown it then: each room's state reaches a resource once either way.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from lxml import etree
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from chatserver.core.events import KeptRooms
from chatserver.core.names import casefold
from chatserver.core.records import PepItem, PepNode
from protocols.xmpp import bookmarks, pep, stanzas
from protocols.xmpp.jid import user_jid

if TYPE_CHECKING:
    from protocols.xmpp.connection import XmppConnection
    from protocols.xmpp.factory import XmppFactory

log = Logger()

NS = bookmarks.NS_BOOKMARKS
# Seconds a resource has, after its first presence, to show that it reads bookmarks before
# the server shows it the rooms they would have had it join.
AUTOJOIN_WAIT = 2.0
# conn.extra keys: the client read its bookmarks; the rooms still waiting to be shown.
READ = "bookmarks.read"
WAITING = "autojoin.waiting"
# The rooms whose state this connection has been sent (it joined them, or was shown them).
SENT = "autojoin.sent"
_TRUE = ("true", "1")


def read(conn: XmppConnection) -> None:
    """The client fetched its bookmarks: it joins their autojoin rooms itself."""
    conn.extra[READ] = True


def _reads_bookmarks(conn: XmppConnection) -> bool:
    return bool(conn.extra.get(READ)) or pep.wants(conn, NS) or pep.wants(conn, bookmarks.NS_LEGACY)


# -- keeping the node in step -------------------------------------------------------------------


def rooms_changed(factory: XmppFactory, event: KeptRooms) -> None:
    """The always-on account's rooms changed: so do its autojoin bookmarks.  Changes to one
    account's node are made one after the other, each reading what the last one wrote."""
    account = event.account
    key = casefold(account)
    chains = factory.bookmark_writes
    previous = chains.get(key)
    d: Deferred[Any] = Deferred()
    chains[key] = d
    d.addCallback(lambda _: _update(factory, event))
    d.addErrback(lambda f: log.failure("autojoin bookmarks of {a}", f, a=account))
    d.addBoth(lambda _: _written(factory, account, d))
    if previous is None:
        d.callback(None)
    else:
        previous.addBoth(lambda _: d.callback(None))


def _written(factory: XmppFactory, account: str, d: Deferred[Any]) -> None:
    key = casefold(account)
    if factory.bookmark_writes.get(key) is not d:
        return
    del factory.bookmark_writes[key]
    if not factory.resources(user_jid(account, factory.domain)):
        # Loaded only for this: not kept for an account that no XMPP client is using.
        factory.pep.forget(account)


def _update(factory: XmppFactory, event: KeptRooms) -> Deferred[Any]:
    account = event.account
    owner = user_jid(account, factory.domain)
    muc = factory.config.muc_service.lower()
    now = factory.clock.seconds()

    def update(data: dict[pep.Key, PepNode]) -> Deferred[Any] | None:
        node = data.get(bookmarks.KEY) or bookmarks.NODE
        items = {item.id: item for item in node.items}
        published: list[PepItem] = []
        retracted: list[str] = []
        for room in event.joined:
            jid = f"{room}@{muc}"
            old = items.get(jid)
            payload = _with_autojoin(old.payload if old else None, True, event.nick)
            if old is None or old.payload != payload:
                items[jid] = PepItem(jid, payload, now)
                published.append(items[jid])
        for room in event.left:
            jid = f"{room}@{muc}"
            old = items.get(jid)
            if old is None:
                continue
            if _plain(old.payload):
                del items[jid]
                retracted.append(jid)
            else:
                payload = _with_autojoin(old.payload, False, None)
                if payload != old.payload:
                    items[jid] = PepItem(jid, payload, now)
                    published.append(items[jid])
        if not published and not retracted:
            return None
        # Published items go last, the newest, as a client's own publication would.
        new = {item.id for item in published}
        kept = [items[i.id] for i in node.items if i.id in items and i.id not in new]
        node = dataclasses.replace(node, items=(*kept, *published))

        def saved(_: Any) -> None:
            for item in published:
                pep.notify_owner(
                    factory, owner, NS, pep.items_element(pep.NS_PUBSUB_EVENT, NS, [item])
                )
            for jid in retracted:
                el = stanzas.element("items", {"node": NS}, ns=pep.NS_PUBSUB_EVENT)
                stanzas.sub(el, "retract", {"id": jid})
                pep.notify_owner(factory, owner, NS, el)
            bookmarks.changed(factory, owner, node)

        return factory.pep.put(account, node).addCallback(saved)

    return factory.pep.get(account).addCallback(update)


def _with_autojoin(payload: str | None, autojoin: bool, nick: str | None) -> str:
    """A ``<conference/>`` payload with ``autojoin`` set: ``payload`` changed, or a new one
    naming ``nick``."""
    conference: etree._Element | None = None
    if payload is not None:
        try:
            conference = etree.fromstring(payload)
        except etree.XMLSyntaxError:
            conference = None
        if conference is not None and conference.tag != f"{{{NS}}}conference":
            conference = None
    if conference is None:
        conference = stanzas.element("conference", ns=NS)
        if nick is not None:
            stanzas.sub(conference, "nick", text=nick)
    conference.set("autojoin", "true" if autojoin else "false")
    return stanzas.to_bytes(conference).decode("utf-8")


def _plain(payload: str) -> bool:
    """A bookmark with nothing of the user's: no name, nothing but a nick in it."""
    try:
        conference = etree.fromstring(payload)
    except etree.XMLSyntaxError:
        return True
    if conference.get("name"):
        return False
    return all(not isinstance(c.tag, str) or c.tag == f"{{{NS}}}nick" for c in conference)


# -- a resource's first presence ------------------------------------------------------------


def _autojoin_rooms(node: PepNode | None, muc: str) -> set[str]:
    rooms: set[str] = set()
    suffix = "@" + muc
    for item in node.items if node is not None else ():
        if not item.id.lower().endswith(suffix):
            continue
        try:
            conference = etree.fromstring(item.payload)
        except etree.XMLSyntaxError:
            continue
        if conference.get("autojoin") in _TRUE:
            rooms.add(item.id[: -len(suffix)].lower())
    return rooms


def show_rooms(conn: XmppConnection, show: Callable[[XmppConnection, str], None]) -> Deferred[Any]:
    """``conn`` sent its first presence and its user is in rooms: ``show`` it each room
    that it will not join by itself (see the module's docstring)."""
    assert conn.account is not None
    # The rooms the user is in as the resource comes online: the bookmarks are read from the
    # store, and a room the client joins by itself meanwhile was sent its state then.
    rooms = list(conn.user.rooms) if conn.user is not None else []

    def split(data: dict[pep.Key, PepNode]) -> None:
        user = conn.user
        if user is None or conn.core is None:
            return
        bookmarked = _autojoin_rooms(data.get(bookmarks.KEY), conn.muc_domain)
        sent = conn.extra.get(SENT, ())
        later: set[str] = set()
        for name in rooms:
            if name in sent or name not in user.rooms:
                continue
            if name not in bookmarked:
                show(conn, name)
            elif not _reads_bookmarks(conn):
                later.add(name)
        if later:
            conn.extra[WAITING] = later
            conn.clock.callLater(AUTOJOIN_WAIT, _wait_over, conn, show)

    d = conn.factory.pep.get(conn.account).addCallback(split)
    d.addErrback(lambda f: log.failure("rooms of {jid}", f, jid=conn.jid))
    return d


def joined(conn: XmppConnection, room: str) -> None:
    """``room``'s state was sent to ``conn``: it need not be shown again."""
    extra = conn.extra
    extra.setdefault(SENT, set()).add(room)
    waiting = extra.get(WAITING)
    if waiting:
        waiting.discard(room)


def _wait_over(conn: XmppConnection, show: Callable[[XmppConnection, str], None]) -> None:
    waiting = conn.extra.pop(WAITING, None)
    user = conn.user
    if not waiting or user is None or not conn.available or _reads_bookmarks(conn):
        return
    for name in list(user.rooms):
        if name in waiting:
            show(conn, name)
