"""One archive for every device: private messages kept for registered accounts with the id
every protocol shows, delivered to an account that was away at its next login on any protocol,
and read back through IRC CHATHISTORY, line chat ``/history`` and XMPP MAM."""

from __future__ import annotations

import pytest

from tests.matrix.clients import IrcLine
from tests.matrix.conftest import PASSWORD, World

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

HISTORY_CAPS = ("batch", "message-tags", "server-time", "draft/chathistory")


def privmsgs(lines: list[IrcLine]) -> list[IrcLine]:
    return [m for m in lines if m.command == "PRIVMSG"]


def chathistory(peer, *args: str) -> list[IrcLine]:
    peer.send("CHATHISTORY " + " ".join(args))
    lines = []
    start = peer.expect(lambda m: m.command == "BATCH" and m.params[0].startswith("+"))
    ref = start.params[0][1:]
    while True:
        m = peer.expect(lambda m: True)
        if m.command == "BATCH" and m.params[0] == "-" + ref:
            return lines
        lines.append(m)


def test_irc_dm_to_an_away_account_arrives_at_login_and_is_in_both_archives(
    world: World,
) -> None:
    alice, bob = world.nick("arcA"), world.nick("arcB")
    world.register(alice)
    world.register(bob)
    a = world.irc(alice, caps=HISTORY_CAPS, sasl=(alice, PASSWORD))
    a.msg(bob, "are you there?")
    a.msg(bob, "second")
    a.sync()
    # Nobody has the nick, but the account keeps the messages: no 401 for the sender.
    assert not [m for m in a.sync() if m.command == "401"]

    b = world.irc(bob, caps=HISTORY_CAPS, sasl=(bob, PASSWORD))
    notice = b.expect(lambda m: m.command == "NOTICE" and "while you were away" in m.last)
    assert notice.last.startswith("2 private messages")
    got = [b.expect(lambda m: m.command == "PRIVMSG") for _ in range(2)]
    assert [m.last for m in got] == ["are you there?", "second"]
    assert all(m.tags.get("batch") for m in got)
    assert got[0].nick == alice
    ids = [m.tags["msgid"] for m in got]
    # The same ids in the sender's archive and in the recipient's.
    mine = privmsgs(chathistory(a, "LATEST", bob, "*", "10"))
    theirs = privmsgs(chathistory(b, "LATEST", alice, "*", "10"))
    assert [m.tags["msgid"] for m in mine] == ids
    assert [m.tags["msgid"] for m in theirs] == ids
    # Delivered once: a second login gets nothing more.
    b.close()
    b2 = world.irc(bob, caps=HISTORY_CAPS, sasl=(bob, PASSWORD))
    assert not [m for m in b2.sync() if m.command == "PRIVMSG"]

    # Live messages are archived too, and paging by msgid works both ways.
    for n in range(5):
        b2.msg(alice, f"live {n}")
    b2.sync()
    a.sync()
    latest = privmsgs(chathistory(a, "LATEST", bob, "*", "3"))
    assert [m.last for m in latest] == ["live 2", "live 3", "live 4"]
    older = privmsgs(chathistory(a, "BEFORE", bob, f"msgid={latest[0].tags['msgid']}", "3"))
    assert [m.last for m in older] == ["second", "live 0", "live 1"]
    newer = privmsgs(chathistory(a, "AFTER", bob, f"msgid={older[0].tags['msgid']}", "2"))
    assert [m.last for m in newer] == ["live 0", "live 1"]

    # TARGETS lists the private conversation beside rooms.
    room = world.room("arc")
    a.join(room)
    a.say(room, "in the room")
    a.sync()
    rows = chathistory(
        a, "TARGETS", "timestamp=2000-01-01T00:00:00Z", "timestamp=2100-01-01T00:00:00Z", "10"
    )
    names = [m.params[1] for m in rows if m.command == "CHATHISTORY"]
    assert bob.lower() in [n.lower() for n in names]
    assert f"#{room}" in names


def test_guests_get_nothing_kept_and_unknown_nicks_are_refused(world: World) -> None:
    guest, other = world.nick("arcG"), world.nick("arcH")
    g = world.irc(guest, caps=HISTORY_CAPS)
    h = world.irc(other, caps=HISTORY_CAPS)
    g.msg(other, "between guests")
    h.expect(lambda m: m.command == "PRIVMSG" and m.last == "between guests")
    assert privmsgs(chathistory(g, "LATEST", other, "*", "10")) == []
    assert privmsgs(chathistory(h, "LATEST", guest, "*", "10")) == []
    g.msg("nobodyhere", "hello?")
    err = g.expect(lambda m: m.command == "401")
    assert err.params[1] == "nobodyhere"


def test_line_chat_gets_a_while_you_were_away_block_and_reads_the_conversation(
    world: World,
) -> None:
    alice, bob = world.nick("arcL"), world.nick("arcM")
    world.register(alice)
    world.register(bob)
    a = world.irc(alice, caps=HISTORY_CAPS, sasl=(alice, PASSWORD))
    a.msg(bob, "from irc while you slept")
    a.msg(bob, "waves", action=True)
    a.sync()
    b = world.line(bob, password=PASSWORD)
    block = b.expect(lambda o: isinstance(o, dict) and o.get("type") == "offline")
    texts = [(m["kind"], m["text"], m["from"]) for m in block["messages"]]
    assert texts == [("privmsg", "from irc while you slept", alice), ("action", "waves", alice)]
    ids = [m["id"] for m in block["messages"]]
    b.cmd("history", nick=alice, count=10)
    reply = b.expect(lambda o: o.get("cmd") == "history")
    assert reply["type"] == "ok", reply
    assert [m["id"] for m in reply["messages"]] == ids
    # The sender reads the same ids from IRC.
    assert [m.tags["msgid"] for m in privmsgs(chathistory(a, "LATEST", bob, "*", "10"))] == ids
    # A message from line chat to an away account, read back by IRC at login.
    b.cmd("msg", to=alice + "x", text="nobody")
    err = b.expect(lambda o: o.get("cmd") == "msg")
    assert err["type"] == "error", err
    a.close()
    b.cmd("msg", to=alice, text="see you later")
    sent = b.expect(lambda o: o.get("cmd") == "msg")
    assert sent["type"] == "ok", sent
    a2 = world.irc(alice, caps=("server-time",), sasl=(alice, PASSWORD))
    got = a2.expect(lambda m: m.command == "PRIVMSG")
    assert got.last == "see you later" and got.nick == bob
    assert "time" in got.tags


def test_line_text_mode_history_of_a_conversation(world: World) -> None:
    alice, bob = world.nick("arcT"), world.nick("arcU")
    world.register(alice)
    world.register(bob)
    a = world.line(alice, password=PASSWORD)
    b = world.line(bob, password=PASSWORD)
    a.cmd("msg", to=bob, text="one")
    b.expect(lambda o: o.get("type") == "message" and o.get("text") == "one")
    a.sync()
    t = world.line(world.nick("arcV"), json_mode=False)
    t.line(f"/identify {alice} {PASSWORD}")
    t.expect(lambda s: isinstance(s, str) and "logged in" in s)
    t.line(f"/history {bob} 5")
    t.expect(lambda s: isinstance(s, str) and s.startswith(f"*** history with {bob} (1 messages)"))
    assert "one" in t.expect(lambda s: isinstance(s, str) and "one" in s)
