"""The real server's XMPP limits over real sockets: the roster size limit (slixmpp) and server
bans met while connecting and logging in (slixmpp and raw streams)."""

from __future__ import annotations

import base64
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.server import ServerProcess
from tests.support.xmpp_client import DOMAIN, WAIT, SlixmppClient

pytestmark = pytest.mark.timeout(60)

PASSWORD = "correct horse"
HEADER = (
    b"<?xml version='1.0'?><stream:stream to='localhost' xmlns='jabber:client'"
    b" xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>"
)
BANNED_SOURCE = "127.0.0.9"
BANS = f"""
[[bans]]
account = "eve"
reason = "abuse"

[[bans]]
mask = "mallory"
reason = "pick another name"

[[bans]]
mask = "*!*@{BANNED_SOURCE}"
reason = "closed to that address"
"""


def client(port: int, name: str, **kwargs: object) -> SlixmppClient:
    return SlixmppClient(
        port, f"{name}@{DOMAIN}/test", PASSWORD, plugins=("xep_0030", "xep_0199"), **kwargs
    )


@pytest.fixture
def connect() -> Iterator[Callable[..., SlixmppClient]]:
    made: list[SlixmppClient] = []

    def make(port: int, name: str, **kwargs: object) -> SlixmppClient:
        made.append(client(port, name, **kwargs))
        return made[-1]

    yield make
    for c in made:
        c.close()


# -- the roster size limit ------------------------------------------------------------------


def test_a_full_roster_refuses_new_contacts_and_keeps_the_old_ones(
    make_server: Callable[..., ServerProcess], connect: Callable[..., SlixmppClient]
) -> None:
    from slixmpp.exceptions import IqError

    server = make_server(protocols=("xmpp",), overrides={"xmpp": {"max_roster_items": 2}})
    for name in ("alice", "bob"):
        server.create_account(name, PASSWORD)
    port = server.ports["xmpp"]
    alice = connect(port, "alice", events=("presence_error",))
    assert alice.logged_in
    alice.wait(alice.xmpp.get_roster)
    alice.do(alice.xmpp.send_presence)
    for jid in ("a@localhost", "b@localhost"):
        alice.wait(alice.xmpp.update_roster, jid, name=jid[0].upper())

    with pytest.raises(IqError) as refused:
        alice.wait(alice.xmpp.update_roster, "c@localhost", name="C")
    error = refused.value.iq["error"]
    assert (error["type"], error["condition"]) == ("cancel", "not-allowed")
    assert error["text"] == "your roster is full (limit 2)"
    # A contact already there still changes at the limit.
    alice.wait(alice.xmpp.update_roster, "a@localhost", name="Ann")
    # A presence subscription to someone new would add a contact too: refused the same way.
    alice.do(alice.xmpp.send_presence, pto="bob@localhost", ptype="subscribe")
    bounce = alice.expect_event("presence_error", lambda p: p["from"] == "bob@localhost")
    assert bounce["error"]["condition"] == "not-allowed"
    alice.close()

    # Nothing of the refused contacts was stored, on either side.
    again = connect(port, "alice")
    again.wait(again.xmpp.get_roster)
    roster = again.xmpp.client_roster
    assert sorted(j for j in roster.keys() if j != "alice@localhost") == [
        "a@localhost",
        "b@localhost",
    ]
    assert roster["a@localhost"]["name"] == "Ann"
    bob = connect(port, "bob")
    bob.wait(bob.xmpp.get_roster)
    assert "alice@localhost" not in bob.xmpp.client_roster.keys()


# -- server bans while connecting and logging in ---------------------------------------------


def read_until_closed(sock: socket.socket) -> bytes:
    data = b""
    sock.settimeout(WAIT)
    while chunk := sock.recv(65536):
        data += chunk
    return data


def plain_login(port: int, name: str, source: str = "127.0.0.1") -> bytes:
    """A raw stream that logs in with SASL PLAIN; everything the server sent until it closed."""
    token = base64.b64encode(f"\0{name}\0{PASSWORD}".encode()).decode()
    with socket.create_connection(("127.0.0.1", port), WAIT, (source, 0)) as sock:
        sock.sendall(HEADER)
        data = b""
        while b"</stream:features>" not in data and b"</stream:stream>" not in data:
            chunk = sock.recv(65536)
            assert chunk, data
            data += chunk
        if b"</stream:stream>" in data:
            return data
        sock.sendall(
            f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>".encode()
        )
        return data + read_until_closed(sock)


@pytest.fixture
def banned_server(tmp_path: Path) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path, protocols=("xmpp",))
    with open(server.config_path, "a") as fp:
        fp.write(BANS)
    server.start()
    try:
        for name in ("eve", "mallory", "bob"):
            server.create_account(name, PASSWORD)
        yield server
    finally:
        server.kill()


def test_bans_end_the_stream_with_policy_violation_and_the_reason(
    banned_server: ServerProcess, connect: Callable[..., SlixmppClient]
) -> None:
    port = banned_server.ports["xmpp"]
    stream_error = "<policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"

    # An account ban, met at SASL (SCRAM-SHA-256 through slixmpp, PLAIN on a raw stream):
    # no <success/>, the stream error and the ban's reason.
    eve = connect(port, "eve", events=("stream_error",), sasl_mech="SCRAM-SHA-256")
    assert not eve.logged_in
    error = eve.expect_event("stream_error", lambda e: True)
    assert error["condition"] == "policy-violation"
    assert error["text"] == "You are banned from this server: abuse"
    data = plain_login(port, "eve")
    assert b"<success" not in data
    assert stream_error.encode() in data
    assert b">You are banned from this server: abuse</text>" in data
    assert data.endswith(b"</stream:stream>")

    # A nick ban: the account logs in, and binding makes the banned nick.
    mallory = connect(port, "mallory", events=("stream_error",))
    assert not mallory.logged_in
    error = mallory.expect_event("stream_error", lambda e: True)
    assert error["condition"] == "policy-violation"
    assert error["text"] == "You are banned from this server: pick another name"

    # An address ban: refused as the stream opens, before any login.
    data = plain_login(port, "bob", source=BANNED_SOURCE)
    assert stream_error.encode() in data
    assert b"You are banned from this server: closed to that address" in data
    assert b"<stream:features" not in data

    # Everyone else logs in as usual.
    assert connect(port, "bob").logged_in

    assert banned_server.stop() == 0
    log = banned_server.log()
    assert "Traceback" not in log and "Unhandled" not in log
    # One info line for each refusal.
    for mask, times in (("$a:eve", 2), ("mallory!*@*", 1), (f"*!*@{BANNED_SOURCE}", 1)):
        lines = [line for line in log.splitlines() if f"(xmpp) by {mask}" in line]
        assert len(lines) == times and all("#info]" in line for line in lines), lines
