"""NickServ and ChanServ over StringTransport, on the shared accounts and rooms."""

from __future__ import annotations

import pytest

from chatserver.core.settings import CoreSettings
from protocols.irc.message import IrcMessage
from tests.irc.conftest import Client, IrcWorld, commands, find, one

NS = "NickServ!NickServ@irc.test"
CS = "ChanServ!ChanServ@irc.test"


def notices(messages: list[IrcMessage]) -> list[str]:
    return [m.params[-1] for m in messages if m.command == "NOTICE"]


@pytest.fixture
def world() -> IrcWorld:
    # "timeout" enforcement: most of these need a guest on a registered nick (GHOST, REGAIN,
    # renaming when the time is up); strict enforcement has tests of its own below.
    return IrcWorld(
        settings=CoreSettings(
            server_name="irc.test",
            scram_iterations=4096,
            nick_enforcement="timeout",
            nick_enforce_timeout=30,
        )
    )


@pytest.fixture
def strict() -> IrcWorld:
    return IrcWorld(settings=CoreSettings(server_name="irc.test", scram_iterations=4096))


def said(client: Client, line: str, source: str = NS) -> list[str]:
    """Send ``line`` and return the texts of the NOTICEs from ``source`` in reply."""
    replies = client.ask(line)
    return [m.params[1] for m in replies if m.command == "NOTICE" and m.source == source]


def registered(world: IrcWorld, nick: str, password: str = "secret123") -> Client:
    client = world.client(nick)
    client.send(f"PRIVMSG NickServ :REGISTER {password}")
    client.take()
    return client


# -- NickServ ----------------------------------------------------------------------------------


def test_register_logs_in_and_says_so(world: IrcWorld) -> None:
    alice = world.client("alice")
    replies = alice.ask("PRIVMSG NickServ :REGISTER secret123 alice@example.org")
    assert one(replies, "900").params[2] == "alice"
    assert notices(replies) == ["Account alice registered; you are now logged in."]
    assert all(m.source == NS for m in find(replies, "NOTICE"))
    assert alice.user.account == "alice"
    assert world.store.accounts["alice"].email == "alice@example.org"


def test_register_twice_and_registered_nick(world: IrcWorld) -> None:
    alice = registered(world, "alice")
    assert said(alice, "NS REGISTER another1") == [
        "REGISTER failed: you are already logged in as alice"
    ]
    alice.send("QUIT")
    imposter = world.client("alice")
    assert said(imposter, "NS REGISTER another1") == [
        "REGISTER failed: alice is already registered"
    ]


def test_weak_password_and_syntax(world: IrcWorld) -> None:
    alice = world.client("alice")
    assert said(alice, "NS REGISTER abc") == [
        "REGISTER failed: passwords must be at least 6 characters"
    ]
    assert said(alice, "NS REGISTER") == ["Syntax: REGISTER <password> [email]"]
    assert said(alice, "NS WHATEVER") == ['Unknown command WHATEVER. Try "/msg NickServ HELP".']
    assert "  IDENTIFY [account] <password>" in said(alice, "NS HELP")


def test_identify_logout_identify(world: IrcWorld) -> None:
    alice = registered(world, "alice")
    replies = alice.ask("NS LOGOUT")
    assert "901" in commands(replies)
    assert "You are now logged out of alice." in notices(replies)
    assert alice.user.account is None
    assert said(alice, "NS LOGOUT") == ["LOGOUT failed: you are not logged in"]
    assert said(alice, "NS IDENTIFY wrongpass") == ["IDENTIFY failed: invalid password"]
    replies = alice.ask("PRIVMSG NickServ :IDENTIFY secret123")
    assert "900" in commands(replies)
    assert alice.user.account == "alice"


def test_strict_logout_leaves_the_nick_and_identify_takes_it_back(strict: IrcWorld) -> None:
    alice = registered(strict, "alice")
    replies = alice.ask("NS LOGOUT")
    assert "901" in commands(replies)
    # No longer the account: not on its nick either, at once.
    renamed = one(replies, "NICK")
    assert renamed.params[0].startswith("Guest") and alice.user.nick == renamed.params[0]
    assert alice.user.account is None
    assert said(alice, "NS IDENTIFY alice wrongpass") == ["IDENTIFY failed: invalid password"]
    assert "900" in commands(alice.ask("PRIVMSG NickServ :IDENTIFY alice secret123"))
    assert one(alice.ask("NICK alice"), "NICK").params == ("alice",)
    # NickServ and a guest's nick cannot be registered (nor taken) by anyone.
    assert one(alice.ask("NICK Guest4"), "432")


def test_identify_to_another_account_from_any_nick(world: IrcWorld) -> None:
    registered(world, "alice").send("QUIT")
    other = world.client("someone")
    assert said(other, "NS IDENTIFY alice secret123") == ["You are now logged in as alice."]
    assert other.user.account == "alice"
    assert said(other, "NS IDENTIFY nobody secret123") == [
        "IDENTIFY failed: nobody is not registered"
    ]


def test_info(world: IrcWorld) -> None:
    registered(world, "alice")
    bob = world.client("bob")
    text = said(bob, "NS INFO alice")
    assert text[0] == "Information on alice:"
    assert text[1].startswith("Registered: ")
    assert text[2] == "Logged in now as: alice"
    assert said(bob, "NS INFO") == ["bob is not registered."]


def test_set_password(world: IrcWorld) -> None:
    alice = registered(world, "alice")
    assert said(alice, "NS SET PASSWORD wrong123 newsecret") == ["SET failed: invalid password"]
    assert said(alice, "NS SET PASSWORD secret123 newsecret") == ["Your password has been changed."]
    assert said(alice, "NS SET PASSWORD newsecret") == [
        "Syntax: SET PASSWORD <current password> <new password> | ALWAYS-ON [ON|OFF]"
    ]
    assert said(alice, "NS SET ALWAYS-ON maybe") == [
        "Syntax: SET PASSWORD <current password> <new password> | ALWAYS-ON [ON|OFF]"
    ]
    alice.send("NS LOGOUT")
    assert said(alice, "NS IDENTIFY secret123") == ["IDENTIFY failed: invalid password"]
    assert said(alice, "NS IDENTIFY newsecret") == ["You are now logged in as alice."]


def test_drop(world: IrcWorld) -> None:
    alice = registered(world, "alice")
    assert said(alice, "NS DROP wrongpass") == ["DROP failed: invalid password"]
    assert said(alice, "NS DROP secret123") == ["Account alice has been dropped."]
    assert "alice" not in world.store.accounts
    # Told first; at the end of the turn the session ends, as every session of the account.
    world.clock.advance(0)
    assert alice.take()[-1].params[-1].endswith("(Account deleted)")
    assert world.service.find_user("alice") is None


def test_enforcement_renames_an_unidentified_holder(world: IrcWorld) -> None:
    registered(world, "alice").send("QUIT")
    squatter = world.client("alice")
    world.clock.advance(31)
    assert squatter.user.nick.startswith("Guest")


def test_ghost_releases_the_nick_from_a_squatter(world: IrcWorld) -> None:
    registered(world, "alice").send("QUIT")
    squatter = world.client("alice")
    owner = world.client("alice_")
    # Without the password and not logged in: refused.
    assert said(owner, "NS GHOST alice") == [
        "GHOST failed: log in to the account alice first (or give its password)"
    ]
    assert said(owner, "NS GHOST alice secret123") == ["alice has been released."]
    assert squatter.user.nick.startswith("Guest")
    assert owner.user.nick == "alice_" and owner.user.account == "alice"
    assert said(owner, "NS GHOST alice_") == ["GHOST failed: that is your own nick"]


def test_regain_takes_the_nick_back(world: IrcWorld) -> None:
    registered(world, "alice").send("QUIT")
    squatter = world.client("alice")
    owner = world.client("other")
    replies = owner.ask("NS REGAIN alice secret123")
    assert "You have regained alice." in notices(replies)
    assert any(m.command == "NICK" and m.params == ("alice",) for m in replies)
    assert owner.user.nick == "alice"
    assert squatter.user.nick.startswith("Guest")


def test_wrong_password_for_ghost_fails(world: IrcWorld) -> None:
    registered(world, "alice").send("QUIT")
    world.client("alice")
    owner = world.client("other")
    assert said(owner, "NS GHOST alice nottheone") == ["GHOST failed: invalid password"]


def test_aliases(world: IrcWorld) -> None:
    alice = world.client("alice")
    for command in ("NS HELP", "NICKSERV HELP"):
        assert said(alice, command)[0] == "NickServ commands:"
    for command in ("CS HELP", "CHANSERV HELP", "PRIVMSG ChanServ :HELP"):
        assert said(alice, command, CS)[0] == "ChanServ commands:"


# -- ChanServ ----------------------------------------------------------------------------------


def test_chanserv_register_needs_login_and_ops(world: IrcWorld) -> None:
    guest = world.client("guest")
    guest.send("JOIN #room")
    assert said(guest, "CS REGISTER #room", CS) == [
        "REGISTER failed: log in to an account to register a room"
    ]
    alice = registered(world, "alice")
    alice.send("JOIN #room")
    assert said(alice, "CS REGISTER #room", CS) == [
        "REGISTER failed: only room operators may register a room"
    ]
    assert said(guest, "CS REGISTER #bad,name", CS) == [
        "REGISTER failed: #bad,name is not a valid room name"
    ]


def test_chanserv_modes_in_a_registered_room(world: IrcWorld) -> None:
    alice = registered(world, "alice")
    alice.send("JOIN #room")
    assert said(alice, "CS REGISTER #Room", CS) == ["#room is now registered to alice."]
    assert "room" in world.store.rooms
    bob = world.client("bob")
    bob.send("JOIN #room")
    bob.take()
    alice.send("CS OP #room bob")
    mode = one(bob.take(), "MODE")
    assert (mode.source, mode.params) == (CS, ("#room", "+o", "bob"))
    alice.send("CS DEOP #room bob", "CS VOICE #room bob", "CS BAN #room troll")
    assert [m.params[1:] for m in find(bob.take(), "MODE")] == [
        ("-o", "bob"),
        ("+v", "bob"),
        ("+b", "troll!*@*"),
    ]
    alice.send("CS UNBAN #room troll", "CS DEVOICE #room bob")
    assert [m.params[1:] for m in find(bob.take(), "MODE")] == [
        ("-b", "troll!*@*"),
        ("-v", "bob"),
    ]
    assert said(alice, "CS VOICE #room nobody", CS) == ["VOICE failed: no such nick: nobody"]
    assert said(alice, "CS DEVOICE #room bob", CS) == ["Nothing to change on #room."]


def test_chanserv_ops_a_registered_operator_who_lost_ops(world: IrcWorld) -> None:
    alice = registered(world, "alice")
    alice.send("JOIN #room", "CS REGISTER #room", "MODE #room -o alice")
    alice.take()
    alice.send("CS OP #room")
    assert one(alice.take(), "MODE").params == ("#room", "+o", "alice")


def test_chanserv_refuses_others_and_unregistered_rooms(world: IrcWorld) -> None:
    alice = registered(world, "alice")
    alice.send("JOIN #room", "CS REGISTER #room", "JOIN #plain")
    bob = registered(world, "bob")
    bob.send("JOIN #room")
    assert said(bob, "CS OP #room", CS) == [
        "OP failed: only the room's owner and registered operators may do that"
    ]
    assert said(alice, "CS OP #plain", CS) == ["OP failed: plain is not registered"]
    assert said(alice, "CS BAN #room", CS) == ["Syntax: BAN <#room> <nick or mask>"]


def test_chanserv_info_and_drop(world: IrcWorld) -> None:
    alice = registered(world, "alice")
    alice.send("JOIN #room", "CS REGISTER #room")
    info = said(alice, "CS INFO #room", CS)
    assert info[:2] == ["Information on #room:", "Owner: alice"]
    assert said(alice, "CS DROP #room", CS) == ["#room is no longer registered."]
    assert "room" not in world.store.rooms
    assert said(alice, "CS INFO #room", CS) == ["#room is not registered."]


# -- draft/account-registration ----------------------------------------------------------------


def test_register_command_creates_and_logs_in(world: IrcWorld) -> None:
    alice = world.client("alice")
    replies = alice.ask("REGISTER * alice@example.org :along-secret")
    assert [m.params for m in find(replies, "REGISTER")] == [
        ("SUCCESS", "alice", "Account created")
    ]
    assert one(replies, "900").params[2] == "alice"
    alice.send("NS LOGOUT")
    assert said(alice, "NS IDENTIFY along-secret") == ["You are now logged in as alice."]


def test_register_command_failures(world: IrcWorld) -> None:
    registered(world, "taken").send("QUIT")
    bob = world.client("bob")

    def fail(line: str) -> tuple[str, ...]:
        return one(bob.ask(line), "FAIL").params

    assert fail("REGISTER robert * secret123")[:3] == (
        "REGISTER",
        "ACCOUNT_NAME_MUST_BE_NICK",
        "robert",
    )
    assert fail("REGISTER bob not-an-email secret123")[:3] == ("REGISTER", "INVALID_EMAIL", "bob")
    assert fail("REGISTER bob * abc")[:3] == ("REGISTER", "WEAK_PASSWORD", "bob")
    assert fail("REGISTER bob * " + "x" * 301)[:2] == ("REGISTER", "UNACCEPTABLE_PASSWORD")
    assert commands(bob.ask("REGISTER bob *")) == ["461"]
    squatter = world.client("taken")
    assert one(squatter.ask("REGISTER * * secret123"), "FAIL").params[:3] == (
        "REGISTER",
        "ACCOUNT_EXISTS",
        "taken",
    )
    bob.send("REGISTER BOB * secret123")
    assert fail("REGISTER bob * secret123")[:3] == ("REGISTER", "ALREADY_AUTHENTICATED", "bob")


def test_register_before_connecting_and_verify(world: IrcWorld) -> None:
    early = world.connect()
    early.send("CAP LS 302", "NICK early")
    fail = one(early.ask("REGISTER * * secret123"), "FAIL")
    assert fail.params[:2] == ("REGISTER", "COMPLETE_CONNECTION_REQUIRED")
    ls = " ".join(m.params[-1] for m in early.ask("CAP LS 302") if m.command == "CAP")
    assert "draft/account-registration" in ls.split()
    alice = world.client("alice")
    assert one(alice.ask("VERIFY alice 123456"), "FAIL").params[:3] == (
        "VERIFY",
        "INVALID_CODE",
        "alice",
    )


def test_closed_registration_is_temporarily_unavailable() -> None:
    world = IrcWorld(settings=CoreSettings(server_name="irc.test", registration="closed"))
    alice = world.client("alice")
    assert one(alice.ask("REGISTER * * secret123"), "FAIL").params[:2] == (
        "REGISTER",
        "TEMPORARILY_UNAVAILABLE",
    )
    assert said(alice, "NS REGISTER secret123") == [
        "REGISTER failed: registration is closed on this server"
    ]
