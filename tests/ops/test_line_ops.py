"""Line chat's operations commands over StringTransport: /oper, /whois addresses, /kline,
TLS policies and a factory whose config is replaced (a reload)."""

from __future__ import annotations

import dataclasses

from chatserver.config import LineConfig, OperatorConfig
from chatserver.core.bans import ServerBan
from tests.line.harness import World
from tests.ops.helpers import OPER_HASH, OPER_PASSWORD

REMOTE = "192.0.2.10"


def world(**line: object) -> World:
    w = World(LineConfig(**line)) if line else World()
    w.factory.operators = (OperatorConfig("admin", OPER_HASH),)
    return w


def test_operator_json_whois_and_klines() -> None:
    w = world()
    alice = w.user("alice", host="203.0.113.5")
    admin = w.user("admin")
    admin.send("/format json")
    admin.send(f'{{"cmd": "oper", "name": "admin", "password": "{OPER_PASSWORD}"}}')
    assert admin.one(type="ok", cmd="oper")["oper"] is True
    admin.send('{"cmd": "whois", "nick": "alice"}')
    whois = admin.one(type="ok", cmd="whois")
    assert whois["addresses"] == [{"protocol": "line", "address": "203.0.113.5"}]
    assert whois["oper"] is False and "203.0.113.5" not in whois["mask"]
    alice.send("/format json")
    alice.send('{"cmd": "whois", "nick": "admin"}')
    seen = alice.one(type="ok", cmd="whois")
    assert seen["oper"] is True and "addresses" not in seen
    alice.send('{"cmd": "klines"}')
    assert alice.one(type="error")["error"] == "not_permitted"

    admin.send('{"cmd": "kline", "mask": "203.0.113.0/24", "reason": "spam"}')
    result = admin.one(type="ok", cmd="kline")
    assert result["mask"] == "*!*@203.0.113.0/24" and result["disconnected"] == ["alice"]
    assert not alice.connected
    admin.send('{"cmd": "klines"}')
    assert [b["mask"] for b in admin.one(type="ok", cmd="klines")["bans"]] == ["*!*@203.0.113.0/24"]
    again = w.connect("203.0.113.6")
    assert again.lines() == ["!!! error: You are banned from this server: spam"]
    assert not again.connected
    admin.send('{"cmd": "unkline", "mask": "203.0.113.0/24"}')
    assert admin.one(type="ok", cmd="unkline")["mask"] == "*!*@203.0.113.0/24"


def test_wrong_operator_passwords_are_throttled() -> None:
    w = world()
    eve = w.user("eve")
    # Per address: four times [chat] login_failure_burst (5), as for account logins.
    for _ in range(25):
        eve.send("/oper admin nope")
        w.clock.advance(0.3)  # within flood control
    lines = eve.lines()
    assert lines[0] == "!!! error: wrong operator name or password"
    assert lines[-1].startswith("!!! error: too many failed attempts")


def test_passwords_over_plaintext_from_another_machine() -> None:
    w = world(tls_port=2324)
    remote = w.connect(REMOTE)
    remote.take()
    remote.send("/identify alice secret")
    assert remote.lines()[0] == (
        "!!! error: passwords are not accepted over plaintext from another machine:"
        " connect with TLS to port 2324"
    )
    local = w.connect("127.0.0.1")
    local.take()
    local.send("/identify alice secret")
    assert local.lines()[0].startswith("!!! error: alice is not registered")
    allowed = world(plaintext_passwords=True).connect(REMOTE)
    allowed.take()
    allowed.send("/identify alice secret")
    assert allowed.lines()[0].startswith("!!! error: alice is not registered")


def test_require_tls_refuses_plaintext_from_other_machines() -> None:
    w = world(require_tls=True)
    remote = w.connect(REMOTE)
    assert remote.lines() == [
        "!!! error: plaintext connections from other machines are not accepted, and this"
        " server has no TLS port"
    ]
    assert not remote.connected and w.service.connection_count() == 0
    assert w.connect("127.0.0.1").lines()[-1] == "*** Choose a nick:"


def test_a_replaced_config_applies_to_open_connections() -> None:
    w = world()
    bob = w.user("bob", "dev")
    w.factory.config = dataclasses.replace(w.line, flood_burst=2, flood_rate=0.01, motd="new")
    for i in range(4):
        bob.send(f"line {i}")
    assert any(line.startswith("!!! error: you are sending too fast") for line in bob.lines())
    assert "*** new" in w.connect().lines()


def test_config_bans_refuse_the_connection_with_its_code() -> None:
    w = world()
    w.service.set_config_bans([ServerBan("*!*@198.51.100.*", "no", "config")])
    client = w.connect("198.51.100.3")
    assert client.lines() == ["!!! error: You are banned from this server: no"]
    json_world = world()
    json_world.service.set_config_bans([ServerBan("mallory!*@*", "", "config")])
    mallory = json_world.connect()
    mallory.send("/format json")
    mallory.take()
    mallory.send('{"cmd": "nick", "nick": "mallory"}')
    assert mallory.one(type="disconnect")["reason"] == "You are banned from this server"
