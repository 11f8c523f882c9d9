"""draft/event-playback: CHATHISTORY replays a room's joins, parts, quits, kicks, nick changes
and topics, whichever protocol they came from, to IRC clients that ask for them, in order
with the messages and with the ids and times they had; other clients get messages only."""

from __future__ import annotations

import pytest

from tests.matrix.clients import IrcLine, IrcPeer
from tests.matrix.conftest import World

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

HISTORY = ["message-tags", "batch", "server-time", "echo-message", "draft/chathistory"]
PLAYBACK = [*HISTORY, "draft/event-playback"]


def replay(peer: IrcPeer, command: str) -> list[IrcLine]:
    """The lines inside the chathistory batch that answers ``command``."""
    peer.send(command)
    got = peer.sync()
    start = next((m for m in got if m.command == "BATCH" and m.params[0].startswith("+")), None)
    assert start is not None, [m.raw for m in got]
    assert start.params[1] == "chathistory", start.raw
    ref = start.params[0][1:]
    return [m for m in got if m.tags.get("batch") == ref]


def test_history_replays_events_from_every_protocol(world: World) -> None:
    room = world.room("ep")
    watcher = world.irc(world.nick("epw"), caps=PLAYBACK)
    plain = world.irc(world.nick("epp"), caps=HISTORY)
    watcher.join(room)
    watcher.sync()
    plain.join(room)
    plain.sync()
    watcher.sync()
    line = world.line(world.nick("epl"))
    line.join(room)
    line.sync()
    xmpp = world.xmpp(world.nick("epx"))
    xmpp.join(room)
    xmpp.sync()
    watcher.send(f"TOPIC #{room} :the new topic")
    answered = watcher.sync()
    topic = next((m for m in answered if m.command == "TOPIC"), None)
    assert topic is not None, [m.raw for m in answered]
    # The live TOPIC has the id that history replays it with.
    topic_id = topic.tags["msgid"]
    watcher.say(room, "hello all")
    watcher.sync()
    line.part(room, "off to lunch")
    line.sync()
    kicked = world.irc(world.nick("epk"))
    kicked.join(room)
    kicked.sync()
    watcher.kick(room, kicked.nick, "too loud")
    watcher.sync()
    old_nick = plain.nick
    plain.rename(world.nick("epq"))
    plain.sync()
    xmpp.quit("gone home")
    watcher.sync()

    got = replay(watcher, f"CHATHISTORY LATEST #{room} * 100")
    summary = [(m.command, m.nick) for m in got]
    assert summary == [
        ("JOIN", watcher.nick),
        ("JOIN", old_nick),
        ("JOIN", line.nick),
        ("JOIN", xmpp.nick),
        ("TOPIC", watcher.nick),
        ("PRIVMSG", watcher.nick),
        ("PART", line.nick),
        ("JOIN", kicked.nick),
        ("KICK", watcher.nick),
        ("NICK", old_nick),
        # Its only session went unavailable: the user quit.
        ("QUIT", xmpp.nick),
    ]
    topic_line = got[4]
    assert topic_line.last == "the new topic" and topic_line.tags["msgid"] == topic_id
    assert got[6].last == "off to lunch"
    assert got[8].params[1:] == (kicked.nick, "too loud")
    assert got[9].params == (plain.nick,)
    assert all("msgid" in m.tags and "time" in m.tags for m in got)

    # Without event-playback: the messages alone.
    assert [m.command for m in replay(plain, f"CHATHISTORY LATEST #{room} * 100")] == ["PRIVMSG"]

    # An event's msgid is a selector like a message's.
    after_topic = replay(watcher, f"CHATHISTORY AFTER #{room} msgid={topic_id} 2")
    assert [m.command for m in after_topic] == ["PRIVMSG", "PART"]
    before_topic = replay(watcher, f"CHATHISTORY BEFORE #{room} msgid={topic_id} 1")
    assert [(m.command, m.nick) for m in before_topic] == [("JOIN", xmpp.nick)]
    around = replay(watcher, f"CHATHISTORY AROUND #{room} msgid={topic_id} 3")
    assert [m.command for m in around] == ["JOIN", "TOPIC", "PRIVMSG"]
    # The limit counts events too.
    assert len(replay(watcher, f"CHATHISTORY LATEST #{room} * 3")) == 3
