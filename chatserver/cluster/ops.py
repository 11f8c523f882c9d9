"""What one node tells the others: core events of its users as ops in stream entries.

An op is a map with ``k`` (its kind) and the fields of that kind; a user is written as a
compact Who (``who_fields``).  A message, the op sent most, is an array instead
(``MSG_FIELDS`` after ``"msg"``), checked in one expression: a map's keys and a field by
field check cost every node several µs more per message.  Messages of one user to a room
in a row go as one run (``RUN_FIELDS`` after ``"run"``): their fields in columns the
receiving node unpacks only if it makes the messages, and the bytes the sending node
rendered of them, which the receiving node's members of the same rendering get as they are
(``chatserver.core.events.MessageRun``).  A stream entry holds the ops of one reactor turn as one MessagePack array (``pack``, ``unpack``):
one call to encode and one to decode per turn, and MessagePack takes about a quarter of
the time JSON takes for the same ops.  ``check`` checks every field's type, so a malformed
op (another version, a hand-written XADD) is refused whole with ``BadOp`` rather than
half-applied.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import groupby
from operator import attrgetter
from typing import Any, cast

import msgpack

from chatserver.core.events import (
    AccountChange,
    Away,
    Event,
    Invite,
    Join,
    Kick,
    Message,
    MetadataChange,
    NickChange,
    Part,
    Presence,
    Quit,
    Redaction,
    RoomRenamed,
    Said,
    ServerNotice,
    TagMessage,
    UserModeChange,
    Wallops,
    Who,
    native_from_wire,
    native_to_wire,
    shared_blocks,
    shared_renderings,
    who_fields,
    who_of,
)
from chatserver.core.records import BanRecord
from chatserver.core.replica import RoomState


class BadOp(ValueError):
    """An entry that is not a well-formed op."""


# An op: an object, or the array of a message or of a run of messages.
Op = dict[str, Any] | list[Any]
# What an entry is packed from: ops, and messages that become their op as they are packed.
Item = Op | Message


_STR = (str,)
_OPT_STR = (str, type(None))
_NUM = (int, float)

# kind -> {field: accepted types}; every field is required.
SCHEMA: dict[str, dict[str, tuple[type, ...]]] = {
    # A user came online on the node (``s``: its connection is secure; ``m``: its user
    # modes by core name).
    "user": {"who": (dict,), "s": (bool,), "m": (list,)},
    # A user's modes now (``modes``, by core name), the operator's among them.
    "umode": {"nick": _STR, "modes": (list,)},
    # An operator's broadcast to the users who asked for them.
    "wallops": {"nick": _STR, "text": _STR},
    "nick": {"nick": _STR, "new": _STR},
    "quit": {"nick": _STR, "reason": _STR},
    # ``c``: the time the join made the room on the node (None: it was there).
    "join": {"nick": _STR, "room": _STR, "c": (int, float, type(None))},
    "part": {"nick": _STR, "room": _STR, "reason": _STR},
    # ``nick`` "": the server (an operator's console) kicked.
    "kick": {"nick": _STR, "room": _STR, "target": _STR, "reason": _STR},
    # A server notice to everyone (an operator's console).
    "notice": {"text": _STR},
    # A room's whole state (``state``, see room_fields) after ``by`` changed it (None: the
    # server), stamped [time, node]: of two states the later stamp wins on every node.
    "room": {"room": _STR, "by": (dict, type(None)), "stamp": (list,), "state": (dict,)},
    "invite": {"nick": _STR, "room": _STR, "target": _STR},
    # Tags without text (TagMessage); "native" as for "msg".
    "tag": {
        "nick": _STR,
        "id": _STR,
        "tags": (list,),
        "room": _OPT_STR,
        "target": _OPT_STR,
        "status": _OPT_STR,
        "native": (list, type(None)),
    },
    # ``nick`` removed the message ``msgid`` (sent by ``sender``) of a room or a private
    # conversation with ``target``.
    "redact": {
        "nick": _STR,
        "id": _STR,
        "ts": _NUM,
        "msgid": _STR,
        "sender": (dict,),
        "reason": _STR,
        "room": _OPT_STR,
        "target": _OPT_STR,
        "native": (list, type(None)),
    },
    # A user logged in to an account (None: logged out).
    "login": {"nick": _STR, "account": _OPT_STR},
    "rename": {"nick": _STR, "old": _STR, "new": _STR, "reason": _STR},
    # ``nick`` set ``key`` of the user ``target`` to ``value`` (a room's metadata is part of
    # its state: "room"), stamped [time, node] as a room's state is: of two changes of one
    # key the later stamp wins on every node.
    "meta": {"nick": _STR, "target": _STR, "key": _STR, "value": _OPT_STR, "stamp": (list,)},
    # A server ban set (``lifted`` false) or lifted by an operator of the node.
    "kline": {"mask": _STR, "reason": _STR, "by": _STR, "at": _NUM, "lifted": (bool,)},
    # An account made here (``revoked`` None), or deleted or its password changed.
    "account": {"name": _STR, "revoked": _OPT_STR},
    "away": {"nick": _STR, "message": _OPT_STR},
    # A message's fields (an array after "msg", in this order: see MSG_FIELDS).
    "msg": {
        "nick": _STR,
        "id": _STR,
        "ts": _NUM,
        "text": _STR,
        "kind": _STR,
        "room": _OPT_STR,
        "target": _OPT_STR,
        "status": _OPT_STR,
        "tags": (list,),
        # The sender's protocol's own form ([kind, fields], chatserver.core.events) or None.
        "native": (list, type(None)),
    },
    # A run of messages of one user to one room (an array after "run", in this order: see
    # RUN_FIELDS): the sender's nick, the room, how many messages, the last one's time, the
    # last time of one that is not a notice (None: all are), their fields in columns packed
    # apart (ids, times, texts, kinds, tags, native forms, as for "msg"; kinds may be one
    # kind for all, tags and native forms None for none: see run_said), and [key, bytes]
    # per rendering sent.
    "run": {
        "nick": _STR,
        "room": _STR,
        "count": (int,),
        "last": _NUM,
        "active": (int, float, type(None)),
        "said": (bytes,),
        "blocks": (list,),
    },
    # Everything the node holds: each user (as "user" gives it) with its rooms and its
    # metadata (``meta``), and the state of each room it has changed or has users in (as
    # "room" gives it, without "k").
    "state": {"users": (list,), "rooms": (list,)},
    # Ask every node for its "state" (a node that starts, or missed entries).
    "sync": {},
    # The node stops: its users are gone.
    "bye": {},
    # Disconnect a user of the node that owns it (an operator's KILL elsewhere).
    "kill": {"nick": _STR, "reason": _STR},
    # Asked of the node that holds the account (chatserver.cluster.accounts): hand it over.
    "release": {"account": _STR},
    # Its answer when a connection of the account is there: the login elsewhere is refused.
    "kept": {"account": _STR},
    # The account was handed to ``to``, with its always-on user ``nick`` (None: it had
    # none), caught up to ``since``.
    "moved": {"account": _STR, "nick": _OPT_STR, "since": _NUM, "to": _STR},
    # A client whose socket is on the node is handed to the node the op goes to
    # (chatserver.cluster.relay): relay ``id``, the connection's state
    # (protocols.transport.handoff).
    "hoff": {"id": _STR, "state": (dict,)},
    # Bytes of relay ``id`` from the client ("rin") or to it ("rout"); ``end``: the relay
    # ends after them (why), ``abort``: at once; ``t``: when the first of the client's came
    # (its node's monotonic clock).
    "rin": {"id": _STR, "data": (bytes,), "end": _OPT_STR, "abort": (bool,), "t": _NUM},
    "rout": {"id": _STR, "data": (bytes,), "end": _OPT_STR, "abort": (bool,)},
    # The client's socket of relay ``id`` stopped taking output (``paused``), or takes it
    # again.
    "rflow": {"id": _STR, "paused": (bool,)},
}
_WHO: dict[str, tuple[type, ...]] = {
    "n": _STR,
    "i": _STR,
    "h": _STR,
    "a": _OPT_STR,
    "r": _STR,
    "w": _OPT_STR,
}
_KINDS = ("privmsg", "notice", "action")
MSG_FIELDS = tuple(SCHEMA["msg"])
_MSG_CHECKS = tuple(SCHEMA["msg"].items())
# Where each field is in a message's array.
(
    MSG_NICK,
    MSG_ID,
    MSG_TS,
    MSG_TEXT,
    MSG_KIND,
    MSG_ROOM,
    MSG_TARGET,
    MSG_STATUS,
    MSG_TAGS,
    MSG_NATIVE,
) = range(1, len(MSG_FIELDS) + 1)


# Where each field of a run (``encode_run``) is in its array.
RUN_FIELDS = tuple(SCHEMA["run"])
RUN_NICK, RUN_ROOM, RUN_COUNT, RUN_LAST, RUN_ACTIVE, RUN_SAID, RUN_BLOCKS = range(
    1, len(RUN_FIELDS) + 1
)


def who_from(fields: dict[str, Any]) -> Who:
    _check(fields, _WHO, "who")
    return who_of(fields)


_ROOM_STATE: dict[str, tuple[type, ...]] = {
    "flags": (list,),
    "key": _OPT_STR,
    "limit": (int, type(None)),
    "bans": (list,),
    "invites": (list,),
    "excepts": (list,),
    "invited": (list,),
    "topic": _STR,
    "topic_by": _STR,
    "topic_at": _NUM,
    "topic_id": _STR,
    "members": (list,),
    "registered": (bool,),
    "owner": _OPT_STR,
    "reg_ops": (list,),
    "reg_voices": (list,),
    "retention": (int, float, type(None)),
    "meta": (list,),
}


def room_fields(state: RoomState) -> dict[str, Any]:
    return {
        "flags": list(state.flags),
        "key": state.key,
        "limit": state.limit,
        "bans": [[b.mask, b.set_by, b.set_at] for b in state.bans],
        "invites": list(state.invites),
        "excepts": list(state.excepts),
        "invited": list(state.invited),
        "topic": state.topic,
        "topic_by": state.topic_by,
        "topic_at": state.topic_at,
        "topic_id": state.topic_id,
        "members": [list(pair) for pair in state.members],
        "registered": state.registered,
        "owner": state.owner,
        "reg_ops": list(state.reg_ops),
        "reg_voices": list(state.reg_voices),
        "retention": state.retention,
        "meta": [list(pair) for pair in state.metadata],
    }


def room_op(state: RoomState, by: Who | None, stamp: tuple[float, str]) -> dict[str, Any]:
    return {
        "k": "room",
        "room": state.name,
        "by": None if by is None else who_fields(by),
        "stamp": list(stamp),
        "state": room_fields(state),
    }


def room_from(op: dict[str, Any]) -> tuple[RoomState, Who | None, tuple[float, str]]:
    """The state, its author and its stamp in a checked "room" op (or state entry)."""
    fields = op["state"]
    by = None if op["by"] is None else who_from(op["by"])
    stamp = op["stamp"]
    return (
        RoomState(
            name=op["room"],
            flags=tuple(fields["flags"]),
            key=fields["key"],
            limit=fields["limit"],
            bans=tuple(BanRecord(m, b, float(t)) for m, b, t in fields["bans"]),
            invites=tuple(fields["invites"]),
            excepts=tuple(fields["excepts"]),
            invited=tuple(fields["invited"]),
            topic=fields["topic"],
            topic_by=fields["topic_by"],
            topic_at=float(fields["topic_at"]),
            topic_id=fields["topic_id"],
            members=tuple((n, st) for n, st in fields["members"]),
            registered=fields["registered"],
            owner=fields["owner"],
            reg_ops=tuple(fields["reg_ops"]),
            reg_voices=tuple(fields["reg_voices"]),
            retention=None if fields["retention"] is None else float(fields["retention"]),
            metadata=tuple((key, value) for key, value in fields["meta"]),
        ),
        by,
        (float(stamp[0]), stamp[1]),
    )


def _check_stamp(stamp: list[Any], what: str) -> None:
    if not (
        len(stamp) == 2
        and isinstance(stamp[0], _NUM)
        and not isinstance(stamp[0], bool)
        and isinstance(stamp[1], str)
    ):
        raise BadOp(f"{what}: stamp must be [time, node]")


def _check_room(op: Any, what: str) -> None:
    _check(op, {"room": _STR, "by": (dict, type(None)), "stamp": (list,), "state": (dict,)}, what)
    if op["by"] is not None:
        who_from(op["by"])
    _check_stamp(op["stamp"], what)
    fields = op["state"]
    _check(fields, _ROOM_STATE, f"{what} state")
    for name in ("flags", "invites", "excepts", "invited", "reg_ops", "reg_voices"):
        if not all(isinstance(x, str) for x in fields[name]):
            raise BadOp(f"{what}: {name} must be strings")
    for ban in fields["bans"]:
        if not (
            isinstance(ban, list)
            and len(ban) == 3
            and isinstance(ban[0], str)
            and isinstance(ban[1], str)
            and isinstance(ban[2], _NUM)
            and not isinstance(ban[2], bool)
        ):
            raise BadOp(f"{what}: bans must be [mask, by, time]")
    _check_pairs(fields["members"], f"{what}: members")
    _check_pairs(fields["meta"], f"{what}: meta")


def _check_native(native: Any, what: str) -> None:
    if native is not None and not (
        len(native) == 2 and isinstance(native[0], str) and isinstance(native[1], dict)
    ):
        raise BadOp(f"{what}: native must be [kind, fields]")


def _check_names(names: list[Any], what: str) -> None:
    if not all(isinstance(name, str) for name in names):
        raise BadOp(f"{what} must be names")


def _check_pairs(pairs: list[Any], what: str) -> None:
    for pair in pairs:
        if not (
            isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, str) for x in pair)
        ):
            raise BadOp(f"{what} must be [name, value] pairs")


def native_from(op: dict[str, Any]) -> Any:
    """The sender's native form a checked "tag" or "redact" op carries, made again (None
    if none)."""
    return native_of(op["native"])


def native_of(wire: Any) -> Any:
    """The sender's native form from its checked wire form (a message's ``MSG_NATIVE``)."""
    return None if wire is None else native_from_wire(wire[0], wire[1])


def encode_message(msg: Message) -> list[Any]:
    room = msg.room
    return [
        "msg",
        msg.source.nick,
        msg.id,
        msg.ts,
        msg.text,
        msg.kind,
        room,
        None if room is not None else msg.target,
        msg.status,
        [list(pair) for pair in msg.tags] if msg.tags else [],
        _native(msg.native),
    ]


def encode(event: Event, secure: bool = False, modes: Iterable[str] = ()) -> Op | None:
    """The op for a core event of a local user, or None for events not shared; ``secure``
    and ``modes`` (the user's modes) for a Presence or a UserModeChange."""
    if isinstance(event, Message):
        return encode_message(event)
    if isinstance(event, Presence):
        if not event.online:
            return None
        return {"k": "user", "who": who_fields(event.who), "s": secure, "m": sorted(modes)}
    if isinstance(event, UserModeChange):
        return {"k": "umode", "nick": event.who.nick, "modes": sorted(modes)}
    if isinstance(event, Wallops):
        return {"k": "wallops", "nick": event.who.nick, "text": event.text}
    if isinstance(event, Join):
        return {
            "k": "join",
            "nick": event.who.nick,
            "room": event.room,
            "c": event.ts if event.created else None,
        }
    if isinstance(event, Part):
        return {"k": "part", "nick": event.who.nick, "room": event.room, "reason": event.reason}
    if isinstance(event, Quit):
        return {"k": "quit", "nick": event.who.nick, "reason": event.reason}
    if isinstance(event, NickChange):
        return {"k": "nick", "nick": event.who.nick, "new": event.new_nick}
    if isinstance(event, Kick):
        return {
            "k": "kick",
            # The server has no ident (Who.mask).
            "nick": event.who.nick if event.who.ident else "",
            "room": event.room,
            "target": event.target.nick,
            "reason": event.reason,
        }
    if isinstance(event, ServerNotice):
        return {"k": "notice", "text": event.text}
    if isinstance(event, RoomRenamed):
        return {
            "k": "rename",
            "nick": event.who.nick,
            "old": event.old,
            "new": event.new,
            "reason": event.reason,
        }
    if isinstance(event, MetadataChange):
        if event.room is not None:
            return None
        return {
            "k": "meta",
            "nick": event.who.nick,
            "target": event.target,
            "key": event.key,
            "value": event.value,
            # Its node is filled in by the node that publishes it (see cluster.shared).
            "stamp": [event.ts, ""],
        }
    if isinstance(event, AccountChange):
        return {"k": "login", "nick": event.who.nick, "account": event.account}
    if isinstance(event, TagMessage):
        return {
            "k": "tag",
            "nick": event.source.nick,
            "id": event.id,
            "tags": [list(pair) for pair in event.tags],
            "room": event.room,
            "target": None if event.room is not None else event.target,
            "status": event.status,
            "native": _native(event.native),
        }
    if isinstance(event, Redaction):
        return {
            "k": "redact",
            "nick": event.who.nick,
            "id": event.id,
            "ts": event.ts,
            "msgid": event.msgid,
            "sender": who_fields(event.sender),
            "reason": event.reason,
            "room": event.room,
            "target": None if event.room is not None else event.target,
            "native": _native(event.native),
        }
    if isinstance(event, Invite):
        return {"k": "invite", "nick": event.who.nick, "room": event.room, "target": event.target}
    if isinstance(event, Away):
        return {"k": "away", "nick": event.who.nick, "message": event.message}
    return None


def kind_of(op: Op) -> str:
    return op[0] if isinstance(op, list) else op["k"]


def _native(native: Any) -> list[Any] | None:
    if native is None:
        return None
    wire = native_to_wire(native)
    return None if wire is None else [wire[0], wire[1]]


def pack(ops: list[Item], *, rendered: bool = True) -> bytes:
    """The ops of one stream entry, in order.  Messages of one user to a room in a row (no
    status prefix) go as one run (``encode_run``, with what they were rendered to); any
    other Message is packed as its op
    (``encode_message``), made as it is written: a turn's messages wait for the entry as
    themselves, not as arrays that live until it is sent.  Without ``rendered``, no runs:
    each message as its op, what nodes read before runs existed."""
    if not rendered:
        return _ENTRY_PACKER.pack(ops)
    if len(ops) == 1:
        # A turn's only message (a quiet server's every message): its op without the
        # passes that find runs, which cost as much again as the op itself.
        item = ops[0]
        if type(item) is Message and item.room is not None and item.status is None:
            return _ENTRY_PACKER.pack([_encode_one(item)])
        return _ENTRY_PACKER.pack(ops)
    out: list[Any] = []
    if all(type(item) is Message for item in ops):
        # A node's share of a turn's messages: nearly every entry.
        _add_runs(cast("list[Message]", ops), out)
    else:
        for messages, items in groupby(ops, _is_message):
            if messages:
                _add_runs(cast("list[Message]", list(items)), out)
            else:
                out.extend(items)
    return _ENTRY_PACKER.pack(out)


def _is_message(item: Item) -> bool:
    return type(item) is Message


def _add_runs(msgs: list[Message], out: list[Any]) -> None:
    """Messages in a row, grouped into runs in one pass of C."""
    for (room, status, _nick), group in groupby(msgs, _RUN_KEY):
        if room is None or status is not None:
            out.extend(group)
        else:
            out.append(encode_run(list(group)))


def encode_run(run: list[Message]) -> list[Any]:
    """The op of messages one user said to one room in a row (see RUN_FIELDS).

    Their fields go in columns, packed apart (``RUN_SAID``): the receiving node unpacks
    them only if it makes the messages.  A column whose value is the same for all of them
    in the usual way (all of one kind, none with tags, none with a native form) goes as
    that one value (see ``run_said``).  With them go the bytes this node rendered of them
    for its own members, per key a protocol declared shared (``share_rendering``), joined:
    each key whose bytes every message of the run has.  Where a message's protocol form
    (``native``) cannot cross to another node, none go: the other node's rendering of it
    may differ.
    """
    first = run[0]
    count = len(run)
    if count == 1:
        # A turn's only message of its sender in a room (many small rooms): the same op,
        # made without a pass per column.
        return _encode_one(first)
    natives: list[Any] = [msg.native for msg in run]
    native_column: list[Any] | None = None
    crossing = True
    if natives.count(None) != count:
        native_column = [None if native is None else _native(native) for native in natives]
        crossing = all(
            wire is not None for msg, wire in zip(run, native_column, strict=True) if msg.native
        )
    kinds: list[str] = [msg.kind for msg in run]
    kind_column: list[str] | str = first.kind if kinds.count(first.kind) == count else kinds
    tags = [msg.tags for msg in run]
    tag_column = None if tags.count(()) == count else tags
    said = _PACKER.pack(
        [
            [msg.id for msg in run],
            [msg.ts for msg in run],
            [msg.text for msg in run],
            kind_column,
            tag_column,
            native_column,
        ]
    )
    blocks: list[list[Any]] = []
    if crossing:
        for key in shared_renderings(first.rendered):
            parts = [msg.rendered.get(key) for msg in run]
            if None not in parts:
                blocks.append([key, b"".join(parts)])  # type: ignore[arg-type]
    active = None
    if kind_column != "notice":
        if type(kind_column) is str:
            active = run[-1].ts
        else:
            for msg in reversed(run):
                if msg.kind != "notice":
                    active = msg.ts
                    break
    return ["run", first.source.nick, first.room, count, run[-1].ts, active, said, blocks]


def _encode_one(msg: Message) -> list[Any]:
    """``encode_run`` of one message."""
    native = msg.native
    wire = None if native is None else _native(native)
    said = _PACKER.pack(
        [
            [msg.id],
            [msg.ts],
            [msg.text],
            msg.kind,
            [msg.tags] if msg.tags else None,
            None if native is None else [wire],
        ]
    )
    # A protocol form that cannot cross renders differently on the other node: no bytes go.
    blocks = shared_blocks(msg.rendered) if native is None or wire is not None else []
    ts = msg.ts
    return [
        "run",
        msg.source.nick,
        msg.room,
        1,
        ts,
        None if msg.kind == "notice" else ts,
        said,
        blocks,
    ]


_RUN_KEY = attrgetter("room", "status", "source.nick")


def run_said(said: bytes, count: int) -> list[Said]:
    """The fields of a run's messages (its ``RUN_SAID``), as ``ChatService.relay`` takes
    them; raises BadOp when they are not ``count`` well-formed messages.  Its columns are
    ids, times, texts, kinds, tags and native forms, one value per message; kinds may be
    one kind (every message's), tags and native forms None (no message has any)."""
    columns = _unpackb(said)
    if not (type(columns) is list and len(columns) == 6):
        raise BadOp("run: its fields are not columns of its messages")
    if type(columns[3]) is str:
        columns[3] = [columns[3]] * count
    if columns[4] is None:
        columns[4] = [[]] * count
    if columns[5] is None:
        columns[5] = [None] * count
    if not all(type(column) is list and len(column) == count for column in columns):
        raise BadOp("run: its fields are not columns of its messages")
    out: list[Said] = []
    for msgid, ts, text, kind, tags, native in zip(*columns, strict=True):
        # Checked as a message alone is (its sender and room were checked with the run).
        _check_msg(["msg", "", msgid, ts, text, kind, "", None, None, tags, native])
        out.append(
            (
                text,
                kind,
                tuple([(name, value) for name, value in tags]) if tags else (),
                msgid,
                float(ts),
                None if native is None else native_of(native),
            )
        )
    return out


def _encode_default(obj: Any) -> Any:
    if type(obj) is Message:
        return encode_message(obj)
    raise TypeError(f"cannot pack {type(obj).__name__}")


# Packers made once, used on the reactor thread only: making one per call cost a quarter of
# a µs, as much as packing a small run's fields.  A Packer that raises starts empty again.
_PACKER = msgpack.Packer()
_ENTRY_PACKER = msgpack.Packer(default=_encode_default)


def unpack(raw: bytes) -> list[Any]:
    """The ops in a stream entry, each still to be ``check``ed; raises BadOp when the entry
    is no array (a bad op in a good array spoils only itself)."""
    ops = _unpackb(raw)
    if not isinstance(ops, list):
        raise BadOp("not an array of ops")
    return ops


def dumps(op: Op) -> bytes:
    """One op alone."""
    return msgpack.packb(op)


def decode(raw: bytes) -> Op:
    """One op alone (``dumps``), its fields checked; raises BadOp."""
    return check(_unpackb(raw))


def _unpackb(raw: bytes) -> Any:
    try:
        return msgpack.unpackb(raw)
    except (ValueError, TypeError, msgpack.UnpackException) as err:
        raise BadOp(f"not MessagePack: {err}") from None


def check(op: Any) -> Op:
    """``op`` if all its fields are well-formed; raises BadOp."""
    if isinstance(op, list):
        if op and op[0] == "run":
            return _check_run(op)
        return _check_msg(op)
    if not isinstance(op, dict):
        raise BadOp("not an object")
    kind = op.get("k")
    if not isinstance(kind, str) or kind not in SCHEMA:
        raise BadOp(f"unknown kind {kind!r}")
    if kind in ("msg", "run"):
        raise BadOp(f"{kind}: an array, not an object")
    schema = SCHEMA[kind]
    _check(op, schema, kind)
    if kind == "user":
        who_from(op["who"])
        _check_names(op["m"], "user: modes")
    elif kind == "umode":
        _check_names(op["modes"], "umode: modes")
    elif kind in ("tag", "redact"):
        if (op["room"] is None) == (op["target"] is None):
            raise BadOp(f"{kind}: needs a room or a target")
        if kind == "tag":
            _check_pairs(op["tags"], "tag: tags")
        else:
            who_from(op["sender"])
        _check_native(op["native"], kind)
    elif kind == "room":
        _check_room(op, "room")
    elif kind == "meta":
        _check_stamp(op["stamp"], "meta")
    elif kind == "state":
        for entry in op["users"]:
            if not isinstance(entry, dict):
                raise BadOp("state: users must be objects")
            _check(
                entry,
                {"who": (dict,), "s": (bool,), "m": (list,), "rooms": (list,), "meta": (dict,)},
                "state user",
            )
            who_from(entry["who"])
            _check_names(entry["m"], "state: modes")
            _check_names(entry["rooms"], "state: rooms")
            if not all(isinstance(v, str) for v in entry["meta"].values()):
                raise BadOp("state: metadata values must be strings")
        for entry in op["rooms"]:
            _check_room(entry, "state room")
    return op


def _check_run(op: list[Any]) -> list[Any]:
    if len(op) != len(RUN_FIELDS) + 1:
        raise BadOp("run: wrong length")
    _, nick, room, count, last, active, said, blocks = op
    if not (
        type(nick) is str
        and type(room) is str
        and type(count) is int
        and count > 0
        and (type(last) is float or type(last) is int)
        and (active is None or type(active) is float or type(active) is int)
        and type(said) is bytes
        and type(blocks) is list
    ):
        raise BadOp("run: a field has the wrong type")
    for block in blocks:
        if not (
            type(block) is list
            and len(block) == 2
            and type(block[0]) is list
            and block[0]
            and type(block[1]) is bytes
            and all(type(part) is str or type(part) is int for part in block[0])
        ):
            raise BadOp("run: blocks must be [key, bytes]")
    return op


def _check_msg(op: list[Any]) -> list[Any]:
    if len(op) != len(MSG_FIELDS) + 1 or op[0] != "msg":
        raise BadOp("an array that is not a message")
    _, nick, msgid, ts, text, _kind, room, target, status, tags, native = op
    # Once per message on every node: the common shape is tested in one expression, and
    # only a message that fails it is walked field by field to say which field is wrong.
    if not (
        type(nick) is str
        and type(msgid) is str
        and type(text) is str
        and (type(ts) is float or type(ts) is int)
        and (room is None or type(room) is str)
        and (target is None or type(target) is str)
        and (status is None or type(status) is str)
        and type(tags) is list
        and (native is None or type(native) is list)
    ):
        for value, (name, types) in zip(op[1:], _MSG_CHECKS, strict=True):
            if not isinstance(value, types) or value is True or value is False:
                raise BadOp(f"msg: {name} has the wrong type")
    if op[MSG_KIND] not in _KINDS:
        raise BadOp(f"msg: unknown kind {op[MSG_KIND]!r}")
    if (op[MSG_ROOM] is None) == (op[MSG_TARGET] is None):
        raise BadOp("msg: needs a room or a target")
    if tags:
        _check_pairs(tags, "msg: tags")
    if native is not None:
        _check_native(native, "msg")
    return op


def _check(fields: Any, schema: dict[str, tuple[type, ...]], what: str) -> None:
    if not isinstance(fields, dict):
        raise BadOp(f"{what}: not an object")
    for name, types in schema.items():
        if name not in fields:
            raise BadOp(f"{what}: {name} missing")
        value = fields[name]
        # true is not a number here, nor a number a flag.
        if isinstance(value, bool) and bool not in types:
            raise BadOp(f"{what}: {name} has the wrong type")
        if not isinstance(value, types):
            raise BadOp(f"{what}: {name} has the wrong type")
