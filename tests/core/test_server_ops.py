"""Core support for operations: server bans, counters for metrics, live settings, group commit."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from chatserver.core.accounts import AccountManager
from chatserver.core.bans import ServerBan, ban_matches, normalize_ban_mask
from chatserver.core.errors import (
    AccountError,
    BadName,
    Banned,
    ChatError,
    LimitExceeded,
    NotPermitted,
)
from chatserver.core.events import Message
from chatserver.core.service import ChatService
from chatserver.core.settings import CoreSettings
from tests.core.fakes import FakeClient
from tests.support.memstore import MemoryStore, make_service, run_now


def user(service: ChatService, nick: str, **kw: Any) -> tuple[FakeClient, Any]:
    client = FakeClient(**kw)
    conn = service.connect(client)
    service.claim_nick(conn, nick)
    return client, conn


def oper(service: ChatService, nick: str = "admin") -> tuple[FakeClient, Any]:
    client, conn = user(service, nick, address="192.0.2.250")
    service.grant_oper(conn)
    return client, conn


class BanStore(MemoryStore):
    def __init__(self, bans: list[ServerBan] | None = None) -> None:
        super().__init__()
        self.bans = {b.mask: b for b in bans or []}

    def load_server_bans(self) -> Deferred:
        return succeed(list(self.bans.values()))

    def save_server_ban(self, ban: ServerBan) -> Deferred:
        self.bans[ban.mask] = ban
        return succeed(None)

    def delete_server_ban(self, mask: str) -> Deferred:
        return succeed(self.bans.pop(mask, None) is not None)


def service_with(store: MemoryStore, **settings: Any) -> ChatService:
    clock = Clock()
    clock.advance(1_700_000_000)
    core = CoreSettings(**settings)
    accounts = AccountManager(store, core, clock=clock, run_in_thread=run_now)
    service = ChatService(
        core,
        clock=clock,
        accounts=accounts,
        room_store=store,
        history_store=store,
        ban_store=store,
    )
    service.start()
    return service


# -- masks ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "mask"),
    [
        ("mallory", "mallory!*@*"),
        ("203.0.113.7", "*!*@203.0.113.7"),
        ("203.0.113.0/24", "*!*@203.0.113.0/24"),
        ("2001:db8::/32", "*!*@2001:db8::/32"),
        ("*@10.0.*", "*!*@10.0.*"),
        ("bot*!*@*", "bot*!*@*"),
        ("eve!ident", "eve!ident@*"),
        ("$a:Mallory", "$a:mallory"),
        ("$A:x", "$a:x"),
    ],
)
def test_masks_are_completed(text: str, mask: str) -> None:
    assert normalize_ban_mask(text) == mask


@pytest.mark.parametrize("text", ["", "a b", "*", "*!*@*", "*@*", "$a:", "$a:*", "?!*@*"])
def test_masks_that_ban_nothing_or_everyone_are_refused(text: str) -> None:
    with pytest.raises(BadName):
        normalize_ban_mask(text)


def test_matching_by_address_network_cloak_nick_and_account() -> None:
    def ban(text: str) -> ServerBan:
        return ServerBan(normalize_ban_mask(text))

    where = {"address": "203.0.113.7", "cloak": "line-abc.cloak"}
    assert ban_matches(ban("203.0.113.*"), **where)
    assert ban_matches(ban("203.0.113.0/24"), **where)
    assert not ban_matches(ban("198.51.100.0/24"), **where)
    assert ban_matches(ban("*!*@::ffff:203.0.113.0/120"), address="::1") is False
    assert ban_matches(ban("203.0.113.0/24"), address="::ffff:203.0.113.9")
    assert ban_matches(ban("*!*@*.cloak"), **where)
    # Before a nick, only host masks can match.
    assert not ban_matches(ban("mallory"), **where)
    assert ban_matches(ban("mallory"), nick="Mallory", ident="m", **where)
    assert not ban_matches(ban("mallory"), nick="alice", ident="a", **where)
    assert ban_matches(ban("*!bad@*"), nick="x", ident="bad", **where)
    assert ban_matches(ban("$a:mal*"), account="Mallory", **where)
    assert not ban_matches(ban("$a:mallory"), nick="mallory", ident="m", **where)


# -- bans in the service -------------------------------------------------------------------


def test_a_host_ban_refuses_the_connection() -> None:
    service = make_service()
    service.set_config_bans([ServerBan("*!*@192.0.2.0/24", "spam", "config")])
    with pytest.raises(Banned) as caught:
        service.connect(FakeClient(address="192.0.2.9"))
    assert isinstance(caught.value, LimitExceeded)
    assert str(caught.value) == "You are banned from this server: spam"
    assert service.connection_count() == 0
    service.connect(FakeClient(address="198.51.100.1"))


def test_a_nick_ban_refuses_the_nick_and_closes_the_connection() -> None:
    service = make_service()
    service.set_config_bans([ServerBan("mallory!*@*", "", "config")])
    client = FakeClient()
    conn = service.connect(client)
    with pytest.raises(Banned):
        service.claim_nick(conn, "Mallory")
    assert client.disconnected == "You are banned from this server"
    assert service.find_user("mallory") is None


def test_an_account_ban_applies_at_login() -> None:
    service = make_service()
    service.set_config_bans([ServerBan("$a:mallory", "abuse", "config")])
    client, conn = user(service, "someone")
    with pytest.raises(Banned):
        service.login(conn, "Mallory")
    assert client.disconnected == "You are banned from this server: abuse"
    # Before a nick too (SASL during IRC registration).
    early = FakeClient()
    with pytest.raises(Banned):
        service.login(service.connect(early), "mallory")
    assert early.disconnected


def test_operators_add_and_lift_bans_and_they_are_stored() -> None:
    store = BanStore()
    service = service_with(store)
    _ac, admin = oper(service)
    mallory, _mc = user(service, "mallory", address="203.0.113.5")
    bystander, _bc = user(service, "bob", address="198.51.100.2")
    ban, gone = service.add_server_ban(admin, "203.0.113.0/24", " flooding ")
    assert ban == ServerBan("*!*@203.0.113.0/24", "flooding", "admin", service.clock.seconds())
    assert gone == ["mallory"]
    assert mallory.disconnected == "You are banned from this server: flooding"
    assert bystander.disconnected is None
    assert service.find_user("mallory") is None
    assert list(store.bans) == ["*!*@203.0.113.0/24"]
    assert service.server_bans == [ban]

    # A restarted service loads them.
    again = service_with(store)
    with pytest.raises(Banned):
        again.connect(FakeClient(address="203.0.113.99"))

    assert service.remove_server_ban(admin, "203.0.113.0/24") == ban
    assert store.bans == {}
    with pytest.raises(ChatError, match="no server ban"):
        service.remove_server_ban(admin, "203.0.113.0/24")


def test_only_operators_manage_bans_and_operators_are_not_locked_out() -> None:
    service = make_service()
    _c, plain = user(service, "alice")
    with pytest.raises(NotPermitted):
        service.add_server_ban(plain, "eve", "")
    with pytest.raises(NotPermitted):
        service.remove_server_ban(plain, "eve")
    admin_client, admin = oper(service)
    # A mask that matches the operator too does not disconnect them.
    _ban, gone = service.add_server_ban(admin, "*!*@192.0.2.*", "")
    assert "admin" not in gone and admin_client.disconnected is None
    assert service.find_user("alice") is None


def test_config_bans_are_replaced_on_reload_and_not_lifted_by_operators() -> None:
    service = make_service()
    _ac, admin = oper(service)
    service.set_config_bans([ServerBan("eve!*@*", "", "config")])
    with pytest.raises(ChatError, match="configuration file"):
        service.remove_server_ban(admin, "eve")
    carol, _cc = user(service, "carol")
    assert service.set_config_bans([ServerBan("carol!*@*", "bye", "config")]) == ["carol"]
    assert carol.disconnected == "You are banned from this server: bye"
    _ec, _e = user(service, "eve")


# -- counters ------------------------------------------------------------------------------


def test_messages_and_deliveries_are_counted_by_protocol() -> None:
    service = make_service()
    a, ca = user(service, "alice", protocol="line")
    _b, cb = user(service, "bob", protocol="irc")
    _c, cc = user(service, "carol", protocol="irc")
    for conn in (ca, cb, cc):
        service.join(conn, "dev")
    before = dict(service.deliveries_by_protocol)
    service.say(ca, room="dev", text="hi")
    assert service.messages_by_protocol == {"line": 1}
    delta = {k: v - before.get(k, 0) for k, v in service.deliveries_by_protocol.items()}
    assert delta == {"line": 1, "irc": 2}
    # The fan-out counts follow membership.
    service.part(cc, "dev")
    before = dict(service.deliveries_by_protocol)
    service.say(cb, room="dev", text="still here")
    delta = {k: v - before.get(k, 0) for k, v in service.deliveries_by_protocol.items()}
    assert delta == {"line": 1, "irc": 1}
    service.say(cb, nick="alice", text="private")
    assert service.messages_by_protocol == {"line": 1, "irc": 2}
    assert a.of(Message)[-1].text == "private"
    assert service.stats["deliveries"] == sum(service.deliveries_by_protocol.values())


def test_logins_failures_and_drops_are_counted() -> None:
    service = make_service()
    _c, conn = user(service, "alice", protocol="xmpp")
    d = service.register(conn, "a good password")
    assert service.logins_by_protocol == {"xmpp": 1}
    d.addErrback(lambda f: None)
    _c2, other = user(service, "bob")
    failed = service.identify(other, "wrong", "alice")
    failed.addErrback(lambda f: f.trap(AccountError))
    assert service.accounts.failures == 1
    assert service.accounts.failures_by_protocol == {"line": 1}
    # SASL and operator checks are counted by the protocols, with theirs.
    service.accounts.begin_login("alice", "192.0.2.9", "irc").failed()
    service.accounts.begin_login(None, "192.0.2.9", "xmpp").failed()
    service.accounts.begin_login(None, "192.0.2.9").failed()
    assert service.accounts.failures_by_protocol == {
        "line": 1,
        "irc": 1,
        "xmpp": 1,
        "unknown": 1,
    }
    assert service.accounts.failures == 4
    _f, flooder = user(service, "flooder", protocol="irc")
    service.quit(flooder, "Excess Flood", dropped="flood")
    _s, slow = user(service, "slow", protocol="line")
    service.quit(slow, "Output backlog full", dropped="slow_reader")
    _q, quitter = user(service, "quitter", protocol="line")
    service.quit(quitter, "bye")
    # The reason is only text for others to read: a user's own quit message counts nothing.
    _t, typist = user(service, "typist", protocol="irc")
    service.quit(typist, "Excess Flood")
    assert service.drops == {("irc", "flood"): 1, ("line", "slow_reader"): 1}


# -- live settings -------------------------------------------------------------------------


def test_applied_settings_take_effect_at_once() -> None:
    service = make_service(CoreSettings(max_connections_per_address=1))
    service.connect(FakeClient(address="198.51.100.7"))
    with pytest.raises(LimitExceeded):
        service.connect(FakeClient(address="198.51.100.7"))
    settings = dataclasses.replace(service.settings, max_connections_per_address=2)
    service.apply_settings(settings)
    service.connect(FakeClient(address="198.51.100.7"))
    assert service.accounts.settings is settings


# -- history with a flush interval of 0 --------------------------------------------------


class SlowHistory(MemoryStore):
    """A store whose history writes finish only when the test says so."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[tuple[list[str], Deferred]] = []

    def append(self, messages: Any) -> Deferred:
        d: Deferred = Deferred()
        self.writes.append(([m.text for m in messages], d))
        return d


def test_synchronous_history_writes_at_once_and_groups_while_a_write_is_in_progress() -> None:
    store = SlowHistory()
    service = service_with(store, history_flush_interval=0)
    _c, conn = user(service, "alice")
    service.join(conn, "dev")
    service.say(conn, room="dev", text="one")
    assert [texts for texts, _d in store.writes] == [["one"]]
    service.say(conn, room="dev", text="two")
    service.say(conn, room="dev", text="three")
    assert len(store.writes) == 1
    store.writes[0][1].callback(None)
    assert [texts for texts, _d in store.writes] == [["one"], ["two", "three"]]
    store.writes[1][1].callback(None)
    assert service.history_pending() == 0
    service.say(conn, room="dev", text="four")
    assert store.writes[-1][0] == ["four"]


def test_one_address_is_one_cloak_and_one_ban_whatever_the_protocol_or_listener() -> None:
    service = make_service()
    seen = {}
    for protocol, address in (
        ("irc", "203.0.113.7"),
        ("xmpp", "::ffff:203.0.113.7"),
        ("line", "::FFFF:cb00:7107"),
    ):
        client = FakeClient(protocol=protocol, address=address)
        conn = service.connect(client)
        assert conn.address == "203.0.113.7"
        seen[protocol] = service.claim_nick(conn, f"{protocol}user").host
    assert len(set(seen.values())) == 1
    cloak = seen["irc"]
    assert "203" not in cloak and "irc" not in cloak
    # A ban on the address or on the cloak refuses the address at once, on every listener.
    service.set_config_bans([ServerBan(f"*!*@{cloak}", "gone", "config")])
    for address in ("203.0.113.7", "::ffff:203.0.113.7"):
        with pytest.raises(Banned):
            service.connect(FakeClient(protocol="xmpp", address=address))
    service.set_config_bans([ServerBan("*!*@203.0.113.7", "gone", "config")])
    with pytest.raises(Banned):
        service.connect(FakeClient(protocol="xmpp", address="::ffff:203.0.113.7"))
    assert service.connect(FakeClient(address="203.0.113.8")) is not None
