"""What one node tells the others: core events of its users as ops in stream entries.

An op is a map with ``k`` (its kind) and the fields of that kind; a user is written as a
compact Who (``who_fields``).  A message, the op sent most, is an array instead
(``MSG_FIELDS`` after ``"msg"``), checked in one expression: a map's keys and a field by
field check cost a node about as much again as the rest of reading a message.  A stream
entry holds the ops of one reactor turn as one MessagePack array (``pack``, ``unpack``):
one call to encode and one to decode per turn, and MessagePack takes about a quarter of
the time JSON takes for the same ops.  ``check`` checks every field's type, so a malformed
op (another version, a hand-written XADD) is refused whole with ``BadOp`` rather than
half-applied.
"""

from __future__ import annotations

from typing import Any

import msgpack

from chatserver.core.events import (
    Away,
    Event,
    Join,
    Kick,
    Message,
    NickChange,
    Part,
    Presence,
    Quit,
    Topic,
    Who,
)


class BadOp(ValueError):
    """An entry that is not a well-formed op."""


# An op: an object, or the array of a message.
Op = dict[str, Any] | list[Any]


_STR = (str,)
_OPT_STR = (str, type(None))
_NUM = (int, float)

# kind -> {field: accepted types}; every field is required.
SCHEMA: dict[str, dict[str, tuple[type, ...]]] = {
    # A user came online on the node (``s``: its connection is secure).
    "user": {"who": (dict,), "s": (bool,)},
    "nick": {"nick": _STR, "new": _STR},
    "quit": {"nick": _STR, "reason": _STR},
    "join": {"nick": _STR, "room": _STR},
    "part": {"nick": _STR, "room": _STR, "reason": _STR},
    "kick": {"nick": _STR, "room": _STR, "target": _STR, "reason": _STR},
    "topic": {"nick": _STR, "room": _STR, "text": _STR},
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
    },
    # Everything the node holds: each user (as "user" gives it) with its rooms.
    "state": {"users": (list,)},
    # Ask every node for its "state" (a node that starts, or missed entries).
    "sync": {},
    # The node stops: its users are gone.
    "bye": {},
    # Disconnect a user of the node that owns it (an operator's KILL elsewhere).
    "kill": {"nick": _STR, "reason": _STR},
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
MSG_NICK, MSG_ID, MSG_TS, MSG_TEXT, MSG_KIND, MSG_ROOM, MSG_TARGET, MSG_STATUS, MSG_TAGS = range(
    1, 10
)


def who_fields(who: Who) -> dict[str, Any]:
    return {
        "n": who.nick,
        "i": who.ident,
        "h": who.host,
        "a": who.account,
        "r": who.realname,
        "w": who.away,
    }


def who_from(fields: dict[str, Any]) -> Who:
    _check(fields, _WHO, "who")
    return Who(
        nick=fields["n"],
        ident=fields["i"],
        host=fields["h"],
        account=fields["a"],
        realname=fields["r"],
        away=fields["w"],
    )


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
    ]


def encode(event: Event, secure: bool = False) -> Op | None:
    """The op for a core event of a local user, or None for events not shared."""
    if isinstance(event, Message):
        return encode_message(event)
    if isinstance(event, Presence):
        return {"k": "user", "who": who_fields(event.who), "s": secure} if event.online else None
    if isinstance(event, Join):
        return {"k": "join", "nick": event.who.nick, "room": event.room}
    if isinstance(event, Part):
        return {"k": "part", "nick": event.who.nick, "room": event.room, "reason": event.reason}
    if isinstance(event, Quit):
        return {"k": "quit", "nick": event.who.nick, "reason": event.reason}
    if isinstance(event, NickChange):
        return {"k": "nick", "nick": event.who.nick, "new": event.new_nick}
    if isinstance(event, Kick):
        return {
            "k": "kick",
            "nick": event.who.nick,
            "room": event.room,
            "target": event.target.nick,
            "reason": event.reason,
        }
    if isinstance(event, Topic):
        return {"k": "topic", "nick": event.who.nick, "room": event.room, "text": event.text}
    if isinstance(event, Away):
        return {"k": "away", "nick": event.who.nick, "message": event.message}
    return None


def kind_of(op: Op) -> str:
    return op[0] if isinstance(op, list) else op["k"]


def pack(ops: list[Op]) -> bytes:
    """The ops of one stream entry, in order."""
    return msgpack.packb(ops)


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
        return _check_msg(op)
    if not isinstance(op, dict):
        raise BadOp("not an object")
    kind = op.get("k")
    if not isinstance(kind, str) or kind not in SCHEMA:
        raise BadOp(f"unknown kind {kind!r}")
    if kind == "msg":
        raise BadOp("msg: an array, not an object")
    schema = SCHEMA[kind]
    _check(op, schema, kind)
    if kind == "user":
        who_from(op["who"])
    elif kind == "state":
        for entry in op["users"]:
            if not isinstance(entry, dict):
                raise BadOp("state: users must be objects")
            _check(entry, {"who": (dict,), "s": (bool,), "rooms": (list,)}, "state user")
            who_from(entry["who"])
            if not all(isinstance(room, str) for room in entry["rooms"]):
                raise BadOp("state: rooms must be names")
    return op


def _check_msg(op: list[Any]) -> list[Any]:
    if len(op) != len(MSG_FIELDS) + 1 or op[0] != "msg":
        raise BadOp("an array that is not a message")
    _, nick, msgid, ts, text, _kind, room, target, status, tags = op
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
    ):
        for value, (name, types) in zip(op[1:], _MSG_CHECKS, strict=True):
            if not isinstance(value, types) or value is True or value is False:
                raise BadOp(f"msg: {name} has the wrong type")
    if op[MSG_KIND] not in _KINDS:
        raise BadOp(f"msg: unknown kind {op[MSG_KIND]!r}")
    if (op[MSG_ROOM] is None) == (op[MSG_TARGET] is None):
        raise BadOp("msg: needs a room or a target")
    for pair in tags:
        if not (
            isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, str) for x in pair)
        ):
            raise BadOp("msg: tags must be [name, value] pairs")
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
