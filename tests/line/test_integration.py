"""Line chat against the real server process, over real sockets."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.support.server import LineClient, ServerProcess

PASSWORD = "integration-pw"

pytestmark = pytest.mark.timeout(30)


def connect(server: ServerProcess, nick: str) -> LineClient:
    client = LineClient(server.ports["line"])
    client.expect("*** Choose a nick:")
    client.send(nick)
    client.expect(f"*** You are {nick}.")
    return client


def join(client: LineClient, room: str, key: str = "") -> list[str]:
    """Join and return the lines of the room's introduction."""
    client.send(f"/join {room} {key}".strip())
    lines = [client.expect(f"*** you joined #{room}")]
    while True:
        line = client.read_line()
        lines.append(line)
        if line == f"*** now talking in #{room}":
            return lines


def sync(client: LineClient) -> None:
    """Wait until the server has handled everything this client sent."""
    client.send("/ping")
    client.expect("*** pong")


def test_several_users_in_several_rooms(make_server: Callable[..., ServerProcess]) -> None:
    server = make_server(protocols=("line",))
    alice = connect(server, "alice")
    bob = connect(server, "bob")
    carol = connect(server, "carol")
    join(alice, "dev")
    join(alice, "ops")
    join(bob, "dev")
    alice.expect("-!- bob joined #dev")
    join(carol, "ops")
    alice.expect("-!- carol joined #ops")

    # Alice's current room is ops (joined last); she switches back to dev.
    alice.send("hello ops")
    carol.expect("[#ops] <alice> hello ops")
    alice.send("/join dev")
    alice.expect("*** now talking in #dev")
    alice.send("hello dev")
    bob.expect("[#dev] <alice> hello dev")
    bob.send("hi alice")
    line = alice.expect("<bob>")
    assert line == "[#dev] <bob> hi alice"
    sync(carol)
    assert not any(seen.startswith("[#dev]") for seen in carol.seen)

    # Private messages, and /me.
    carol.send("/msg bob psst, bob")
    assert bob.expect("*carol*") == "*carol* psst, bob"
    bob.send("/me waves")
    assert alice.expect("* bob") == "[#dev] * bob waves"

    alice.send("/rooms")
    alice.expect("*** 2 rooms:")
    assert alice.read_line() == "***   #dev (2 members)"
    assert alice.read_line() == "***   #ops (2 members)"
    alice.send("/who ops")
    assert alice.expect("members of #ops") == "*** members of #ops (2): @alice carol"

    bob.send("/quit see you")
    assert alice.expect("-!- bob") == "-!- bob quit (Quit: see you)"
    for client in (alice, carol):
        client.close()


def test_moderation(make_server: Callable[..., ServerProcess]) -> None:
    server = make_server(protocols=("line",))
    alice = connect(server, "alice")
    bob = connect(server, "bob")
    join(alice, "dev")
    join(bob, "dev")

    # Topic lock (the default): only operators set the topic.
    bob.send("/topic bob was here")
    bob.expect("!!! error: only room operators may change the topic")
    alice.send("/topic Be excellent")
    bob.expect("-!- alice changed the topic of #dev to: Be excellent")

    # Moderated: only voiced members speak.
    alice.send("/mode +m")
    bob.expect("-!- alice sets mode +moderated on #dev")
    bob.send("may I?")
    bob.expect("!!! error: cannot send to #dev: the room is moderated")
    alice.send("/voice bob")
    bob.expect("-!- alice sets mode +voice bob on #dev")
    bob.send("thank you")
    alice.expect("[#dev] <bob> thank you")
    alice.send("/mode -moderated")
    bob.expect("-!- alice sets mode -moderated on #dev")

    # Kick, then ban: a banned user cannot come back.
    alice.send("/kick bob cool off")
    assert bob.expect("kicked you") == "*** alice kicked you from #dev (cool off)"
    alice.send("/ban bob")
    alice.expect("-!- alice sets mode +ban bob!*@* on #dev")
    bob.send("/join dev")
    bob.expect("!!! error: cannot join #dev: you are banned from this room")
    alice.send("/unban bob")
    alice.expect("-!- alice sets mode -ban bob!*@* on #dev")
    bob.send("/join dev")
    bob.expect("*** you joined #dev")
    assert bob.expect("topic of #dev") == "*** topic of #dev: Be excellent (set by alice)"

    # Invite-only.
    carol = connect(server, "carol")
    alice.send("/mode +i")
    alice.expect("-!- alice sets mode +invite_only on #dev")
    carol.send("/join dev")
    carol.expect("!!! error: cannot join #dev: this room is invite-only")
    alice.send("/invite carol")
    carol.expect("-!- alice invites you to #dev")
    carol.send("/join dev")
    carol.expect("*** you joined #dev")
    for client in (alice, bob, carol):
        client.close()


def test_json_mode(make_server: Callable[..., ServerProcess]) -> None:
    server = make_server(protocols=("line",))
    human = connect(server, "human")
    join(human, "dev")

    bot = LineClient(server.ports["line"])
    bot.expect("*** Choose a nick:")
    bot.send("/format json")

    def next_obj(**match: Any) -> dict[str, Any]:
        while True:
            line = bot.read_line()
            if not line.startswith("{"):
                continue
            obj = json.loads(line)
            if all(obj.get(k) == v for k, v in match.items()):
                return obj

    assert next_obj(type="ok") == {"type": "ok", "cmd": "format", "format": "json"}
    bot.send(json.dumps({"cmd": "nick", "nick": "robot", "tag": 1}))
    assert next_obj(type="ok")["nick"] == "robot"
    bot.send(json.dumps({"cmd": "join", "room": "dev", "tag": 2}))
    room = next_obj(type="room")
    assert [m["nick"] for m in room["members"]] == ["human", "robot"]
    assert next_obj(type="ok", tag=2)["room"] == "dev"

    human.send("hello robot")
    message = next_obj(type="message")
    assert message["from"] == "human" and message["text"] == "hello robot"
    assert message["room"] == "dev" and message["id"]

    bot.send(json.dumps({"cmd": "say", "room": "dev", "text": "beep"}))
    assert next_obj(type="ok")["cmd"] == "say"
    human.expect("[#dev] <robot> beep")
    bot.send(json.dumps({"cmd": "msg", "to": "human", "text": "boop"}))
    human.expect("*robot* boop")
    bot.send(json.dumps({"cmd": "kick", "nick": "human"}))
    error = next_obj(type="error")
    assert error["error"] == "not_permitted" and error["cmd"] == "kick"
    bot.send("plain text still works")
    human.expect("[#dev] <robot> plain text still works")
    bot.send(json.dumps({"cmd": "quit", "reason": "done"}))
    human.expect("-!- robot quit (Quit: done)")
    human.close()


def test_registration_and_nick_enforcement(make_server: Callable[..., ServerProcess]) -> None:
    server = make_server(
        protocols=("line",),
        overrides={"chat": {"nick_enforcement": "timeout", "nick_enforce_timeout": 2}},
    )
    alice = connect(server, "alice")
    alice.send("/register " + PASSWORD)
    alice.expect("*** alice is now registered")
    alice.send("/quit")
    alice.read_until_closed()

    # Someone else takes the nick and does not identify: renamed after the timeout.
    squatter = connect(server, "alice")
    squatter.expect("-!- Server: alice is a registered nick. Identify within 2 seconds")
    renamed = squatter.expect("*** you are now known as", timeout=6)
    assert renamed.startswith("*** you are now known as Guest")

    # The owner takes it and identifies in time: kept.
    owner = connect(server, "alice")
    owner.expect("-!- Server: alice is a registered nick.")
    owner.send("/identify " + PASSWORD)
    owner.expect("*** you are now logged in as alice")
    owner.send("/whois alice")
    owner.expect("*** alice is logged in as alice")

    # A second connection joins the same user.
    join(owner, "dev")
    phone = LineClient(server.ports["line"])
    phone.expect("*** Choose a nick:")
    phone.send(f"/identify alice {PASSWORD}")
    phone.expect("*** You are alice.")
    phone.expect("*** you are in #dev")
    owner.send("from the laptop")
    phone.expect("[#dev] <alice> from the laptop")
    for client in (squatter, owner, phone):
        client.close()


@pytest.mark.parametrize("mode", ["text", "json"])
def test_lines_sent_right_behind_a_login_run_after_it_in_order(
    make_server: Callable[..., ServerProcess], mode: str
) -> None:
    """A script that writes its login and what follows in one go: the password is checked
    off the reactor, and the lines behind it wait for the login's answer, then run as the
    logged-in user, in order (before, they ran first: "choose a nick first")."""
    server = make_server(protocols=("line",))
    server.create_account("alice", PASSWORD)
    bob = connect(server, "bob")
    join(bob, "dev")
    script = LineClient(server.ports["line"])
    script.expect("*** Choose a nick:")
    if mode == "json":
        script.send("/format json")
        script.expect('"format"')
        lines = [
            json.dumps({"cmd": "identify", "nick": "alice", "password": PASSWORD, "tag": 1}),
            json.dumps({"cmd": "join", "room": "dev", "tag": 2}),
            json.dumps({"cmd": "say", "room": "dev", "text": "first", "tag": 3}),
            json.dumps({"cmd": "say", "room": "dev", "text": "second", "tag": 4}),
        ]
    else:
        lines = [f"/identify alice {PASSWORD}", "/join dev", "first", "second"]
    script.sock.sendall("".join(f"{line}\r\n" for line in lines).encode())
    bob.expect("-!- alice joined #dev")
    assert bob.expect("<alice>") == "[#dev] <alice> first"
    assert bob.expect("<alice>") == "[#dev] <alice> second"
    if mode == "json":
        script.send(json.dumps({"cmd": "ping", "tag": 5}))
        script.expect(lambda text: text.startswith("{") and json.loads(text).get("tag") == 5)
        answers = [json.loads(text) for text in script.seen if text.startswith("{")]
        tags = [obj["tag"] for obj in answers if "tag" in obj]
        assert tags == [1, 2, 3, 4, 5], answers
        assert not [obj for obj in answers if obj.get("type") == "error"], answers
    else:
        sync(script)
        assert not [text for text in script.seen if text.startswith("!!!")], script.seen
        welcome = [text for text in script.seen if text.startswith("*** You are alice.")]
        assert welcome and script.seen.index(welcome[0]) < script.seen.index(
            "*** now talking in #dev"
        ), script.seen
    for client in (bob, script):
        client.close()


def test_a_join_from_one_connection_shows_the_room_on_both_once(
    make_server: Callable[..., ServerProcess],
) -> None:
    server = make_server(protocols=("line",))
    laptop = connect(server, "alice")
    laptop.send("/register " + PASSWORD)
    laptop.expect("*** alice is now registered")
    phone = LineClient(server.ports["line"])
    phone.expect("*** Choose a nick:")
    phone.send(f"/identify alice {PASSWORD}")
    phone.expect("*** You are alice.")
    sync(phone)
    sync(laptop)
    lines = join(laptop, "dev")
    assert lines == [
        "*** you joined #dev",
        "*** #dev has no topic",
        "*** members of #dev (1): @alice",
        "*** now talking in #dev",
    ]
    # The other connection shows the room as if it had joined itself, once.
    phone.expect("*** you joined #dev")
    sync(phone)
    shown = [line for line in phone.seen if "#dev" in line]
    assert shown == [
        "*** you joined #dev",
        "*** #dev has no topic",
        "*** members of #dev (1): @alice",
    ]
    phone.send("from the phone")
    laptop.expect("[#dev] <alice> from the phone")
    for client in (laptop, phone):
        client.close()


def test_state_survives_a_restart(make_server: Callable[..., ServerProcess]) -> None:
    server = make_server(protocols=("line",))
    alice = connect(server, "alice")
    alice.send("/register " + PASSWORD)
    alice.expect("*** alice is now registered")
    bob = connect(server, "bob")
    bob.send("/register " + PASSWORD)
    bob.expect("*** bob is now registered")
    join(alice, "dev")
    join(bob, "dev")
    alice.send("/register-room")
    alice.expect("*** #dev is now registered")
    alice.send("/topic Persistent topic")
    alice.expect("-!- alice changed the topic of #dev to: Persistent topic")
    alice.send("/mode +moderated +key sesame")
    alice.expect("-!- alice sets mode +moderated +key sesame on #dev")
    alice.send("/op bob")
    alice.expect("-!- alice sets mode +op bob on #dev")
    bob.send("before the restart")
    alice.expect("[#dev] <bob> before the restart")
    alice.close()
    bob.close()

    server.restart()

    bob = LineClient(server.ports["line"])
    bob.expect("*** Choose a nick:")
    bob.send(f"/identify bob {PASSWORD}")
    bob.expect("*** You are bob.")
    bob.expect("*** you are logged in as bob")
    bob.send("/join dev")
    bob.expect("!!! error: cannot join #dev: this room needs the right key")
    intro = join(bob, "dev", "sesame")
    assert intro[1] == "*** topic of #dev: Persistent topic (set by alice)"
    # Bob is an operator again (by account), and the history is replayed.
    assert intro[2] == "*** members of #dev (1): @bob"
    assert any(line.endswith("] <bob> before the restart") for line in intro)
    bob.send("/mode")
    assert bob.expect("*** modes of #dev") == (
        "*** modes of #dev: +moderated +no_external +topic_lock +key sesame"
    )
    bob.close()


def test_echo_on_shows_your_own_messages_as_others_see_them(
    make_server: Callable[..., ServerProcess],
) -> None:
    server = make_server(protocols=("line",))
    alice = connect(server, "alice")
    bob = connect(server, "bob")
    join(alice, "dev")
    join(bob, "dev")
    alice.expect("-!- bob joined #dev")

    # Off by default: what you typed is on your screen already.
    alice.send("/echo")
    assert alice.expect("*** echo:") == "*** echo: off"
    alice.send("quiet")
    bob.expect("[#dev] <alice> quiet")
    sync(alice)
    assert "[#dev] <alice> quiet" not in alice.seen

    alice.send("/echo on")
    assert alice.expect("*** echo:") == "*** echo: on"
    alice.send("loud")
    assert alice.expect("<alice>") == "[#dev] <alice> loud"
    bob.expect("[#dev] <alice> loud")
    alice.send("/me waves")
    assert alice.expect("* alice") == "[#dev] * alice waves"
    alice.send("/msg bob psst")
    assert alice.expect("psst") == "-> *bob* psst"
    assert bob.expect("psst") == "*alice* psst"
    # Only alice's own connection changed: bob still does not see his own lines.
    bob.send("hi alice")
    alice.expect("[#dev] <bob> hi alice")
    sync(bob)
    assert "[#dev] <bob> hi alice" not in bob.seen

    alice.send("/echo OFF")
    assert alice.expect("*** echo:") == "*** echo: off"
    alice.send("quiet again")
    bob.expect("[#dev] <alice> quiet again")
    sync(alice)
    assert "[#dev] <alice> quiet again" not in alice.seen
    alice.send("/echo maybe")
    assert alice.expect("!!!") == "!!! error: echo is on or off"

    # The same in JSON Lines, for bots that want their own messages in the stream.
    alice.send("/format json")
    alice.expect(lambda line: line.startswith("{") and json.loads(line).get("format") == "json")
    alice.send('{"cmd": "echo", "state": "on"}')
    answer = json.loads(alice.expect(lambda line: line.startswith("{") and "echo" in line))
    assert answer["echo"] is True
    alice.send('{"cmd": "say", "text": "as json"}')
    event = json.loads(alice.expect("as json"))
    assert event["text"] == "as json" and "alice" in json.dumps(event), event
