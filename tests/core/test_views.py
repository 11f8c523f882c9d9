"""ChatService's read-only views and policy queries: what protocols read and ask."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import Deferred

from chatserver.core.errors import BadName, CannotSend, ChatError, NoSuchRoom
from chatserver.core.events import ModeItem
from chatserver.core.names import ROOM_MODE_LETTERS, ROOM_MODES_BY_LETTER
from chatserver.core.rooms import ALL_MODES
from chatserver.core.service import ChatService
from chatserver.core.views import AccountInfo, can_see_room
from tests.core.fakes import FakeClient
from tests.support.memstore import make_service


def result(d: Deferred) -> Any:
    out: list[Any] = []
    d.addBoth(out.append)
    assert out, "Deferred has not fired"
    if hasattr(out[0], "raiseException"):
        out[0].raiseException()
    return out[0]


@pytest.fixture
def service() -> ChatService:
    return make_service()


def user(service: ChatService, nick: str) -> Any:
    conn = service.connect(FakeClient())
    service.claim_nick(conn, nick)
    return conn


def test_secret_rooms_are_seen_by_members_and_server_operators(service: ChatService) -> None:
    owner, outsider, oper = user(service, "owner"), user(service, "out"), user(service, "oper")
    service.join(owner, "plaza")
    hideout = service.join(owner, "hideout").room
    service.set_mode(owner, "hideout", [ModeItem(True, "secret")])
    service.grant_oper(oper)
    assert can_see_room(owner.user, hideout) and service.can_see_room(owner.user, hideout)
    assert not can_see_room(outsider.user, hideout)
    assert not can_see_room(None, hideout)
    assert can_see_room(oper.user, hideout)
    assert [r.name for r in service.visible_rooms(outsider.user)] == ["plaza"]
    assert [r.name for r in service.visible_rooms(None)] == ["plaza"]
    assert [r.name for r in service.visible_rooms(owner.user)] == ["hideout", "plaza"]
    assert [r.name for r in service.visible_rooms(oper.user)] == ["hideout", "plaza"]
    with pytest.raises(NoSuchRoom):
        service.visible_room(outsider.user, "HIDEOUT")
    assert service.visible_room(oper.user, "HIDEOUT") is hideout
    with pytest.raises(BadName):
        service.visible_room(owner.user, "no spaces")


def test_check_send_is_the_rule_say_applies(service: ChatService) -> None:
    owner, member, outsider = user(service, "owner"), user(service, "member"), user(service, "out")
    room = service.join(owner, "dev").room
    service.join(member, "dev")
    assert service.check_send(member, "dev") is room
    with pytest.raises(CannotSend, match="join the room"):
        service.check_send(outsider, "dev")
    service.set_mode(owner, "dev", [ModeItem(True, "moderated")])
    with pytest.raises(CannotSend, match="moderated") as asked:
        service.check_send(member, "dev")
    with pytest.raises(CannotSend) as said:
        service.say(member, text="hi", room="dev")
    assert asked.value.reason == said.value.reason
    with pytest.raises(NoSuchRoom):
        service.check_send(member, "nowhere")
    with pytest.raises(ChatError):
        service.check_send(service.connect(FakeClient()), "dev")


def test_counts_and_lookups(service: ChatService) -> None:
    alice = user(service, "alice")
    user(service, "bob")
    service.join(alice, "Dev")
    service.set_user_modes(alice, [ModeItem(True, "invisible")])
    assert service.user_count() == 2 and service.room_count() == 1
    assert service.mode_count("invisible") == 1
    assert sorted(u.nick for u in service.online_users()) == ["alice", "bob"]
    assert service.room_by_key("dev") is service.get_room("DEV")
    # Events carry canonical keys: the lookup does not fold.
    assert service.room_by_key("Dev") is None


def test_account_info_tells_no_credentials(service: ChatService) -> None:
    result(service.accounts.create("Alice", "secret-pw", "a@example.org"))
    info = result(service.account_info("ALICE"))
    assert isinstance(info, AccountInfo)
    assert (info.name, info.email) == ("Alice", "a@example.org")
    assert not hasattr(info, "credentials")
    assert result(service.account_info("nobody")) is None


def test_one_mode_letter_table() -> None:
    assert set(ROOM_MODE_LETTERS) == ALL_MODES
    assert len(ROOM_MODES_BY_LETTER) == len(ROOM_MODE_LETTERS)
    assert ROOM_MODE_LETTERS["registered_only"] == "R"


def test_register_account_uses_the_registration_rules(service: ChatService) -> None:
    record = result(service.register_account("carol", "carol-secret", address="192.0.2.1"))
    assert record.name == "carol"
    with pytest.raises(ChatError, match="closed"):
        result(service.register_account("dave", "dave-secret", address="192.0.2.1", mode="closed"))
