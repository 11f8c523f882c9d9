"""OPER against hashed operator passwords, KILL and WALLOPS, over StringTransport."""

from __future__ import annotations

import pytest

from chatserver.config import OperatorConfig
from chatserver.core.settings import CoreSettings
from chatserver.passwords import hash_password
from tests.irc.conftest import IrcWorld, commands, one

# Cheap scrypt parameters: the hash format and the check are the same as the defaults'.
OPERATORS = (OperatorConfig("root", hash_password("hunter22", n=16, r=1, p=1)),)


@pytest.fixture
def world() -> IrcWorld:
    return IrcWorld(
        operators=OPERATORS,
        settings=CoreSettings(server_name="irc.test", login_failure_burst=3),
    )


def test_oper_success_sets_mode_and_whois_shows_it(world: IrcWorld) -> None:
    alice = world.client("alice")
    replies = alice.ask("OPER root hunter22")
    assert "381" in commands(replies)
    mode = one(replies, "MODE")
    assert mode.params == ("alice", "+o")
    assert alice.conn.is_oper
    bob = world.client("bob")
    assert "313" in commands(bob.ask("WHOIS alice"))


def test_oper_wrong_password_and_unknown_name_get_one_answer(world: IrcWorld) -> None:
    # The same reply for both, so that OPER does not tell which operator names exist.
    alice = world.client("alice")
    wrong_password = alice.ask("OPER root hunter2")
    unknown_name = alice.ask("OPER nobody hunter22")
    assert commands(wrong_password) == ["464"]
    assert [(m.command, m.params) for m in unknown_name] == [
        (m.command, m.params) for m in wrong_password
    ]
    assert not alice.conn.is_oper


def test_oper_failures_are_throttled(world: IrcWorld) -> None:
    alice = world.client("alice")
    # Failures count per address, as failed logins do: four times the per-account burst.
    for _ in range(12):
        alice.send("OPER root wrong")
    replies = alice.ask("OPER root hunter22")
    assert commands(replies) == ["464"]
    assert "Too many" in replies[0].params[-1]
    assert not alice.conn.is_oper
    world.clock.advance(3600)
    assert "381" in commands(alice.ask("OPER root hunter22"))


def test_oper_needs_two_parameters(world: IrcWorld) -> None:
    alice = world.client("alice")
    assert commands(alice.ask("OPER root")) == ["461"]


def test_oper_with_no_operators_configured() -> None:
    # The answer of every failed OPER: not even whether operators exist is told.
    world = IrcWorld()
    alice = world.client("alice")
    assert commands(alice.ask("OPER root hunter22")) == ["464"]


def test_kill(world: IrcWorld) -> None:
    alice = world.client("alice")
    bob = world.client("bob")
    carol = world.client("carol")
    bob.send("JOIN #room")
    carol.send("JOIN #room")
    assert commands(alice.ask("KILL bob :spam")) == ["481"]
    alice.send("OPER root hunter22")
    alice.take()
    carol.take()
    alice.send("KILL bob :spamming")
    assert bob.closed
    assert any(
        "Killed by alice: spamming" in m.params[-1] for m in bob.take() if m.command == "ERROR"
    )
    quit_ = one(carol.take(), "QUIT")
    assert quit_.source.startswith("bob!")
    assert "Killed by alice: spamming" in quit_.params[0]
    assert world.service.find_user("bob") is None
    assert commands(alice.ask("KILL nobody :x")) == ["401"]
    assert commands(alice.ask("KILL NickServ :x")) == ["483"]


def test_wallops_reach_users_with_plus_w(world: IrcWorld) -> None:
    alice = world.client("alice")
    bob = world.client("bob")
    carol = world.client("carol")
    bob.send("MODE bob +w")
    assert commands(alice.ask("WALLOPS :hi")) == ["481"]
    alice.send("OPER root hunter22")
    bob.take()
    carol.take()
    alice.send("WALLOPS :server restart soon")
    wallops = one(bob.take(), "WALLOPS")
    assert wallops.params == ("server restart soon",)
    assert wallops.source.startswith("alice!")
    assert carol.take() == []
