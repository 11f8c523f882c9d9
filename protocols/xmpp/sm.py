"""Stream management (XEP-0198, ``urn:xmpp:sm:3``): acknowledgements and resumption.

Once a client has sent ``<enable/>``, both sides count the stanzas they handle (modulo 2^32)
and either may ask the other for its count (``<r/>``, answered by ``<a h='…'/>``).  The
server keeps every stanza it sent until the client's count covers it.

With ``resume='true'`` the session outlives its connection: when the TCP connection drops
(or stops answering pings), the session is *detached* rather than ended.  It stays in its
rooms and keeps receiving into the same queue for ``[xmpp] resume_timeout`` seconds.  A new
stream that authenticates as the same account may then send ``<resume previd='…' h='…'/>``
instead of binding: the old session takes the new connection over, and what the client had
not acknowledged is sent again (messages with a XEP-0203 delay stamp).  When the timeout
passes, or the session ends in any other way, what was never acknowledged goes to
:attr:`Registry.sink`: by default a private message kept in the account's archive (it
carries the archive's ``<stanza-id/>``) is handed to the account's next login, on any
protocol, as an offline message; one the archive does not hold is returned to its sender as
a server notice on every protocol (room messages stay in the room's history; presences,
chat states and IQ traffic are counted and dropped).

The connection keeps the session's :class:`StreamManagement` in ``conn.sm``; this module
decides what the SM elements mean.
"""

from __future__ import annotations

import os
import re
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from lxml import etree
from twisted.logger import Logger

from chatserver.core.names import casefold
from protocols.xmpp.jid import local_user

if TYPE_CHECKING:
    from protocols.xmpp.connection import XmppConnection

log = Logger()

NS_SM = "urn:xmpp:sm:3"
NS_STANZA_ERRORS = "urn:ietf:params:xml:ns:xmpp-stanzas"
NS_DELAY = "urn:xmpp:delay"
MODULO = 1 << 32
# The server asks for an acknowledgement once this many stanzas wait for one (and again
# after each answer): often enough to keep the queue short, rarely enough to cost nothing.
REQUEST_EVERY = 5

# What the queue holds: when a stanza was first sent, and its bytes.
Queued = tuple[float, bytes]
Sink = Callable[["XmppConnection", list[Queued]], None]

_MESSAGE_HEAD = re.compile(rb"<message\b[^>]*>")
_ATTR = re.compile(rb"""\s(from|to|type)=(?:'([^']*)'|"([^"]*)")""")
_BODY = re.compile(rb"<body\b[^>]*>(.*?)</body>", re.S)
_CARBONS = b"urn:xmpp:carbons:2"
NS_STANZA_ID = "urn:xmpp:sid:0"
_STANZA_ID = NS_STANZA_ID.encode()


class StreamManagement:
    """One session's counters and unacknowledged stanzas."""

    __slots__ = ("acked", "handled", "id", "overflow", "queue", "requested", "timeout", "timer")

    def __init__(self, id_: str | None, timeout: float = 0.0) -> None:
        # The resumption id, or None when the client did not ask for resumption.
        self.id = id_
        # Seconds the session waits, detached, to be resumed.
        self.timeout = timeout
        # Stanzas received from the client and handled (the h the server reports).
        self.handled = 0
        # The client's last reported h: stanzas of ours it has handled.
        self.acked = 0
        self.queue: deque[Queued] = deque()
        # An <r/> went out and has not been answered.
        self.requested = False
        # While detached: the call that ends the session when the resume timeout passes.
        self.timer: object | None = None
        # The queue went past its limit; the session is ending.
        self.overflow = False

    @property
    def sent(self) -> int:
        """The count of stanzas sent (what the client's h should reach), modulo 2^32."""
        return (self.acked + len(self.queue)) % MODULO


class Registry:
    """The factory's resumable sessions by id, and the counters for metrics."""

    def __init__(self) -> None:
        self.resumable: dict[str, XmppConnection] = {}
        self.enabled = 0
        self.resumed = 0
        self.resume_failed = 0
        # Unacknowledged stanzas of ended sessions: kept for the account's next login,
        # returned to their senders, or not (kept in a room's history, or of no use once the
        # session is gone).
        self.kept = 0
        self.bounced = 0
        self.dropped = 0
        # Where unacknowledged stanzas go when a session ends.
        self.sink: Sink = keep_offline

    def detached(self) -> int:
        return sum(1 for conn in self.resumable.values() if conn.transport is None)

    def queued(self) -> int:
        return sum(len(conn.sm.queue) for conn in self.resumable.values() if conn.sm)


def nonza(name: str, **attrs: str) -> bytes:
    rendered = "".join(f" {key}='{value}'" for key, value in attrs.items())
    return f"<{name} xmlns='{NS_SM}'{rendered}/>".encode()


def failed(condition: str, **attrs: str) -> bytes:
    rendered = "".join(f" {key}='{value}'" for key, value in attrs.items())
    return (
        f"<failed xmlns='{NS_SM}'{rendered}><{condition} xmlns='{NS_STANZA_ERRORS}'/></failed>"
    ).encode()


# -- the elements a client sends ------------------------------------------------------------


def handle(conn: XmppConnection, el: etree._Element) -> None:
    name = etree.QName(el).localname
    if name == "enable":
        _enable(conn, el)
    elif name == "resume":
        _resume(conn, el)
    elif name == "r":
        if conn.sm is None:
            conn.stream_error("unsupported-stanza-type", "stream management is not enabled")
            return
        conn.write_nonza(nonza("a", h=str(conn.sm.handled)))
    elif name == "a":
        _ack(conn, el)
    else:
        conn.stream_error("unsupported-stanza-type", None)


def _enable(conn: XmppConnection, el: etree._Element) -> None:
    if not conn.is_bound() or conn.sm is not None:
        # Before binding, or a second time (XEP-0198 §3).
        conn.write_nonza(failed("unexpected-request"))
        return
    registry = conn.factory.sm
    timeout = conn.config.resume_timeout
    try:
        # A client may ask for less time than the server allows, never for more.
        timeout = min(timeout, float(el.get("max", "inf")))
    except ValueError:
        pass
    wants_resume = el.get("resume") in ("true", "1") and timeout > 0
    id_ = os.urandom(12).hex() if wants_resume else None
    conn.sm = StreamManagement(id_, timeout)
    registry.enabled += 1
    if id_ is None:
        conn.write_nonza(nonza("enabled"))
        return
    registry.resumable[id_] = conn
    conn.write_nonza(nonza("enabled", id=id_, resume="true", max=f"{timeout:.0f}"))


def _ack(conn: XmppConnection, el: etree._Element) -> None:
    state = conn.sm
    if state is None:
        conn.stream_error("unsupported-stanza-type", "stream management is not enabled")
        return
    try:
        h = int(el.get("h", ""))
    except ValueError:
        conn.stream_error("invalid-xml", "h is a number")
        return
    state.requested = False
    if not acknowledge(state, h):
        # XEP-0198 §4 names the condition and both counts, so the client can tell what it did.
        too_high = nonza("handled-count-too-high", h=str(h), **{"send-count": str(state.sent)})
        conn.stream_error(
            "undefined-condition",
            f"You acknowledged {h} stanzas, but only {state.sent} were sent",
            too_high,
        )


def acknowledge(state: StreamManagement, h: int) -> bool:
    """Forget the stanzas the client's count ``h`` covers; False if it counts more than sent."""
    if not 0 <= h < MODULO:
        return False
    newly = (h - state.acked) % MODULO
    if newly > len(state.queue):
        return False
    for _ in range(newly):
        state.queue.popleft()
    state.acked = h
    return True


def _resume(conn: XmppConnection, el: etree._Element) -> None:
    registry = conn.factory.sm
    previd = el.get("previd", "")
    session = registry.resumable.get(previd)
    if (
        not conn.is_authenticated()
        or session is None
        or session.sm is None
        or session.account is None
        or conn.account is None
        or casefold(session.account) != casefold(conn.account)
    ):
        # Another account's id is as unknown as an expired one.
        registry.resume_failed += 1
        conn.write_nonza(failed("item-not-found"))
        return
    state = session.sm
    try:
        h = int(el.get("h", ""))
    except ValueError:
        h = -1
    if not acknowledge(state, h):
        registry.resume_failed += 1
        conn.write_nonza(failed("unexpected-request", h=str(state.handled)))
        return
    registry.resumed += 1
    session.take_over(conn)
    conn.write_nonza(nonza("resumed", previd=previd, h=str(state.handled)))
    # What the client had not seen, again, in order; the queue itself stays as it is until
    # acknowledged.
    domain = session.domain
    session.write_unchecked(
        b"".join(_delayed(data, domain, _stamp(at)) for at, data in state.queue)
    )
    session.request_ack()


def _stamp(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


def _delayed(data: bytes, domain: str, stamp: str) -> bytes:
    """A message sent again says when it was first sent (XEP-0203); other stanzas as they were."""
    if not data.startswith(b"<message") or not data.endswith(b"</message>"):
        return data
    delay = f"<delay xmlns='{NS_DELAY}' from='{domain}' stamp='{stamp}'/>".encode()
    return data[: -len(b"</message>")] + delay + b"</message>"


# -- the sending side ---------------------------------------------------------------------------


def record(conn: XmppConnection, state: StreamManagement, data: bytes, now: float) -> bool:
    """Keep a stanza sent until acknowledged; False when the queue is over its limit."""
    state.queue.append((now, data))
    return len(state.queue) <= conn.config.max_unacked


def should_request(state: StreamManagement) -> bool:
    return not state.requested and len(state.queue) >= REQUEST_EVERY


# -- ends -------------------------------------------------------------------------------------


def forget(conn: XmppConnection) -> None:
    """The session is over: no longer resumable, and its unacknowledged stanzas to the sink."""
    state = conn.sm
    if state is None:
        return
    registry = conn.factory.sm
    if state.id is not None and registry.resumable.get(state.id) is conn:
        del registry.resumable[state.id]
    timer, state.timer = state.timer, None
    if timer is not None and timer.active():  # type: ignore[attr-defined]
        timer.cancel()  # type: ignore[attr-defined]
    pending = list(state.queue)
    state.queue.clear()
    if pending:
        try:
            registry.sink(conn, pending)
        except Exception:
            log.failure("unacknowledged stanzas of {jid}", jid=conn.jid)


def keep_offline(conn: XmppConnection, pending: list[Queued]) -> None:
    """The default sink: private messages the account's archive holds (they carry its
    ``<stanza-id by='account@domain'/>``) are marked for the account's next login, as
    messages that came while it was away (never lost, never bounced); the rest go to
    :func:`bounce`."""
    registry = conn.factory.sm
    kept: list[str] = []
    rest: list[Queued] = []
    for item in pending:
        msgid = _archive_id(item[1], conn.bare_jid) if conn.account is not None else None
        if msgid is None:
            rest.append(item)
        else:
            kept.append(msgid)
    if kept:
        assert conn.account is not None
        registry.kept += len(kept)
        d = conn.service.keep_offline(conn.account, kept)
        d.addErrback(
            lambda f: log.failure("keeping unacknowledged messages of {a}", f, a=conn.account)
        )
    if rest:
        bounce(conn, rest)


# Stanzas in the queue were serialized by this server; the parser still takes no entities.
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)


def _archive_id(data: bytes, own: str | None) -> str | None:
    """The id under which the private message ``data`` is in the archive of ``own`` (its
    ``<stanza-id/>`` by that JID), or None: a room message, a carbon, or one not kept."""
    if own is None or _STANZA_ID not in data or _CARBONS in data:
        return None
    head = _MESSAGE_HEAD.match(data)
    if head is None or _attrs(head.group()).get("type") in ("groupchat", "error", "headline"):
        return None
    try:
        el = etree.fromstring(data, _PARSER)
    except etree.XMLSyntaxError:
        return None
    for sid in el.findall(f"{{{NS_STANZA_ID}}}stanza-id"):
        if sid.get("by") == own and sid.get("id"):
            return sid.get("id")
    return None


def bounce(conn: XmppConnection, pending: list[Queued]) -> None:
    """Each private message with a body goes back to its sender.

    The sender may be on any protocol, so it is told by a server notice that reaches all of
    its connections.  Room messages are in the room's history; the rest (presences, chat
    states, receipts, IQs) means nothing once the session is gone.
    """
    registry = conn.factory.sm
    recipient = conn.bare_jid or conn.account or "?"
    for _, data in pending:
        head = _MESSAGE_HEAD.match(data)
        body = _BODY.search(data) if head is not None else None
        attrs = _attrs(head.group()) if head is not None else {}
        if (
            head is None
            or body is None
            or attrs.get("type") in ("groupchat", "error", "headline")
            # A carbon copies what the user itself sent: nothing was lost to anyone.
            or _CARBONS in data
        ):
            registry.dropped += 1
            continue
        user = _sender(conn, attrs.get("from", ""))
        if user is None:
            registry.dropped += 1
            continue
        text = _unescape(body.group(1).decode("utf-8", "replace"))
        if len(text) > 200:
            text = text[:200] + "…"
        conn.service.notice_user(user, f"Not delivered to {recipient} (offline): {text}")
        registry.bounced += 1


def _sender(conn: XmppConnection, address: str) -> Any:
    """The user who sent a message from ``account@domain`` (or a guest's ``~nick@domain``)
    or, in a room, ``room@service/nick``: never whoever holds a nick of an account's name."""
    bare, _, resource = address.partition("/")
    local, at, domain = bare.partition("@")
    if not at:
        return None
    if domain == conn.domain:
        return local_user(conn.service, local)
    if domain == conn.muc_domain and resource:
        return conn.service.find_user(resource)
    return None


def _attrs(head: bytes) -> dict[str, str]:
    found: dict[str, str] = {}
    for match in _ATTR.finditer(head):
        value = match.group(2) if match.group(2) is not None else match.group(3)
        found[match.group(1).decode()] = _unescape(value.decode("utf-8", "replace"))
    return found


def _unescape(text: str) -> str:
    from xml.sax.saxutils import unescape

    return unescape(text, {"&apos;": "'", "&quot;": '"'})
