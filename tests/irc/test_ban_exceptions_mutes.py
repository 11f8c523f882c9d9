"""Ban exceptions (+e) and mutes ($m: bans) through the real server, on IRC, line chat and
XMPP: a muted user stays in the room but cannot speak from any protocol."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.server import LineClient, ServerProcess
from tests.support.xmpp_client import DOMAIN, SlixmppClient

pytestmark = pytest.mark.timeout(90)

PASSWORD = "correct-horse"
ROOM = f"dev@conference.{DOMAIN}"


def irc_user(server: ServerProcess, nick: str, ident: str | None = None) -> LineClient:
    client = LineClient(server.ports["irc"])
    client.send(f"NICK {nick}")
    client.send(f"USER {ident or nick} 0 * :{nick}")
    client.expect(f" 001 {nick} ")
    return client


def line_user(server: ServerProcess, nick: str) -> LineClient:
    client = LineClient(server.ports["line"])
    client.expect("Choose a nick")
    client.send(nick)
    client.send("/format json")
    client.expect(lambda line: line.startswith("{"))
    return client


def line_expect(client: LineClient, **fields: Any) -> dict[str, Any]:
    def test(line: str) -> bool:
        if not line.startswith("{"):
            return False
        obj = json.loads(line)
        return all(obj.get(k) == v for k, v in fields.items())

    return json.loads(client.expect(test))


@pytest.fixture
def server(make_server: Callable[..., ServerProcess]) -> Iterator[ServerProcess]:
    yield make_server(protocols=("line", "irc", "xmpp"))


def test_ban_exception_lets_a_banned_user_join(server: ServerProcess) -> None:
    op = irc_user(server, "chanop")
    op.send("JOIN #dev")
    op.expect(" 366 ")
    op.send("MODE #dev +b ba*!*@*")
    op.expect("MODE #dev +b ba*!*@*")
    bar = irc_user(server, "bar")
    bar.send("JOIN #dev")
    bar.expect(" 474 bar #dev ")
    op.send("MODE #dev +e *ar!*@*")
    op.expect("MODE #dev +e *ar!*@*")
    op.send("MODE #dev e")
    assert op.expect(" 348 ").replace(":", "").split()[3:5] == ["#dev", "*ar!*@*"]
    op.expect(" 349 chanop #dev ")
    bar.send("JOIN #dev")
    bar.expect(":bar!")
    # Line chat sees the exception as a mode word and may lift it.
    lina = line_user(server, "lina")
    lina.send('{"cmd": "join", "room": "dev"}')
    line_expect(lina, type="join", room="dev")
    op.send("MODE #dev +o lina")
    line_expect(lina, type="mode")
    lina.send('{"cmd": "mode", "room": "dev", "changes": "-except *ar!*@*"}')
    op.expect("MODE #dev -e *ar!*@*")


def test_isupport_advertises_exceptions_and_mutes(server: ServerProcess) -> None:
    client = LineClient(server.ports["irc"])
    client.send("NICK chk")
    client.send("USER chk 0 * :chk")
    tokens = ""
    while " 001 " not in tokens and " 376 " not in tokens and " 422 " not in tokens:
        line = client.expect(lambda _: True)
        if " 005 " in line:
            tokens += line
        if " 376 " in line or " 422 " in line:
            break
    assert "EXCEPTS=e" in tokens and "EXTBAN=$,am" in tokens, tokens
    assert "CHANMODES=Ibe," in tokens, tokens


def test_a_mute_silences_on_every_protocol_and_voice_or_exception_lifts_it(
    server: ServerProcess,
) -> None:
    server.create_account("xena", PASSWORD)
    op = irc_user(server, "chanop")
    op.send("JOIN #dev")
    op.expect(" 366 ")
    for mask in ("$m:bar!*@*", "$m:lina!*@*", "$m:$a:xena"):
        op.send(f"MODE #dev +b {mask}")
        op.expect(f"MODE #dev +b {mask}")

    # IRC: joins (a mute is no ban), cannot speak: 404, nobody sees the message.
    bar = irc_user(server, "bar", ident="evan")
    bar.send("JOIN #dev")
    bar.expect(" 366 bar #dev ")
    bar.send("PRIVMSG #dev :hi from bar")
    assert "muted" in bar.expect(" 404 bar #dev ")

    # Line chat: the same refusal.
    lina = line_user(server, "lina")
    lina.send('{"cmd": "join", "room": "dev"}')
    line_expect(lina, type="join", room="dev", **{"from": "lina"})
    lina.send('{"cmd": "say", "room": "dev", "text": "hi from lina"}')
    error = line_expect(lina, type="error")
    assert "muted" in json.dumps(error)

    # XMPP: the groupchat message comes back as an error; the room never sees it.
    xena = SlixmppClient(
        server.ports["xmpp"],
        f"xena@{DOMAIN}/test",
        PASSWORD,
        plugins=("xep_0030", "xep_0045"),
        events=("message_error",),
    )
    try:
        assert xena.logged_in
        from slixmpp import JID

        xena.do(xena.xmpp.send_presence)
        xena.call(xena.muc.join_muc_wait(JID(ROOM), "xena", maxstanzas=0))
        op.expect(":xena!")
        xena.do(xena.xmpp.send_message, mto=ROOM, mbody="hi from xena", mtype="groupchat")
        xena.expect_event("message_error", lambda msg: msg["from"].bare == ROOM)
    finally:
        xena.close()

    # Nothing from the muted attempts reached the room.
    seen: list[str] = []
    op.send("PING :end")
    op.expect(lambda line: seen.append(line) or "PONG" in line)
    assert not any("hi from" in line for line in seen), seen

    # Voice lifts the mute; so does a mute exception.
    op.send("MODE #dev +v bar")
    bar.expect("MODE #dev +v bar")
    bar.send("PRIVMSG #dev :voiced now")
    op.expect("PRIVMSG #dev :voiced now")
    op.send("MODE #dev +e $m:*!*@*")
    op.expect("MODE #dev +e $m:*!*@*")
    lina.send('{"cmd": "say", "room": "dev", "text": "excepted now"}')
    op.expect("PRIVMSG #dev :excepted now")


def test_exceptions_and_mutes_of_a_registered_room_survive_a_restart(
    server: ServerProcess,
) -> None:
    server.create_account("owner", PASSWORD)
    op = irc_user(server, "boss")
    op.send(f"PRIVMSG NickServ :IDENTIFY owner {PASSWORD}")
    op.expect(" 900 ")
    op.send("JOIN #keep")
    op.expect(" 366 ")
    op.send("PRIVMSG ChanServ :REGISTER #keep")
    op.expect("registered")
    op.send("MODE #keep +eb *!*@exempt.example $m:noisy!*@*")
    op.expect("MODE #keep +eb")
    op.close()
    server.restart()
    again = irc_user(server, "someone")
    again.send("MODE #keep be")
    assert "$m:noisy!*@*" in again.expect(" 367 ")
    again.expect(" 368 ")
    assert "*!*@exempt.example" in again.expect(" 348 ")
    again.expect(" 349 ")
