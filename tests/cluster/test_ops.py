"""The entries nodes exchange: every core event shared encodes to an entry that decodes
whole, and anything else is refused whole."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatserver.cluster import ops
from chatserver.core.events import (
    Away,
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

texts = st.text(max_size=40)
nicks = st.from_regex(r"[a-z][a-z0-9_]{0,15}", fullmatch=True)
whos = st.builds(
    Who,
    nick=nicks,
    ident=nicks,
    host=texts,
    account=st.none() | nicks,
    realname=texts,
    away=st.none() | texts,
)
rooms = st.from_regex(r"[a-z0-9._-]{1,20}", fullmatch=True)
times = st.floats(min_value=0, max_value=4e9, allow_nan=False)


@st.composite
def messages(draw: st.DrawFn) -> Message:
    to_room = draw(st.booleans())
    return Message(
        ts=draw(times),
        id=draw(nicks),
        source=draw(whos),
        text=draw(st.text(min_size=1, max_size=80)),
        kind=draw(st.sampled_from(["privmsg", "notice", "action"])),
        room=draw(rooms) if to_room else None,
        target=None if to_room else draw(nicks),
        tags=tuple(draw(st.lists(st.tuples(nicks, texts), max_size=3))),
        status=draw(st.none() | st.sampled_from(["op", "voice"])) if to_room else None,
    )


events = st.one_of(
    messages(),
    st.builds(Presence, ts=times, who=whos, online=st.just(True)),
    st.builds(Join, ts=times, room=rooms, who=whos),
    st.builds(Part, ts=times, room=rooms, who=whos, reason=texts),
    st.builds(Quit, ts=times, who=whos, reason=texts),
    st.builds(NickChange, ts=times, who=whos, new_nick=nicks),
    st.builds(Kick, ts=times, room=rooms, who=whos, target=whos, reason=texts),
    st.builds(Topic, ts=times, room=rooms, who=whos, text=texts),
    st.builds(Away, ts=times, who=whos, message=st.none() | texts),
)


@given(events, st.booleans())
def test_every_shared_event_decodes_as_it_was_encoded(event: object, secure: bool) -> None:
    op = ops.encode(event, secure)  # type: ignore[arg-type]
    assert op is not None
    decoded = ops.decode(ops.dumps(op))
    assert decoded == op
    if isinstance(event, Presence):
        assert isinstance(decoded, dict)
        assert ops.who_from(decoded["who"]) == event.who
    if isinstance(event, Message):
        assert isinstance(decoded, list)
        assert decoded[ops.MSG_ID] == event.id and decoded[ops.MSG_TS] == event.ts
        assert decoded[ops.MSG_TEXT] == event.text and decoded[ops.MSG_NICK] == event.source.nick
        assert tuple(tuple(pair) for pair in decoded[ops.MSG_TAGS]) == event.tags


@given(st.lists(events, max_size=20))
def test_an_entry_unpacks_to_its_ops_in_order(batch: list[object]) -> None:
    encoded = [ops.encode(event) for event in batch]  # type: ignore[arg-type]
    unpacked = [ops.check(op) for op in ops.unpack(ops.pack(encoded))]  # type: ignore[arg-type]
    assert unpacked == encoded


@given(st.text(max_size=200) | st.binary(max_size=200))
def test_anything_else_is_refused_whole(raw: str | bytes) -> None:
    try:
        op = ops.decode(raw)  # type: ignore[arg-type]
    except ops.BadOp:
        return
    assert ops.kind_of(op) in ops.SCHEMA


@given(st.text(max_size=200) | st.binary(max_size=200))
def test_an_entry_is_an_array_or_refused(raw: str | bytes) -> None:
    try:
        unpacked = ops.unpack(raw)  # type: ignore[arg-type]
    except ops.BadOp:
        return
    assert isinstance(unpacked, list)


def _passes_shallow_check(value: object, types: tuple[type, ...]) -> bool:
    """Whether ``value`` would pass a field's type alone (lists and objects are checked
    deeper: ``[1]`` is no tag list, ``{"x": 1}`` no user)."""
    if isinstance(value, list | dict):
        return False
    if isinstance(value, bool):
        return bool in types
    return isinstance(value, types)


@given(events, st.data())
def test_an_entry_missing_a_field_or_of_a_wrong_type_is_refused(
    event: object, data: st.DataObject
) -> None:
    op = ops.encode(event)  # type: ignore[arg-type]
    assert op is not None
    broken: Any
    if isinstance(op, list):
        index = data.draw(st.integers(1, len(ops.MSG_FIELDS)))
        name = ops.MSG_FIELDS[index - 1]
        broken = list(op)
        types = ops.SCHEMA["msg"][name]
    else:
        name = data.draw(st.sampled_from([field for field in op if field != "k"]))
        types = ops.SCHEMA[op["k"]][name]
        broken = dict(op)
    if data.draw(st.booleans()):
        del broken[index if isinstance(broken, list) else name]
    else:
        wrong = [
            v
            for v in (True, 12, 1.5, "x", None, [1], {"x": 1})
            if not _passes_shallow_check(v, types)
        ]
        broken[index if isinstance(broken, list) else name] = data.draw(st.sampled_from(wrong))
    with pytest.raises(ops.BadOp):
        ops.decode(ops.dumps(broken))
    # In an entry, only the broken op is refused.
    entry = ops.unpack(ops.pack([broken, op]))
    with pytest.raises(ops.BadOp):
        ops.check(entry[0])
    assert ops.check(entry[1]) == op


def test_a_message_needs_exactly_one_of_room_and_target() -> None:
    who = Who(nick="a", ident="a", host="h")
    op = ops.encode(Message(ts=1.0, id="x", source=who, text="hi", room="dev"))
    assert isinstance(op, list)
    both = list(op)
    both[ops.MSG_TARGET] = "b"
    neither = list(op)
    neither[ops.MSG_ROOM] = None
    with pytest.raises(ops.BadOp, match="room or a target"):
        ops.decode(ops.dumps(both))
    with pytest.raises(ops.BadOp, match="room or a target"):
        ops.decode(ops.dumps(neither))


def test_a_message_as_an_object_is_refused() -> None:
    fields: dict[str, Any] = dict(
        zip(ops.MSG_FIELDS, ["a", "x", 1.0, "hi", "privmsg", "dev", None, None, []], strict=True)
    )
    with pytest.raises(ops.BadOp, match="an array"):
        ops.decode(ops.dumps({"k": "msg", **fields}))
