"""PRIVMSG, NOTICE, TAGMSG, AWAY, SETNAME, user MODE, and how other events look on IRC."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from chatserver.core.events import HostChange, Message, ServerNotice, Wallops
from protocols.irc import render
from protocols.irc.message import parse
from protocols.irc.services_registry import SERVICES
from tests.core.fakes import FakeClient
from tests.irc.conftest import IrcWorld, commands, find, last_param, one


def pair(irc: IrcWorld, a_caps: tuple[str, ...] = (), b_caps: tuple[str, ...] = ()) -> tuple:
    a = irc.client("alice", caps=a_caps)
    b = irc.client("bob", caps=b_caps)
    a.send("JOIN #r")
    b.send("JOIN #r")
    a.take()
    b.take()
    return a, b


def line_user(irc: IrcWorld, nick: str = "lina", room: str | None = "r") -> tuple[Any, FakeClient]:
    """A user of another protocol (the core's fake client) in ``room``."""
    client = FakeClient(protocol="line", address="203.0.113.9")
    conn = irc.service.connect(client)
    irc.service.claim_nick(conn, nick)
    if room:
        irc.service.join(conn, room)
    return conn, client


# -- PRIVMSG / NOTICE --------------------------------------------------------------------------


def test_channel_and_private_messages(irc: IrcWorld) -> None:
    a, b = pair(irc)
    assert a.ask("PRIVMSG #r :hello all") == []  # no echo without echo-message
    msg = one(b.take(), "PRIVMSG")
    assert msg.source.startswith("alice!alice@") and msg.params == ("#r", "hello all")
    a.send("PRIVMSG bob :psst")
    assert one(b.take(), "PRIVMSG").params == ("bob", "psst")
    a.send("NOTICE #r :note")
    assert one(b.take(), "NOTICE").params == ("#r", "note")
    # Several targets.
    c = irc.client("carol")
    a.send("PRIVMSG bob,carol :both")
    assert one(b.take(), "PRIVMSG").params == ("bob", "both")
    assert one(c.take(), "PRIVMSG").params == ("carol", "both")


def test_privmsg_errors(irc: IrcWorld) -> None:
    a, _b = pair(irc)
    assert one(a.ask("PRIVMSG"), "411")
    assert one(a.ask("PRIVMSG #r"), "412")
    assert one(a.ask("PRIVMSG #r :"), "412")
    assert one(a.ask("PRIVMSG nobody :x"), "401").params[1] == "nobody"
    assert one(a.ask("PRIVMSG #none :x"), "403").params[1] == "#none"
    assert one(a.ask("PRIVMSG a,b,c,d,e :x"), "407")
    outsider = irc.client("olga")
    assert one(outsider.ask("PRIVMSG #r :x"), "404").params[1] == "#r"
    # NOTICE never gets an error back.
    assert a.ask("NOTICE nobody :x") == []
    assert outsider.ask("NOTICE #r :x") == []


def test_moderated_and_banned(irc: IrcWorld) -> None:
    a, b = pair(irc)
    a.send("MODE #r +m")
    assert one(b.ask("PRIVMSG #r :hi"), "404")
    a.send("MODE #r +v bob")
    assert b.ask("PRIVMSG #r :hi") == []
    a.send("MODE #r -m-v+b bob bob!*@*")
    assert one(b.ask("PRIVMSG #r :hi"), "404")


def test_self_message_without_echo(irc: IrcWorld) -> None:
    a = irc.client("alice")
    out = a.ask("PRIVMSG alice :note to self")
    assert one(out, "PRIVMSG").params == ("alice", "note to self")


def test_echo_message_with_tags_and_label(irc: IrcWorld) -> None:
    caps = ("echo-message", "message-tags", "server-time", "labeled-response", "batch")
    a, b = pair(irc, a_caps=caps, b_caps=("message-tags",))
    out = a.ask("@label=L1;+draft/reply=x;foo=bar PRIVMSG #r :hi")
    echo = one(out, "PRIVMSG")
    assert echo.tags["label"] == "L1"
    assert echo.tags["+draft/reply"] == "x"
    assert "foo" not in echo.tags  # not a client-only tag: never relayed
    assert "time" in echo.tags and "msgid" in echo.tags
    got = one(b.take(), "PRIVMSG")
    assert got.tags["msgid"] == echo.tags["msgid"]
    assert got.tags["+draft/reply"] == "x"
    assert "time" not in got.tags and "label" not in got.tags


def test_statusmsg(irc: IrcWorld) -> None:
    a, b = pair(irc)
    c = irc.client("carol")
    c.send("JOIN #r")
    a.send("MODE #r +v carol")
    b.take()
    c.take()
    b.send("PRIVMSG @#r :ops only")
    assert one(a.take(), "PRIVMSG").params == ("@#r", "ops only")
    assert c.take() == []
    b.send("PRIVMSG +#r :voiced and up")
    assert one(c.take(), "PRIVMSG").params == ("+#r", "voiced and up")
    assert one(a.take(), "PRIVMSG").params == ("+#r", "voiced and up")


def test_ctcp_action_is_the_core_action(irc: IrcWorld) -> None:
    a, b = pair(irc)
    _lconn, lina = line_user(irc)
    a.send("PRIVMSG #r :\x01ACTION waves\x01")
    event = lina.of(Message)[-1]
    assert event.kind == "action" and event.text == "waves"
    assert one(b.take(), "PRIVMSG").params == ("#r", "\x01ACTION waves\x01")
    # Other CTCP passes through as text.
    a.send("PRIVMSG #r :\x01VERSION\x01")
    assert lina.of(Message)[-1].text == "\x01VERSION\x01"
    assert lina.of(Message)[-1].kind == "privmsg"


def test_other_protocols_users_are_ordinary_irc_users(irc: IrcWorld) -> None:
    a, _b = pair(irc)
    lconn, _lina = line_user(irc)
    join = one(a.take(), "JOIN")
    assert join.source.startswith("lina!lina@") and join.source.endswith(".cloak")
    assert "203.0.113.9" not in join.source
    irc.service.say(lconn, text="hello from line", room="r")
    irc.service.say(lconn, text="does a dance", room="r", kind="action")
    irc.service.say(lconn, text="two\nlines", nick="alice")
    out = a.take()
    assert [m.params for m in find(out, "PRIVMSG")] == [
        ("#r", "hello from line"),
        ("#r", "\x01ACTION does a dance\x01"),
        ("alice", "two"),
        ("alice", "lines"),
    ]
    irc.service.part(lconn, "r", "bye")
    assert one(a.take(), "PART").params == ("#r", "bye")


def test_long_messages_split_at_utf8_boundaries(irc: IrcWorld) -> None:
    a, _b = pair(irc, a_caps=("message-tags",))
    lconn, _lina = line_user(irc)
    a.take()
    text = "é" * 300 + "€" * 300 + "end"
    irc.service.say(lconn, text=text, room="r")
    raw = a.raw().split(b"\r\n")[:-1]
    assert len(raw) > 2
    pieces = []
    for index, line in enumerate(raw):
        body = line.split(b" ", 1)[1] if line.startswith(b"@") else line
        assert len(body) + 2 <= 512
        piece = body.split(b" :", 1)[1]
        pieces.append(piece.decode("utf-8"))  # every piece decodes alone
        assert (b"msgid=" in line) == (index == 0)
    assert "".join(pieces) == text


def test_long_action_keeps_ctcp_on_every_line(irc: IrcWorld) -> None:
    a, _b = pair(irc)
    lconn, _lina = line_user(irc)
    a.take()
    irc.service.say(lconn, text="word " * 200, room="r", kind="action")
    msgs = find(a.take(), "PRIVMSG")
    assert len(msgs) > 1
    assert all(m.params[1].startswith("\x01ACTION ") and m.params[1].endswith("\x01") for m in msgs)


def test_away(irc: IrcWorld) -> None:
    a, b = pair(irc, b_caps=("away-notify",))
    out = a.ask("AWAY :gone to lunch")
    assert one(out, "306")
    assert "AWAY" not in commands(out)
    away = one(b.take(), "AWAY")
    assert away.source.startswith("alice!") and away.params == ("gone to lunch",)
    out = b.ask("PRIVMSG alice :you there?")
    assert one(out, "301").params[1:] == ("alice", "gone to lunch")
    assert b.ask("NOTICE alice :x") == []
    assert one(a.ask("AWAY"), "305")
    assert one(b.take(), "AWAY").params == ()


def test_setname(irc: IrcWorld) -> None:
    a, b = pair(irc, a_caps=("setname",), b_caps=("setname",))
    c = irc.client("carol")
    c.send("JOIN #r")
    c.take()
    out = a.ask("SETNAME :New Name")
    assert one(out, "SETNAME").params == ("New Name",)
    assert one(b.take(), "SETNAME").params == ("New Name",)
    assert c.take() == []
    assert a.user.realname == "New Name"
    fail = one(a.ask("SETNAME :" + "x" * 200), "FAIL")
    assert fail.params[:2] == ("SETNAME", "INVALID_REALNAME")


def test_tagmsg(irc: IrcWorld) -> None:
    a, b = pair(irc, a_caps=("message-tags",), b_caps=("message-tags", "server-time"))
    c = irc.client("carol")
    c.send("JOIN #r")
    c.take()
    b.take()
    assert a.ask("@+typing=active TAGMSG #r") == []
    got = one(b.take(), "TAGMSG")
    assert got.params == ("#r",) and got.tags["+typing"] == "active"
    assert "msgid" in got.tags and "time" in got.tags
    assert c.take() == []  # no message-tags: nothing
    a.send("@+typing=paused TAGMSG bob")
    assert one(b.take(), "TAGMSG").params == ("bob",)
    assert one(a.ask("@+x=1 TAGMSG nobody"), "401")
    assert a.ask("TAGMSG #r") == []  # nothing to relay


def test_services_receive_privmsg(irc: IrcWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []

    def handler(conn: Any, text: str) -> None:
        seen.append(text)
        conn.send("NOTICE", conn.nick, "ok", source="TestServ!services@services")

    monkeypatch.setitem(SERVICES, "testserv", handler)
    a = irc.client("alice")
    out = a.ask("PRIVMSG TestServ :help me")
    assert seen == ["help me"]
    assert one(out, "NOTICE").source.startswith("TestServ!")
    assert a.ask("NOTICE TestServ :ignored") == []
    assert seen == ["help me"]


# -- user modes --------------------------------------------------------------------------------


def test_user_modes(irc: IrcWorld) -> None:
    a = irc.client("alice")
    irc.client("bob")
    assert one(a.ask("MODE alice"), "221").params[1] == "+"
    out = a.ask("MODE alice +iwB")
    mode = one(out, "MODE")
    assert mode.params == ("alice", "+iwB")
    assert one(a.ask("MODE alice"), "221").params[1] == "+iwB"
    assert a.ask("MODE alice +o") == []  # only OPER grants +o
    assert one(a.ask("MODE alice +z"), "501")
    assert one(a.ask("MODE bob +i"), "502")
    assert one(a.ask("MODE nobody"), "401")
    a.world.service.users.set_mode(a.user, "oper", True)
    assert one(a.ask("MODE alice -o"), "MODE").params == ("alice", "-o")


def test_bot_tag_and_account_tag(irc: IrcWorld) -> None:
    a, b = pair(irc, b_caps=("message-tags", "account-tag"))
    a.send("MODE alice +B")
    a.user.account = "alice"
    a.user.changed()
    a.send("PRIVMSG #r :beep")
    got = one(b.take(), "PRIVMSG")
    assert got.tags["bot"] == ""
    assert got.tags["account"] == "alice"


def test_extended_join_and_account_notify(irc: IrcWorld) -> None:
    a = irc.client("alice", caps=("extended-join", "account-notify"))
    a.send("JOIN #r")
    a.take()
    b = irc.client("bob", realname="Bob B")
    b.send("JOIN #r")
    join = one(a.take(), "JOIN")
    assert join.params == ("#r", "*", "Bob B")
    irc.service.login(b.conn.core, "bobacct")
    account = one(a.take(), "ACCOUNT")
    assert account.params == ("bobacct",) and account.source.startswith("bob!")
    numeric = one(b.take(), "900")
    assert numeric.params[2] == "bobacct"
    irc.service.logout(b.conn.core)
    assert one(a.take(), "ACCOUNT").params == ("*",)
    assert one(b.take(), "901")


def test_server_notice_wallops_chghost(irc: IrcWorld) -> None:
    a = irc.client("alice", caps=("chghost",))
    a.send("JOIN #r")
    a.take()
    a.conn.deliver(ServerNotice(ts=1.0, text="maintenance soon"))
    notice = one(a.take(), "NOTICE")
    assert notice.source == "irc.test" and notice.params == ("alice", "maintenance soon")
    who = a.user.who()
    a.conn.deliver(Wallops(ts=1.0, who=who, text="hello opers"))
    assert one(a.take(), "WALLOPS").params == ("hello opers",)
    a.conn.deliver(HostChange(ts=1.0, who=who, ident="new", host="new.host"))
    assert one(a.take(), "CHGHOST").params == ("new", "new.host")


def test_multiclient_sees_own_messages_and_joins(irc: IrcWorld) -> None:
    irc.store.accounts.clear()
    d = irc.service.accounts.create("alice", "secret-pw")
    assert d.called
    # Logged in before registering (as SASL does): the nick is the account's.
    first = irc.connect()
    irc.service.login(first.conn.core, "alice")
    first.register("alice")
    first.send("JOIN #r")
    second = irc.connect()
    irc.service.login(second.conn.core, "alice")
    second.send("NICK other", "USER a 0 * :A")
    out = second.take()
    assert one(out, "001").params[0] == "alice"
    assert one(out, "JOIN").params[0] == "#r"
    assert one(out, "353")
    first.take()
    first.send("PRIVMSG #r :from first")
    assert one(second.take(), "PRIVMSG").params == ("#r", "from first")
    first.send("JOIN #s")
    out = second.take()
    assert one(out, "JOIN").params == ("#s",)
    assert one(out, "366")


# -- rendering once per variant ----------------------------------------------------------------


def test_room_message_rendered_once_per_variant(
    irc: IrcWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    sender = irc.client("sender")
    sender.send("JOIN #big")
    plain = [irc.client(f"p{i}") for i in range(5)]
    tagged = [irc.client(f"t{i}", caps=("message-tags", "server-time")) for i in range(5)]
    for c in plain + tagged:
        c.send("JOIN #big")
    for c in plain + tagged:
        c.take()
    calls = []
    original = render.build_message

    def counting(msg: Message, bits: int) -> bytes:
        calls.append(bits)
        return original(msg, bits)

    monkeypatch.setattr(render, "build_message", counting)
    sender.send("PRIVMSG #big :fan out")
    assert len(calls) == 2  # one per variant, not one per recipient
    plain_bytes = {c.raw() for c in plain}
    tagged_bytes = {c.raw() for c in tagged}
    assert len(plain_bytes) == 1 and len(tagged_bytes) == 1


def test_pipelined_messages_reach_each_member_in_one_write(irc: IrcWorld) -> None:
    sender = irc.client("sender", caps=("echo-message", "labeled-response", "batch"))
    sender.send("JOIN #pipe")
    members = [irc.client(f"m{i}") for i in range(3)]
    for c in members:
        c.send("JOIN #pipe")
    for c in [sender, *members]:
        c.take()
    writes = []
    for c in members:
        transport = c.conn.transport
        original = transport.write
        transport.write = lambda data, original=original: (writes.append(data), original(data))
    # Three messages in one read: each member gets them in one write, in order.
    sender.feed(b"PRIVMSG #pipe :one\r\nPRIVMSG #pipe :two\r\n@label=x PRIVMSG #pipe :three\r\n")
    assert len(writes) == 3
    assert len({id(w) for w in writes}) == 1  # the same bytes object, built once
    for c in members:
        assert [last_param(m) for m in c.take()] == ["one", "two", "three"]
    echoed = sender.take()
    assert [last_param(m) for m in echoed] == ["one", "two", "three"]
    assert echoed[2].tags.get("label") == "x"  # the echo stays with its labelled command


# Members of one room: (caps, whether it talks).  Plain and tagged members render
# differently; an echo-message member gets its own messages in place.
_MEMBERS = (
    ((), True),
    ((), True),
    (("message-tags", "server-time"), True),
    (("echo-message",), True),
    (("echo-message", "message-tags"), True),
    ((), False),
)


@settings(max_examples=40, deadline=None)
@given(
    said=st.lists(
        st.tuples(
            st.sampled_from([i for i, (_, talks) in enumerate(_MEMBERS) if talks]),
            st.integers(1, 3),
        ),
        min_size=1,
        max_size=12,
    )
)
def test_a_turn_where_members_talk_reaches_each_member_whole_and_in_order(
    said: list[tuple[int, int]],
) -> None:
    # One member's lines stay within its flood budget (less its setup commands): past it
    # lines are dropped by design, which is not what this test is about.
    for member in {who for who, _ in said}:
        assume(sum(count for who, count in said if who == member) <= 10)
    # Reads of several members in one turn (each read one or more lines): every member gets
    # everyone else's messages of the turn in the order said, and its own only with
    # echo-message, in place; the bytes a member gets for a message are those its variant
    # gets.
    world = IrcWorld()
    try:
        members = [
            world.client(f"m{i}", caps=member_caps) for i, (member_caps, _) in enumerate(_MEMBERS)
        ]
        for c in members:
            c.send("JOIN #turn")
        for c in members:
            c.take()
        order: list[tuple[int, str]] = []
        with world.service.batch():
            for turn, (who, count) in enumerate(said):
                texts = [f"t{turn}.{k}" for k in range(count)]
                order += [(who, text) for text in texts]
                members[who].feed(b"".join(f"PRIVMSG #turn :{t}\r\n".encode() for t in texts))
        world.clock.advance(0)
        for i, c in enumerate(members):
            echo = "echo-message" in _MEMBERS[i][0]
            lines = [ln for ln in c.raw().split(b"\r\n") if b" PRIVMSG " in ln]
            want = [(who, text) for who, text in order if echo or who != i]
            got = [parse(ln, max_body=1 << 20, max_tags=1 << 20) for ln in lines]
            assert [(m.source.split("!")[0], m.params[-1]) for m in got] == [
                (f"m{who}", text) for who, text in want
            ]
            tagged = "message-tags" in _MEMBERS[i][0]
            assert all(("msgid" in m.tags) == tagged for m in got)
    finally:
        world.close()


def test_tagmsg_refused_when_banned_or_outside(irc: IrcWorld) -> None:
    a, b = pair(irc, a_caps=("message-tags",), b_caps=("message-tags",))
    a.send("MODE #r +b bob!*@*")
    a.take()
    assert one(b.ask("@+typing=active TAGMSG #r"), "404")
    outsider = irc.client("olga", caps=("message-tags",))
    assert one(outsider.ask("@+typing=active TAGMSG #r"), "404")
    assert a.take() == []


def test_away_set_from_another_connection_is_shown_as_the_numeric(irc: IrcWorld) -> None:
    irc.store.accounts.clear()
    assert irc.service.accounts.create("alice", "secret-pw").called
    first = irc.connect()
    irc.service.login(first.conn.core, "alice")
    first.register("alice")
    other = irc.connect()
    irc.service.login(other.conn.core, "alice")
    other.send("NICK other", "USER a 0 * :A")
    other.take()
    first.take()
    # The connection that sent AWAY gets its numeric once; its sibling gets the same numeric,
    # as if it had asked itself.
    assert commands(first.ask("AWAY :lunch")) == ["306"]
    assert one(other.take(), "306").params[0] == "alice"
    first.send("AWAY")
    assert commands(first.take()) == ["305"]
    assert one(other.take(), "305").params[0] == "alice"


def test_long_reasons_from_other_protocols_are_cut_to_fit_a_line(irc: IrcWorld) -> None:
    a = irc.client("alice")
    fake = FakeClient(protocol="line")
    conn = irc.service.connect(fake)
    irc.service.claim_nick(conn, "bob")
    a.send("JOIN #r")
    irc.service.join(conn, "r")
    a.take()
    reason = "é" * 300 + "😀" * 100  # 1000 bytes: no IRC client could have sent it
    irc.service.part(conn, "r", reason)
    (raw,) = [ln for ln in a.lines() if " PART " in ln]
    assert len(raw.encode()) + 2 <= 512
    shown = raw.split(" :", 1)[1]
    assert reason.startswith(shown) and len(shown) > 200


def test_a_message_that_cannot_be_written_costs_only_itself(irc: IrcWorld) -> None:
    # The protocols' edges let no such text into the core; should one come all the same
    # (a bug), the other messages of the same batch still reach the IRC member.
    _a, b = pair(irc)
    conn, _client = line_user(irc)
    with irc.service.batch():
        irc.service.say(conn, room="r", text="before")
        irc.service.say(conn, room="r", text="bad \ud800")
        irc.service.say(conn, room="r", text="after")
    irc.clock.advance(0)
    assert [m.params[-1] for m in b.take() if m.command == "PRIVMSG"] == ["before", "after"]


def test_a_join_from_another_connection_shows_the_room_there_once(irc: IrcWorld) -> None:
    irc.store.accounts.clear()
    assert irc.service.accounts.create("alice", "secret-pw").called
    first = irc.connect()
    irc.service.login(first.conn.core, "alice")
    first.register("alice")
    other = irc.connect()
    irc.service.login(other.conn.core, "alice")
    other.send("NICK other", "USER a 0 * :A")
    other.take()
    first.take()
    # The connection that sent JOIN gets the join, its names and nothing twice; its sibling
    # gets the same, as if it had joined itself.
    joined = first.ask("JOIN #r")
    assert commands(joined) == ["JOIN", "353", "366"]
    seen = other.take()
    assert commands(seen) == ["JOIN", "353", "366"]
    assert seen[0].params[0] == "#r" and seen[0].source.startswith("alice!")
    # Joining again from the sibling changes nothing and says nothing.
    assert other.ask("JOIN #r") == []
    assert first.take() == []
