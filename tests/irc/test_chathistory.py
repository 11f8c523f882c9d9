"""CHATHISTORY: selector parsing (unit and property tests) and replies over StringTransport."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.defer import Deferred, fail

from chatserver.core.settings import CoreSettings
from protocols.irc.handlers.chathistory import (
    CHATHISTORY_MAX,
    QueryError,
    format_timestamp,
    parse_limit,
    parse_query,
    parse_selector,
    parse_timestamp,
)
from tests.core.fakes import FakeClient
from tests.irc.conftest import Client, IrcWorld, commands, find, one
from tests.support.memstore import MemoryStore, make_service

CAPS = ("batch", "server-time", "message-tags", "draft/chathistory")
EPOCH_2000 = 946684800.0


# -- parsing -----------------------------------------------------------------------------------


def test_timestamp_format() -> None:
    assert format_timestamp(EPOCH_2000 + 0.5) == "2000-01-01T00:00:00.500Z"
    assert parse_timestamp("2000-01-01T00:00:00.500Z") == EPOCH_2000 + 0.5
    assert parse_timestamp("2000-01-01T00:00:00Z") == EPOCH_2000
    assert parse_timestamp("2000-01-01T01:00:00+01:00") == EPOCH_2000


@given(st.integers(min_value=0, max_value=4_000_000_000_000))
def test_timestamp_round_trip_in_milliseconds(millis: int) -> None:
    assert parse_timestamp(format_timestamp(millis / 1000)) == pytest.approx(millis / 1000)


@pytest.mark.parametrize("text", ["", "yesterday", "2000-13-01T00:00:00Z", "12345", "2000-01-01"])
def test_bad_timestamps(text: str) -> None:
    with pytest.raises(ValueError):
        parse_timestamp(text)


def test_selectors() -> None:
    assert parse_selector("msgid=abc").msgid == "abc"
    assert parse_selector("timestamp=2000-01-01T00:00:00.000Z").ts == EPOCH_2000
    assert parse_selector("*", allow_star=True).kind == "*"
    for bad in ("*", "msgid=", "id=abc", "timestamp", "abc"):
        with pytest.raises(ValueError):
            parse_selector(bad)
    with pytest.raises(ValueError):
        parse_selector("msgid=abc", allow_msgid=False)


def test_limits_are_cut_to_the_maximum() -> None:
    assert parse_limit("10") == 10
    assert parse_limit("0") == CHATHISTORY_MAX
    assert parse_limit("100000") == CHATHISTORY_MAX
    for bad in ("-1", "ten", "", "\uff11\uff10"):
        with pytest.raises(ValueError):
            parse_limit(bad)


@pytest.mark.parametrize(
    ("params", "code", "context"),
    [
        ((), "NEED_MORE_PARAMS", ("*",)),
        (("FETCH", "#a", "*", "10"), "UNKNOWN_COMMAND", ("FETCH",)),
        (("LATEST", "#a", "*"), "NEED_MORE_PARAMS", ("LATEST",)),
        (("BETWEEN", "#a", "msgid=x", "10"), "NEED_MORE_PARAMS", ("BETWEEN",)),
        (("BEFORE", "#a", "*", "10"), "INVALID_PARAMS", ("BEFORE", "*")),
        (("AFTER", "#a", "msgid=x", "many"), "INVALID_PARAMS", ("AFTER", "many")),
        (("TARGETS", "msgid=a", "msgid=b", "5"), "INVALID_PARAMS", ("TARGETS", "msgid=a")),
    ],
)
def test_query_errors(params: tuple[str, ...], code: str, context: tuple[str, ...]) -> None:
    with pytest.raises(QueryError) as caught:
        parse_query(params)
    assert caught.value.code == code
    assert caught.value.context == context


def test_query_subcommand_is_case_insensitive() -> None:
    query = parse_query(("between", "#a", "msgid=x", "timestamp=2000-01-01T00:00:00Z", "5"))
    assert query.subcommand == "BETWEEN"
    assert [s.kind for s in query.selectors] == ["msgid", "timestamp"]
    assert query.limit == 5


_words = st.sampled_from(
    [
        "LATEST",
        "BEFORE",
        "AFTER",
        "AROUND",
        "BETWEEN",
        "TARGETS",
        "#room",
        "bob",
        "*",
        "10",
        "0",
        "-3",
        "msgid=abc",
        "timestamp=2020-02-02T02:02:02.002Z",
        "timestamp=bad",
        "x=y",
        "",
    ]
)


@given(st.lists(st.one_of(_words, st.text(max_size=30)), max_size=6))
def test_any_parameters_give_a_query_or_a_query_error(params: list[str]) -> None:
    try:
        query = parse_query(tuple(params))
    except QueryError as err:
        assert err.code in ("NEED_MORE_PARAMS", "UNKNOWN_COMMAND", "INVALID_PARAMS")
    else:
        assert 1 <= query.limit <= CHATHISTORY_MAX


# -- replies -----------------------------------------------------------------------------------


@pytest.fixture
def world() -> IrcWorld:
    return IrcWorld()


def _room_with_history(world: IrcWorld, count: int = 6) -> tuple[Client, list[str]]:
    """alice (with the history caps) and bob in #room; bob said ``msg 0..count-1``, one a
    second.  Returns alice and the message ids in order."""
    alice = world.client("alice", caps=CAPS)
    bob = world.client("bob")
    alice.send("JOIN #room")
    bob.send("JOIN #room")
    ids = []
    for i in range(count):
        world.clock.advance(1)
        bob.send(f"PRIVMSG #room :msg {i}")
        ids.append(alice.take()[-1].tags["msgid"])
    return alice, ids


def _texts(messages: list) -> list[str]:
    return [m.params[1] for m in messages if m.command in ("PRIVMSG", "NOTICE")]


def _batch_of(replies: list) -> tuple[str, list]:
    """The batch id and the lines inside it; checks the BATCH frame."""
    start, end = replies[0], replies[-1]
    assert start.command == "BATCH" and start.params[0].startswith("+")
    batch_id = start.params[0][1:]
    assert end.command == "BATCH" and end.params == ("-" + batch_id,)
    inside = replies[1:-1]
    assert all(m.tags.get("batch") == batch_id for m in inside)
    return batch_id, inside


def test_latest_star(world: IrcWorld) -> None:
    alice, ids = _room_with_history(world)
    replies = alice.ask("CHATHISTORY LATEST #room * 3")
    assert replies[0].params[1:] == ("chathistory", "#room")
    _, inside = _batch_of(replies)
    assert _texts(inside) == ["msg 3", "msg 4", "msg 5"]
    assert [m.tags["msgid"] for m in inside] == ids[3:]
    assert all(m.source.startswith("bob!") and "time" in m.tags for m in inside)


def test_latest_after_a_msgid_and_a_timestamp(world: IrcWorld) -> None:
    alice, ids = _room_with_history(world)
    _, inside = _batch_of(alice.ask(f"CHATHISTORY LATEST #room msgid={ids[3]} 10"))
    assert _texts(inside) == ["msg 4", "msg 5"]
    ts = one(alice.ask(f"CHATHISTORY LATEST #room msgid={ids[0]} 1"), "PRIVMSG").tags["time"]
    _, inside = _batch_of(alice.ask(f"CHATHISTORY LATEST #room timestamp={ts} 10"))
    assert _texts(inside) == []


def test_before_and_after_exclude_the_selector(world: IrcWorld) -> None:
    alice, ids = _room_with_history(world)
    _, inside = _batch_of(alice.ask(f"CHATHISTORY BEFORE #room msgid={ids[3]} 2"))
    assert _texts(inside) == ["msg 1", "msg 2"]
    _, inside = _batch_of(alice.ask(f"CHATHISTORY AFTER #room msgid={ids[3]} 10"))
    assert _texts(inside) == ["msg 4", "msg 5"]
    _, inside = _batch_of(alice.ask("CHATHISTORY AFTER #room timestamp=2000-01-01T00:00:00Z 2"))
    assert _texts(inside) == ["msg 0", "msg 1"]


def test_around_includes_the_selected_message(world: IrcWorld) -> None:
    alice, ids = _room_with_history(world)
    _, inside = _batch_of(alice.ask(f"CHATHISTORY AROUND #room msgid={ids[2]} 3"))
    texts = _texts(inside)
    assert "msg 2" in texts and len(texts) == 3
    assert texts == sorted(texts)


def test_between_forwards_and_backwards(world: IrcWorld) -> None:
    alice, ids = _room_with_history(world)
    _, inside = _batch_of(alice.ask(f"CHATHISTORY BETWEEN #room msgid={ids[0]} msgid={ids[5]} 10"))
    assert _texts(inside) == ["msg 1", "msg 2", "msg 3", "msg 4"]
    _, inside = _batch_of(alice.ask(f"CHATHISTORY BETWEEN #room msgid={ids[0]} msgid={ids[5]} 2"))
    assert _texts(inside) == ["msg 1", "msg 2"]
    # From the later selector back in time: the messages nearest it.
    _, inside = _batch_of(alice.ask(f"CHATHISTORY BETWEEN #room msgid={ids[5]} msgid={ids[0]} 2"))
    assert _texts(inside) == ["msg 3", "msg 4"]


def test_targets(world: IrcWorld) -> None:
    alice, _ids = _room_with_history(world, 2)
    bob = world.service.find_user("bob")
    assert bob is not None
    alice.send("JOIN #quiet")
    replies = alice.ask(
        "CHATHISTORY TARGETS timestamp=2100-01-01T00:00:00Z timestamp=2000-01-01T00:00:00Z 10"
    )
    assert replies[0].params[1] == "draft/chathistory-targets"
    _, inside = _batch_of(replies)
    assert [m.params for m in inside] == [
        ("TARGETS", "#room", format_timestamp(world.clock.seconds()))
    ]


def test_actions_and_notices_come_back_as_sent(world: IrcWorld) -> None:
    alice = world.client("alice", caps=CAPS)
    alice.send("JOIN #room", "PRIVMSG #room :\x01ACTION waves\x01", "NOTICE #room :note")
    _, inside = _batch_of(alice.ask("CHATHISTORY LATEST #room * 10"))
    assert [(m.command, m.params[1]) for m in inside] == [
        ("PRIVMSG", "\x01ACTION waves\x01"),
        ("NOTICE", "note"),
    ]


def test_without_batch_capability_the_lines_come_alone(world: IrcWorld) -> None:
    _room_with_history(world, 2)
    plain = world.client("plain")
    plain.send("JOIN #room")
    replies = plain.ask("CHATHISTORY LATEST #room * 10")
    assert commands(replies) == ["PRIVMSG", "PRIVMSG"]
    assert _texts(replies) == ["msg 0", "msg 1"]


def test_nick_target_is_an_empty_batch(world: IrcWorld) -> None:
    alice, _ids = _room_with_history(world, 1)
    _, inside = _batch_of(alice.ask("CHATHISTORY LATEST bob * 10"))
    assert inside == []


def test_rooms_the_user_is_not_in_are_refused_like_missing_rooms(world: IrcWorld) -> None:
    _room_with_history(world, 1)
    carol = world.client("carol", caps=CAPS)
    for target in ("#room", "#nosuchroom"):
        fail = one(carol.ask(f"CHATHISTORY LATEST {target} * 10"), "FAIL")
        assert fail.params[:4] == ("CHATHISTORY", "INVALID_TARGET", "LATEST", target)
    assert find(carol.ask("CHATHISTORY LATEST #bad,name * 10"), "FAIL")


def test_unknown_or_foreign_msgid(world: IrcWorld) -> None:
    alice, ids = _room_with_history(world, 1)
    alice.send("JOIN #other")
    for ref in ("msgid=nothere", f"msgid={ids[0]}"):
        fail = one(alice.ask(f"CHATHISTORY BEFORE #other {ref} 10"), "FAIL")
        assert fail.params[:4] == ("CHATHISTORY", "INVALID_PARAMS", "BEFORE", ref)


def test_bad_commands_fail_with_standard_replies(world: IrcWorld) -> None:
    alice, _ids = _room_with_history(world, 1)
    assert one(alice.ask("CHATHISTORY"), "FAIL").params[1] == "NEED_MORE_PARAMS"
    assert one(alice.ask("CHATHISTORY PLAY #room * 1"), "FAIL").params[1] == "UNKNOWN_COMMAND"
    assert one(alice.ask("CHATHISTORY LATEST #room * x"), "FAIL").params[1] == "INVALID_PARAMS"


def test_limit_is_cut_to_the_advertised_maximum(world: IrcWorld) -> None:
    alice = world.client("alice", caps=CAPS)
    alice.send("JOIN #room")
    for i in range(CHATHISTORY_MAX + 5):
        world.clock.advance(0.01)
        alice.send(f"PRIVMSG #room :m{i}")
    _, inside = _batch_of(alice.ask("CHATHISTORY LATEST #room * 500"))
    assert len(inside) == CHATHISTORY_MAX
    assert _texts(inside)[-1] == f"m{CHATHISTORY_MAX + 4}"


def test_labeled_request_wraps_the_history_batch(world: IrcWorld) -> None:
    alice = world.client("alice", caps=(*CAPS, "labeled-response"))
    alice.send("JOIN #room", "PRIVMSG #room :hello")
    replies = alice.ask("@label=abc CHATHISTORY LATEST #room * 5")
    assert replies[0].command == "BATCH" and replies[0].tags.get("label") == "abc"
    assert "hello" in _texts(replies)


def test_store_failure_is_a_message_error(world: IrcWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    alice, _ids = _room_with_history(world, 2)

    def broken(*args: object) -> Deferred[list[object]]:
        return fail(RuntimeError("disk on fire"))

    monkeypatch.setattr(world.store, "latest", broken)
    failed = one(alice.ask("CHATHISTORY LATEST #room * 5"), "FAIL")
    assert failed.params[:4] == ("CHATHISTORY", "MESSAGE_ERROR", "LATEST", "#room")


def test_queries_during_a_slow_history_write_get_their_own_results() -> None:
    # Each query waits for the write in progress on a Deferred of its own: on a shared one,
    # the queries' callbacks would run in each other's chains.
    store = MemoryStore()
    writes: list[tuple[Deferred[None], list[object]]] = []
    store_append = store.append

    def slow_append(messages: list[object]) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        writes.append((d, list(messages)))
        return d

    store.append = slow_append  # type: ignore[method-assign]
    service = make_service(CoreSettings(history_flush_interval=0), store=store)
    conn = service.connect(FakeClient())
    service.claim_nick(conn, "amy")
    service.join(conn, "room")
    first = service.say(conn, room="room", text="one")
    service.clock.advance(1)
    second = service.say(conn, room="room", text="two")
    # Two queries are made before either's caller adds its callbacks, as happens when
    # queries from several clients interleave.
    latest = service.history_latest("room", 10)
    before = service.history_before("room", second.ts, 10)
    found = service.history_find(second.id)
    results: dict[str, object] = {}
    latest.addCallback(lambda r: results.setdefault("latest", r))
    before.addCallback(lambda r: results.setdefault("before", r))
    found.addCallback(lambda r: results.setdefault("find", r))
    assert results == {}
    while writes:
        d, messages = writes.pop(0)
        store_append(messages)
        d.callback(None)
    assert results == {"latest": [first, second], "before": [first], "find": second}
