"""The core's rules for redaction, tags without text and metadata, with a fake clock."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatserver.core.errors import (
    BadName,
    BadText,
    CannotSend,
    LimitExceeded,
    NoSuchMessage,
    NoSuchRoom,
    NotOnRoom,
    NotPermitted,
)
from chatserver.core.events import MetadataChange, ModeItem, Redaction, TagMessage
from chatserver.core.metadata import MAX_KEYS
from chatserver.core.names import metadata_key as check_key
from chatserver.core.service import ChatService
from tests.core.fakes import FakeClient
from tests.core.test_service import result, user
from tests.support.memstore import make_service


@pytest.fixture
def service() -> ChatService:
    return make_service()


def failure(d: Any) -> BaseException:
    out: list[Any] = []
    d.addBoth(out.append)
    assert out and hasattr(out[0], "value"), out
    return out[0].value


def of(client: FakeClient, kind: type) -> list[Any]:
    return [e for e in client.events if isinstance(e, kind)]


def test_the_sender_removes_its_message_everywhere(service: ChatService) -> None:
    a, ca = user(service, "alice")
    b, cb = user(service, "bob")
    service.join(ca, "dev")
    service.join(cb, "dev")
    msg = service.say(cb, text="oops", room="dev")
    done = result(service.redact(cb, msg.id, room="dev", reason="typo"))
    assert isinstance(done, Redaction) and done.sender.nick == "bob"
    assert [e.msgid for e in of(a, Redaction)] == [msg.id] == [e.msgid for e in of(b, Redaction)]
    assert all(m.id != msg.id for m in service.recent("dev", 10))
    assert result(service.history_find(msg.id)) is None


def test_who_may_remove_a_message(service: ChatService) -> None:
    _, ca = user(service, "alice")  # the room's operator
    _, cb = user(service, "bob")
    _, cc = user(service, "carol")
    for conn in (ca, cb, cc):
        service.join(conn, "dev")
    first = service.say(ca, text="op says", room="dev")
    assert isinstance(failure(service.redact(cb, first.id, room="dev")), NotPermitted)
    second = service.say(cc, text="carol says", room="dev")
    assert isinstance(result(service.redact(ca, second.id, room="dev")), Redaction)
    assert isinstance(failure(service.redact(cb, "nope", room="dev")), NoSuchMessage)
    _, outsider = user(service, "olga")
    assert isinstance(failure(service.redact(outsider, first.id, room="dev")), NotOnRoom)
    # A server operator may, from outside the room too.
    service.users.set_mode(service.find_user("olga"), "oper", True)
    assert isinstance(result(service.redact(outsider, first.id, room="dev")), Redaction)


def test_a_guest_is_the_sender_only_from_the_same_address(service: ChatService) -> None:
    _, ca = user(service, "alice")
    service.join(ca, "dev")
    _, cg = user(service, "visitor")
    service.join(cg, "dev")
    msg = service.say(cg, text="hi", room="dev")
    service.quit(cg)
    # The same nick from another address is someone else.
    _, other = user(service, "visitor", address="198.51.100.7")
    service.join(other, "dev")
    assert isinstance(failure(service.redact(other, msg.id, room="dev")), NotPermitted)


def test_a_message_of_another_room_is_unknown_here(service: ChatService) -> None:
    _, ca = user(service, "alice")
    service.join(ca, "dev")
    service.join(ca, "ops")
    msg = service.say(ca, text="x", room="ops")
    assert isinstance(failure(service.redact(ca, msg.id, room="dev")), NoSuchMessage)


def test_tags_follow_the_rules_of_a_message(service: ChatService) -> None:
    a, ca = user(service, "alice")
    b, cb = user(service, "bob")
    service.join(ca, "dev")
    service.join(cb, "dev")
    tags = (("+typing", "active"),)
    sent = service.send_tags(cb, tags, room="dev")
    assert of(a, TagMessage) == [sent] and of(b, TagMessage) == [sent]
    service.set_mode(ca, "dev", [ModeItem(True, "moderated")])
    with pytest.raises(CannotSend):
        service.send_tags(cb, tags, room="dev")
    private = service.send_tags(ca, tags, nick="bob")
    assert private.target == "bob" and of(b, TagMessage)[-1] is private
    # Nothing is kept.
    assert result(service.history_latest("dev", 10)) == []


def test_metadata_of_users_and_rooms(service: ChatService) -> None:
    _, ca = user(service, "alice")
    b, cb = user(service, "bob")
    service.join(ca, "dev")
    service.join(cb, "dev")
    change = service.set_metadata(ca, "Display-Name", "Alice A.")
    assert isinstance(change, MetadataChange) and change.key == "display-name"
    assert of(b, MetadataChange) == [change]
    assert service.user_metadata("alice") == {"display-name": "Alice A."}
    assert service.set_metadata(ca, "display-name", "Alice A.") is None  # no change
    with pytest.raises(NotPermitted):
        service.set_metadata(cb, "display-name", "x", nick="alice")
    with pytest.raises(NotPermitted):
        service.set_metadata(cb, "topic-url", "x", room="dev")
    service.set_metadata(ca, "url", "https://example.org", room="dev")
    assert service.room_metadata(cb, "dev") == {"url": "https://example.org"}
    with pytest.raises(BadName):
        service.set_metadata(ca, ":bad", "x")
    with pytest.raises(BadText):
        service.set_metadata(ca, "status", "x" * 301)
    with pytest.raises(BadText):
        service.set_metadata(ca, "status", "two\nlines")
    for i in range(MAX_KEYS - 1):
        service.set_metadata(ca, f"k{i}", "v")
    with pytest.raises(LimitExceeded):
        service.set_metadata(ca, "one-too-many", "v")
    assert service.clear_metadata(ca)[:1] == ["display-name"]
    assert service.user_metadata("alice") == {}


def test_closed_rooms_keep_their_metadata_to_members(service: ChatService) -> None:
    _, ca = user(service, "alice")
    _, cb = user(service, "bob")
    service.join(ca, "dev")
    service.set_metadata(ca, "display-name", "Dev", room="dev")
    service.set_mode(ca, "dev", [ModeItem(True, "invite_only")])
    with pytest.raises(NoSuchRoom):
        service.room_metadata(cb, "dev")
    # A room that goes takes its metadata with it.
    service.part(ca, "dev")
    service.join(cb, "dev")
    assert service.room_metadata(cb, "dev") == {}


def test_an_accounts_metadata_outlives_its_session_a_guests_does_not(
    service: ChatService,
) -> None:
    assert service.accounts.create("alice", "secret-pw").called
    ca = service.connect(FakeClient())
    service.login(ca, "alice")
    service.claim_nick(ca, "alice")
    service.set_metadata(ca, "display-name", "Alice")
    service.quit(ca)
    assert service.account_metadata("alice") == {"display-name": "Alice"}
    _, cg = user(service, "visitor")
    service.set_metadata(cg, "display-name", "V")
    service.rename(cg, "visitor2")
    assert service.user_metadata("visitor2") == {"display-name": "V"}
    service.quit(cg)
    _, again = user(service, "visitor2")
    assert service.own_metadata(again) == {}


@given(st.text(max_size=70))
def test_keys_are_checked_alike_everywhere(key: str) -> None:
    try:
        folded = check_key(key)
    except BadName:
        return
    assert folded == key.lower() and not folded.startswith(":")
    assert all(c.isascii() and (c.isalnum() or c in "_./:-") for c in folded)
