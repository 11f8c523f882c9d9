"""A renamed registered room keeps its registration, topic, history and events across a
restart, on both storage backends; the old name keeps nothing."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.server import LineClient, ServerProcess

pytestmark = pytest.mark.timeout(120)

PASSWORD = "rename-secret-pw"
CAPS = "message-tags batch server-time draft/chathistory draft/event-playback"


def irc_user(server: ServerProcess, nick: str, caps: str = "") -> LineClient:
    client = LineClient(server.ports["irc"])
    if caps:
        client.send("CAP LS 302")
        client.send(f"CAP REQ :{caps}")
        client.send("CAP END")
    client.send(f"NICK {nick}")
    client.send(f"USER {nick} 0 * :{nick}")
    client.expect(" 001 ")
    return client


def until_pong(client: LineClient, token: str) -> list[str]:
    client.send(f"PING :{token}")
    seen: list[str] = []
    client.expect(lambda line: seen.append(line) or ("PONG" in line and line.endswith(token)))
    return seen


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_renamed_registered_room_survives_a_restart(
    backend: str, make_server: Any, request: pytest.FixtureRequest
) -> None:
    overrides: dict[str, Any] = {"chat": {"history_flush_interval": 0.0}}
    if backend == "postgresql":
        postgres = request.getfixturevalue("postgres")
        overrides["storage"] = {"backend": "postgresql", "dsn": postgres.new_database()}
    server: ServerProcess = make_server(protocols=("irc",), overrides=overrides)
    server.create_account("owner", PASSWORD)
    op = irc_user(server, "boss")
    op.send(f"PRIVMSG NickServ :IDENTIFY owner {PASSWORD}")
    op.expect(" 900 ")
    op.send("JOIN #before")
    op.expect(" 366 ")
    op.send("PRIVMSG ChanServ :REGISTER #before")
    op.expect("registered")
    op.send("TOPIC #before :the kept topic")
    op.send("PRIVMSG #before :said under the old name")
    op.send("RENAME #before #after :moving")
    # Without the capability: the owner parts the old name and joins the new one.
    op.expect("JOIN #after")
    until_pong(op, "renamed")
    op.close()
    server.restart()

    owner = irc_user(server, "owner2", CAPS)
    owner.send(f"PRIVMSG NickServ :IDENTIFY owner {PASSWORD}")
    owner.expect(" 900 ")
    owner.send("JOIN #after")
    joined = until_pong(owner, "joined")
    # The registration came along: its owner is opped, and the topic is there.
    assert any(" 353 " in line and "@owner2" in line for line in joined), joined
    assert any(" 332 " in line and "the kept topic" in line for line in joined), joined
    owner.send("CHATHISTORY LATEST #after * 20")
    history = until_pong(owner, "history")
    said = [line for line in history if " PRIVMSG #after " in line]
    assert len(said) == 1 and said[0].endswith(":said under the old name")
    # Events of the room under its old name are replayed under the new one.
    assert any(" TOPIC #after :the kept topic" in line for line in history), history
    assert any(" JOIN #after" in line for line in history), history

    stranger = irc_user(server, "stranger")
    stranger.send("JOIN #before")
    fresh = until_pong(stranger, "fresh")
    # Nothing is left under the old name: a new, empty room whose first member is its op.
    assert any(" 353 " in line and "@stranger" in line for line in fresh), fresh
    assert not any(" 332 " in line for line in fresh), fresh
