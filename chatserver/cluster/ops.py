"""What one node tells the others: core events of its users as JSON stream entries.

An entry is a JSON object with ``k`` (its kind) and the fields of that kind; a user is
written as a compact Who (``who_fields``).  ``decode`` checks every field's type, so a
malformed entry (another version, a hand-written XADD) is refused whole with ``BadOp``
rather than half-applied.
"""

from __future__ import annotations

import json
from typing import Any

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


def encode(event: Event, secure: bool = False) -> dict[str, Any] | None:
    """The op for a core event of a local user, or None for events not shared."""
    if isinstance(event, Message):
        return {
            "k": "msg",
            "nick": event.source.nick,
            "id": event.id,
            "ts": event.ts,
            "text": event.text,
            "kind": event.kind,
            "room": event.room,
            "target": None if event.room is not None else event.target,
            "status": event.status,
            "tags": [list(pair) for pair in event.tags],
        }
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


def dumps(op: dict[str, Any]) -> str:
    return json.dumps(op, separators=(",", ":"), ensure_ascii=False)


def decode(raw: str | bytes) -> dict[str, Any]:
    """The op in a stream entry, its fields checked; raises BadOp."""
    try:
        op = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as err:
        raise BadOp(f"not JSON: {err}") from None
    if not isinstance(op, dict):
        raise BadOp("not an object")
    kind = op.get("k")
    if not isinstance(kind, str) or kind not in SCHEMA:
        raise BadOp(f"unknown kind {kind!r}")
    schema = SCHEMA[kind]
    _check(op, schema, kind)
    if kind == "user":
        who_from(op["who"])
    elif kind == "msg":
        if op["kind"] not in _KINDS:
            raise BadOp(f"msg: unknown kind {op['kind']!r}")
        if (op["room"] is None) == (op["target"] is None):
            raise BadOp("msg: needs a room or a target")
        for pair in op["tags"]:
            if not (
                isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, str) for x in pair)
            ):
                raise BadOp("msg: tags must be [name, value] pairs")
    elif kind == "state":
        for entry in op["users"]:
            if not isinstance(entry, dict):
                raise BadOp("state: users must be objects")
            _check(entry, {"who": (dict,), "s": (bool,), "rooms": (list,)}, "state user")
            who_from(entry["who"])
            if not all(isinstance(room, str) for room in entry["rooms"]):
                raise BadOp("state: rooms must be names")
    return op


def _check(fields: Any, schema: dict[str, tuple[type, ...]], what: str) -> None:
    if not isinstance(fields, dict):
        raise BadOp(f"{what}: not an object")
    for name, types in schema.items():
        if name not in fields:
            raise BadOp(f"{what}: {name} missing")
        value = fields[name]
        # JSON true is not a number here, nor a number a flag.
        if isinstance(value, bool) and bool not in types:
            raise BadOp(f"{what}: {name} has the wrong type")
        if not isinstance(value, types):
            raise BadOp(f"{what}: {name} has the wrong type")
