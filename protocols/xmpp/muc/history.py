"""Discussion history sent to a joining occupant (XEP-0045 §7.2.14) with XEP-0203 delays.

History comes from the room's in-memory recent messages (the core keeps the newest
``history_in_memory`` of each room, loaded from the store after a restart), so it is sent in
the same reactor turn as the join: nothing said meanwhile can overtake it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from chatserver.core.events import Message
from protocols.xmpp.muc import ns
from protocols.xmpp.muc.build import Element, stamp, tail, to_attr
from protocols.xmpp.muc.chat import RoomStanza, groupchat_message, stanza_id
from protocols.xmpp.stanzas import element


@dataclass(frozen=True, slots=True)
class HistoryRequest:
    """The joiner's ``<history/>`` limits; None means not given."""

    maxstanzas: int | None = None
    maxchars: int | None = None
    seconds: float | None = None
    since: float | None = None

    @classmethod
    def parse(cls, el: Element | None) -> HistoryRequest:
        if el is None:
            return cls()
        return cls(
            maxstanzas=_count(el.get("maxstanzas")),
            maxchars=_count(el.get("maxchars")),
            seconds=_count(el.get("seconds")),
            since=_since(el.get("since")),
        )


def _count(value: str | None) -> int | None:
    if value is None or not (value.strip().isascii() and value.strip().isdigit()):
        return None
    return int(value)


def _since(value: str | None) -> float | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None
    return parsed.timestamp()


def select(
    conn: Any, room_name: str, request: HistoryRequest, default_count: int
) -> list[tuple[Message, bytes]]:
    """The history to send, oldest first, with each message's rendered tail."""
    service = conn.service
    count = request.maxstanzas if request.maxstanzas is not None else default_count
    if count <= 0 or request.maxchars == 0:
        return []
    messages = service.recent(room_name, count)
    now = service.clock.seconds()
    if request.seconds is not None:
        messages = [m for m in messages if m.ts >= now - request.seconds]
    if request.since is not None:
        messages = [m for m in messages if m.ts > request.since]
    rendered = [(m, history_tail(conn, m)) for m in messages]
    if request.maxchars is not None:
        # The limit counts whole stanzas (XEP-0045 §7.2.14): keep the newest that fit.
        budget = request.maxchars
        kept: list[tuple[Message, bytes]] = []
        extra = len("<message") + len(to_attr(conn.jid))
        for item in reversed(rendered):
            budget -= extra + len(item[1])
            if budget < 0:
                break
            kept.append(item)
        rendered = kept[::-1]
    return rendered


def history_tail(conn: Any, msg: Message) -> bytes:
    """A past message as the room replays it: marked with the time it was said."""

    key = ("xmpp", "muc", "history")
    data = msg.rendered.get(key)
    if data is None:
        room_jid = f"{msg.room}@{conn.muc_domain}"
        delay = element("delay", {"stamp": stamp(msg.ts), "from": room_jid}, ns=ns.DELAY)
        native = msg.native
        if isinstance(native, RoomStanza):
            # The occupant's own stanza, as it was said (XEP-0045 §7.2.15).
            data = native.tail(delay, stanza_id(conn, msg))
        else:
            el = groupchat_message(conn, msg, msg.id)
            el.append(delay)
            data = tail(el)
        msg.rendered[key] = data
    return data
