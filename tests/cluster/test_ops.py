"""The entries nodes exchange: every core event shared encodes to an entry that decodes
whole, and anything else is refused whole."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatserver.cluster import ops
from chatserver.core.events import (
    AccountChange,
    Away,
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
    TagMessage,
    UserModeChange,
    Wallops,
    Who,
)
from chatserver.core.records import BanRecord
from chatserver.core.replica import RoomState
from protocols.xmpp.muc.chat import RoomStanza
from protocols.xmpp.relay import Relay

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


xml_texts = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="<&"), max_size=30
)
relays = st.builds(
    Relay,
    data=xml_texts.map(lambda t: f"<message to='b@x'><body>{t}</body></message>".encode()),
    to=texts,
    sender=texts,
    carbons=st.booleans(),
    per_resource=st.booleans(),
)
room_stanzas = st.builds(
    RoomStanza,
    data=xml_texts.map(lambda t: f"<message type='groupchat'><body>{t}</body></message>".encode()),
    client_id=st.none() | nicks,
)


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
        native=draw(st.none() | (room_stanzas if to_room else relays)),
    )


events = st.one_of(
    messages(),
    st.builds(Presence, ts=times, who=whos, online=st.just(True)),
    st.builds(Join, ts=times, room=rooms, who=whos, created=st.booleans()),
    st.builds(Part, ts=times, room=rooms, who=whos, reason=texts),
    st.builds(Quit, ts=times, who=whos, reason=texts),
    st.builds(NickChange, ts=times, who=whos, new_nick=nicks),
    st.builds(Kick, ts=times, room=rooms, who=whos, target=whos, reason=texts),
    st.builds(Invite, ts=times, room=rooms, who=whos, target=nicks),
    st.builds(AccountChange, ts=times, who=whos, account=st.none() | nicks),
    st.builds(RoomRenamed, ts=times, old=rooms, new=rooms, who=whos, reason=texts),
    st.builds(
        MetadataChange,
        ts=times,
        who=whos,
        target=nicks,
        key=nicks,
        value=st.none() | texts,
    ),
    st.one_of(
        st.builds(
            TagMessage,
            ts=times,
            id=nicks,
            source=whos,
            tags=st.lists(st.tuples(nicks, texts), max_size=3).map(tuple),
            room=rooms,
            native=st.none() | room_stanzas | st.just("xmpp:shown"),
        ),
        st.builds(
            TagMessage,
            ts=times,
            id=nicks,
            source=whos,
            tags=st.lists(st.tuples(nicks, texts), max_size=3).map(tuple),
            target=nicks,
            native=st.none() | relays,
        ),
    ),
    st.one_of(
        st.builds(
            Redaction,
            ts=times,
            id=nicks,
            who=whos,
            msgid=nicks,
            sender=whos,
            reason=texts,
            room=rooms,
            native=st.none() | room_stanzas,
        ),
        st.builds(
            Redaction,
            ts=times,
            id=nicks,
            who=whos,
            msgid=nicks,
            sender=whos,
            reason=texts,
            target=nicks,
            native=st.none() | relays,
        ),
    ),
    st.builds(Away, ts=times, who=whos, message=st.none() | texts),
    st.builds(UserModeChange, ts=times, who=whos, changes=st.just(())),
    st.builds(Wallops, ts=times, who=whos, text=texts),
)
user_modes = st.frozensets(st.sampled_from(["invisible", "wallops", "bot", "oper"]))


@given(events, st.booleans(), user_modes)
def test_every_shared_event_decodes_as_it_was_encoded(
    event: object, secure: bool, modes: frozenset[str]
) -> None:
    op = ops.encode(event, secure, modes)  # type: ignore[arg-type]
    assert op is not None
    decoded = ops.decode(ops.dumps(op))
    assert decoded == op
    if isinstance(event, Presence | UserModeChange):
        assert isinstance(decoded, dict)
        assert set(decoded["m" if isinstance(event, Presence) else "modes"]) == modes
    if isinstance(event, Presence):
        assert isinstance(decoded, dict)
        assert ops.who_from(decoded["who"]) == event.who
    if isinstance(event, Message):
        assert isinstance(decoded, list)
        assert decoded[ops.MSG_ID] == event.id and decoded[ops.MSG_TS] == event.ts
        assert decoded[ops.MSG_TEXT] == event.text and decoded[ops.MSG_NICK] == event.source.nick
        assert tuple(tuple(pair) for pair in decoded[ops.MSG_TAGS]) == event.tags
        # The sender's stanza crosses whole.
        assert ops.native_of(decoded[ops.MSG_NATIVE]) == event.native
    if isinstance(event, TagMessage | Redaction):
        assert isinstance(decoded, dict)
        assert ops.native_from(decoded) == event.native


@given(st.lists(events, max_size=20))
def test_an_entry_unpacks_to_its_ops_in_order(batch: list[object]) -> None:
    encoded = [ops.encode(event) for event in batch]  # type: ignore[arg-type]
    unpacked = [ops.check(op) for op in ops.unpack(ops.pack(encoded))]  # type: ignore[arg-type]
    assert unpacked == encoded


def as_messages(op: Any) -> list[Any]:
    """A run's messages as the ops they would be alone (any other op as it is)."""
    if not (isinstance(op, list) and op[0] == "run"):
        return [op]
    count = op[ops.RUN_COUNT]
    ids, times, texts, kinds, tags, natives = msgpack.unpackb(op[ops.RUN_SAID])
    # A column the same for every message goes as one value (see ops.run_said).
    kinds = [kinds] * count if isinstance(kinds, str) else kinds
    tags = [[]] * count if tags is None else tags
    natives = [None] * count if natives is None else natives
    nick, room = op[ops.RUN_NICK], op[ops.RUN_ROOM]
    return [
        ["msg", nick, i, t, x, k, room, None, None, g, n]
        for i, t, x, k, g, n in zip(ids, times, texts, kinds, tags, natives, strict=True)
    ]


@given(st.lists(events, max_size=20))
def test_messages_packed_as_themselves_unpack_to_their_ops(batch: list[object]) -> None:
    # A node keeps a turn's messages as Messages until the entry is packed: one user's room
    # messages in a row go as a run, which holds each of them whole.
    items = [event if type(event) is Message else ops.encode(event) for event in batch]  # type: ignore[arg-type]
    encoded = [ops.encode(event) for event in batch]  # type: ignore[arg-type]
    unpacked = [ops.check(op) for op in ops.unpack(ops.pack(items))]  # type: ignore[arg-type]
    assert [msg for op in unpacked for msg in as_messages(op)] == encoded
    for op in unpacked:
        if isinstance(op, list) and op[0] == "run":
            said = ops.run_said(op[ops.RUN_SAID], op[ops.RUN_COUNT])
            assert len(said) == op[ops.RUN_COUNT] and op[ops.RUN_LAST] == said[-1][4]
            # What the receiving node makes of its columns is each message's fields.
            assert [fields[:5] for fields in said] == [
                (
                    m[ops.MSG_TEXT],
                    m[ops.MSG_KIND],
                    tuple(tuple(pair) for pair in m[ops.MSG_TAGS]),
                    m[ops.MSG_ID],
                    float(m[ops.MSG_TS]),
                )
                for m in as_messages(op)
            ]
            active = [ts for _, kind, _, _, ts, _ in said if kind != "notice"]
            assert op[ops.RUN_ACTIVE] == (active[-1] if active else None)
    # Without shared renderings, each message goes alone, as before runs.
    alone = [ops.check(op) for op in ops.unpack(ops.pack(items, rendered=False))]  # type: ignore[arg-type]
    assert alone == encoded


@st.composite
def runs(draw: st.DrawFn) -> list[Message]:
    """One user's messages to one room in a row: often all of one kind, without tags or
    native forms (the usual run), sometimes with any of them mixed in."""
    who, room = draw(whos), draw(rooms)
    kind = draw(st.none() | st.sampled_from(["privmsg", "notice", "action"]))
    tagged, native = draw(st.booleans()), draw(st.booleans())
    return [
        Message(
            ts=draw(times),
            id=draw(nicks),
            source=who,
            text=draw(st.text(min_size=1, max_size=40)),
            kind=kind or draw(st.sampled_from(["privmsg", "notice", "action"])),
            room=room,
            tags=tuple(draw(st.lists(st.tuples(nicks, texts), max_size=2))) if tagged else (),
            native=draw(st.none() | room_stanzas) if native else None,
        )
        for _ in range(draw(st.integers(min_value=1, max_value=12)))
    ]


@given(runs())
def test_a_run_gives_the_receiving_node_each_of_its_messages(run: list[Message]) -> None:
    (op,) = ops.unpack(ops.pack(run))  # type: ignore[arg-type]
    op = ops.check(op)
    assert op[0] == "run" and op[ops.RUN_COUNT] == len(run)
    said = ops.run_said(op[ops.RUN_SAID], len(run))
    assert said == [(m.text, m.kind, m.tags, m.id, m.ts, m.native) for m in run]
    active = [m.ts for m in run if m.kind != "notice"]
    assert op[ops.RUN_ACTIVE] == (active[-1] if active else None)
    assert op[ops.RUN_LAST] == run[-1].ts


def test_a_run_carries_the_renderings_every_message_of_it_has() -> None:
    import protocols.irc.render  # noqa: F401  (declares IRC's renderings shared)

    who = Who(nick="a", ident="a", host="h")
    run = [Message(ts=float(i), id=f"m{i}", source=who, text=f"t{i}", room="dev") for i in range(3)]
    for i, msg in enumerate(run):
        msg.rendered[("irc", 0)] = b"line %d\r\n" % i
        msg.rendered[("xmpp", "x")] = b"<not shared/>"
    run[1].rendered[("irc", 2)] = b"only one has this"
    (op,) = ops.unpack(ops.pack(run))  # type: ignore[arg-type]
    assert ops.check(op)[ops.RUN_BLOCKS] == [[["irc", 0], b"line 0\r\nline 1\r\nline 2\r\n"]]
    # A message whose own form cannot cross renders differently elsewhere: nothing goes.
    odd = Message(ts=3.0, id="m3", source=who, text="t3", room="dev", native=object())
    odd.rendered[("irc", 0)] = b"line 3\r\n"
    (op,) = ops.unpack(ops.pack([*run, odd]))  # type: ignore[arg-type]
    assert op[ops.RUN_COUNT] == 4 and op[ops.RUN_BLOCKS] == []
    # A run of one message, made by its own path, carries the same.
    (op,) = ops.unpack(ops.pack(run[1:2]))  # type: ignore[arg-type]
    assert ops.check(op)[ops.RUN_BLOCKS] == [
        [["irc", 0], b"line 1\r\n"],
        [["irc", 2], b"only one has this"],
    ]
    (op,) = ops.unpack(ops.pack([odd]))  # type: ignore[arg-type]
    assert op[ops.RUN_COUNT] == 1 and op[ops.RUN_BLOCKS] == []


def test_a_malformed_run_is_refused() -> None:
    who = Who(nick="a", ident="a", host="h")
    (good,) = ops.unpack(ops.pack([Message(ts=1.0, id="m", source=who, text="t", room="dev")]))  # type: ignore[arg-type]
    assert ops.check(good) == good
    for index, value in (
        (ops.RUN_COUNT, 0),
        (ops.RUN_COUNT, "1"),
        (ops.RUN_SAID, "not bytes"),
        (ops.RUN_BLOCKS, [[["irc", 0], "not bytes"]]),
        (ops.RUN_ACTIVE, True),
    ):
        bad = list(good)
        bad[index] = value
        with pytest.raises(ops.BadOp, match="run"):
            ops.check(bad)
    with pytest.raises(ops.BadOp, match="run"):
        ops.check(good[:-1])
    # Its messages' fields are checked when they are made: as many as it says, well-formed.
    with pytest.raises(ops.BadOp, match="run"):
        ops.run_said(good[ops.RUN_SAID], 2)
    columns = msgpack.unpackb(good[ops.RUN_SAID])
    columns[3] = ["shout"]
    with pytest.raises(ops.BadOp, match="kind"):
        ops.run_said(msgpack.packb(columns), 1)
    with pytest.raises(ops.BadOp, match="array"):
        ops.check({"k": "run"})


masks = st.from_regex(r"[a-z*?]{1,8}![a-z*]{1,8}@[a-z.*]{1,12}", fullmatch=True)
room_states = st.builds(
    RoomState,
    name=rooms,
    flags=st.lists(st.sampled_from(["moderated", "invite_only", "secret"]), unique=True).map(tuple),
    key=st.none() | nicks,
    limit=st.none() | st.integers(min_value=1, max_value=10_000),
    bans=st.lists(st.builds(BanRecord, masks, masks, times), max_size=3).map(tuple),
    invites=st.lists(masks, max_size=3).map(tuple),
    excepts=st.lists(masks, max_size=3).map(tuple),
    invited=st.lists(nicks, max_size=3).map(tuple),
    topic=texts,
    topic_by=masks,
    topic_at=times,
    topic_id=nicks,
    members=st.lists(st.tuples(nicks, st.sampled_from(["", "o", "v", "ov"])), max_size=4).map(
        tuple
    ),
    registered=st.booleans(),
    owner=st.none() | nicks,
    reg_ops=st.lists(nicks, max_size=3).map(tuple),
    reg_voices=st.lists(nicks, max_size=3).map(tuple),
    retention=st.none() | st.floats(min_value=0.5, max_value=400),
    metadata=st.dictionaries(nicks, texts, max_size=3).map(lambda d: tuple(sorted(d.items()))),
)


@given(room_states, st.none() | whos, times, nicks)
def test_a_room_state_decodes_as_it_was_encoded(
    state: RoomState, by: Who | None, ts: float, node: str
) -> None:
    op = ops.room_op(state, by, (ts, node))
    decoded = ops.decode(ops.dumps(op))
    assert isinstance(decoded, dict)
    assert ops.room_from(decoded) == (state, by, (ts, node))
    # A node's whole state carries it too.
    entry = {key: value for key, value in op.items() if key != "k"}
    whole = ops.decode(ops.dumps({"k": "state", "users": [], "rooms": [entry]}))
    assert isinstance(whole, dict)
    assert ops.room_from(whole["rooms"][0]) == (state, by, (ts, node))


@given(room_states, st.data())
def test_a_room_state_with_a_broken_field_is_refused(state: RoomState, data: st.DataObject) -> None:
    op = ops.room_op(state, None, (1.0, "a"))
    fields = dict(op["state"])
    name = data.draw(st.sampled_from(sorted(fields)))
    if data.draw(st.booleans()):
        del fields[name]
    else:
        fields[name] = {"x": 1}
    with pytest.raises(ops.BadOp):
        ops.decode(ops.dumps({**op, "state": fields}))
    with pytest.raises(ops.BadOp):
        ops.decode(ops.dumps({**op, "stamp": [1.0]}))


def test_a_native_of_a_kind_not_known_here_crosses_as_nothing() -> None:
    who = Who(nick="a", ident="a", host="h")
    op = ops.encode(Message(ts=1.0, id="x", source=who, text="hi", room="dev"))
    assert op is not None
    assert isinstance(op, list)

    def with_native(native: Any) -> Any:
        changed = list(op)
        changed[ops.MSG_NATIVE] = native
        return ops.decode(ops.dumps(changed))

    assert ops.native_of(with_native(["other.kind", {"x": 1}])[ops.MSG_NATIVE]) is None
    # A known kind with fields not its own is nothing too, not an error.
    assert ops.native_of(with_native(["xmpp.relay", {"data": 1}])[ops.MSG_NATIVE]) is None
    with pytest.raises(ops.BadOp, match="native"):
        with_native(["xmpp.relay"])


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
        zip(
            ops.MSG_FIELDS,
            ["a", "x", 1.0, "hi", "privmsg", "dev", None, None, [], None],
            strict=True,
        )
    )
    with pytest.raises(ops.BadOp, match="an array"):
        ops.decode(ops.dumps({"k": "msg", **fields}))


@given(masks, texts, nicks, times, st.booleans())
def test_a_server_ban_decodes_as_it_was_encoded(
    mask: str, reason: str, by: str, at: float, lifted: bool
) -> None:
    op = {"k": "kline", "mask": mask, "reason": reason, "by": by, "at": at, "lifted": lifted}
    assert ops.decode(ops.dumps(op)) == op
    with pytest.raises(ops.BadOp):
        ops.decode(ops.dumps({**op, "lifted": "yes"}))


@given(nicks, st.none() | st.sampled_from(["Account deleted", "Password changed"]))
def test_an_account_change_decodes_as_it_was_encoded(name: str, revoked: str | None) -> None:
    op = {"k": "account", "name": name, "revoked": revoked}
    assert ops.decode(ops.dumps(op)) == op
    with pytest.raises(ops.BadOp):
        ops.decode(ops.dumps({**op, "name": None}))


def test_a_rooms_metadata_goes_with_its_state_not_alone() -> None:
    who = Who(nick="a", ident="a", host="h")
    change = MetadataChange(ts=1.0, who=who, target="dev", key="url", value="x", room="dev")
    assert ops.encode(change) is None
    state = RoomState(name="dev", metadata=(("url", "x"),))
    decoded = ops.decode(ops.dumps(ops.room_op(state, who, (1.0, "a"))))
    assert isinstance(decoded, dict)
    assert ops.room_from(decoded)[0].metadata == (("url", "x"),)
