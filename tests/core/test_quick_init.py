"""``quick_init``: the faster constructor of the hot event records does what the dataclass
one does (parameters, defaults, factories, ``__post_init__``) and keeps them immutable."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatserver.core.events import Message, MessageBatch, Who, quick_init
from chatserver.core.names import casefold


def _plain(cls: type) -> type:
    """The same record with the constructor dataclasses generates."""
    specs = []
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            spec = field(default=f.default)
        elif f.default_factory is not dataclasses.MISSING:
            spec = field(default_factory=f.default_factory)
        else:
            spec = field()
        specs.append((f.name, f.type, spec))
    return dataclasses.make_dataclass(cls.__name__, specs, frozen=True, slots=True, kw_only=True)


@quick_init
@dataclass(frozen=True, slots=True)
class Snapshot:
    name: str
    size: int = 3
    parts: list[str] = field(default_factory=list)
    key: str = field(init=False, repr=False, compare=False)
    extra: Any = field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", casefold(self.name))


texts = st.text(max_size=20)
optional = st.none() | texts


@given(
    ts=st.floats(allow_nan=False),
    id=texts,
    text=texts,
    kind=st.sampled_from(["privmsg", "notice", "action"]),
    room=optional,
    target=optional,
    tags=st.lists(st.tuples(texts, texts), max_size=3).map(tuple),
    status=st.sampled_from([None, "op", "voice"]),
)
def test_message_fields_match_the_dataclass_constructor(**values: Any) -> None:
    who = Who("Nick", "u", "h")
    fast = Message(source=who, **values)
    reference = _plain(Message)(source=who, **values)
    for f in dataclasses.fields(Message):
        assert getattr(fast, f.name) == getattr(reference, f.name), f.name
    assert fast.kind == values["kind"] and fast.target_account is None and fast.native is None


def test_defaults_and_a_fresh_cache_per_record() -> None:
    who = Who("Nick", "u", "h")
    a = Message(ts=1.0, id="a", source=who, text="hi")
    b = Message(ts=1.0, id="a", source=who, text="hi")
    assert (a.kind, a.room, a.target, a.tags, a.status, a.origin) == (
        "privmsg",
        None,
        None,
        (),
        None,
        None,
    )
    assert a == b and hash(a) == hash(b)
    a.rendered["x"] = b"1"
    assert b.rendered == {}
    assert MessageBatch(messages=(a,)).rendered is not MessageBatch(messages=(a,)).rendered
    assert dataclasses.replace(a, room="r").room == "r"


def test_records_stay_immutable_and_refuse_bad_arguments() -> None:
    msg = Message(ts=1.0, id="a", source=Who("n", "u", "h"), text="hi")
    with pytest.raises(dataclasses.FrozenInstanceError):
        msg.text = "changed"  # type: ignore[misc]
    with pytest.raises(TypeError):
        Message(ts=1.0, id="a", text="hi")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Message(1.0, "a")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Message(ts=1.0, id="a", source=Who("n", "u", "h"), text="hi", colour="red")  # type: ignore[call-arg]


def test_positional_fields_defaults_and_post_init() -> None:
    snap = Snapshot("ABC")
    assert (snap.name, snap.size, snap.parts, snap.key, snap.extra) == ("ABC", 3, [], "abc", None)
    assert Snapshot("x").parts is not Snapshot("x").parts
    assert Snapshot("x", 5, ["p"], extra=1) == Snapshot(name="x", size=5, parts=["p"], extra=1)
    with pytest.raises(TypeError):
        Snapshot("x", 5, ["p"], 1)  # type: ignore[call-arg]
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.size = 4  # type: ignore[misc]
