"""slixmpp's own stream management (xep_0198) and client state (xep_0352) against the real
server: its connection is cut with messages in flight and it resumes by itself on reconnect;
while it says it is inactive, presences wait and a message brings them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from slixmpp import JID

from tests.support.server import LineClient, ServerProcess
from tests.support.xmpp_client import DOMAIN, SlixmppClient

pytestmark = pytest.mark.timeout(60)

PASSWORD = "correct horse"


def _line_user(server: ServerProcess, nick: str) -> LineClient:
    user = LineClient(server.ports["line"])
    user.expect("*** Choose a nick:")
    user.send(nick)
    user.expect(f"*** You are {nick}.")
    return user


def _drain(client: SlixmppClient, kind: str, seconds: float) -> list[Any]:
    """Every queued payload of ``kind`` arriving within ``seconds``."""
    got = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            event, payload = client.events.get(timeout=0.05)
        except Exception:
            continue
        if event == kind:
            got.append(payload)
    return got


def _drain_all(client: SlixmppClient, seconds: float) -> list[tuple[str, Any]]:
    got = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            got.append(client.events.get(timeout=0.05))
        except Exception:
            continue
    return got


def test_slixmpp_resumes_after_its_connection_is_cut(
    make_server: Callable[..., ServerProcess],
) -> None:
    server = make_server(protocols=("line", "xmpp"), overrides={"xmpp": {"resume_timeout": 30}})
    server.create_account("alice", PASSWORD)
    alice = SlixmppClient(
        server.ports["xmpp"],
        f"alice@{DOMAIN}/phone",
        PASSWORD,
        plugins=("xep_0198",),
        events=("message", "sm_enabled", "session_resumed", "sm_failed", "session_end"),
        sasl_mech="SCRAM-SHA-256",
    )
    try:
        assert alice.logged_in
        enabled = alice.expect_event("sm_enabled", lambda _: True)
        assert enabled["resume"] is True
        alice.do(alice.xmpp.send_presence)
        carol = _line_user(server, "carol")
        for n in range(7):
            carol.send(f"/msg alice before {n}")
        before = [alice.expect_event("message", lambda m: True) for _ in range(7)]
        assert [m["body"] for m in before] == [f"before {n}" for n in range(7)]
        # The phone loses its network: no closing tag, no goodbye.
        alice.do(lambda: alice.xmpp.transport.abort())
        time.sleep(0.5)
        for n in range(3):
            carol.send(f"/msg alice while away {n}")
        time.sleep(0.3)
        alice.do(alice.xmpp.connect, "127.0.0.1", server.ports["xmpp"])
        alice.expect_event("session_resumed", lambda _: True)
        rest = _drain(alice, "message", 1.5)
        assert [m["body"] for m in rest] == [f"while away {n}" for n in range(3)]
        ids = [m["id"] for m in before + rest]
        assert len(set(ids)) == len(ids) == 10
        # The same session goes on, both ways.
        alice.do(alice.xmpp.send_message, mto=f"~carol@{DOMAIN}", mbody="back", mtype="chat")
        assert carol.expect(lambda line: "back" in line) == "*alice* back"
        carol.close()
    finally:
        alice.close()


def test_slixmpp_inactive_gets_presence_only_with_the_next_message(
    make_server: Callable[..., ServerProcess],
) -> None:
    server = make_server(protocols=("line", "xmpp"))
    server.create_account("alice", PASSWORD)
    server.create_account("bob", PASSWORD)
    alice = SlixmppClient(
        server.ports["xmpp"],
        f"alice@{DOMAIN}/phone",
        PASSWORD,
        plugins=("xep_0352", "xep_0045"),
        events=("message", "groupchat_message", "groupchat_presence", "csi_enabled"),
        sasl_mech="SCRAM-SHA-256",
    )
    bob = SlixmppClient(
        server.ports["xmpp"],
        f"bob@{DOMAIN}/pc",
        PASSWORD,
        plugins=("xep_0045",),
        events=("presence",),
        sasl_mech="SCRAM-SHA-256",
    )
    try:
        assert alice.logged_in and bob.logged_in
        alice.expect_event("csi_enabled", lambda _: True)
        room = "dev@conference." + DOMAIN
        alice.call(alice.muc.join_muc_wait(JID(room), "alice", timeout=5, maxstanzas=0))
        carol = _line_user(server, "carol")
        carol.send("/join dev")
        alice.expect_event("groupchat_presence", lambda p: str(p["from"]) == f"{room}/carol")
        _drain(alice, "groupchat_message", 0.3)
        alice.do(alice.xmpp.plugin["xep_0352"].send_inactive)
        time.sleep(0.3)
        carol.send("/away lunch")
        carol.send("/say just chatting")
        assert _drain(alice, "groupchat_presence", 1.0) == []
        assert _drain(alice, "groupchat_message", 0.1) == []
        carol.send("/msg alice are you there?")
        # What waited comes first, in order: the presence, the room's chatter, the message.
        got = _drain_all(alice, 1.5)
        # (slixmpp reports a room message as "message" too)
        seen = [
            (kind, str(p["from"]))
            for kind, p in got
            if not (kind == "message" and p["type"] == "groupchat")
        ]
        assert seen == [
            ("groupchat_presence", f"{room}/carol"),
            ("groupchat_message", f"{room}/carol"),
            ("message", f"~carol@{DOMAIN}"),
        ]
        carol.close()
    finally:
        alice.close()
        bob.close()
