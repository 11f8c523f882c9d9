"""IRC and line chat in the same rooms, on the real server: every kind of event, both ways.

Each test has one IRC user (raw lines over a socket) and one line-chat user, and checks what
each of them sees when the other acts.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from tests.support.server import LineClient, ServerProcess

_ids = itertools.count(1)


class IrcUser(LineClient):
    """A raw IRC client: registered on construction."""

    def __init__(self, port: int, nick: str, caps: tuple[str, ...] = ()) -> None:
        super().__init__(port)
        self.nick = nick
        if caps:
            self.send("CAP REQ :" + " ".join(caps))
        self.send(f"NICK {nick}")
        self.send(f"USER {nick} 0 * :{nick} on IRC")
        if caps:
            self.send("CAP END")
        self.expect(f" 001 {nick} ")
        self.expect(lambda line: " 376 " in line or " 422 " in line)

    def join(self, room: str) -> None:
        self.send(f"JOIN #{room}")
        self.expect(f" 366 {self.nick} #{room} ")


class LineUser(LineClient):
    def __init__(self, port: int, nick: str) -> None:
        super().__init__(port)
        self.nick = nick
        self.send(nick)
        self.expect(f"*** You are {nick}.")

    def join(self, room: str) -> None:
        self.send(f"/join {room}")
        self.expect(f"*** now talking in #{room}")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path_factory.mktemp("cross"), protocols=("line", "irc"))
    process.start()
    yield process
    process.kill()


@pytest.fixture
def pair(server: ServerProcess) -> Iterator[tuple[IrcUser, LineUser, str]]:
    """An IRC user and a line user (fresh nicks) and a room name; the IRC user made the room,
    so it is the room's operator, and both are in it."""
    n = next(_ids)
    irc = IrcUser(server.ports["irc"], f"irc{n}", caps=("away-notify", "invite-notify"))
    line = LineUser(server.ports["line"], f"line{n}")
    room = f"room{n}"
    irc.join(room)
    line.join(room)
    irc.expect(f"JOIN #{room}")
    yield irc, line, room
    irc.close()
    line.close()


def mask_prefix(nick: str) -> str:
    return f":{nick}!"


# -- messages ----------------------------------------------------------------------------------


def test_room_message_action_notice_irc_to_line(pair: tuple[IrcUser, LineUser, str]) -> None:
    irc, line, room = pair
    irc.send(f"PRIVMSG #{room} :hello line")
    assert line.expect("hello line") == f"[#{room}] <{irc.nick}> hello line"
    irc.send(f"PRIVMSG #{room} :\x01ACTION waves\x01")
    assert line.expect("waves") == f"[#{room}] * {irc.nick} waves"
    irc.send(f"NOTICE #{room} :build is green")
    assert line.expect("build is green") == f"[#{room}] -{irc.nick}- build is green"


def test_room_message_action_notice_line_to_irc(pair: tuple[IrcUser, LineUser, str]) -> None:
    irc, line, room = pair
    line.send("hello irc")
    got = irc.expect("hello irc")
    assert got.startswith(mask_prefix(line.nick)) and got.endswith(f"PRIVMSG #{room} :hello irc")
    line.send("/me waves")
    assert irc.expect("waves").endswith(f"PRIVMSG #{room} :\x01ACTION waves\x01")
    line.send(f"/notice #{room} build is red")
    assert irc.expect("build is red").endswith(f"NOTICE #{room} :build is red")


def test_private_messages_both_ways(pair: tuple[IrcUser, LineUser, str]) -> None:
    irc, line, _room = pair
    irc.send(f"PRIVMSG {line.nick} :psst")
    assert line.expect("psst") == f"*{irc.nick}* psst"
    irc.send(f"PRIVMSG {line.nick} :\x01ACTION pokes you\x01")
    assert line.expect("pokes") == f"* {irc.nick} pokes you"
    irc.send(f"NOTICE {line.nick} :quiet")
    assert line.expect("quiet") == f"-{irc.nick}- quiet"
    line.send(f"/msg {irc.nick} hi back")
    got = irc.expect("hi back")
    assert got.startswith(mask_prefix(line.nick)) and got.endswith(f"PRIVMSG {irc.nick} :hi back")
    line.send(f"/notice {irc.nick} noted")
    assert irc.expect("noted").endswith(f"NOTICE {irc.nick} :noted")


# -- membership --------------------------------------------------------------------------------


def test_join_and_part_with_reason(server: ServerProcess) -> None:
    n = next(_ids)
    irc = IrcUser(server.ports["irc"], f"irc{n}")
    line = LineUser(server.ports["line"], f"line{n}")
    room = f"room{n}"
    irc.join(room)
    line.join(room)
    assert irc.expect("JOIN").startswith(mask_prefix(line.nick))
    line.send(f"/part #{room} gone fishing")
    assert irc.expect("PART").endswith(f"PART #{room} :gone fishing")
    line.join(room)
    irc.expect("JOIN")
    irc.send(f"PART #{room} :see you")
    assert line.expect("left") == f"-!- {irc.nick} left #{room} (see you)"
    irc.send(f"JOIN #{room}")
    assert line.expect("joined") == f"-!- {irc.nick} joined #{room}"


def test_quit_with_reason_both_ways(server: ServerProcess) -> None:
    n = next(_ids)
    irc = IrcUser(server.ports["irc"], f"irc{n}")
    line = LineUser(server.ports["line"], f"line{n}")
    other = LineUser(server.ports["line"], f"other{n}")
    room = f"room{n}"
    irc.join(room)
    line.join(room)
    other.join(room)
    irc.send("QUIT :off to bed")
    got = line.expect("quit")
    assert got.startswith(f"-!- {irc.nick} quit (") and "off to bed" in got
    watcher = IrcUser(server.ports["irc"], f"watch{n}")
    watcher.join(room)
    other.send("/quit lunch time")
    got = watcher.expect("QUIT")
    assert got.startswith(mask_prefix(other.nick)) and "lunch time" in got


def test_nick_change_both_ways(pair: tuple[IrcUser, LineUser, str]) -> None:
    irc, line, _room = pair
    old = irc.nick
    irc.send(f"NICK {old}x")
    assert line.expect("known as") == f"-!- {old} is now known as {old}x"
    line.send(f"/nick {line.nick}y")
    got = irc.expect(f"{mask_prefix(line.nick)}")
    assert got.startswith(mask_prefix(line.nick)) and got.split()[-1].lstrip(":") == f"{line.nick}y"


# -- room state --------------------------------------------------------------------------------


def test_topic_both_ways(pair: tuple[IrcUser, LineUser, str]) -> None:
    irc, line, room = pair
    irc.send(f"TOPIC #{room} :release on friday")
    assert line.expect("topic") == (
        f"-!- {irc.nick} changed the topic of #{room} to: release on friday"
    )
    irc.send(f"MODE #{room} -t")
    line.expect("sets mode")
    line.send(f"/topic #{room} release on monday")
    got = irc.expect("monday")
    assert got.startswith(mask_prefix(line.nick))
    assert got.endswith(f"TOPIC #{room} :release on monday")


def test_kick_with_reason_both_ways(pair: tuple[IrcUser, LineUser, str]) -> None:
    irc, line, room = pair
    irc.send(f"KICK #{room} {line.nick} :too loud")
    assert line.expect("kicked") == f"*** {irc.nick} kicked you from #{room} (too loud)"
    irc.expect("KICK")
    # Now the line user makes a room and kicks the IRC user out of it.
    other = room + "b"
    line.join(other)
    irc.join(other)
    line.expect("joined")
    line.send(f"/kick #{other} {irc.nick} your turn")
    got = irc.expect("KICK")
    assert got.startswith(mask_prefix(line.nick)) and got.endswith(
        f"KICK #{other} {irc.nick} :your turn"
    )


def test_ban_both_ways(pair: tuple[IrcUser, LineUser, str]) -> None:
    irc, line, room = pair
    irc.send(f"MODE #{room} +b {line.nick}!*@*")
    assert line.expect("sets mode") == f"-!- {irc.nick} sets mode +ban {line.nick}!*@* on #{room}"
    line.send("banned words")
    assert line.expect("!!!").startswith("!!! ")
    irc.send(f"MODE #{room} -b {line.nick}!*@*")
    line.expect("-ban")
    irc.send(f"MODE #{room} +o {line.nick}")
    line.expect("+op")
    line.send(f"/ban #{room} troll")
    got = irc.expect("troll")
    assert got.startswith(mask_prefix(line.nick)) and got.endswith(f"MODE #{room} +b troll!*@*")


def test_op_and_voice_both_ways(pair: tuple[IrcUser, LineUser, str]) -> None:
    irc, line, room = pair
    irc.send(f"MODE #{room} +v {line.nick}")
    assert line.expect("sets mode") == f"-!- {irc.nick} sets mode +voice {line.nick} on #{room}"
    irc.send(f"MODE #{room} +o {line.nick}")
    assert line.expect("sets mode") == f"-!- {irc.nick} sets mode +op {line.nick} on #{room}"
    irc.expect("+o")
    line.send(f"/voice #{room} {irc.nick}")
    got = irc.expect("MODE")
    assert got.startswith(mask_prefix(line.nick)) and got.endswith(f"MODE #{room} +v {irc.nick}")
    line.send(f"/deop #{room} {irc.nick}")
    assert irc.expect("MODE").endswith(f"MODE #{room} -o {irc.nick}")
    line.send(f"/mode #{room} +moderated")
    assert irc.expect("MODE").endswith(f"MODE #{room} +m")


def test_away_both_ways(pair: tuple[IrcUser, LineUser, str]) -> None:
    irc, line, _room = pair
    irc.send("AWAY :at lunch")
    assert line.expect("away") == f"-!- {irc.nick} is away: at lunch"
    irc.send("AWAY")
    assert line.expect("back") == f"-!- {irc.nick} is back"
    line.send("/away in a meeting")
    got = irc.expect("AWAY")
    assert got.startswith(mask_prefix(line.nick)) and got.endswith("AWAY :in a meeting")
    irc.send(f"WHOIS {line.nick}")
    assert irc.expect(" 301 ").endswith(f"{line.nick} :in a meeting")
    line.send("/away")
    assert irc.expect("AWAY").endswith("AWAY")


def test_invite_both_ways(pair: tuple[IrcUser, LineUser, str]) -> None:
    irc, line, room = pair
    secret = room + "i"
    irc.join(secret)
    irc.send(f"MODE #{secret} +i")
    irc.send(f"INVITE {line.nick} #{secret}")
    irc.expect(" 341 ")
    assert line.expect("invites you") == f"-!- {irc.nick} invites you to #{secret}"
    line.join(secret)
    assert irc.expect("JOIN").startswith(mask_prefix(line.nick))
    lobby = room + "l"
    line.join(lobby)
    line.send(f"/invite {irc.nick} {lobby}")
    got = irc.expect("INVITE")
    assert got.startswith(mask_prefix(line.nick)) and got.endswith(f"INVITE {irc.nick} #{lobby}")
