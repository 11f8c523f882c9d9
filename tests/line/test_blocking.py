"""The account's one block list from line chat (/block, /unblock) and IRC (NickServ BLOCK,
UNBLOCK), through the real server."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.support.server import LineClient, ServerProcess


def irc_user(server: ServerProcess, nick: str) -> LineClient:
    irc = LineClient(server.ports["irc"])
    irc.send(f"NICK {nick}")
    irc.send("USER u 0 * :IRC User")
    irc.expect(f" 001 {nick} ")
    irc.expect(lambda line: " 376 " in line or " 422 " in line)
    return irc


def line_user(server: ServerProcess, nick: str) -> LineClient:
    line = LineClient(server.ports["line"])
    line.expect("*** Choose a nick:")
    line.send(nick)
    line.expect(f"*** You are {nick}.")
    return line


@pytest.mark.timeout(60)
def test_block_from_line_and_irc(make_server: Callable[..., ServerProcess]) -> None:
    server = make_server(protocols=("line", "irc"))
    lina = line_user(server, "lina")
    lina.send("/block mallory")
    assert "log in to an account" in lina.expect("log in")
    lina.send("/register goodpassword1")
    lina.expect("lina is now registered")
    lina.send("/block mallory")
    lina.expect("*** you block mallory")
    lina.send("/block")
    lina.expect("*** you block: mallory")

    mallory = irc_user(server, "mallory")
    carol = irc_user(server, "carol")
    mallory.send("PRIVMSG lina :spam")
    carol.send("PRIVMSG lina :hello")
    # What lina sees next is carol's message: mallory's never came.
    assert lina.expect("hello") == "*carol* hello"

    # IRC users manage the same kind of list through NickServ.
    carol.send("PRIVMSG NickServ :REGISTER goodpassword2")
    carol.expect("registered")
    carol.send("PRIVMSG NickServ :BLOCK lina")
    assert "You block lina" in carol.expect("You block")
    lina.send("/msg carol are you there?")
    carol.send("PRIVMSG NickServ :BLOCK")
    assert carol.expect("You block").endswith("You block: lina")
    carol.send("PRIVMSG NickServ :UNBLOCK *")
    carol.expect("You no longer block lina")
    lina.send("/msg carol now?")
    # The first message was dropped: the next PRIVMSG carol gets is the second.
    assert carol.expect("PRIVMSG carol").endswith(":now?")

    lina.send("/unblock mallory")
    lina.expect("*** you no longer block mallory")
    mallory.send("PRIVMSG lina :again")
    assert lina.expect("again") == "*mallory* again"
    for c in (lina, mallory, carol):
        c.close()
