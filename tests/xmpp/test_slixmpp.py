"""The real server with slixmpp as a real XMPP client: STARTTLS and SCRAM-SHA-256, rosters and
subscriptions, and chat with a line-chat user.

slixmpp runs on an asyncio loop in a thread of its own; each call below waits for its result.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.server import LineClient, ServerProcess
from tests.support.xmpp_client import DOMAIN, WAIT, SlixmppClient

pytestmark = pytest.mark.timeout(30)

PASSWORD = "correct horse"


def create_accounts(server: ServerProcess, *names: str) -> None:
    for name in names:
        server.create_account(name, PASSWORD)


class Client(SlixmppClient):
    """A slixmpp client, logged in with SCRAM-SHA-256, its roster fetched and its presence
    sent; chat messages, their errors and presences it receives are queued."""

    def __init__(self, port: int, name: str, *, direct_tls: bool = False) -> None:
        super().__init__(
            port,
            f"{name}@{DOMAIN}/test",
            PASSWORD,
            plugins=("xep_0030", "xep_0199"),
            events=("message", "message_error", "presence"),
            sasl_mech="SCRAM-SHA-256",
            direct_tls=direct_tls,
        )
        assert self.logged_in, f"{self.jid} could not log in"
        self.wait(self.xmpp.get_roster)
        self.do(self.xmpp.send_presence)


@pytest.fixture
def server(make_server: Callable[..., ServerProcess]) -> ServerProcess:
    server = make_server(protocols=("line", "xmpp"))
    create_accounts(server, "alice", "bob")
    return server


@pytest.fixture
def connect(server: ServerProcess) -> Iterator[Callable[..., Client]]:
    made: list[Client] = []

    def make(name: str, **kwargs: Any) -> Client:
        client = Client(server.ports["xmpp"], name, **kwargs)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def test_login_over_starttls_with_scram_sha_256(connect: Callable[..., Client]) -> None:
    alice = connect("alice")
    assert alice.xmpp.plugin["feature_mechanisms"].mech.name == "SCRAM-SHA-256"
    assert alice.xmpp.transport.get_extra_info("ssl_object") is not None  # after STARTTLS
    assert str(alice.xmpp.boundjid) == "alice@localhost/test"
    info = alice.wait(alice.xmpp.plugin["xep_0030"].get_info, jid=DOMAIN, timeout=WAIT)
    assert "urn:xmpp:ping" in info["disco_info"]["features"]


def test_direct_tls_port(server: ServerProcess, connect: Callable[..., Client]) -> None:
    client = Client(server.ports["xmpp_tls"], "bob", direct_tls=True)
    try:
        assert client.xmpp.transport.get_extra_info("ssl_object") is not None
        assert str(client.xmpp.boundjid) == "bob@localhost/test"
    finally:
        client.close()


def test_roster_is_stored_and_subscriptions_complete(connect: Callable[..., Client]) -> None:
    alice = connect("alice")
    bob = connect("bob")
    alice.wait(alice.xmpp.update_roster, "bob@localhost", name="Bob", groups=["Friends"])
    alice.do(alice.xmpp.send_presence, pto="bob@localhost", ptype="subscribe")
    # slixmpp approves and subscribes back by default: both directions end up subscribed.
    alice.wait_for(lambda: alice.xmpp.client_roster["bob@localhost"]["subscription"] == "both")
    bob.wait_for(lambda: bob.xmpp.client_roster["alice@localhost"]["subscription"] == "both")
    alice.wait_for(lambda: bool(alice.xmpp.client_roster["bob@localhost"].resources))
    alice.close()

    again = connect("alice")
    item = again.xmpp.client_roster["bob@localhost"]
    assert (item["name"], item["groups"], item["subscription"]) == ("Bob", ["Friends"], "both")
    bob.expect_event(
        "presence", lambda p: p["from"] == "alice@localhost/test" and p["type"] == "available"
    )


def test_chat_with_a_line_user_and_back(
    server: ServerProcess, connect: Callable[..., Client]
) -> None:
    carol = LineClient(server.ports["line"])
    carol.expect("*** Choose a nick:")
    carol.send("carol")
    carol.expect("*** You are carol.")
    alice = connect("alice")
    alice.do(alice.xmpp.send_message, mto="~carol@localhost", mbody="hello carol", mtype="chat")
    assert carol.expect("*alice*") == "*alice* hello carol"
    carol.send("/msg alice hi alice, from line chat")
    reply = alice.expect_event("message", lambda m: m["from"].bare == "~carol@localhost")
    assert reply["type"] == "chat"
    assert reply["body"] == "hi alice, from line chat"
    # Carol is gone: the next message bounces with service-unavailable.
    carol.send("/quit")
    carol.close()
    time.sleep(0.2)
    alice.do(alice.xmpp.send_message, mto="~carol@localhost", mbody="still there?", mtype="chat")
    bounce = alice.expect_event("message_error", lambda m: m["from"].bare == "~carol@localhost")
    assert bounce["error"]["condition"] == "service-unavailable"


def test_server_shutdown_is_a_system_shutdown_stream_error(server: ServerProcess) -> None:
    sock = socket.create_connection(("127.0.0.1", server.ports["xmpp"]), timeout=WAIT)
    sock.sendall(
        b"<?xml version='1.0'?><stream:stream xmlns='jabber:client'"
        b" xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>"
    )
    data = b""
    while b"</stream:features>" not in data:
        data += sock.recv(4096)
    assert server.stop() == 0
    while chunk := sock.recv(4096):
        data += chunk
    sock.close()
    assert b"<system-shutdown xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>" in data
    assert data.endswith(b"</stream:stream>")
