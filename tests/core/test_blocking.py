"""One block list per account, applied by the core on every protocol."""

from __future__ import annotations

from typing import Any

import pytest

from chatserver.core.blocking import MAX_BLOCKS
from chatserver.core.errors import ChatError
from chatserver.core.events import Invite, Message
from chatserver.core.service import ChatService
from tests.core.fakes import FakeClient
from tests.core.test_service import result
from tests.support.memstore import make_service


def user(service: ChatService, nick: str, protocol: str = "line") -> tuple[Any, FakeClient]:
    client = FakeClient(protocol=protocol)
    conn = service.connect(client)
    service.claim_nick(conn, nick)
    return conn, client


def registered(service: ChatService, nick: str, protocol: str = "line") -> tuple[Any, FakeClient]:
    conn, client = user(service, nick, protocol)
    result(service.register(conn, "a good password"))
    client.clear()
    return conn, client


def texts(client: FakeClient) -> list[str]:
    return [m.text for m in client.of(Message)]


def test_a_blocked_user_reaches_none_of_the_blockers_connections() -> None:
    service = make_service()
    alice, alice_line = registered(service, "alice")
    phone = FakeClient(protocol="xmpp")
    second = service.connect(phone)
    result(service.identify(second, "a good password", "alice"))
    service.claim_nick(second, "alice")
    mallory, mallory_client = user(service, "mallory", "irc")
    carol, _ = user(service, "carol")
    assert result(service.block(alice, ["Mallory"])) == ["mallory"]
    assert service.blocks(second) == ["mallory"]  # one list for the account

    service.say(mallory, nick="alice", text="spam")
    service.say(carol, nick="alice", text="hello")
    assert texts(alice_line) == ["hello"] and texts(phone) == ["hello"]
    # The sender is not told (its own echo is as usual).
    assert texts(mallory_client) == ["spam"]

    service.join(mallory, "r")
    service.invite(mallory, "alice", "r")
    assert alice_line.of(Invite) == [] and phone.of(Invite) == []
    # Rooms are shared with others: a blocked user's room messages are not filtered.
    service.join(alice, "r")
    alice_line.clear()
    service.say(mallory, room="r", text="in the room")
    assert "in the room" in texts(alice_line)

    assert result(service.unblock(alice, ["MALLORY"])) == ["mallory"]
    alice_line.clear()
    service.say(mallory, nick="alice", text="again")
    assert texts(alice_line) == ["again"]


def test_block_lists_need_an_account_and_have_a_limit() -> None:
    service = make_service()
    guest, _ = user(service, "guest")
    with pytest.raises(ChatError):
        service.blocks(guest)
    alice, _ = registered(service, "alice")
    result(service.block(alice, [f"n{i}" for i in range(MAX_BLOCKS)]))
    with pytest.raises(ChatError):
        service.block(alice, ["one-more"])
    # Blocking a name already there is no change.
    assert result(service.block(alice, ["n1"])) == []
    assert result(service.unblock(alice, None)) == sorted(f"n{i}" for i in range(MAX_BLOCKS))
    assert service.blocks(alice) == []


def test_dropping_the_account_drops_its_list() -> None:
    service = make_service()
    alice, _ = registered(service, "alice")
    result(service.block(alice, ["mallory"]))
    result(service.delete_account("alice"))
    assert service.block_lists == {}
