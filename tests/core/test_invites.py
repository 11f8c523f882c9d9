"""Registration by invitation in the core: the modes, the operator's invitations, expiry, and
the one-use rule (on the in-memory store; tests/storage proves the SQLite transaction)."""

from __future__ import annotations

from typing import Any

import pytest

from chatserver.core.accounts import INVITE_DAYS, RegistrationInvite
from chatserver.core.errors import AccountError, BadName, ChatError, NotPermitted
from chatserver.core.service import ChatService
from chatserver.core.settings import CoreSettings
from tests.core.fakes import FakeClient
from tests.core.test_service import result
from tests.support.memstore import make_service

DAY = 86400.0
NOT_INVITED = "registration on this server is by invitation; ask an operator"


def invite_service(**settings: Any) -> ChatService:
    settings.setdefault("registration", "invite")
    return make_service(CoreSettings(**settings))


def user(service: ChatService, nick: str, **kw: Any) -> Any:
    conn = service.connect(FakeClient(**kw))
    service.claim_nick(conn, nick)
    return conn


def oper(service: ChatService) -> Any:
    conn = user(service, "admin", address="192.0.2.250")
    service.grant_oper(conn)
    return conn


def refusal(d: Any) -> AccountError:
    with pytest.raises(AccountError) as err:
        result(d)
    return err.value


def test_an_invited_name_registers_once_and_others_are_refused() -> None:
    service = invite_service()
    admin = oper(service)
    expires = result(service.invite_registration(admin, "Bob"))
    assert expires == service.clock.seconds() + INVITE_DAYS * DAY

    eve = user(service, "eve")
    err = refusal(service.register(eve, "a good password"))
    assert (err.code, err.reason) == (AccountError.CLOSED, NOT_INVITED)
    assert service.accounts.store.accounts == {}

    bob = user(service, "bob")
    record = result(service.register(bob, "a good password"))
    assert record.name == "bob" and bob.user.account == "bob"
    assert result(service.registration_invites(admin)) == []
    # The invitation is used up: the name cannot be registered again once it is free.
    assert result(service.accounts.delete("bob"))
    service.logout(bob)
    err = refusal(service.register(bob, "another password"))
    assert (err.code, err.reason) == (AccountError.CLOSED, NOT_INVITED)


def test_invitations_expire() -> None:
    service = invite_service()
    admin = oper(service)
    expires = result(service.invite_registration(admin, "carol", 0.5))
    assert expires == service.clock.seconds() + DAY / 2
    carol = user(service, "carol")
    service.clock.advance(DAY / 2)
    assert refusal(service.register(carol, "a good password")).code == AccountError.CLOSED
    assert result(service.registration_invites(admin)) == []
    assert service.accounts.store.invites == {}


def test_inviting_again_renews_and_uninvite_withdraws() -> None:
    service = invite_service()
    admin = oper(service)
    start = service.clock.seconds()
    result(service.invite_registration(admin, "dave", 1))
    service.clock.advance(DAY / 2)
    result(service.invite_registration(admin, "Dave", 2))
    result(service.invite_registration(admin, "ann"))
    assert result(service.registration_invites(admin)) == [
        RegistrationInvite("ann", "admin", start + DAY / 2, start + DAY / 2 + 7 * DAY),
        RegistrationInvite("Dave", "admin", start + DAY / 2, start + DAY / 2 + 2 * DAY),
    ]
    assert result(service.uninvite_registration(admin, "DAVE")) is True
    assert result(service.uninvite_registration(admin, "dave")) is False
    dave = user(service, "dave")
    assert refusal(service.register(dave, "a good password")).code == AccountError.CLOSED


def test_only_server_operators_handle_invitations() -> None:
    service = invite_service()
    eve = user(service, "eve")
    for d in (
        service.invite_registration(eve, "eve"),
        service.uninvite_registration(eve, "eve"),
        service.registration_invites(eve),
    ):
        with pytest.raises(NotPermitted):
            result(d)
    assert service.accounts.store.invites == {}


def test_invitation_refusals() -> None:
    service = invite_service()
    admin = oper(service)
    with pytest.raises(BadName):
        result(service.invite_registration(admin, "9lives"))
    for days in (0, -1, float("nan"), float("inf"), 3651):
        with pytest.raises(ChatError, match="an invitation lasts"):
            result(service.invite_registration(admin, "frank", days))
    result(service.accounts.create("Grace", "a good password"))
    err = refusal(service.invite_registration(admin, "grace"))
    assert (err.code, err.reason) == (AccountError.EXISTS, "Grace is already registered")
    assert service.accounts.store.invites == {}


def test_a_failed_registration_keeps_the_invitation() -> None:
    service = invite_service()
    admin = oper(service)
    result(service.invite_registration(admin, "heidi"))
    heidi = user(service, "heidi")
    assert refusal(service.register(heidi, "short")).code == AccountError.WEAK_PASSWORD
    # Made the operator's way meanwhile: the registration fails, the invitation stays.
    result(service.accounts.create("heidi", "a good password"))
    assert refusal(service.register(heidi, "a good password")).code == AccountError.EXISTS
    assert [i.name for i in result(service.registration_invites(admin))] == ["heidi"]


def test_refusals_for_want_of_an_invitation_use_no_registration_try() -> None:
    service = invite_service(registration_burst=1, address_limit_exempt=())
    admin = oper(service)
    result(service.invite_registration(admin, "ivan"))
    result(service.invite_registration(admin, "judy"))
    for i in range(5):
        conn = user(service, f"nobody{i}", address="198.51.100.9")
        assert refusal(service.register(conn, "a good password")).code == AccountError.CLOSED
    ivan = user(service, "ivan", address="198.51.100.9")
    assert result(service.register(ivan, "a good password")).name == "ivan"
    judy = user(service, "judy", address="198.51.100.9")
    assert refusal(service.register(judy, "a good password")).code == AccountError.THROTTLED
    assert [i.name for i in result(service.registration_invites(admin))] == ["judy"]


def test_open_needs_no_invitation_and_closed_refuses_even_the_invited() -> None:
    service = invite_service(registration="open")
    assert result(service.register(user(service, "kim"), "a good password")).name == "kim"

    service = invite_service(registration="closed")
    admin = oper(service)
    result(service.invite_registration(admin, "leo"))
    err = refusal(service.register(user(service, "leo"), "a good password"))
    assert (err.code, err.reason) == (AccountError.CLOSED, "registration is closed on this server")
    # The operator's own way works whatever the mode.
    assert result(service.accounts.create("leo", "a good password")).name == "leo"


def test_a_mode_reload_applies_to_the_next_registration() -> None:
    service = invite_service(registration="open")
    admin = oper(service)
    service.apply_settings(CoreSettings(registration="invite"))
    mia = user(service, "mia")
    assert refusal(service.register(mia, "a good password")).reason == NOT_INVITED
    result(service.invite_registration(admin, "mia"))
    assert result(service.register(mia, "a good password")).name == "mia"


def test_accounts_register_with_a_protocol_mode() -> None:
    # XMPP passes its own [xmpp] registration, which may differ from [chat] registration.
    service = invite_service(registration="closed")
    accounts = service.accounts
    asked: list[bool] = []

    def admit() -> bool:
        asked.append(True)
        return True

    with pytest.raises(AccountError) as err:
        result(accounts.register("nina", "a good password", mode="invite", admit=admit))
    assert err.value.reason == NOT_INVITED and asked == []
    result(accounts.invite("nina", invited_by=""))
    record = result(accounts.register("nina", "a good password", mode="invite", admit=admit))
    assert record.name == "nina" and asked == [True]
    assert result(accounts.register("olga", "a good password", mode="open")).name == "olga"
    with pytest.raises(AccountError) as err:
        result(accounts.register("pat", "a good password", mode="closed"))
    assert err.value.code == AccountError.CLOSED


def test_a_registered_name_is_refused_as_taken_not_as_uninvited() -> None:
    # Only with "timeout" enforcement can a guest hold a registered nick to try this.
    service = invite_service(nick_enforcement="timeout")
    result(service.accounts.create("Quinn", "a good password"))
    quinn = user(service, "quinn")
    err = refusal(service.register(quinn, "a good password"))
    assert (err.code, err.reason) == (AccountError.EXISTS, "quinn is already registered")
