"""draft/multiline across the protocols, through the real server.

An IRC client that negotiates ``draft/multiline`` sends a message of several lines as one
batch; the core gets one message with a newline between lines.  IRC clients with the
capability get the batch (the sender's own cut, ``draft/multiline-concat`` included), those
without it one PRIVMSG per non-blank line; XMPP gets one body; line chat one record with the
lines.  A multi-line message from XMPP or line chat reaches multiline IRC clients as one
batch.  The limits in the capability's value are enforced with the specification's codes,
and a refused batch reaches nobody.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.irc.handlers.multiline import MAX_BYTES, MAX_LINES, joined_text
from tests.matrix.clients import NS_CLIENT, IrcLine, IrcPeer, child_text, local
from tests.matrix.conftest import World

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

BASE = ["message-tags", "batch", "echo-message", "server-time", "labeled-response"]
MULTI = [*BASE, "draft/multiline"]
CONCAT = "draft/multiline-concat"


def privmsgs(lines: list[IrcLine]) -> list[IrcLine]:
    return [m for m in lines if m.command == "PRIVMSG"]


def batch_of(lines: list[IrcLine]) -> tuple[IrcLine, list[IrcLine], IrcLine]:
    """The one draft/multiline batch in ``lines``: its start, its lines, its end."""
    starts = [m for m in lines if m.command == "BATCH" and m.params[0].startswith("+")]
    assert len(starts) == 1, [m.raw for m in lines]
    start = starts[0]
    assert start.params[1] == "draft/multiline", start.raw
    ref = start.params[0][1:]
    inner = [m for m in lines if m.tags.get("batch") == ref]
    ends = [m for m in lines if m.command == "BATCH" and m.params[0] == "-" + ref]
    assert len(ends) == 1, [m.raw for m in lines]
    return start, inner, ends[0]


def send_batch(peer: IrcPeer, target: str, lines: list[tuple[str, bool]], label: str = "") -> None:
    head = f"@label={label} " if label else ""
    peer.send(f"{head}BATCH +b1 draft/multiline {target}")
    for text, concat in lines:
        tags = f"batch=b1;{CONCAT}" if concat else "batch=b1"
        peer.send(f"@{tags} PRIVMSG {target} :{text}")
    peer.send("BATCH -b1")


def test_the_capability_advertises_its_limits(world: World) -> None:
    peer = world.irc(world.nick("mlcap"))
    peer.send("CAP LS 302")
    ls = peer.expect(lambda m: m.command == "CAP" and m.params[1] == "LS")
    assert f"draft/multiline=max-bytes={MAX_BYTES},max-lines={MAX_LINES}" in ls.last.split()


def test_an_irc_batch_is_one_message_on_every_protocol(world: World) -> None:
    room = world.room("ml")
    alice = world.irc(world.nick("mla"), caps=MULTI)
    bob = world.irc(world.nick("mlb"), caps=MULTI)
    carol = world.irc(world.nick("mlc"), caps=BASE)
    line = world.line(world.nick("mll"))
    xmpp = world.xmpp(world.nick("mlx"))
    for peer in (alice, bob, carol, line, xmpp):
        peer.join(room)
        peer.sync()
    for peer in (alice, bob, carol, line, xmpp):
        peer.sync()

    send_batch(
        alice,
        f"#{room}",
        [("hello", False), ("", False), ("#how is ", False), ("all?", True)],
        "l1",
    )
    echo = alice.sync()
    start, inner, _end = batch_of(echo)
    # The label of BATCH + is on the echo's batch start, with the message's id and time.
    assert start.tags["label"] == "l1"
    msgid, when = start.tags["msgid"], start.tags["time"]
    assert [m.last for m in inner] == ["hello", "", "#how is ", "all?"]
    assert [CONCAT in m.tags for m in inner] == [False, False, False, True]
    assert all("msgid" not in m.tags for m in inner)

    start, inner, _end = batch_of(bob.sync())
    assert start.tags["msgid"] == msgid and start.tags["time"] == when
    assert [m.last for m in inner] == ["hello", "", "#how is ", "all?"]
    assert CONCAT in inner[3].tags and start.nick == alice.nick

    # Without the capability: one PRIVMSG per non-blank line, the msgid on the first.
    got = privmsgs(carol.sync())
    assert [m.last for m in got] == ["hello", "#how is ", "all?"]
    assert [m.tags.get("msgid") for m in got] == [msgid, None, None]
    assert all(m.tags["time"] == when for m in got)

    text = "hello\n\n#how is all?"
    records = [r for r in line.sync() if isinstance(r, dict) and r.get("type") == "message"]
    assert [r["text"] for r in records] == [text]

    bodies = [
        child_text(el, NS_CLIENT, "body")
        for el in xmpp.sync()
        if local(el) == "message" and el.get("type") == "groupchat"
    ]
    assert bodies == [text]


def test_a_multi_line_message_from_xmpp_or_line_chat_is_one_batch(world: World) -> None:
    room = world.room("mlx")
    multi = world.irc(world.nick("mxm"), caps=MULTI)
    plain = world.irc(world.nick("mxp"), caps=BASE)
    line = world.line(world.nick("mxl"))
    xmpp = world.xmpp(world.nick("mxx"))
    for peer in (multi, plain, line, xmpp):
        peer.join(room)
        peer.sync()
    for peer in (multi, plain, line, xmpp):
        peer.sync()

    for sender, text in ((xmpp, "from xmpp\nsecond line"), (line, "from line\n\nthird line")):
        sender.say(room, text)
        sender.sync()
        start, inner, _end = batch_of(multi.sync())
        assert start.nick == sender.nick
        assert [m.last for m in inner] == text.split("\n")
        got = privmsgs(plain.sync())
        assert [m.last for m in got] == [t for t in text.split("\n") if t]
        assert got[0].tags["msgid"] == start.tags["msgid"]


def test_a_private_batch_reaches_the_nick_as_one_message(world: World) -> None:
    alice = world.irc(world.nick("mpa"), caps=MULTI)
    bob = world.irc(world.nick("mpb"), caps=MULTI)
    line = world.line(world.nick("mpl"))
    send_batch(alice, bob.nick, [("one", False), ("two", False)])
    alice.sync()
    _start, inner, _end = batch_of(bob.sync())
    assert [m.last for m in inner] == ["one", "two"]
    assert all(m.params[0] == bob.nick for m in inner)
    send_batch(alice, line.nick, [("three", False), ("four", False)])
    alice.sync()
    records = [r for r in line.sync() if isinstance(r, dict) and r.get("type") == "message"]
    assert [r["text"] for r in records] == ["three\nfour"]


@pytest.mark.parametrize(
    ("lines", "code", "context"),
    [
        ([("x", False)] * (MAX_LINES + 1), "MULTILINE_MAX_LINES", [str(MAX_LINES)]),
        ([("x" * 400, False)] * (MAX_BYTES // 400 + 1), "MULTILINE_MAX_BYTES", [str(MAX_BYTES)]),
        ([("hi", False), ("", True)], "MULTILINE_INVALID", []),
    ],
    ids=["lines", "bytes", "blank-concat"],
)
def test_a_batch_past_the_limits_fails_and_reaches_nobody(
    world: World, lines: list[tuple[str, bool]], code: str, context: list[str]
) -> None:
    room = world.room("mlf")
    alice = world.irc(world.nick("mfa"), caps=MULTI)
    bob = world.irc(world.nick("mfb"), caps=MULTI)
    for peer in (alice, bob):
        peer.join(room)
        peer.sync()
    bob.sync()
    send_batch(alice, f"#{room}", lines)
    got = alice.sync()
    fails = [m for m in got if m.command == "FAIL"]
    assert len(fails) == 1, [m.raw for m in got]
    assert list(fails[0].params[:-1]) == ["BATCH", code, *context]
    assert not privmsgs(got)
    assert not [m for m in bob.sync() if m.command in ("PRIVMSG", "BATCH")]
    # The connection goes on: the next message is said as usual.
    alice.send(f"PRIVMSG #{room} :still here")
    alice.sync()
    assert [m.last for m in privmsgs(bob.sync())] == ["still here"]


def test_a_line_to_another_target_fails_the_batch(world: World) -> None:
    room = world.room("mlt")
    alice = world.irc(world.nick("mta"), caps=MULTI)
    alice.join(room)
    alice.sync()
    alice.send(f"BATCH +z draft/multiline #{room}")
    alice.send(f"@batch=z PRIVMSG #{room} :one")
    alice.send("@batch=z PRIVMSG #elsewhere :two")
    alice.send("BATCH -z")
    got = alice.sync()
    assert [m.params[1] for m in got if m.command == "FAIL"] == ["MULTILINE_INVALID_TARGET"]
    assert not privmsgs(got)


def test_batch_needs_the_capability(world: World) -> None:
    room = world.room("mln")
    plain = world.irc(world.nick("mna"), caps=BASE)
    plain.send(f"BATCH +z draft/multiline #{room}")
    got = plain.sync()
    assert [m.params[:2] for m in got if m.command == "FAIL"] == [("BATCH", "MULTILINE_INVALID")]


@given(
    st.lists(
        st.tuples(
            st.text(st.characters(blacklist_characters="\n\r\x00"), max_size=20), st.booleans()
        ),
        min_size=1,
        max_size=12,
    )
)
def test_joined_text_keeps_every_line_and_joins_continued_ones(
    pieces: list[tuple[str, bool]],
) -> None:
    text = joined_text(pieces)
    # Each line not continued starts a line of the text; the first always does.
    assert text.count("\n") == sum(1 for i, (_, concat) in enumerate(pieces) if i and not concat)
    assert text.replace("\n", "") == "".join(piece for piece, _ in pieces)


def test_history_replays_a_multi_line_message_as_a_nested_batch(world: World) -> None:
    room = world.room("mlh")
    alice = world.irc(world.nick("mha"), caps=[*MULTI, "draft/chathistory"])
    plain = world.irc(world.nick("mhp"), caps=[*BASE, "draft/chathistory"])
    for peer in (alice, plain):
        peer.join(room)
        peer.sync()
    send_batch(alice, f"#{room}", [("first", False), ("second", False)])
    alice.sync()
    plain.sync()
    alice.send(f"CHATHISTORY LATEST #{room} * 10")
    got = alice.sync()
    outer = next(m for m in got if m.command == "BATCH" and m.params[1] == "chathistory")
    start, inner, _end = batch_of([m for m in got if m is not outer])
    assert start.tags["batch"] == outer.params[0][1:]
    assert [m.last for m in inner] == ["first", "second"]
    plain.send(f"CHATHISTORY LATEST #{room} * 10")
    assert [m.last for m in privmsgs(plain.sync())] == ["first", "second"]
