"""CHATHISTORY (IRCv3 draft/chathistory): room history from the core, replied in a batch.

``CHATHISTORY LATEST|BEFORE|AFTER|AROUND <target> <selector> <limit>``,
``CHATHISTORY BETWEEN <target> <selector> <selector> <limit>`` and
``CHATHISTORY TARGETS <timestamp> <timestamp> <limit>``.  A selector is
``timestamp=YYYY-MM-DDThh:mm:ss.sssZ`` or ``msgid=ID`` (and ``*`` for LATEST).

Room history is served to members of the room; anything else is ``INVALID_TARGET``, the same
for a room that does not exist, so that the reply does not tell secret rooms apart.  A nick
target reads the private conversation with that nick from the user's account archive (empty
for a user not logged in).  ``TARGETS`` lists rooms and private conversations together.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from chatserver.core.errors import ChatError
from chatserver.core.names import is_valid_nick
from protocols.irc.caps import Capability, add_capability
from protocols.irc.channels import channel_name, is_channel, room_of
from protocols.irc.commands import command
from protocols.irc.handlers.registration import EXTRA_ISUPPORT

# The most messages one command returns (ISUPPORT CHATHISTORY); larger limits are cut to it.
CHATHISTORY_MAX = 100
EXTRA_ISUPPORT["CHATHISTORY"] = str(CHATHISTORY_MAX)
# Joins, parts, quits, kicks, nick changes and topics in room history, for those who ask.
EVENT_PLAYBACK = "draft/event-playback"
add_capability(Capability(EVENT_PLAYBACK, requires_command="CHATHISTORY"))
SUBCOMMANDS = ("LATEST", "BEFORE", "AFTER", "AROUND", "BETWEEN", "TARGETS")
log = Logger()
# Parameters after the subcommand that each one needs.
_ARITY = {"LATEST": 3, "BEFORE": 3, "AFTER": 3, "AROUND": 3, "BETWEEN": 4, "TARGETS": 3}


class QueryError(Exception):
    """A CHATHISTORY command that cannot be answered: ``FAIL CHATHISTORY <code> <context…>``."""

    def __init__(self, code: str, context: tuple[str, ...], description: str) -> None:
        super().__init__(description)
        self.code = code
        self.context = context
        self.description = description


@dataclass(frozen=True, slots=True)
class Selector:
    """``kind`` is 'timestamp' (``ts`` set), 'msgid' (``msgid`` set) or '*' (LATEST only)."""

    kind: str
    ts: float | None = None
    msgid: str | None = None


STAR = Selector("*")


@dataclass(frozen=True, slots=True)
class Query:
    subcommand: str
    # The target as the client wrote it ("" for TARGETS).
    target: str
    selectors: tuple[Selector, ...]
    limit: int


def parse_timestamp(text: str) -> float:
    """Seconds since the epoch from ``YYYY-MM-DDThh:mm:ss[.fff]Z`` (an offset is accepted
    too; no zone at all means UTC), to the millisecond; raises ValueError."""
    if (
        not text
        or len(text) > 40
        or not (text[:4].isascii() and text[:4].isdigit())
        or "T" not in text
    ):
        raise ValueError(text)
    when = datetime.datetime.fromisoformat(text)
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    # Clients see times to the millisecond (server-time): finer digits name the same one.
    whole = when.replace(microsecond=0).timestamp()
    return whole + (when.microsecond // 1000) / 1000


# A stored time is shown as the millisecond it falls in once rounded to the microsecond
# (server_time); a timestamp selector names that millisecond, so these are its edges.
_MS = 0.001
_HALF_US = 0.0000005


@dataclass(frozen=True, slots=True)
class Reference:
    """Where a selector points: ``center`` for AROUND, and the bounds for "strictly before"
    (``ts < before``) and "strictly after" (``ts > after``) it.  A msgid points at one stored
    time; a timestamp at every message shown with that millisecond."""

    center: float
    before: float
    after: float


def reference_of(selector: Selector, stored_ts: float | None = None) -> Reference | None:
    """The reference of a timestamp selector, or of a msgid one found at ``stored_ts``."""
    if selector.kind == "msgid":
        assert stored_ts is not None
        return Reference(stored_ts, stored_ts, stored_ts)
    if selector.ts is None:
        return None
    return Reference(selector.ts, selector.ts - _HALF_US, selector.ts + _MS - _HALF_US)


def format_timestamp(ts: float) -> str:
    """The server-time form: ``YYYY-MM-DDThh:mm:ss.sssZ`` in UTC."""
    when = datetime.datetime.fromtimestamp(ts, datetime.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def parse_selector(text: str, *, allow_star: bool = False, allow_msgid: bool = True) -> Selector:
    """One selector; raises ValueError."""
    if text == "*" and allow_star:
        return STAR
    kind, sep, value = text.partition("=")
    if not sep or not value:
        raise ValueError(text)
    if kind == "timestamp":
        return Selector("timestamp", ts=parse_timestamp(value))
    if kind == "msgid" and allow_msgid:
        return Selector("msgid", msgid=value)
    raise ValueError(text)


def parse_limit(text: str, maximum: int = CHATHISTORY_MAX) -> int:
    """The limit, cut to ``maximum`` (0 asks for the maximum); raises ValueError."""
    if not text.isascii() or not text.isdigit() or len(text) > 9:
        raise ValueError(text)
    value = int(text)
    return maximum if value == 0 or value > maximum else value


def parse_query(params: tuple[str, ...], maximum: int = CHATHISTORY_MAX) -> Query:
    """The query in a CHATHISTORY command's parameters; raises :class:`QueryError`."""
    if not params:
        raise QueryError("NEED_MORE_PARAMS", ("*",), "Missing parameters")
    sub = params[0].upper()
    if sub not in _ARITY:
        raise QueryError("UNKNOWN_COMMAND", (params[0],), "Unknown subcommand")
    args = params[1:]
    if len(args) < _ARITY[sub]:
        raise QueryError("NEED_MORE_PARAMS", (sub,), "Missing parameters")
    try:
        limit = parse_limit(args[_ARITY[sub] - 1], maximum)
    except ValueError:
        raise QueryError("INVALID_PARAMS", (sub, args[_ARITY[sub] - 1]), "Invalid limit") from None
    if sub == "TARGETS":
        raw = args[:2]
        target = ""
    else:
        target = args[0]
        raw = args[1 : _ARITY[sub] - 1]
    selectors = []
    for text in raw:
        try:
            selectors.append(
                parse_selector(text, allow_star=sub == "LATEST", allow_msgid=sub != "TARGETS")
            )
        except ValueError:
            raise QueryError("INVALID_PARAMS", (sub, text), "Invalid message reference") from None
    return Query(sub, target, tuple(selectors), limit)


# -- answering ---------------------------------------------------------------------------------


def _room_of(conn: Any, query: Query) -> str | None:
    """The room key of a ``#room`` target the user may read, None for a nick target;
    raises QueryError for anything else."""
    target = query.target
    refused = QueryError(
        "INVALID_TARGET", (query.subcommand, target), "Messages could not be retrieved"
    )
    if is_channel(target):
        key = room_of(target)
        room = conn.service.get_room(key) if key is not None else None
        user = conn.user
        if room is None or user is None or user not in room.members:
            raise refused
        return room.name
    if target == "*" or is_valid_nick(target):
        return None
    raise refused


def _resolve(conn: Any, room: str, query: Query, selector: Selector) -> Deferred:
    """Fire with the selector's :class:`Reference` (None for '*'), or fail with QueryError."""
    if selector.kind != "msgid":
        return succeed(reference_of(selector))

    def found(message: Any) -> Reference | None:
        if message is None or message.room != room:
            raise QueryError(
                "INVALID_PARAMS",
                (query.subcommand, f"msgid={selector.msgid}"),
                "Unknown message id",
            )
        return reference_of(selector, float(message.ts))

    service = conn.service
    find = service.history_find_any if EVENT_PLAYBACK in conn.caps else service.history_find
    return find(selector.msgid).addCallback(found)


def _with_events(
    conn: Any,
    room: str,
    messages: Deferred,
    limit: int,
    *,
    after: float | None = None,
    before: float | None = None,
    newest: bool,
) -> Deferred:
    """``messages`` (a page with ``after < ts < before``), with the room's events in the same
    window merged in when the client asked for them (draft/event-playback): the ``limit``
    items nearest the anchor, the newest ones if ``newest``."""
    if EVENT_PLAYBACK not in conn.caps:
        return messages
    bounds = {
        "after": None if after is None else (after, _HIGHEST_ID),
        "before": None if before is None else (before, _LOWEST_ID),
        "newest": newest,
    }

    def merge(found: list[Any]) -> Deferred:
        def both(events: list[Any]) -> list[Any]:
            items = sorted([*found, *events], key=lambda item: (item.ts, item.id))
            return items[-limit:] if newest else items[:limit]

        return conn.service.history_events(room, limit, **bounds).addCallback(both)

    return messages.addCallback(merge)


def fetch_room(conn: Any, room: str, query: Query) -> Deferred:
    """Fire with the query's messages of ``room`` (and its events, for draft/event-playback)
    in ascending time order."""
    service = conn.service
    sub, limit = query.subcommand, query.limit
    if sub == "BETWEEN":
        d = _resolve(conn, room, query, query.selectors[0])

        def second(first: Reference) -> Deferred:
            return _resolve(conn, room, query, query.selectors[1]).addCallback(
                lambda end: (first, end)
            )

        def between(bounds: tuple[Reference, Reference]) -> Deferred:
            start, end = bounds
            if start.center <= end.center:
                d = service.history_between(room, start.after, end.before, limit)
                return _with_events(
                    conn, room, d, limit, after=start.after, before=end.before, newest=False
                )
            # Backwards in time: the newest messages before ``start`` that are after ``end``.
            d = service.history_before(room, start.before, limit).addCallback(
                lambda messages: [m for m in messages if m.ts > end.after]
            )
            return _with_events(
                conn, room, d, limit, after=end.after, before=start.before, newest=True
            )

        return d.addCallback(second).addCallback(between)

    def run(ref: Reference | None) -> Deferred:
        if sub == "LATEST":
            d = service.history_latest(room, limit)
            if ref is not None:
                # The newest ``limit`` after it are among the newest ``limit`` overall.
                d.addCallback(lambda messages: [m for m in messages if m.ts > ref.after])
            after = None if ref is None else ref.after
            return _with_events(conn, room, d, limit, after=after, newest=True)
        assert ref is not None
        if sub == "BEFORE":
            d = service.history_before(room, ref.before, limit)
            return _with_events(conn, room, d, limit, before=ref.before, newest=True)
        if sub == "AFTER":
            d = service.history_after(room, ref.after, limit)
            return _with_events(conn, room, d, limit, after=ref.after, newest=False)
        d = service.history_around(room, ref.center, limit)
        if EVENT_PLAYBACK not in conn.caps:
            return d
        return d.addCallback(lambda messages: _around_events(conn, room, messages, ref, limit))

    return _resolve(conn, room, query, query.selectors[0]).addCallback(run)


def _around_events(
    conn: Any, room: str, messages: list[Any], ref: Reference, limit: int
) -> Deferred:
    """AROUND over messages and events, as history_around does for messages: up to half of
    ``limit`` up to the centre (included), then the oldest after it."""
    centre = ref.center + 1e-6
    half = max(limit - limit // 2, 1)
    service = conn.service
    older = service.history_events(room, half, before=(centre, _LOWEST_ID), newest=True)

    def newer(older_events: list[Any]) -> Deferred:
        def window(newer_events: list[Any]) -> list[Any]:
            items = sorted(
                [*messages, *older_events, *newer_events], key=lambda item: (item.ts, item.id)
            )
            first = [item for item in items if item.ts < centre][-half:]
            rest = [item for item in items if item.ts >= centre]
            return (first + rest)[:limit]

        d = service.history_events(room, limit, after=(centre, _LOWEST_ID), newest=False)
        return d.addCallback(window)

    return older.addCallback(newer)


# (ts, id) anchors of the private archive: a timestamp alone bounds every id at that time.
_LOWEST_ID = ""
_HIGHEST_ID = "\uffff"


def _timestamp_anchor(selector: Selector, *, lower: bool) -> tuple[float, str]:
    """The (ts, id) bound of a timestamp selector: it names a whole millisecond as shown, so
    "after" starts past its last stored time and "before" ends ahead of its first."""
    ref = reference_of(selector)
    assert ref is not None
    return (ref.after, _HIGHEST_ID) if lower else (ref.before, _LOWEST_ID)


def _private_anchor(conn: Any, query: Query, selector: Selector, *, lower: bool) -> Deferred:
    """Fire with the (ts, id) bound of ``selector`` in the user's archive (``lower``: the
    messages wanted are after it), or fail with QueryError."""
    if selector.kind == "timestamp":
        return succeed(_timestamp_anchor(selector, lower=lower))
    if selector.kind == "*":
        return succeed(None)

    def found(message: Any) -> tuple[float, str]:
        if message is None:
            raise QueryError(
                "INVALID_PARAMS",
                (query.subcommand, f"msgid={selector.msgid}"),
                "Unknown message id",
            )
        return (float(message.ts), message.id)

    assert selector.msgid is not None
    return conn.service.archive_find(conn.core, selector.msgid).addCallback(found)


def fetch_private(conn: Any, query: Query) -> Deferred:
    """Fire with the query's messages of the private conversation with the nick target."""
    service, core, peer = conn.service, conn.core, query.target
    sub, limit = query.subcommand, query.limit
    if peer == "*":
        return succeed([])

    def page(**bounds: Any) -> Deferred:
        return service.archive_query(core, peer, limit, **bounds)

    if sub == "LATEST":
        d = _private_anchor(conn, query, query.selectors[0], lower=True)
        return d.addCallback(lambda anchor: page(after=anchor, newest=True))
    if sub == "BEFORE":
        d = _private_anchor(conn, query, query.selectors[0], lower=False)
        return d.addCallback(lambda anchor: page(before=anchor, newest=True))
    if sub == "AFTER":
        d = _private_anchor(conn, query, query.selectors[0], lower=True)
        return d.addCallback(lambda anchor: page(after=anchor, newest=False))
    if sub == "AROUND":
        selector = query.selectors[0]

        def around(anchor: tuple[float, str]) -> Deferred:
            # The anchor message itself belongs to the older half.
            ts, msgid = anchor
            if selector.kind == "msgid":
                centre = (ts, msgid + "\x00")
            else:
                # The messages shown with the selected millisecond belong to the older half.
                centre = _timestamp_anchor(selector, lower=True)
            half = max(limit - limit // 2, 1)
            older = service.archive_query(core, peer, half, before=centre, newest=True)

            def newer(first: list[Any]) -> Deferred:
                rest = service.archive_query(
                    core, peer, max(limit - len(first), 0), after=centre, newest=False
                )
                return rest.addCallback(lambda second: (first + second)[:limit])

            return older.addCallback(newer)

        return _private_anchor(conn, query, selector, lower=False).addCallback(around)
    # BETWEEN: either order; the messages nearest the first selector.
    first, second = query.selectors
    d = _private_anchor(conn, query, first, lower=True)

    def both(a: tuple[float, str]) -> Deferred:
        return _private_anchor(conn, query, second, lower=False).addCallback(lambda b: (a, b))

    def between(bounds: tuple[tuple[float, str], tuple[float, str]]) -> Deferred:
        a, b = bounds
        if a <= b:
            return page(after=a, before=b, newest=False)
        # Backwards in time: the selectors swap sides, keeping their own message out.
        low = _timestamp_anchor(second, lower=True) if second.kind == "timestamp" else b
        high = _timestamp_anchor(first, lower=False) if first.kind == "timestamp" else a
        return page(after=low, before=high, newest=True)

    return d.addCallback(both).addCallback(between)


def _fail(conn: Any, err: QueryError) -> None:
    conn.fail("CHATHISTORY", err.code, *err.context, description=err.description)


@command("CHATHISTORY", cost=2.0)
def chathistory(conn: Any, msg: Any) -> Deferred | None:
    try:
        query = parse_query(tuple(msg.params))
        if query.subcommand == "TARGETS":
            return _targets(conn, query)
        room = _room_of(conn, query)
    except QueryError as err:
        _fail(conn, err)
        return None
    d = fetch_private(conn, query) if room is None else fetch_room(conn, room, query)
    d.addCallback(lambda messages: _reply_messages(conn, query.target, messages))
    d.addErrback(_failed, conn, query)
    return d


def _reply_messages(conn: Any, target: str, messages: list[Any]) -> None:
    batch = conn.start_batch("chathistory", target)
    conn.queue_history(messages, batch)
    if batch is not None:
        conn.end_batch(batch)


def _failed(failure: Any, conn: Any, query: Query) -> None:
    if failure.check(QueryError):
        _fail(conn, failure.value)
        return
    if not failure.check(ChatError):
        log.failure("CHATHISTORY {sub}", failure, sub=query.subcommand)
    context = (query.subcommand, query.target) if query.target else (query.subcommand,)
    _fail(conn, QueryError("MESSAGE_ERROR", context, "Messages could not be retrieved"))


def _targets(conn: Any, query: Query) -> Deferred:
    a, b = (reference_of(s) for s in query.selectors)
    assert a is not None and b is not None
    first, last = (a, b) if a.center <= b.center else (b, a)
    start, end = first.after, last.before
    rooms = conn.service.history_targets(conn.core, start, end, query.limit)

    def private(room_rows: list[tuple[str, float]]) -> Deferred:
        d = conn.service.archive_targets(conn.core, start, end, query.limit)

        def merge(nick_rows: list[tuple[str, float]]) -> list[tuple[str, float]]:
            rows = [(channel_name(room), ts) for room, ts in room_rows]
            rows.extend((_nick_of(conn, peer), ts) for peer, ts in nick_rows)
            rows.sort(key=lambda row: row[1])
            return rows[: query.limit]

        return d.addCallback(merge)

    d = rooms.addCallback(private)

    def reply(rows: list[tuple[str, float]]) -> None:
        batch = conn.start_batch("draft/chathistory-targets")
        tags = {"batch": batch} if batch is not None else None
        for target, ts in rows:
            conn.send("CHATHISTORY", "TARGETS", target, format_timestamp(ts), tags=tags)
        if batch is not None:
            conn.end_batch(batch)

    d.addCallback(reply)
    d.addErrback(_failed, conn, query)
    return d


def _nick_of(conn: Any, peer: str) -> str:
    """The nick as its user now writes it, else the archive's folded key."""
    user = conn.service.find_user(peer)
    return user.nick if user is not None else peer
