"""NickServ INVITE and UNINVITE: server operators let a nick be registered by invitation.

Over StringTransport: the replies, the optional days and the note when registration is not by
invitation.  On the real server with ``[chat] registration = "invite"``: an uninvited
REGISTER is refused, and the operator's INVITE lets the user register that nick.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest

from chatserver.config import OperatorConfig
from chatserver.core.settings import CoreSettings
from chatserver.passwords import hash_password
from tests.irc.conftest import Client, IrcWorld
from tests.ops.helpers import OPER_PASSWORD, OpsServer, operators_toml
from tests.support.server import LineClient

OPERATORS = (OperatorConfig("root", hash_password("hunter22", n=16, r=1, p=1)),)
NS = "NickServ!NickServ@irc.test"
DAY = 86400


def make_world(registration: str) -> IrcWorld:
    return IrcWorld(
        operators=OPERATORS,
        settings=CoreSettings(
            server_name="irc.test", scram_iterations=4096, registration=registration
        ),
    )


def said(client: Client, line: str) -> list[str]:
    return [m.params[-1] for m in client.ask(line) if m.command == "NOTICE" and m.source == NS]


def _date(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def oper(world: IrcWorld, nick: str = "boss") -> Client:
    client = world.client(nick)
    client.send("OPER root hunter22")
    assert client.conn.is_oper
    return client


def test_invite_and_uninvite_over_string_transport() -> None:
    world = make_world("invite")
    boss = oper(world)
    now = world.clock.seconds()
    assert said(boss, "NS INVITE bob") == [
        f"bob may be registered once, until {_date(now + 7 * DAY)}."
    ]
    assert said(boss, "NS INVITE carol 0.5") == [
        f"carol may be registered once, until {_date(now + DAY / 2)}."
    ]
    assert said(boss, "NS INVITE dave soon") == [
        "INVITE failed: days must be a number, such as 7 or 0.5"
    ]
    assert said(boss, "NS INVITE") == ["Syntax: INVITE <nick> [days]"]
    assert said(boss, "NS UNINVITE carol") == ["The invitation to register carol is withdrawn."]
    assert said(boss, "NS UNINVITE carol") == [
        "UNINVITE failed: carol has no invitation to register"
    ]
    carol = world.client("carol")
    assert said(carol, "NS REGISTER secret123") == [
        "REGISTER failed: registration on this server is by invitation; ask an operator"
    ]
    bob = world.client("bob")
    assert said(bob, "NS REGISTER secret123") == ["Account bob registered; you are now logged in."]
    assert said(boss, "NS INVITE bob") == ["INVITE failed: bob is already registered"]


def test_only_server_operators_invite() -> None:
    world = make_world("invite")
    alice = world.client("alice")
    assert said(alice, "NS INVITE bob") == ["INVITE failed: only server operators may do that"]
    assert said(alice, "NS UNINVITE bob") == ["UNINVITE failed: only server operators may do that"]


@pytest.mark.parametrize(
    ("registration", "note"),
    [
        ("open", "Registration is open on this server: anyone may register any free nick anyway."),
        (
            "closed",
            'Registration is closed on this server: the invitation counts once it is "invite".',
        ),
    ],
)
def test_invite_says_when_registration_is_not_by_invitation(registration: str, note: str) -> None:
    world = make_world(registration)
    boss = oper(world)
    assert said(boss, "NS INVITE bob")[1:] == [note]


# -- the real server ---------------------------------------------------------------------------


class Irc(LineClient):
    def __init__(self, port: int, nick: str) -> None:
        super().__init__(port)
        self.send(f"NICK {nick}")
        self.send(f"USER {nick} 0 * :{nick}")
        self.expect(f" 001 {nick} ")

    def nickserv(self, text: str) -> str:
        self.send(f"PRIVMSG NickServ :{text}")
        return self.expect(":NickServ!").split(" :", 1)[1]


def test_registration_by_invitation_on_the_real_server(tmp_path: Path) -> None:
    server = OpsServer(
        tmp_path,
        protocols=("irc",),
        overrides={"chat": {"registration": "invite"}},
        extra=operators_toml(),
    ).start()
    try:
        port = server.ports["irc"]
        newbie = Irc(port, "newbie")
        newbie.send("REGISTER * * newbie-pw")
        assert newbie.expect("FAIL REGISTER").endswith(
            "newbie :registration on this server is by invitation; ask an operator"
        )
        assert newbie.nickserv("REGISTER newbie-pw") == (
            "REGISTER failed: registration on this server is by invitation; ask an operator"
        )
        assert newbie.nickserv("INVITE newbie") == (
            "INVITE failed: only server operators may do that"
        )

        boss = Irc(port, "boss")
        boss.send(f"OPER admin {OPER_PASSWORD}")
        boss.expect(" 381 boss ")
        assert boss.nickserv("INVITE newbie").startswith("newbie may be registered once, until ")
        assert boss.nickserv("INVITE other 1").startswith("other may be registered once")
        assert boss.nickserv("UNINVITE other") == "The invitation to register other is withdrawn."

        newbie.send("REGISTER * * newbie-pw")
        assert newbie.expect("REGISTER ").endswith("REGISTER SUCCESS newbie :Account created")
        other = Irc(port, "other")
        assert other.nickserv("REGISTER other-pw") == (
            "REGISTER failed: registration on this server is by invitation; ask an operator"
        )
        # The invitation was used up by the registration.
        assert boss.nickserv("INVITE newbie") == "INVITE failed: newbie is already registered"
    finally:
        server.stop()
    assert "Traceback" not in server.log()
