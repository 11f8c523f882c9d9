"""Chat states (XEP-0085) and reactions (XEP-0444) as IRC client tags, both ways.

=================================  ==========================================
XMPP                               IRC (TAGMSG)
=================================  ==========================================
``<composing/>``                   ``+typing=active``
``<paused/>``                      ``+typing=paused``
``<active/>``, ``<inactive/>``,    ``+typing=done``
``<gone/>``
``<reactions id=X>`` with one      ``+draft/react=<emoji>;+draft/reply=X``,
``<reaction>`` per emoji           one TAGMSG per emoji
=================================  ==========================================

A stanza without a body from an XMPP user goes through the core as a TagMessage carrying the
stanza itself (``native``), so XMPP recipients get it whole and IRC recipients get the tags.
A TagMessage from IRC becomes a stanza of its own for XMPP users.  The id a reaction names is
the message's id as both sides know it: in rooms the stanza-id, which is the IRC msgid.

XEP-0444 sends the whole set of a user's reactions to a message, IRC one reaction at a time:
a reaction from IRC reaches XMPP as a set of that one emoji, and a set from XMPP reaches IRC
as one TAGMSG per emoji in it (an emoji taken out of the set is not told to IRC).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lxml import etree

from chatserver.core.errors import ChatError
from chatserver.core.events import TagMessage
from chatserver.core.names import casefold
from protocols.xmpp import stanzas
from protocols.xmpp.jid import address_of, try_parse
from protocols.xmpp.relay import Relay
from protocols.xmpp.relay import deliver as deliver_relay
from protocols.xmpp.retract import sent_ids
from protocols.xmpp.stanzas import NS_CORRECT, NS_REPLY

if TYPE_CHECKING:
    from protocols.xmpp.connection import XmppConnection

NS_CHAT_STATES = "http://jabber.org/protocol/chatstates"
NS_REACTIONS = "urn:xmpp:reactions:0"
NS_HINTS = "urn:xmpp:hints"

STATE_TO_TYPING = {
    "composing": "active",
    "paused": "paused",
    "active": "done",
    "inactive": "done",
    "gone": "done",
}
TYPING_TO_STATE = {"active": "composing", "paused": "paused", "done": "active"}
# Reactions in one XEP-0444 set that reach IRC: each is a TAGMSG of its own.
MAX_REACTIONS = 10

# ``native`` of the TagMessages after the first that one stanza gives (a set of reactions):
# XMPP recipients had the stanza with the first.
SHOWN = "xmpp:shown"

Tags = tuple[tuple[str, str], ...]


def tags_of(stanza: etree._Element) -> list[Tags]:
    """The IRC client tags a stanza without a body stands for: one tuple per TAGMSG."""
    out: list[Tags] = []
    for child in stanza:
        if not isinstance(child.tag, str):
            continue
        qname = etree.QName(child)
        if qname.namespace == NS_CHAT_STATES and qname.localname in STATE_TO_TYPING:
            out.append((("+typing", STATE_TO_TYPING[qname.localname]),))
            break
    reactions = stanza.find(f"{{{NS_REACTIONS}}}reactions")
    msgid = reactions.get("id") if reactions is not None else None
    if reactions is not None and msgid:
        for reaction in reactions.findall(f"{{{NS_REACTIONS}}}reaction")[:MAX_REACTIONS]:
            emoji = (reaction.text or "").strip()
            if emoji:
                out.append((("+draft/react", emoji), ("+draft/reply", msgid)))
    return out


def relay_tags(conn: Any, stanza: etree._Element, native: Any, **target: str) -> None:
    """Send the tags of ``stanza`` through the core to ``target`` (``room``, ``nick`` or
    ``account``), the first with ``native`` (what XMPP recipients get), the rest marked
    as shown.  With no tags, ``native`` still goes (a marker, a receipt) to XMPP users."""
    sets = tags_of(stanza) or [()]
    for i, tags in enumerate(sets):
        conn.service.send_tags(conn.core, tags, native=native if i == 0 else SHOWN, **target)


def relay_private_tags(conn: Any, stanza: etree._Element, **target: str) -> None:
    """One-to-one: XMPP users had the stanza already (relayed whole); the others get tags."""
    for tags in tags_of(stanza):
        try:
            conn.service.send_tags(conn.core, tags, native=SHOWN, **target)
        except ChatError:
            # A hint to other protocols: one that cannot be given is dropped.
            return


def private_tags(conn: Any, stanza: etree._Element) -> Tags:
    """``+draft/reply`` and ``+draft/edit`` for a one-to-one message with a reply (XEP-0461)
    or a correction (XEP-0308): the ids the XMPP clients gave, as the core's msgids."""
    ids = sent_ids(conn)
    out: list[tuple[str, str]] = []
    reply = stanza.find(f"{{{NS_REPLY}}}reply")
    if reply is not None and reply.get("id"):
        author = try_parse(reply.get("to"))
        out.append(("+draft/reply", ids.get(author.bare if author else "", reply.get("id") or "")))
    replace = stanza.find(f"{{{NS_CORRECT}}}replace")
    if replace is not None and replace.get("id"):
        out.append(("+draft/edit", ids.get(conn.bare_jid or "", replace.get("id") or "")))
    return tuple(out)


def private_children(conn: Any, parent: etree._Element, tags: Tags) -> None:
    """The other way: a reply or a correction from IRC, naming the id XMPP clients know."""
    ids = sent_ids(conn)
    for key, value in tags:
        if key == "+draft/reply" and value:
            stanzas.sub(parent, "reply", {"id": ids.given(value)}, ns=NS_REPLY)
        elif key == "+draft/edit" and value:
            stanzas.sub(parent, "replace", {"id": ids.given(value)}, ns=NS_CORRECT)


def _children(parent: etree._Element, tags: Tags, ids: Any = None) -> bool:
    """The XEP-0085 / XEP-0444 children for ``tags``; whether there was any.  ``ids`` turns a
    msgid into the id XMPP clients know the message by (one-to-one)."""
    found = dict(tags)
    added = False
    state = TYPING_TO_STATE.get(found.get("+typing", ""))
    if state is not None:
        stanzas.sub(parent, state, ns=NS_CHAT_STATES)
        stanzas.sub(parent, "no-store", ns=NS_HINTS)
        added = True
    react, reply = found.get("+draft/react"), found.get("+draft/reply")
    if react and reply:
        if ids is not None:
            reply = ids.given(reply)
        reactions = stanzas.sub(parent, "reactions", {"id": reply}, ns=NS_REACTIONS)
        stanzas.sub(reactions, "reaction", text=stanzas.xml_safe(react))
        stanzas.sub(parent, "store", ns=NS_HINTS)
        added = True
    return added


def render(conn: XmppConnection, event: TagMessage) -> None:
    """A TagMessage for an XMPP connection: the sender's stanza when an XMPP user sent it,
    else the chat state or reaction the tags say (nothing for tags XMPP has no form of)."""
    native = event.native
    if native == SHOWN:
        return
    if event.room is not None:
        _room(conn, event)
        return
    user = conn.user
    if user is None:
        return
    if isinstance(native, Relay):
        # A one-to-one stanza of an XMPP user is relayed by its sender's process itself;
        # one the core brings came from another process of a cluster (``pass_on``).
        deliver_relay(conn, native, casefold(event.target or "") == user.key)
        return
    if casefold(event.target or "") != user.key or event.origin is conn:
        return
    el = stanzas.element(
        "message",
        {
            "from": address_of(event.source, conn.domain),
            "to": conn.jid,
            "type": "chat",
            "id": event.id,
        },
    )
    if _children(el, event.tags, sent_ids(conn)):
        conn.send(el)


def _room(conn: Any, event: TagMessage) -> None:
    from protocols.xmpp.muc.build import cached_tail, send_spliced
    from protocols.xmpp.muc.chat import RoomStanza
    from protocols.xmpp.muc.occupants import occupant_id

    assert event.room is not None
    native = event.native
    if isinstance(native, RoomStanza):
        send_spliced(conn, "message", native.tail())
        return
    key = ("tags", event.room)
    data = event.rendered.get(("xmpp", *key))
    if data is None:
        el = stanzas.element(
            "message",
            {
                "from": conn.occupant_jid(event.room, event.source.nick),
                "type": "groupchat",
                "id": event.id,
            },
        )
        if not _children(el, event.tags):
            event.rendered[("xmpp", *key)] = b""
            return
        stanzas.sub(
            el,
            "occupant-id",
            {"id": occupant_id(conn, event.room, event.source)},
            ns="urn:xmpp:occupant-id:0",
        )
        data = cached_tail(event, key, lambda: el)
    if data:
        send_spliced(conn, "message", data)
