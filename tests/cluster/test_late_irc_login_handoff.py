"""An IRC client that logs in after registration (SASL PLAIN or SCRAM-SHA-256 with the
``sasl`` capability, NickServ IDENTIFY) to an account whose user is connected on another node
is handed off to that node, and ends as the same login ends on the user's own node: its guest
user quits (others see it go), the client is shown leaving its rooms, its nick changing and
the user's rooms, then the login's reply, and it is a second client of the user from then
on.  Through two real nodes, a private Redis and a shared PostgreSQL, with raw IRC over TCP
and TLS, the transcripts of the handed-off client and of the users around it compared line
for line with the same steps on the user's node."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import pytest
import scramp

from tests.cluster.test_accounts import PASSWORD, b64, lease_of, shared
from tests.cluster.test_cluster import eventually, irc, try_nick
from tests.cluster.test_irc_handoff import (
    STAND_INS,
    TlsClient,
    _unb64,
    drain,
    normalized,
    plain,
    user_in_rooms,
)
from tests.support.postgres import PostgresServer
from tests.support.redis import RedisServer
from tests.support.server import LineClient, ServerProcess

pytestmark = pytest.mark.timeout(240)

Node = Callable[..., ServerProcess]

# As irctest and clients ask for them (cap-notify comes with CAP LS 302 anyway).
GUEST_CAPS = (
    "sasl",
    "cap-notify",
    "echo-message",
    "labeled-response",
    "batch",
    "server-time",
    "message-tags",
)
# The run's names: the account and its user, the third and fourth users, the guest's nick,
# the user's rooms and the guest's own room.
LATE_STAND_INS = {**STAND_INS, "d": "FOURTH", "g": "GUEST", "g1": "GROOM"}
# How the guest logs in: the lines up to the one that completes the login (labeled), and
# what the reply to that one ends with.
HOWS = ("plain", "scram", "nickserv", "ns")
GUEST_HOST = re.compile(r"GUEST!GUEST@[0-9a-f]+\.cloak")
SCRAM_PAYLOAD = re.compile(r"AUTHENTICATE [A-Za-z0-9/+=]{2,}$")


def guest(node: ServerProcess, nick: str, *, tls: bool = False) -> LineClient:
    """A registered IRC client without an account, with GUEST_CAPS."""
    client = TlsClient(node.ports["irc_tls"]) if tls else LineClient(node.ports["irc"])
    for line in ("CAP LS 302", f"NICK {nick}", f"USER {nick} 0 * :{nick}"):
        client.send(line)
    client.send("CAP REQ :" + " ".join(GUEST_CAPS))
    client.expect(" ACK ")
    client.send("CAP END")
    client.expect(f" 001 {nick} ")
    return client


def log_in_late(client: LineClient, how: str, account: str, then: str) -> None:
    """The registered ``client`` logs in to ``account``, the line ``then`` right behind the
    one that completes the login; returns once the login's reply is read."""
    if how == "plain":
        client.send("@label=au1 AUTHENTICATE PLAIN")
        client.expect("AUTHENTICATE +")
        client.send(f"@label=au2 AUTHENTICATE {plain(account)}\r\n{then}")
        client.expect(" 903 ")
    elif how == "scram":
        scram = scramp.ScramClient(["SCRAM-SHA-256"], account, PASSWORD)
        client.send("AUTHENTICATE SCRAM-SHA-256")
        client.expect("AUTHENTICATE +")
        client.send("AUTHENTICATE " + b64(scram.get_client_first()))
        scram.set_server_first(_unb64(client.expect("AUTHENTICATE ").rsplit(" ", 1)[1]))
        client.send("AUTHENTICATE " + b64(scram.get_client_final()))
        scram.set_server_final(_unb64(client.expect("AUTHENTICATE ").rsplit(" ", 1)[1]))
        client.send(f"@label=au3 AUTHENTICATE +\r\n{then}")
        client.expect(" 903 ")
    else:
        command = "PRIVMSG NickServ :IDENTIFY" if how == "nickserv" else "NS IDENTIFY"
        client.send(f"@label=ns1 {command} {account} {PASSWORD}\r\n{then}")
        client.expect(f"You are now logged in as {account}.")


class Cast:
    """The four clients of a story (``second`` the one that logs in), and how each step
    ends: every client still open has read all that step caused."""

    first: Any
    second: Any
    third: Any
    fourth: Any
    closed: set[str]

    def clients(self) -> dict[str, Any]:
        return {
            "second": self.second,
            "first": self.first,
            "third": self.third,
            "fourth": self.fourth,
        }

    def sync(self, client: Any, tag: str) -> None:
        """Read what ``client`` was sent before the answer to a ping tagged ``tag``."""
        raise NotImplementedError

    def settle(self, step: str) -> None:
        for who, client in self.clients().items():
            if who not in self.closed:
                self.sync(client, f"{step}-{who}")

    def exchange(self, step: str, act: Callable[[], object], *hearers: Any) -> None:
        """``act``, whose last words each of ``hearers`` then reads, and the step ends."""
        act()
        text = STEP_WORDS[step]
        for client in hearers:
            client.expect(text)
        self.settle(step)


# What each step's hearers read last.
STEP_WORDS = {
    "login": "right after",
    "second-says": "from the second",
    "first-says": "from the first",
    "third-whispers": "psst",
    "second-whispers": "hello from the second",
}


class LateStory(Cast):
    """A user (``first``, on node a) in two rooms; a guest registered on ``guest_node`` in a
    room of its own and in one of the user's, watching the fourth user; the third user (node
    b) and the fourth (node a) in the guest's room.  The guest logs in to the user's account,
    and they all talk."""

    def __init__(
        self,
        a: ServerProcess,
        b: ServerProcess,
        guest_node: ServerProcess,
        name: str,
        how: str,
        *,
        tls: bool = False,
    ) -> None:
        self.name, self.how, self.guest_node = name, how, guest_node
        self.closed: set[str] = set()
        self.first = user_in_rooms(a, name)
        self.third = irc(b, f"{name}c")
        self.fourth = irc(a, f"{name}d")
        # Each joins a room once its node knows who is in it already (so that nobody is
        # made its operator in one run and not in the other).
        join_after(self.third, f"#{name}r", name)
        join_after(self.third, f"#{name}g1", None)
        join_after(self.fourth, f"#{name}g1", f"{name}c")
        self.second = guest(guest_node, f"{name}g", tls=tls)
        self.second.send(f"MONITOR + {name}d")
        self.second.expect(" 730 ")
        for suffix in ("g1", "r"):
            self.second.send(f"JOIN #{name}{suffix}")
            self.second.expect(f" 366 {name}g #{name}{suffix} ")
        # Everyone knows everyone before the story starts: the guest's joins reached both
        # nodes, and the guest's node knows the user (its rooms' members).
        self.first.expect(f":{name}g!")
        self.fourth.expect(f":{name}g!")
        self.third.expect(lambda t: t.startswith(f":{name}g!") and f"#{name}g1" in t)
        self.third.expect(lambda t: t.startswith(f":{name}g!") and f"#{name}r" in t)

        eventually(
            lambda: f"@{name}" in members(self.second, f"#{name}r2"),
            10,
            "the guest's node knows the user",
        )
        self.settle("setup")
        self.marks = {who: len(c.seen) for who, c in self.clients().items()}

    def sync(self, client: Any, tag: str) -> None:
        drain(client, tag)

    def run(self) -> None:
        name, first, second, third = self.name, self.first, self.second, self.third
        then = f"PRIVMSG #{name}r :right after"
        self.exchange("login", lambda: log_in_late(second, self.how, name, then), first, third)
        room, user = f"PRIVMSG #{name}r :", f"PRIVMSG {name} :"
        self.exchange("second-says", lambda: second.send(room + "from the second"), first, third)
        self.exchange("first-says", lambda: first.send(room + "from the first"), second, third)
        self.exchange("third-whispers", lambda: third.send(user + "psst"), first, second)
        whisper = f"@label=q1 PRIVMSG {name}c :hello from the second"
        self.exchange("second-whispers", lambda: second.send(whisper), third)
        # The guest's MONITOR list came with it.
        self.fourth.send("QUIT :fourth goes")
        self.fourth.read_until_closed()
        self.closed.add("fourth")
        self.second.expect(f" 731 {name} :{name}d")
        self.settle("fourth-quit")
        self.second.send("QUIT :bye")
        self.second.read_until_closed()
        self.closed.add("second")
        self.third.send(f"PRIVMSG #{name}r :after the quit")
        self.first.expect("after the quit")
        self.settle("second-quit")

    def transcript(self, who: str) -> list[str]:
        client = self.clients()[who]
        lines = normalized(client.seen[self.marks[who] :], self.name, LATE_STAND_INS)
        # The guest's host is a cloak of the address (the single process's key is not the
        # cluster's);
        # SCRAM's server messages hold random nonces and salts.
        return [
            SCRAM_PAYLOAD.sub("AUTHENTICATE PAYLOAD", GUEST_HOST.sub("GUEST!GUEST@GUESTHOST", line))
            for line in lines
        ]


def members(client: LineClient, room: str) -> list[str]:
    """The members of ``room`` as NAMES gives them to ``client`` (with their prefixes)."""
    client.send(f"NAMES {room}")
    found = client.expect(lambda t: " 353 " in t or " 366 " in t)
    if " 353 " not in found:
        return []
    client.expect(" 366 ")
    return found.rsplit(" :", 1)[-1].split()


def join_after(client: LineClient, room: str, member: str | None) -> None:
    """``client`` joins ``room`` once its node knows ``member`` (its operator) there."""
    if member is not None:
        eventually(lambda: f"@{member}" in members(client, room), 10, f"{member} in {room}")
    client.send(f"JOIN {room}")
    client.expect(lambda t: " 366 " in t and f" {room} " in t)


def compare(local: LateStory, handed: LateStory) -> list[str]:
    """Both stories' transcripts, the same for every client; the handed-off client's."""
    for who in ("second", "first", "third", "fourth"):
        assert handed.transcript(who) == local.transcript(who), (handed.how, who)
    return handed.transcript("second")


def test_a_login_after_registration_is_handed_to_the_users_node_and_ends_as_it_does_there(
    make_node: Node, redis: RedisServer, postgres: PostgresServer
) -> None:
    config = shared(postgres)
    a = make_node("a", overrides=config)
    b = make_node("b", overrides=config)
    for how in HOWS:
        local = LateStory(a, b, a, f"zl{how}", how)
        local.run()
        started = time.monotonic()
        handed = LateStory(a, b, b, f"zh{how}", how)
        handed.run()
        print(f"{how}: handed-off story in {time.monotonic() - started:.2f}s")
        second = compare(local, handed)
        # The account stayed with the node of its user.
        assert lease_of(redis, f"zh{how}") == "a"
        # What the transcripts show, said outright.
        assert "PART #GROOM :logged in" in "\n".join(second), second
        assert any(t.startswith(":GUEST!") and t.endswith(" NICK USER") for t in second), second
        assert any(t.startswith(":USER!") and t.endswith("JOIN #ROOM2") for t in second), second
        if how in ("plain", "scram"):
            assert any(" 900 USER " in t for t in second), second
        # Those in its rooms saw the guest quit, once, as on one node.
        for who in ("third", "fourth"):
            gone = [t for t in handed.transcript(who) if t.startswith(":GUEST!") and " QUIT " in t]
            assert len(gone) == 1 and gone[0].endswith(" QUIT :Logged in as USER"), (who, gone)
        assert not [t for t in handed.transcript("first") if " QUIT " in t and "USER!" in t]
        # The guest's nick is free again on both nodes.
        for node in (a, b):
            eventually(
                lambda node=node, nick=f"zh{how}g": "You are" in try_nick(node, nick),
                10,
                "the guest's nick let go",
            )
    # Over TLS (the node that has the socket keeps the TLS), with SCRAM-SHA-256.
    local = LateStory(a, b, a, "zltls", "scram", tls=True)
    local.run()
    handed = LateStory(a, b, b, "zhtls", "scram", tls=True)
    handed.run()
    compare(local, handed)
