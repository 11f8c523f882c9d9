"""The transcript runner: put clients in a room, make one of them act, check what each saw.

``step(actor, action, events, viewers)`` runs ``action`` (a call on the actor's client),
waits for the server to have handled it (the actor's round trip), then collects what every
viewer received and checks it against :func:`tests.matrix.forms.wants` for each event:
each expected item exactly once, in order, in the viewer's own protocol.
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from tests.matrix.clients import (
    NS_CLIENT,
    NS_STANZAS,
    WAIT,
    IrcLine,
    IrcPeer,
    IrcPkgPeer,
    LinePeer,
    Peer,
    XmppPeer,
    local,
    q,
    room_jid,
    status_codes,
)
from tests.matrix.forms import Ev, Want, _passes, check, check_none, wants


def _is_error_presence(el: Any, room: str) -> bool:
    return (
        isinstance(el, ET.Element)
        and local(el) == "presence"
        and el.get("type") == "error"
        and (el.get("from") or "").split("/")[0] == room_jid(room)
    )


def joined_test(peer: Peer, room: str) -> Callable[[Any], bool]:
    """How a client knows its own join is done (or refused)."""
    if isinstance(peer, IrcPeer):
        return lambda m: (
            (m.command == "366" and m.params[1] == f"#{room}")
            or (m.command in ("403", "405", "471", "473", "474", "475", "477"))
        )
    if isinstance(peer, IrcPkgPeer):
        return lambda e: (
            e.type
            in (
                "endofnames",
                "bannedfromchan",
                "inviteonlychan",
                "badchannelkey",
            )
        )
    if isinstance(peer, LinePeer):
        if peer.json:
            return lambda o: o.get("cmd") == "join" and o.get("type") in ("ok", "error")
        return lambda s: s == f"*** you joined #{room}" or s.startswith("!!! ")
    if isinstance(peer, XmppPeer):
        return lambda el: (
            local(el) == "presence"
            and (el.get("from") or "").split("/")[0] == room_jid(room)
            and ("110" in status_codes(el) or el.get("type") == "error")
        )
    raise TypeError(peer)


def refused(peer: Peer, item: Any) -> bool:
    if isinstance(peer, IrcPeer):
        return item.command != "366"
    if isinstance(peer, IrcPkgPeer):
        return item.type != "endofnames"
    if isinstance(peer, LinePeer):
        return item.get("type") == "error" if peer.json else item.startswith("!!! ")
    return item.get("type") == "error"


def enter(room: str, *peers: Peer, key: str | None = None) -> None:
    """Each peer joins, one after the other (the first creates the room: its operator)."""
    for peer in peers:
        peer.join(room, key)
        got = peer.expect(joined_test(peer, room))
        assert not refused(peer, got), f"{peer.label} could not join {room}: {got}"
    for peer in peers:
        peer.sync()


def leave(room: str, *peers: Peer) -> None:
    """Everyone leaves, so that rooms do not pile up (their events would reach every room)."""
    for peer in peers:
        peer.part(room, "")
    for peer in peers:
        peer.sync()


def collect(viewer: Peer, expected: Sequence[Want], *, wait: bool = False) -> list[Any]:
    """What ``viewer`` received so far.  With ``wait``, keep reading until every want has a
    match (for what the server does after a connection closes, or off the reactor thread),
    then once more to catch copies."""
    items = viewer.sync()
    if not wait:
        return items
    deadline = time.monotonic() + WAIT
    while not all(any(_passes(w, item) for item in items) for w in expected):
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
        items += viewer.sync()
    items += viewer.sync()
    return items


def step(
    actor: Peer | None,
    action: Callable[[], None],
    events: Iterable[Ev],
    viewers: Iterable[Peer],
    *,
    wait: bool = False,
    not_seen_by: Iterable[Peer] = (),
) -> dict[str, list[Any]]:
    """Run ``action``, then check that every viewer got each event exactly once, natively.

    ``not_seen_by``: viewers that must get none of it.  Returns what each peer received, by
    label (the actor's own replies under its label).
    """
    events = list(events)
    action()
    got: dict[str, list[Any]] = {}
    if actor is not None and not wait:
        got[actor.label] = actor.sync()
    for viewer in viewers:
        expected = [w for ev in events for w in wants(ev, viewer)]
        items = collect(viewer, expected, wait=wait)
        if viewer is actor:
            # What the actor got back before its round trip counts too (an XMPP room's
            # reflection of its own message).
            items = got[actor.label] + items
        check(viewer, items, expected)
        got[viewer.label] = items
    for viewer in not_seen_by:
        expected = [w for ev in events for w in wants(ev, viewer)]
        items = viewer.sync()
        check_none(viewer, items, expected)
        got[viewer.label] = items
    return got


# -- what an actor gets back when it may not do something -----------------------------------------


def irc_numeric(items: Sequence[Any], numeric: str) -> IrcLine:
    found = [m for m in items if isinstance(m, IrcLine) and m.command == numeric]
    assert len(found) == 1, f"wanted one {numeric}, got {[m.raw for m in items]}"
    return found[0]


def line_error(items: Sequence[Any], code: str) -> dict[str, Any]:
    found = [o for o in items if isinstance(o, dict) and o.get("type") == "error"]
    assert len(found) == 1 and found[0]["error"] == code, f"wanted error {code}, got {items}"
    return found[0]


def xmpp_error(el: ET.Element) -> str:
    """The defined condition of a stanza error."""
    error = el.find(q(NS_CLIENT, "error"))
    assert error is not None, ET.tostring(el, encoding="unicode")
    for cond in error:
        if cond.tag.startswith(f"{{{NS_STANZAS}}}") and local(cond) != "text":
            return local(cond)
    raise AssertionError(ET.tostring(el, encoding="unicode"))
