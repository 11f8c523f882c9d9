"""KLINE, UNKLINE and STATS k: server bans from IRC operators.

Over StringTransport: the argument forms, refusals and replies.  On the real server: a K-line
disconnects the IRC and line users it matches, refuses new connections, shows in STATS k and
is lifted by UNKLINE.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from chatserver.config import OperatorConfig
from chatserver.core.bans import ServerBan
from chatserver.passwords import hash_password
from protocols.irc.handlers.klines import kline_arguments
from tests.irc.conftest import Client, IrcWorld, commands, last_param, one
from tests.ops.helpers import OPER_PASSWORD, OpsServer, chat, operators_toml
from tests.support.server import LineClient

OPERATORS = (OperatorConfig("root", hash_password("hunter22", n=16, r=1, p=1)),)
NO_PRIVILEGES = "Permission Denied- You're not an IRC operator"


@pytest.fixture
def world() -> IrcWorld:
    return IrcWorld(operators=OPERATORS)


def oper(world: IrcWorld, nick: str = "boss") -> Client:
    client = world.client(nick)
    assert "381" in commands(client.ask("OPER root hunter22"))
    return client


def notices(client: Client, line: str) -> list[str]:
    return [m.params[-1] for m in client.ask(line) if m.command == "NOTICE"]


# -- arguments ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        (("*!*@192.0.2.9",), (None, "*!*@192.0.2.9", "")),
        (("*!*@192.0.2.9", "spam"), (None, "*!*@192.0.2.9", "spam")),
        (("*!*@192.0.2.9", "spam", "again"), (None, "*!*@192.0.2.9", "spam again")),
        (("60", "bad@host", "spam"), ("60", "bad@host", "spam")),
        (("0", "bad@host"), ("0", "bad@host", "")),
        (("bad@host", "1h30m", "spam"), ("1h30m", "bad@host", "spam")),
        (("bad@host", "3600", "spam"), ("3600", "bad@host", "spam")),
        # Two words and the second a number: a mask and its reason, as ircds read it.
        (("bad@host", "42"), (None, "bad@host", "42")),
    ],
)
def test_kline_arguments(params: tuple[str, ...], expected: tuple[str | None, str, str]) -> None:
    assert kline_arguments(params) == expected


# -- over StringTransport ----------------------------------------------------------------------


def test_non_operators_get_481(world: IrcWorld) -> None:
    alice = world.client("alice")
    for line in ("KLINE *!*@192.0.2.9 :spam", "UNKLINE *!*@192.0.2.9", "STATS k"):
        out = alice.ask(line)
        assert commands(out) == ["481"]
        assert last_param(out[0]) == NO_PRIVILEGES
    assert world.service.server_bans == []


def test_kline_disconnects_and_confirms(world: IrcWorld) -> None:
    boss = oper(world)
    spammer = world.client("spammer")
    bystander = world.client("bystander")
    said = notices(boss, "KLINE spam* :flooding #dev")
    assert said == [
        "*** Added K-line on spam*!*@*: flooding #dev",
        "*** K-line on spam*!*@* disconnected: spammer",
    ]
    assert spammer.closed
    error = one(spammer.take(), "ERROR")
    assert "You are banned from this server: flooding #dev" in last_param(error)
    assert not bystander.closed
    ban = world.service.server_bans[0]
    assert (ban.mask, ban.reason, ban.set_by) == ("spam*!*@*", "flooding #dev", "boss")
    # The operator's own mask is never locked out.
    assert notices(boss, "KLINE boss")[0] == "*** Added K-line on boss!*@*"
    assert not boss.closed


def test_kline_forms_and_durations(world: IrcWorld) -> None:
    boss = oper(world)
    assert notices(boss, "KLINE 0 *@203.0.113.0/24 :permanent")[0] == (
        "*** Added K-line on *!*@203.0.113.0/24: permanent"
    )
    assert notices(boss, "KLINE $a:Mallory :abuse")[0] == "*** Added K-line on $a:mallory: abuse"
    for line in ("KLINE 60 *@198.51.100.1 :spam", "KLINE *@198.51.100.1 1d :spam"):
        assert notices(boss, line) == [
            "*** K-line on *@198.51.100.1 not added: K-lines here do not expire; leave out the"
            " duration for a permanent one (UNKLINE lifts it)"
        ]
    assert notices(boss, "KLINE *!*@* :everyone") == [
        "*** K-line on *!*@* not added: refusing a ban that matches everyone"
    ]
    assert [b.mask for b in world.service.server_bans] == ["*!*@203.0.113.0/24", "$a:mallory"]


def test_unkline(world: IrcWorld) -> None:
    world.service.set_config_bans([ServerBan("*!*@192.0.2.200", "from the file", "config")])
    boss = oper(world)
    boss.send("KLINE *!*@198.51.100.1 :spam")
    assert notices(boss, "UNKLINE *@198.51.100.1") == ["*** Removed K-line on *!*@198.51.100.1"]
    assert notices(boss, "UNKLINE *@198.51.100.1") == [
        "*** K-line on *@198.51.100.1 not removed: no server ban on *!*@198.51.100.1"
    ]
    assert notices(boss, "UNKLINE *!*@192.0.2.200") == [
        "*** K-line on *!*@192.0.2.200 not removed: *!*@192.0.2.200 is set in the"
        " configuration file: remove it there"
    ]
    assert commands(boss.ask("UNKLINE")) == ["461"]


def test_stats_k(world: IrcWorld) -> None:
    world.service.set_config_bans([ServerBan("*!*@192.0.2.200", "", "config")])
    boss = oper(world)
    boss.send("KLINE spam* :flooding")
    out = boss.ask("STATS k")
    assert commands(out) == ["216", "216", "219"]
    assert out[0].params == (
        "boss",
        "K",
        "*!*@192.0.2.200",
        "0",
        "0",
        "<config>",
        "No reason given",
    )
    set_at = str(int(world.clock.seconds()))
    assert out[1].params == ("boss", "K", "spam*!*@*", set_at, "0", "boss", "flooding")
    assert out[2].params == ("boss", "k", "End of /STATS report")
    assert commands(boss.ask(f"STATS K {world.server.name}")) == ["216", "216", "219"]


def test_stats_other_queries_and_servers(world: IrcWorld) -> None:
    alice = world.client("alice")
    out = alice.ask("STATS u")
    assert commands(out) == ["219"]
    assert out[0].params == ("alice", "u", "End of /STATS report")
    assert one(alice.ask("STATS"), "219").params[1] == "*"
    assert commands(alice.ask("STATS k irc.elsewhere")) == ["402"]


# -- the real server ---------------------------------------------------------------------------


class Irc(LineClient):
    """A raw IRC client, registered on construction."""

    def __init__(self, port: int, nick: str) -> None:
        super().__init__(port)
        self.send(f"NICK {nick}")
        self.send(f"USER {nick} 0 * :{nick}")
        self.expect(f" 001 {nick} ")
        self.expect(lambda line: " 376 " in line or " 422 " in line)


def refused(port: int, nick: str) -> list[str]:
    """What a new IRC connection that tries ``nick`` reads before the server closes it."""
    client = LineClient(port)
    try:
        client.send(f"NICK {nick}")
        client.send(f"USER {nick} 0 * :{nick}")
    except OSError:
        pass  # refused before it could send: what it read is what counts
    return client.read_until_closed()


def test_kline_on_the_real_server(tmp_path: Path) -> None:
    server = OpsServer(tmp_path, protocols=("line", "irc"), extra=operators_toml()).start()
    try:
        irc_port, line_port = server.ports["irc"], server.ports["line"]
        boss = Irc(irc_port, "boss")
        nobody = Irc(irc_port, "nobody")
        for line in ("KLINE spam* :flooding", "UNKLINE spam*", "STATS k"):
            nobody.send(line)
            assert nobody.read_line().endswith(f" 481 nobody :{NO_PRIVILEGES}")

        boss.send(f"OPER admin {OPER_PASSWORD}")
        boss.expect(" 381 boss ")
        spam_irc = Irc(irc_port, "spamirc")
        spam_line = chat(line_port, "spamline")
        boss.send("KLINE spam* :flooding")
        assert boss.expect("NOTICE boss").endswith(":*** Added K-line on spam*!*@*: flooding")
        gone = boss.expect("NOTICE boss")
        assert gone.split(" disconnected: ")[1].split() in (
            ["spamirc", "spamline"],
            ["spamline", "spamirc"],
        )
        assert spam_irc.expect("ERROR").endswith("(You are banned from this server: flooding)")
        assert spam_line.expect("Server closing connection") == (
            "-!- Server closing connection: You are banned from this server: flooding"
        )
        answer = refused(irc_port, "spamagain")
        assert any("You are banned from this server: flooding" in ln for ln in answer)

        boss.send("STATS k")
        fields = boss.expect(" 216 ").split()
        assert fields[3:5] + fields[6:] == ["K", "spam*!*@*", "0", "boss", ":flooding"]
        assert abs(int(fields[5]) - time.time()) < 60
        assert boss.read_line().endswith(" 219 boss k :End of /STATS report")

        # A host K-line refuses new connections before they say anything.
        boss.send("KLINE *!*@127.0.0.1 :closed for maintenance")
        boss.expect("Added K-line on *!*@127.0.0.1")
        assert boss.expect("NOTICE boss").endswith(" disconnected: nobody")
        assert nobody.expect("ERROR").endswith(
            "(You are banned from this server: closed for maintenance)"
        )
        with socket.create_connection(("127.0.0.1", irc_port), timeout=5) as sock:
            sock.settimeout(5)
            data = b""
            while chunk := sock.recv(4096):
                data += chunk
        assert b"ERROR :Closing Link" in data and b"closed for maintenance" in data

        boss.send("UNKLINE *!*@127.0.0.1")
        assert boss.expect("NOTICE boss").endswith(":*** Removed K-line on *!*@127.0.0.1")
        boss.send("UNKLINE spam*")
        assert boss.expect("NOTICE boss").endswith(":*** Removed K-line on spam*!*@*")
        Irc(irc_port, "spamirc")
        boss.send("STATS k")
        assert boss.read_line().endswith(" 219 boss k :End of /STATS report")
    finally:
        server.stop()
    assert "Traceback" not in server.log()
