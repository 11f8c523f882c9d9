"""Always-on accounts in the core: kept without connections, back on the next one, across a
restart of the core on the same store, and ended by KILL, by turning it off and by deleting
the account."""

from __future__ import annotations

from typing import Any

import pytest

from chatserver.core.always_on import AWAY_TEXT
from chatserver.core.errors import AccountError, NickInUse
from chatserver.core.events import Away, Quit
from chatserver.core.service import ChatService
from tests.core.fakes import FakeClient
from tests.core.test_service import result
from tests.support.memstore import MemoryStore, make_service


def connect(service: ChatService, nick: str, **kw: Any) -> tuple[FakeClient, Any]:
    client = FakeClient(**kw)
    conn = service.connect(client)
    service.claim_nick(conn, nick)
    return client, conn


def account_user(service: ChatService, name: str) -> tuple[FakeClient, Any]:
    """A connection logged in to ``name`` (registered on first use), as SASL does."""
    if name not in service.accounts.store.accounts:
        _, conn = connect(service, name)
        result(service.register(conn, "correct horse"))
        service.quit(conn)
    client = FakeClient()
    conn = service.connect(client)
    service.login(conn, name)
    service.claim_nick(conn, name)
    return client, conn


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def service(store: MemoryStore) -> ChatService:
    return make_service(store=store)


def test_only_an_account_may_be_always_on(service: ChatService) -> None:
    _, guest = connect(service, "guest")
    with pytest.raises(AccountError):
        result(service.set_always_on(guest, True))


def test_an_always_on_user_stays_in_its_rooms_away_with_its_nick(service: ChatService) -> None:
    _, alice = account_user(service, "alice")
    assert result(service.set_always_on(alice, True)) is True
    service.join(alice, "dev")
    bob_client, bob = connect(service, "bob")
    service.join(bob, "dev")
    service.quit(alice, "Quit: bye")
    room = service.get_room("dev")
    assert room is not None and "alice" in {u.nick for u in room.members}
    assert [e.message for e in bob_client.of(Away)] == [AWAY_TEXT]
    assert not bob_client.of(Quit)
    _, other = connect(service, "mallory")
    with pytest.raises(NickInUse):
        service.rename(other, "alice")
    # A private message waits for the next login.
    service.say(bob, nick="alice", text="psst")
    _, alice = account_user(service, "alice")
    assert alice.user is room.find_member("alice")
    assert [e.message for e in bob_client.of(Away)] == [AWAY_TEXT, None]
    assert alice.user.away is None


def test_membership_survives_a_restart_of_the_core(store: MemoryStore) -> None:
    service = make_service(store=store)
    _, alice = account_user(service, "alice")
    result(service.set_always_on(alice, True))
    service.join(alice, "dev")
    service.join(alice, "tea")
    service.part(alice, "tea")
    service.rename(alice, "Alice")
    service.quit(alice)
    result(service.shutdown())
    record = store.always_on["alice"]
    assert (record.nick, record.rooms) == ("Alice", ("dev",))
    assert record.last_seen is not None
    again = make_service(store=store)
    user = again.find_user("Alice")
    assert user is not None and user.account == "alice" and user.away == AWAY_TEXT
    assert set(user.rooms) == {"dev"}
    assert again.is_always_on("ALICE")
    _, conn = account_user(again, "alice")
    assert conn.user is user and user.away is None


def test_kill_and_off_and_deletion_end_it(service: ChatService, store: MemoryStore) -> None:
    _, oper = connect(service, "oper")
    service.users.set_mode(oper.user, "oper", True)
    for name in ("ann", "ben", "cat"):
        _, conn = account_user(service, name)
        result(service.set_always_on(conn, True))
        service.join(conn, "dev")
        if name == "ben":
            result(service.set_always_on(conn, False))
        service.quit(conn)
    room = service.get_room("dev")
    assert room is not None
    assert {u.nick for u in room.members} == {"ann", "cat"}
    service.kill(oper, "ann", "spam")
    assert service.find_user("ann") is None and "ann" not in {u.nick for u in room.members}
    result(service.delete_account("cat"))
    assert service.find_user("cat") is None
    assert not service.is_always_on("cat") and "cat" not in store.always_on
