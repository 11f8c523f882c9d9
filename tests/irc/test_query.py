"""WHO/WHOX, WHOIS, WHOWAS, ISON, USERHOST, TIME, VERSION, INFO and ADMIN over StringTransport."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatserver.core.events import ModeItem
from protocols.irc.handlers.query import WHOX_ORDER, parse_whox
from tests.irc.conftest import IrcWorld, commands, find, one


@pytest.fixture
def world() -> IrcWorld:
    return IrcWorld()


# -- WHOX parsing ------------------------------------------------------------------------------


def test_parse_whox_plain_who() -> None:
    request = parse_whox("o")
    assert (request.flags, request.fields, request.token) == ("o", "", None)


def test_parse_whox_orders_fields_and_keeps_token() -> None:
    request = parse_whox("%nuhtc,123")
    assert request.fields == "tcuhn"
    assert request.token == "123"


@pytest.mark.parametrize("token", ["", "1234", "ab", "-1"])
def test_parse_whox_bad_token_becomes_zero(token: str) -> None:
    assert parse_whox(f"%tn,{token}").token == "0"


@given(st.text())
def test_parse_whox_never_raises_and_fields_are_ordered(text: str) -> None:
    request = parse_whox(text)
    assert all(f in WHOX_ORDER for f in request.fields)
    assert list(request.fields) == sorted(request.fields, key=WHOX_ORDER.index)
    assert request.token is None or request.token.isdigit()


# -- WHO ---------------------------------------------------------------------------------------


def test_who_channel_lists_members_with_flags(world: IrcWorld) -> None:
    alice = world.client("alice", caps=("multi-prefix",))
    bob = world.client("bob")
    alice.send("JOIN #room")
    bob.send("JOIN #room", "AWAY :lunch")
    world.service.set_mode(alice.conn.core, "room", [ModeItem(True, "voice", "alice")])
    replies = alice.ask("WHO #room")
    rows = {m.params[5]: m for m in find(replies, "352")}
    assert set(rows) == {"alice", "bob"}
    assert rows["alice"].params[1] == "#room"
    assert rows["alice"].params[6] == "H@+"
    assert rows["bob"].params[6] == "G"
    assert rows["bob"].params[7] == "0 Real Name"
    assert replies[-1].command == "315" and replies[-1].params[1] == "#room"


def test_who_hides_invisible_users_from_strangers(world: IrcWorld) -> None:
    alice = world.client("alice")
    bob = world.client("bob")
    carol = world.client("carol")
    bob.send("MODE bob +i", "JOIN #room")
    alice.send("JOIN #room")
    assert "bob" not in [m.params[5] for m in find(carol.ask("WHO *"), "352")]
    assert "bob" not in [m.params[5] for m in find(carol.ask("WHO #room"), "352")]
    # A user who shares a room sees it.
    assert "bob" in [m.params[5] for m in find(alice.ask("WHO b*"), "352")]


def test_who_secret_room_is_empty_for_non_members(world: IrcWorld) -> None:
    alice = world.client("alice")
    bob = world.client("bob")
    alice.send("JOIN #hidden", "MODE #hidden +s")
    assert commands(bob.ask("WHO #hidden")) == ["315"]
    assert commands(alice.ask("WHO #hidden")) == ["352", "315"]


def test_who_opers_only_flag(world: IrcWorld) -> None:
    alice = world.client("alice")
    world.client("bob")
    world.service.grant_oper(alice.conn.core)
    rows = find(alice.ask("WHO * o"), "352")
    assert [m.params[5] for m in rows] == ["alice"]
    assert rows[0].params[6] == "H*"


def test_whox_fields_token_and_account(world: IrcWorld) -> None:
    alice = world.client("alice")
    bob = world.client("bob")
    bob.send("JOIN #room")
    world.service.login(bob.conn.core, "bob")
    reply = one(alice.ask("WHO #room %tcnuhiafr,7"), "354")
    # t c u i h n f a r, in the fixed WHOX order whatever the request's order.
    assert reply.params[1:] == (
        "7",
        "#room",
        "bob",
        "255.255.255.255",
        bob.user.host,
        "bob",
        "H@",
        "bob",
        "Real Name",
    )


def test_whox_without_account_says_zero(world: IrcWorld) -> None:
    alice = world.client("alice")
    reply = one(alice.ask("WHO alice %na"), "354")
    assert reply.params[1:] == ("alice", "0")


def test_who_mask_matches_realname_and_host(world: IrcWorld) -> None:
    alice = world.client("alice")
    world.client("bob", realname="Bobby Tables")
    assert [m.params[5] for m in find(alice.ask("WHO *Tables"), "352")] == ["bob"]
    host = world.service.find_user("bob").host
    assert [m.params[5] for m in find(alice.ask(f"WHO {host}"), "352")] == ["bob"]


# -- WHOIS -------------------------------------------------------------------------------------


def test_whois_full(world: IrcWorld) -> None:
    alice = world.client("alice")
    bob = world.client("bob")
    bob.send("JOIN #room", "JOIN #other", "AWAY :gone fishing", "MODE bob +B")
    world.service.login(bob.conn.core, "bobacct")
    world.service.grant_oper(bob.conn.core)
    world.clock.advance(42)
    replies = alice.ask("WHOIS bob")
    assert commands(replies) == ["311", "319", "312", "301", "313", "335", "330", "317", "318"]
    assert one(replies, "311").params[1:] == ("bob", "bob", bob.user.host, "*", "Real Name")
    assert set(one(replies, "319").params[2].split()) == {"@#room", "@#other"}
    assert one(replies, "301").params[2] == "gone fishing"
    assert one(replies, "330").params[1:3] == ("bob", "bobacct")
    idle = one(replies, "317")
    assert idle.params[2] == "42"
    assert idle.params[3] == str(int(bob.user.created_at))


def test_whois_hides_secret_rooms_from_strangers(world: IrcWorld) -> None:
    alice = world.client("alice")
    bob = world.client("bob")
    bob.send("JOIN #hidden", "MODE #hidden +s", "JOIN #open")
    assert one(alice.ask("WHOIS bob"), "319").params[2] == "@#open"
    alice.send("JOIN #open")
    # Own WHOIS shows everything.
    assert set(one(bob.ask("WHOIS bob"), "319").params[2].split()) == {"@#hidden", "@#open"}


def test_whois_secure_connection_on_loopback(world: IrcWorld) -> None:
    alice = world.client("alice")
    local = world.connect("127.0.0.1")
    local.register("loco")
    assert "671" in commands(alice.ask("WHOIS loco"))
    assert "671" not in commands(local.ask("WHOIS alice"))


def test_whois_unknown_nick(world: IrcWorld) -> None:
    alice = world.client("alice")
    replies = alice.ask("WHOIS nobody")
    assert commands(replies) == ["401", "318"]
    assert replies[1].params[1] == "nobody"


def test_whois_with_server_parameter_and_pseudo_user(world: IrcWorld) -> None:
    alice = world.client("alice")
    replies = alice.ask("WHOIS irc.test NickServ")
    assert commands(replies) == ["311", "312", "320", "318"]
    assert one(replies, "311").params[1] == "NickServ"


def test_whois_needs_a_nick(world: IrcWorld) -> None:
    alice = world.client("alice")
    assert commands(alice.ask("WHOIS")) == ["461"]


# -- WHOWAS ------------------------------------------------------------------------------------


def test_whowas_is_recorded_at_once_on_nick_change_and_quit(world: IrcWorld) -> None:
    alice = world.client("alice")
    bob = world.client("bob")
    bob.send("NICK robert")
    replies = alice.ask("WHOWAS bob")
    assert commands(replies) == ["314", "312", "369"]
    assert one(replies, "314").params[1:3] == ("bob", "bob")
    bob.send("QUIT :bye")
    assert commands(alice.ask("WHOWAS robert")) == ["314", "312", "369"]


def test_whowas_count_and_unknown(world: IrcWorld) -> None:
    alice = world.client("alice")
    bob = world.client("bob")
    for nick in ("b1", "bob", "b1", "bob"):
        bob.send(f"NICK {nick}")
    assert len(find(alice.ask("WHOWAS bob"), "314")) == 2
    assert len(find(alice.ask("WHOWAS bob 1"), "314")) == 1
    assert commands(alice.ask("WHOWAS nobody")) == ["406", "369"]


def test_whowas_shows_account(world: IrcWorld) -> None:
    alice = world.client("alice")
    bob = world.client("bob")
    world.service.login(bob.conn.core, "bob")
    bob.send("QUIT")
    assert one(alice.ask("WHOWAS bob"), "330").params[2] == "bob"


# -- ISON, USERHOST ----------------------------------------------------------------------------


def test_ison_as_params_and_trailing(world: IrcWorld) -> None:
    alice = world.client("alice")
    world.client("Bob")
    assert one(alice.ask("ISON bob carol"), "303").params[1] == "Bob"
    assert one(alice.ask("ISON :carol BOB alice"), "303").params[1] == "Bob alice"
    assert one(alice.ask("ISON carol"), "303").params[1] == ""


def test_userhost(world: IrcWorld) -> None:
    alice = world.client("alice")
    bob = world.client("bob")
    bob.send("AWAY :away")
    world.service.grant_oper(alice.conn.core)
    text = one(alice.ask("USERHOST alice bob nobody"), "302").params[1]
    assert text.split() == [
        f"alice*=+alice@{alice.user.host}",
        f"bob=-bob@{bob.user.host}",
    ]


# -- the server --------------------------------------------------------------------------------


def test_time_version_info_admin(world: IrcWorld) -> None:
    alice = world.client("alice")
    time_reply = one(alice.ask("TIME"), "391")
    assert time_reply.params[1] == "irc.test"
    assert time_reply.params[2] == str(int(world.clock.seconds()))
    version = alice.ask("VERSION")
    assert version[0].command == "351"
    assert any("CHATHISTORY=100" in m.params for m in find(version, "005"))
    info = alice.ask("INFO")
    assert commands(info)[-1] == "374" and "371" in commands(info)
    assert commands(alice.ask("ADMIN irc.test")) == ["256", "257", "258", "259"]


@pytest.mark.parametrize("command", ["TIME", "VERSION", "INFO", "ADMIN"])
def test_other_servers_are_unknown(world: IrcWorld, command: str) -> None:
    alice = world.client("alice")
    replies = alice.ask(f"{command} elsewhere.example")
    assert commands(replies) == ["402"]
    assert replies[0].params[1] == "elsewhere.example"


def test_queries_need_registration(world: IrcWorld) -> None:
    client = world.connect()
    assert commands(client.ask("WHO *")) == ["451"]
