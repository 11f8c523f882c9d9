"""The real server with slixmpp as a real XMPP client: STARTTLS and SCRAM-SHA-256, rosters and
subscriptions, and chat with a line-chat user.

slixmpp runs on an asyncio loop in a thread of its own; each call below waits for its result.
"""

from __future__ import annotations

import asyncio
import queue
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.server import LineClient, ServerProcess

pytestmark = pytest.mark.timeout(30)

DOMAIN = "localhost"
PASSWORD = "correct horse"
WAIT = 5.0


def create_accounts(server: ServerProcess, *names: str) -> None:
    for name in names:
        server.create_account(name, PASSWORD)


class Client:
    """A slixmpp client, logged in; chat messages and presences it receives are queued."""

    def __init__(self, port: int, name: str, *, direct_tls: bool = False) -> None:
        import slixmpp

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.jid = f"{name}@{DOMAIN}"

        async def start() -> Any:
            xmpp = slixmpp.ClientXMPP(f"{self.jid}/test", PASSWORD, sasl_mech="SCRAM-SHA-256")
            xmpp.loop = self.loop
            xmpp.register_plugin("xep_0030")
            xmpp.register_plugin("xep_0199")
            xmpp.enable_direct_tls = direct_tls
            xmpp.enable_starttls = not direct_tls
            # The server's certificate is self-signed on first start.
            xmpp.ssl_context.check_hostname = False
            xmpp.ssl_context.verify_mode = ssl.CERT_NONE
            xmpp.add_event_handler("message", lambda m: self.events.put(("message", m)))
            xmpp.add_event_handler("message_error", lambda m: self.events.put(("error", m)))
            xmpp.add_event_handler("presence", lambda p: self.events.put(("presence", p)))
            started = asyncio.ensure_future(xmpp.wait_until("session_start", WAIT))
            xmpp.connect("127.0.0.1", port)
            await started
            await xmpp.get_roster()
            xmpp.send_presence()
            return xmpp

        self.xmpp = self.call(start())

    def call(self, coro: Any, timeout: float = WAIT) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def do(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a plain slixmpp call on its loop's thread."""

        async def run() -> Any:
            return func(*args, **kwargs)

        return self.call(run())

    def wait(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a slixmpp call that returns a future on the loop's thread, and wait for it."""

        async def run() -> Any:
            return await func(*args, **kwargs)

        return self.call(run())

    def expect(self, kind: str, test: Callable[[Any], bool]) -> Any:
        deadline = time.monotonic() + WAIT
        while True:
            try:
                got, stanza = self.events.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                raise AssertionError(f"no {kind} matched") from None
            if got == kind and test(stanza):
                return stanza

    def wait_for(self, test: Callable[[], bool]) -> None:
        deadline = time.monotonic() + WAIT
        while not self.do(test):
            assert time.monotonic() < deadline, "condition not reached"
            time.sleep(0.05)

    def close(self) -> None:
        if not self.loop.is_running():
            return

        async def disconnect() -> None:
            self.xmpp.disconnect()
            await asyncio.sleep(0.1)
            # COMPAT: slixmpp cancels its output task in XMLStream.__del__, which fails once
            # the garbage collector has closed the loop first; cancel it while the loop runs.
            task = self.xmpp._run_out_filters
            if task is not None:
                task.cancel()
                self.xmpp._run_out_filters = None

        try:
            self.call(disconnect(), timeout=3)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(3)


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
    bob.expect(
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
    alice.do(alice.xmpp.send_message, mto="carol@localhost", mbody="hello carol", mtype="chat")
    assert carol.expect("*alice*") == "*alice* hello carol"
    carol.send("/msg alice hi alice, from line chat")
    reply = alice.expect("message", lambda m: m["from"].bare == "carol@localhost")
    assert reply["type"] == "chat"
    assert reply["body"] == "hi alice, from line chat"
    # Carol is gone: the next message bounces with service-unavailable.
    carol.send("/quit")
    carol.close()
    time.sleep(0.2)
    alice.do(alice.xmpp.send_message, mto="carol@localhost", mbody="still there?", mtype="chat")
    bounce = alice.expect("error", lambda m: m["from"].bare == "carol@localhost")
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
