"""An IRC client handed to this server by another cluster node: resumed over a relay in the
state it had there, logged in here, then registered as a second client of the account's
user.  The other node's end of the relay is a list of what was sent to it; the cluster tests
(tests/cluster/test_irc_handoff.py) run the same through two real nodes."""

from __future__ import annotations

from typing import Any

from chatserver.config import IrcConfig
from chatserver.passwords import hash_password
from protocols.irc.message import parse
from protocols.transport.handoff import CLOSED, HandoffState
from tests.irc.conftest import IrcWorld, find, one


class OtherNode:
    """The client's node as the relay shows it: what it was sent, and whether it closed."""

    def __init__(self) -> None:
        self.data = b""
        self.closed: str | None = None

    def send(self, data: bytes) -> None:
        self.data += data

    def close(self, reason: str, *, abort: bool = False) -> None:
        self.closed = reason

    def take(self) -> list[Any]:
        lines, self.data = self.data.split(b"\r\n"), b""
        return [parse(line, max_body=1 << 20, max_tags=1 << 20) for line in lines if line]


def state(account: str, pending: bytes, **p: Any) -> HandoffState:
    """What the client's node captured: NICK, USER and caps given, CAP END not yet."""
    return {
        "kind": "irc",
        "account": account,
        "address": "192.0.2.77",
        "host": None,
        "tls": True,
        "ws": False,
        "cert": None,
        "pending": pending,
        "arrival": None,
        "p": {
            "caps": ["batch", "cap-notify", "echo-message", "labeled-response", "sasl"],
            "cap_version": 302,
            "cap_negotiating": True,
            "nick": "asked",
            "refused_nick": None,
            "ident": "someone",
            "realname": "Some One",
            "password_ok": False,
            "gateway_secure": None,
            "label": "au1",
        }
        | p,
    }


def test_a_handed_off_client_logs_in_here_then_registers_as_a_second_client(
    irc: IrcWorld,
) -> None:
    assert irc.service.accounts.create("alice", "secret-pw").called
    first = irc.connect()
    irc.service.login(first.conn.core, "alice")
    first.register("alice")
    first.send("JOIN #r")
    first.take()
    other = OtherNode()
    # The client sent CAP END and a message after its AUTHENTICATE, the last one in part.
    end = irc.service.resume_relay(
        other, state("alice", b"CAP END\r\nPRIVMSG #r :hello from the other no")
    )
    assert end is not None
    out = other.take()
    start, logged_in, success, done = out[:4]
    assert (start.command, start.tags.get("label")) == ("BATCH", "au1")
    assert [m.command for m in (logged_in, success, done)] == ["900", "903", "BATCH"]
    # Registration completes here, as the user (whatever nick the client asked for).
    assert one(out, "001").params[0] == "alice"
    assert one(out, "JOIN").params == ("#r",)
    assert one(out, "366")
    conn = end.protocol
    assert conn.tls and conn.address == "192.0.2.77"
    # The rest of the partial line comes: the message is said, and echoed (echo-message).
    end.received(b"de\r\n")
    assert one(first.take(), "PRIVMSG").params == ("#r", "hello from the other node")
    assert one(other.take(), "PRIVMSG").params == ("#r", "hello from the other node")
    first.send("PRIVMSG #r :from the first")
    assert one(other.take(), "PRIVMSG").params == ("#r", "from the first")
    # The socket closes on the other node: the user stays, with its first connection.
    end.ended(CLOSED, "Connection closed")
    assert conn.core is None
    assert [c.client for c in first.user.connections] == [first.conn]
    assert not find(first.take(), "QUIT")


def test_a_login_refused_here_is_answered_over_the_relay(irc: IrcWorld) -> None:
    # A K-line on the account, here, on the node that logs the client in.
    irc.service.ban("$a:mallory", "not here", by="oper")
    other = OtherNode()
    end = irc.service.resume_relay(other, state("mallory", b"CAP END\r\n"))
    assert end is not None
    out = other.take()
    assert not find(out, "903") and not find(out, "001")
    assert "not here" in one(out, "ERROR").params[0]
    assert other.closed is not None


def test_what_a_web_gateway_said_on_the_other_node_holds_here(irc: IrcWorld) -> None:
    assert irc.service.accounts.create("gina", "secret-pw").called
    other = OtherNode()
    # WEBIRC named 192.0.2.77 there, without "secure": the user's own hop was plain, so the
    # connection is not secure, over TLS to the gateway or not.
    end = irc.service.resume_relay(other, state("gina", b"CAP END\r\n", gateway_secure=False))
    assert end is not None
    conn = end.protocol
    assert one(other.take(), "001").params[0] == "asked"
    assert conn.address == "192.0.2.77" and conn.tls and not conn.secure
    assert conn.user.host == irc.service.cloak("192.0.2.77")


def test_a_server_password_given_on_the_other_node_counts_here(make_irc: Any) -> None:
    world = make_irc(
        config=IrcConfig(flood_burst=0, plaintext_passwords=True, password=hash_password("pw"))
    )
    assert world.service.accounts.create("hal", "secret-pw").called
    # PASS matched there: registration completes here; without it, 464 as for any client.
    for given, answer in ((True, "001"), (False, "464")):
        other = OtherNode()
        world.service.resume_relay(other, state("hal", b"CAP END\r\n", password_ok=given))
        assert find(other.take(), answer), (given, answer)
