"""The line protocol over StringTransport, on a real ChatService with a fake clock."""

from __future__ import annotations

import gc
import json
import re
import weakref
from typing import Any, cast

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransportWithDisconnection
from zope.interface.verify import verifyObject

from chatserver.config import LineConfig
from chatserver.core.events import (
    AccountChange,
    Away,
    Event,
    HostChange,
    Invite,
    Join,
    Kick,
    Message,
    MetadataChange,
    MissedMessages,
    ModeChange,
    ModeItem,
    NickChange,
    OfflineMessages,
    Part,
    Quit,
    ReadMarker,
    RealnameChange,
    Redaction,
    RoomRenamed,
    ServerNotice,
    TagMessage,
    Topic,
    UserModeChange,
    Wallops,
    Who,
)
from chatserver.core.interfaces import IChatClient
from protocols.line import render
from protocols.line.commands import COMMANDS
from tests.line.harness import START, Client, World

PASSWORD = "correct-horse"


@pytest.fixture
def world() -> World:
    return World()


def errors(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith("!!! ")]


# -- connecting and choosing a nick ----------------------------------------------------------


def test_greeting_shows_motd_and_asks_for_a_nick() -> None:
    world = World(LineConfig(motd="Be nice.\nNo spam."))
    client = world.connect()
    assert client.lines() == [
        "*** Welcome to test.chat (line chat).",
        "*** Be nice.",
        "*** No spam.",
        "*** Commands start with /: /help lists them; /format json switches to JSON Lines.",
        "*** Choose a nick:",
    ]


def test_a_plain_line_chooses_the_nick(world: World) -> None:
    client = world.connect()
    client.take()
    client.send("alice")
    lines = client.lines()
    assert lines[0].startswith("*** You are alice.")
    assert world.service.find_user("alice") is not None
    assert client.proto.nick == "alice"


def test_invalid_nick_is_refused_with_the_reason_and_the_prompt(world: World) -> None:
    client = world.connect()
    client.take()
    client.send("9lives")
    lines = client.lines()
    assert lines[0].startswith("!!! error: nicks are 1-30 characters")
    assert lines[-1] == "*** Choose a nick:"
    client.send("two words")
    assert client.lines()[-1] == "*** Choose a nick:"
    assert world.service.find_user("two") is None


def test_taken_nick_is_refused_in_any_case(world: World) -> None:
    world.user("alice")
    client = world.connect()
    client.take()
    client.send("ALICE")
    assert client.lines() == [
        "!!! error: alice is already in use; choose another nick",
        "*** Choose a nick:",
    ]
    client.send("/nick alice2")
    assert client.lines()[0].startswith("*** You are alice2.")


def test_commands_other_than_nick_need_a_nick_first(world: World) -> None:
    client = world.connect()
    client.take()
    client.send("/join dev")
    assert client.lines() == ["!!! error: choose a nick first", "*** Choose a nick:"]
    client.send("/help nick")
    assert client.lines()[0] == "*** usage: /nick <nick>"


def test_quit_before_a_nick(world: World) -> None:
    client = world.connect()
    client.send("/quit")
    assert not client.connected
    assert world.service.connection_count() == 0


@pytest.mark.parametrize("how", ["quit", "lost", "unnamed", "json"])
def test_a_closed_connection_is_freed_without_the_garbage_collector(world: World, how: str) -> None:
    # A burst of short connections left each one's objects to the cyclic collector, whose
    # full collections then cost a tenth of what a connection costs.
    c = world.connect()
    if how in ("quit", "lost", "json"):
        c.send("leaver")
        c.send("/join a")
    if how == "json":
        c.send("/format json")
    if how in ("quit", "json"):
        c.send("/quit bye")
    else:
        c.close()
    assert not c.connected
    proto = weakref.ref(c.proto)
    gc.collect()
    gc.disable()
    try:
        # What Twisted's TCP transport does once the connection is lost: let go of the protocol.
        c.transport.protocol = None
        world.clients.remove(c)
        del c
        assert proto() is None, gc.get_referrers(proto())
    finally:
        gc.enable()


def test_address_and_secure(world: World) -> None:
    remote = world.connect("192.0.2.7")
    local = world.connect("127.0.0.1")
    assert remote.proto.address == "192.0.2.7" and not remote.proto.secure
    assert local.proto.secure
    assert remote.proto.protocol == "line"
    assert verifyObject(IChatClient, remote.proto)


def test_tcp_nodelay_is_set(world: World) -> None:
    class NoDelayTransport(StringTransportWithDisconnection):
        nodelay: bool | None = None

        def setTcpNoDelay(self, enabled: bool) -> None:
            self.nodelay = enabled

    transport = NoDelayTransport(peerAddress=IPv4Address("TCP", "192.0.2.1", 1))
    proto = world.factory.buildProtocol(transport.getPeer())
    transport.protocol = cast(Any, proto)
    proto.makeConnection(transport)
    assert transport.nodelay is True


def test_too_many_connections_are_told_and_closed() -> None:
    world = World(max_connections_per_address=1)
    world.connect("192.0.2.5")
    second = world.connect("192.0.2.5")
    assert second.lines() == [
        "!!! error: too many connections from your address (limit 1)",
    ]
    assert not second.connected
    assert world.service.connection_count() == 1


# -- rooms and talking -----------------------------------------------------------------------


def test_join_shows_topic_members_and_history(world: World) -> None:
    alice = world.user("alice", "dev")
    bob = world.user("bob", "dev")
    alice.send("/voice bob")
    alice.send("/topic Release on Friday")
    for n in range(12):
        bob.send(f"line {n}")
    world.clock.advance(60)
    alice.take()
    carol = world.user("carol")
    carol.send("/join #dev")
    lines = carol.lines()
    assert lines[:3] == [
        "*** you joined #dev",
        "*** topic of #dev: Release on Friday (set by alice)",
        "*** members of #dev (3): @alice +bob carol",
    ]
    # The last 10 messages, with the time of each.
    assert lines[3:13] == [f"[#dev] [22:13] <bob> line {n}" for n in range(2, 12)]
    assert lines[13:] == ["*** now talking in #dev"]
    assert alice.lines() == ["-!- carol joined #dev"]


def test_history_from_another_day_shows_the_date(world: World) -> None:
    alice = world.user("alice", "dev")
    alice.send("old news")
    world.clock.advance(86400)
    bob = world.user("bob")
    bob.send("/join dev")
    assert "[#dev] [2023-11-14 22:13] <alice> old news" in bob.lines()


def test_plain_lines_go_to_the_current_room(world: World) -> None:
    alice = world.user("alice", "dev")
    bob = world.user("bob", "dev")
    bob.send("hello everyone")
    assert alice.lines() == ["[#dev] <bob> hello everyone"]
    # The sender sees no echo of what it typed.
    assert bob.lines() == []


def test_double_slash_says_a_line_starting_with_a_slash(world: World) -> None:
    alice = world.user("alice", "dev")
    bob = world.user("bob", "dev")
    bob.send("//etc/passwd is a file")
    assert alice.lines() == ["[#dev] <bob> /etc/passwd is a file"]


def test_plain_line_without_a_room(world: World) -> None:
    alice = world.user("alice")
    alice.send("anyone?")
    assert alice.lines() == ["!!! error: you are not in a room: /join one, or name one (e.g. #dev)"]


def test_join_several_rooms_the_last_is_current(world: World) -> None:
    alice = world.user("alice")
    alice.send("/join a,#b")
    lines = alice.lines()
    assert "*** you joined #a" in lines and "*** you joined #b" in lines
    assert lines[-1] == "*** now talking in #b"
    bob = world.user("bob", "a", "b")
    alice.send("hi")
    assert bob.lines() == ["[#b] <alice> hi"]
    alice.send("/join a")
    assert alice.lines() == ["*** now talking in #a"]
    alice.send("hi a")
    assert bob.lines() == ["[#a] <alice> hi a"]


def test_join_with_a_key_and_the_errors(world: World) -> None:
    alice = world.user("alice", "vault")
    alice.send("/mode +key sesame")
    bob = world.user("bob")
    bob.send("/join vault")
    assert bob.lines() == [
        "!!! error: cannot join #vault: this room needs the right key (/join vault <key>)"
    ]
    bob.send("/join vault sesame")
    assert bob.lines()[0] == "*** you joined #vault"
    bob.send("/join no#good")
    assert bob.lines()[0].startswith("!!! error: room names are 1-50 characters")
    bob.send("/join")
    assert bob.lines() == [
        "!!! error: /join needs room",
        "!!! usage: /join <room>[,<room>...] [key[,key...]]",
    ]


def test_join_several_with_one_refused(world: World) -> None:
    alice = world.user("alice", "closed")
    alice.send("/mode +invite_only")
    bob = world.user("bob")
    bob.send("/join open,closed")
    lines = bob.lines()
    assert (
        "!!! error: cannot join #closed: this room is invite-only (a room operator can /invite you)"
        in lines
    )
    assert lines[-1] == "*** now talking in #open"


def test_part_current_named_and_with_reason(world: World) -> None:
    alice = world.user("alice", "a", "b", "c")
    bob = world.user("bob", "a", "b", "c")
    alice.send("/part gone for lunch")
    assert alice.lines() == ["*** you left #c (gone for lunch)", "*** now talking in #b"]
    assert bob.lines() == ["-!- alice left #c (gone for lunch)"]
    alice.send("/part a see you")
    assert alice.lines() == ["*** you left #a (see you)"]
    assert bob.lines() == ["-!- alice left #a (see you)"]
    alice.send("/part #b")
    assert alice.lines() == ["*** you left #b"]
    assert bob.lines() == ["-!- alice left #b"]
    alice.send("/part")
    assert alice.lines() == ["!!! error: you are not in a room: /join one, or name one (e.g. #dev)"]
    alice.send("/part #a")
    assert alice.lines() == ["!!! error: you are not in #a (/join a first)"]
    alice.send("/part #nowhere")
    assert alice.lines() == ["!!! error: no such room: #nowhere"]


def test_rooms_lists_counts_and_topics_and_hides_secret_rooms(world: World) -> None:
    alice = world.user("alice", "dev", "hidden")
    alice.send("/mode +secret")
    alice.send("/join dev")
    alice.send("/topic all about dev")
    bob = world.user("bob", "dev")
    bob.send("/rooms")
    assert bob.lines() == ["*** 1 room:", "***   #dev (2 members): all about dev"]
    alice.take()
    alice.send("/rooms")
    assert alice.lines() == [
        "*** 2 rooms:",
        "***   #dev (2 members): all about dev",
        "***   #hidden (1 member)",
    ]
    carol = world.user("carol")
    alice.send("/part dev")
    alice.send("/part hidden")
    bob.send("/part dev")
    carol.send("/rooms")
    assert carol.lines() == ["*** no rooms yet: /join one to create it"]


def test_who(world: World) -> None:
    alice = world.user("alice", "dev")
    world.user("bob", "dev")
    world.user("carol", "dev")
    alice.send("/voice carol")
    alice.take()
    alice.send("/who")
    assert alice.lines() == ["*** members of #dev (3): @alice +carol bob"]
    dave = world.user("dave")
    dave.send("/who #dev")
    assert dave.lines() == ["*** members of #dev (3): @alice +carol bob"]
    alice.send("/mode +s")
    dave.send("/who dev")
    assert dave.lines() == ["!!! error: no such room: #dev"]
    dave.send("/who")
    assert errors(dave.lines())


def test_whois(world: World) -> None:
    alice = world.user("alice", "dev", "hidden")
    alice.send("/mode +secret")
    alice.send("/away lunch")
    alice.send("/register " + PASSWORD)
    world.clock.advance(125)
    bob = world.user("bob")
    bob.send("/whois ALICE")
    lines = bob.lines()
    assert re.fullmatch(r"\*\*\* alice is alice!alice@[0-9a-f]{10}\.cloak", lines[0])
    assert lines[1:] == [
        "*** alice is logged in as alice",
        "*** alice is in @#dev",
        "*** alice is away: lunch",
        "*** alice has been idle 2m 5s",
        "*** end of whois alice",
    ]
    bob.send("/whois nobody")
    assert bob.lines() == ["!!! error: no such nick: nobody"]


def test_private_messages(world: World) -> None:
    alice = world.user("alice")
    bob = world.user("bob")
    alice.send("/msg bob hi there")
    assert bob.lines() == ["*alice* hi there"]
    assert alice.lines() == []
    alice.send("/msg nobody hi")
    assert alice.lines() == ["!!! error: no such nick: nobody"]
    alice.send("/msg bob")
    assert alice.lines() == [
        "!!! error: /msg needs text",
        "!!! usage: /msg <nick|#room> <text>",
    ]


def test_msg_to_a_room_with_or_without_hash(world: World) -> None:
    alice = world.user("alice", "dev", "ops")
    bob = world.user("bob", "dev", "ops")
    alice.send("/msg #dev to dev")
    alice.send("/msg ops to ops")
    assert bob.lines() == ["[#dev] <alice> to dev", "[#ops] <alice> to ops"]


def test_me_and_notice(world: World) -> None:
    alice = world.user("alice", "dev")
    bob = world.user("bob", "dev")
    alice.send("/me waves")
    alice.send("/notice #dev build is green")
    alice.send("/notice bob psst")
    assert bob.lines() == [
        "[#dev] * alice waves",
        "[#dev] -alice- build is green",
        "-alice- psst",
    ]
    alice.send("/me")
    assert alice.lines() == ["!!! error: /me needs text", "!!! usage: /me [#room] <action>"]


def test_say_to_a_named_room(world: World) -> None:
    alice = world.user("alice", "dev", "ops")
    bob = world.user("bob", "dev")
    alice.send("/say #dev hello dev")
    assert bob.lines() == ["[#dev] <alice> hello dev"]


def test_messages_with_line_breaks_and_controls_are_made_safe(world: World) -> None:
    alice = world.user("alice", "dev")
    bob = world.user("bob", "dev")
    # As an XMPP or IRC user could send them: a line break, a terminal escape, IRC colours.
    world.service.say(alice.session, text="one\ntwo \x1b[2Jthree \x0304red\x03", room="dev")
    assert bob.lines() == ["[#dev] <alice> one", "[#dev] <alice> two [2Jthree red"]


def test_topic_show_set_clear_and_lock(world: World) -> None:
    alice = world.user("alice", "dev")
    bob = world.user("bob", "dev")
    bob.send("/topic")
    assert bob.lines() == ["*** #dev has no topic"]
    alice.send("/topic Ship it")
    assert bob.lines() == ["-!- alice changed the topic of #dev to: Ship it"]
    assert alice.lines() == ["-!- alice changed the topic of #dev to: Ship it"]
    bob.send("/topic")
    assert bob.lines() == ["*** topic of #dev: Ship it (set by alice)"]
    bob.send("/topic mine now")
    assert bob.lines() == ["!!! error: only room operators may change the topic"]
    alice.send("/topic -")
    assert bob.lines() == ["-!- alice cleared the topic of #dev"]
    alice.send("/mode -topic_lock")
    bob.send("/topic #dev mine now")
    assert alice.lines()[-1] == "-!- bob changed the topic of #dev to: mine now"


def test_away_and_back(world: World) -> None:
    alice = world.user("alice", "dev")
    bob = world.user("bob", "dev")
    alice.send("/away at lunch")
    assert alice.lines() == ["*** you are away: at lunch"]
    assert bob.lines() == ["-!- alice is away: at lunch"]
    alice.send("/away")
    assert alice.lines() == ["*** you are back"]
    assert bob.lines() == ["-!- alice is back"]


def test_nick_change(world: World) -> None:
    alice = world.user("alice", "dev")
    bob = world.user("bob", "dev")
    alice.send("/nick al")
    assert alice.lines() == ["*** you are now known as al"]
    assert bob.lines() == ["-!- alice is now known as al"]
    alice.send("/nick bob")
    assert alice.lines() == ["!!! error: bob is already in use; choose another nick"]
    alice.send("/nick 0x")
    assert alice.lines()[0].startswith("!!! error: nicks are")
    alice.send("/nick al")
    assert alice.lines() == ["*** you are already al"]
    alice.send("/nick a b")
    assert alice.lines() == [
        "!!! error: too many arguments: 'b'",
        "!!! usage: /nick <nick>",
    ]
    # Its own messages are still not echoed under the new nick.
    alice.send("still me")
    assert alice.lines() == []
    assert bob.lines() == ["[#dev] <al> still me"]


def test_quit_with_reason(world: World) -> None:
    alice = world.user("alice", "dev")
    bob = world.user("bob", "dev")
    bob.send("/quit off to bed")
    assert bob.lines() == ["*** bye"]
    assert not bob.connected
    assert alice.lines() == ["-!- bob quit (Quit: off to bed)"]
    assert world.service.find_user("bob") is None


def test_connection_lost_quits_exactly_once(world: World) -> None:
    alice = world.user("alice", "dev")
    bob = world.user("bob", "dev")
    bob.close()
    bob.proto.connectionLost(None)
    assert alice.lines() == ["-!- bob quit (Connection closed)"]
    assert world.service.connection_count() == 1


def test_unknown_command(world: World) -> None:
    alice = world.user("alice")
    alice.send("/frobnicate now")
    assert alice.lines() == ["!!! error: unknown command: /frobnicate (/help lists the commands)"]


def test_help(world: World) -> None:
    alice = world.user("alice")
    alice.send("/help")
    lines = alice.lines()
    assert lines[0] == "*** commands (/help <command> explains one):"
    for name in COMMANDS:
        assert any(line.startswith(f"***   /{name}") for line in lines), name
    alice.send("/help /mode")
    lines = alice.lines()
    assert lines[0] == "*** usage: /mode [room] [+/-modes [args]]"
    assert "+moderated/+m" in lines[1]
    assert lines[2].startswith('*** as JSON: {"cmd": "mode"')
    alice.send("/help nonsense")
    assert alice.lines() == ["!!! error: unknown command: /nonsense (/help lists them)"]


def test_ping(world: World) -> None:
    alice = world.user("alice")
    alice.send("/ping")
    assert alice.lines() == ["*** pong"]


def test_every_command_has_usage_help_and_a_json_form() -> None:
    for cmd in COMMANDS.values():
        assert cmd.help and cmd.json.startswith('{"cmd": "' + cmd.name + '"'), cmd.name
        assert cmd.min_args == sum(p.required for p in cmd.params)


# -- moderation ------------------------------------------------------------------------------


def test_kick(world: World) -> None:
    alice = world.user("alice", "dev")
    bob = world.user("bob", "dev")
    carol = world.user("carol", "dev")
    bob.send("/kick carol")
    assert bob.lines() == ["!!! error: only room operators may kick"]
    alice.send("/kick bob behave")
    assert alice.lines() == ["-!- alice kicked bob from #dev (behave)"]
    assert carol.lines() == ["-!- alice kicked bob from #dev (behave)"]
    assert bob.lines() == ["*** alice kicked you from #dev (behave)"]
    bob.send("still here?")
    assert bob.lines() == ["!!! error: you are not in a room: /join one, or name one (e.g. #dev)"]
    alice.send("/kick bob")
    assert alice.lines() == ["!!! error: bob is not in #dev"]
    alice.send("/kick nobody")
    assert alice.lines() == ["!!! error: no such nick: nobody"]


def test_ban_list_and_unban(world: World) -> None:
    alice = world.user("alice", "dev")
    bob = world.user("bob", "dev")
    alice.send("/ban")
    assert alice.lines() == ["*** no bans in #dev"]
    alice.send("/ban bob")
    assert alice.lines() == ["-!- alice sets mode +ban bob!*@* on #dev"]
    assert bob.lines() == ["-!- alice sets mode +ban bob!*@* on #dev"]
    bob.send("let me talk")
    assert bob.lines() == ["!!! error: cannot send to #dev: you are banned from this room"]
    bob.send("/part")
    bob.send("/join dev")
    assert bob.lines()[-1] == "!!! error: cannot join #dev: you are banned from this room"
    alice.send("/ban")
    assert alice.lines()[:2] == ["-!- bob left #dev", "*** bans of #dev (1):"]
    alice.send("/ban bob")
    assert alice.lines() == ["*** no change to the modes of #dev"]
    alice.send("/unban bob")
    assert alice.lines() == ["-!- alice sets mode -ban bob!*@* on #dev"]
    bob.send("/join dev")
    assert bob.lines()[0] == "*** you joined #dev"
    bob.send("/ban alice")
    assert bob.lines() == ["!!! error: only room operators may change modes"]
    bob.send("/unban")
    assert bob.lines()[1] == "!!! usage: /unban [#room] <mask>"


def test_invite(world: World) -> None:
    alice = world.user("alice", "club")
    bob = world.user("bob")
    carol = world.user("carol", "club")
    alice.send("/mode +i")
    alice.take()
    carol.take()
    carol.send("/invite bob")
    assert carol.lines() == ["!!! error: only room operators may invite to an invite-only room"]
    alice.send("/invite bob")
    assert bob.lines() == ["-!- alice invites you to #club"]
    assert alice.lines() == ["-!- alice invited bob to #club"]
    bob.send("/join club")
    assert bob.lines()[0] == "*** you joined #club"
    alice.take()
    alice.send("/invite bob club")
    assert alice.lines() == ["!!! error: bob is already in #club"]
    alice.send("/invite nobody")
    assert alice.lines() == ["!!! error: no such nick: nobody"]


def test_op_deop_voice_devoice(world: World) -> None:
    alice = world.user("alice", "dev")
    bob = world.user("bob", "dev")
    world.user("carol", "dev")
    alice.send("/op bob carol")
    assert bob.lines() == ["-!- alice sets mode +op bob +op carol on #dev"]
    alice.send("/deop carol")
    alice.send("/voice carol")
    alice.send("/devoice carol")
    assert bob.lines() == [
        "-!- alice sets mode -op carol on #dev",
        "-!- alice sets mode +voice carol on #dev",
        "-!- alice sets mode -voice carol on #dev",
    ]
    alice.take()
    alice.send("/op nobody")
    assert alice.lines() == ["!!! error: no such nick: nobody"]
    world.user("dave")
    alice.send("/voice dave")
    assert alice.lines() == ["!!! error: dave is not in #dev"]
    alice.send("/op")
    assert alice.lines() == [
        "!!! error: /op needs nick",
        "!!! usage: /op [#room] <nick>[ <nick>...]",
    ]


def test_mode_show_and_change_with_words_and_letters(world: World) -> None:
    alice = world.user("alice", "dev")
    bob = world.user("bob", "dev")
    alice.send("/mode")
    assert alice.lines() == ["*** modes of #dev: +no_external +topic_lock"]
    alice.send("/mode dev +moderated -topic_lock")
    assert bob.lines() == ["-!- alice sets mode +moderated -topic_lock on #dev"]
    bob.send("can I talk?")
    assert bob.lines() == [
        "!!! error: cannot send to #dev: the room is moderated: only voiced members may speak"
    ]
    alice.send("/mode +t-m+kl secret 10")
    assert bob.lines() == [
        "-!- alice sets mode +topic_lock -moderated +key secret +limit 10 on #dev"
    ]
    bob.send("/mode #dev")
    assert bob.lines() == ["*** modes of #dev: +no_external +topic_lock +key secret +limit 10"]
    outsider = world.user("eve")
    outsider.send("/mode dev")
    assert outsider.lines() == ["*** modes of #dev: +no_external +topic_lock +key +limit 10"]
    alice.take()
    alice.send("/mode -key -limit")
    assert alice.lines() == ["-!- alice sets mode -key -limit on #dev"]


def test_mode_letters_are_the_irc_letters(world: World) -> None:
    alice = world.user("alice", "dev")
    alice.send("/mode +R")
    assert alice.lines() == ["-!- alice sets mode +registered_only on #dev"]
    # Line chat's former letter for it is still understood.
    alice.send("/mode -r+s")
    assert alice.lines() == ["-!- alice sets mode -registered_only +secret on #dev"]
    alice.send("/help mode")
    assert "+registered_only/+R" in alice.lines()[1]


def test_mode_errors(world: World) -> None:
    alice = world.user("alice", "dev")
    bob = world.user("bob", "dev")
    alice.send("/mode +key")
    assert alice.lines() == [
        "!!! error: +key needs an argument",
        "!!! usage: /mode [room] [+/-modes [args]]",
    ]
    alice.send("/mode +x")
    assert alice.lines()[0] == "!!! error: unknown mode '+x'"
    # A first word that is not a mode change names the room.
    alice.send("/mode moderated")
    assert alice.lines() == ["!!! error: no such room: #moderated"]
    bob.send("/mode +m")
    assert bob.lines() == ["!!! error: only room operators may change modes"]
    alice.send("/mode nowhere +m")
    assert alice.lines() == ["!!! error: no such room: #nowhere"]


def test_history_command(world: World) -> None:
    alice = world.user("alice", "dev")
    for n in range(30):
        alice.send(f"m{n}")
        world.clock.advance(1)
    alice.send("/history 3")
    assert alice.lines() == [
        "*** history of #dev (3 messages):",
        "[#dev] [22:13] <alice> m27",
        "[#dev] [22:13] <alice> m28",
        "[#dev] [22:13] <alice> m29",
        "*** end of history of #dev",
    ]
    alice.send("/history")
    assert len(alice.lines()) == 22
    alice.send("/history #dev lots")
    assert alice.lines() == [
        "!!! error: count must be a number from 1 to 200",
        "!!! usage: /history [#room|nick] [count]",
    ]
    # A bare name is a private conversation: kept for accounts only.
    alice.send("/history bob")
    assert alice.lines() == ["!!! error: private messages are kept for accounts: /identify first"]
    bob = world.user("bob")
    bob.send("/history #dev 5")
    assert bob.lines() == ["!!! error: you are not in #dev (/join dev first)"]


# -- accounts ----------------------------------------------------------------------------------


def test_register_identify_logout() -> None:
    # "timeout" enforcement: logged out, alice keeps her nick (strict: see the test below).
    world = World(nick_enforcement="timeout")
    alice = world.user("alice", "dev")
    bob = world.user("bob", "dev")
    alice.send("/register short")
    assert alice.lines() == ["!!! error: passwords must be at least 6 characters"]
    alice.send("/register " + PASSWORD)
    assert alice.lines() == ["*** you are now logged in as alice", "*** alice is now registered"]
    assert bob.lines() == ["-!- alice is now logged in as alice"]
    alice.send("/register " + PASSWORD)
    assert alice.lines() == ["!!! error: you are already logged in as alice"]
    alice.send("/logout")
    assert alice.lines()[0] == "*** you are now logged out"
    assert bob.lines() == ["-!- alice logged out"]
    alice.send("/logout")
    assert alice.lines() == ["!!! error: you are not logged in (/identify <password> logs you in)"]
    alice.send("/identify wrong-password")
    assert alice.lines() == ["!!! error: invalid password"]
    alice.send("/identify " + PASSWORD)
    assert alice.lines() == ["*** you are now logged in as alice"]
    alice.send("/identify " + PASSWORD)
    assert alice.lines() == ["*** you are already logged in as alice"]
    bob.send("/identify " + PASSWORD)
    assert bob.lines()[-1] == (
        "!!! error: bob is not registered (/register <password> registers your current nick)"
    )


def test_password_and_drop() -> None:
    world = World(nick_enforcement="timeout")
    alice = world.user("alice")
    alice.send("/password old newpassword")
    assert alice.lines() == [
        "!!! error: log in to change your password (/identify <password> logs you in)"
    ]
    alice.send("/register " + PASSWORD)
    alice.take()
    alice.send("/password wrong-one newpassword")
    assert alice.lines() == ["!!! error: invalid password"]
    alice.send(f"/password {PASSWORD}")
    assert alice.lines() == [
        "!!! error: /password needs new",
        "!!! usage: /password <old password> <new password>",
    ]
    alice.send(f"/password {PASSWORD} new")
    assert alice.lines() == ["!!! error: passwords must be at least 6 characters"]
    alice.send(f"/password {PASSWORD} new-password")
    assert alice.lines() == ["*** password changed"]
    alice.send("/logout")
    alice.send("/identify " + PASSWORD)
    assert alice.lines()[-1] == "!!! error: invalid password"
    alice.send("/identify new-password")
    assert alice.lines() == ["*** you are now logged in as alice"]
    alice.send("/drop wrong-password")
    assert alice.lines() == ["!!! error: invalid password"]
    alice.send("/drop new-password")
    assert alice.lines() == ["*** account alice dropped"]
    assert world.store.accounts == {}
    # Told first; at the end of the turn the session ends, as every session of the account.
    world.clock.advance(0)
    assert alice.lines() == ["-!- Server closing connection: Account deleted"]
    assert not alice.connected


def test_identify_before_a_nick_takes_the_account_nick(world: World) -> None:
    alice = world.user("alice")
    alice.send("/register " + PASSWORD)
    alice.send("/quit")
    client = world.connect()
    client.take()
    client.send("/identify alice " + PASSWORD)
    lines = client.lines()
    assert lines[0].startswith("*** You are alice.")
    assert lines[1] == "*** you are logged in as alice"
    assert world.find("alice").account == "alice"
    other = world.connect()
    other.take()
    other.send("/identify")
    assert other.lines()[:2] == [
        "!!! error: /identify needs password",
        "!!! usage: /identify [nick] <password>",
    ]
    other.send("/identify secret")
    assert other.lines()[0].startswith("!!! error: before you have a nick, say which")


def test_identify_before_a_nick_takes_the_nick_back_from_a_guest() -> None:
    # Only with "timeout" enforcement can a guest hold a registered nick.
    world = World(nick_enforcement="timeout")
    alice = world.user("alice")
    alice.send("/register " + PASSWORD)
    alice.send("/quit")
    intruder = world.user("alice")
    owner = world.connect()
    owner.take()
    owner.send("/identify alice " + PASSWORD)
    assert owner.lines()[0].startswith("*** You are alice.")
    assert world.find("alice").account == "alice"
    lines = intruder.lines()
    assert lines[0] == "-!- Server: alice was claimed by its owner; your nick is now " + (
        lines[1].rpartition(" ")[2] + "."
    )
    assert lines[1].startswith("*** you are now known as Guest")


def test_multiclient_via_identify(world: World) -> None:
    alice = world.user("alice", "dev", "ops")
    alice.send("/register " + PASSWORD)
    alice.take()
    bob = world.user("bob", "dev")
    phone = world.user("visitor", "lobby")
    phone.send("/identify alice " + PASSWORD)
    assert phone.lines() == [
        "*** you left #lobby (logged in)",
        "*** you are now known as alice",
        "*** you joined #dev",
        "*** #dev has no topic",
        "*** members of #dev (2): @alice bob",
        "*** you joined #ops",
        "*** #ops has no topic",
        "*** members of #ops (1): @alice",
        "*** you are now logged in as alice (with your other session)",
    ]
    assert world.service.find_user("visitor") is None
    # Both connections are one user: each sees what the other says, not its own line.
    phone.send("/join dev")
    phone.send("from the phone")
    assert alice.lines() == ["[#dev] <alice> from the phone"]
    assert phone.lines() == ["*** now talking in #dev"]
    assert bob.lines() == ["[#dev] <alice> from the phone"]
    alice.send("/msg bob private word")
    assert phone.lines() == ["-> *bob* private word"]
    assert alice.lines() == []
    assert bob.lines() == ["*alice* private word"]
    bob.send("/msg alice back to you")
    assert phone.lines() == ["*bob* back to you"]
    assert alice.lines() == ["*bob* back to you"]
    alice.send("/me nods")
    assert phone.lines() == ["[#ops] * alice nods"]
    # One quits; the user stays online through the other.
    alice.send("/quit")
    assert bob.lines() == []
    assert world.service.find_user("alice") is not None


def test_register_room(world: World) -> None:
    alice = world.user("alice", "dev")
    alice.send("/register-room")
    assert alice.lines() == [
        "!!! error: log in to an account to register a room (/identify <password> logs you in)"
    ]
    alice.send("/register " + PASSWORD)
    alice.take()
    alice.send("/register-room")
    assert alice.lines() == ["*** #dev is now registered: its topic, modes and operators are kept"]
    assert "dev" in world.store.rooms
    alice.send("/register-room #dev")
    assert alice.lines() == ["!!! error: dev is already registered"]


def test_nick_enforcement_notices_and_rename() -> None:
    world = World(nick_enforcement="timeout", nick_enforce_timeout=30)
    alice = world.user("alice")
    alice.send("/register " + PASSWORD)
    alice.send("/quit")
    guest = world.connect()
    guest.take()
    guest.send("alice")
    assert (
        "-!- Server: alice is a registered nick. Identify within 30 seconds or you will be renamed."
    ) in guest.lines()
    world.clock.advance(31)
    lines = guest.lines()
    assert lines[0].startswith("-!- Server: You did not identify for alice; your nick is now Guest")
    assert lines[1].startswith("*** you are now known as Guest")
    assert (guest.proto.nick or "").startswith("Guest")


def test_identify_in_time_stops_enforcement() -> None:
    world = World(nick_enforcement="timeout", nick_enforce_timeout=30)
    alice = world.user("alice")
    alice.send("/register " + PASSWORD)
    alice.send("/quit")
    again = world.user("alice")
    again.send("/identify " + PASSWORD)
    world.clock.advance(60)
    assert again.lines() == ["*** you are now logged in as alice"]
    assert again.proto.nick == "alice"


def test_strict_a_registered_nick_needs_its_password() -> None:
    world = World()
    alice = world.user("alice", "dev")
    alice.send("/register " + PASSWORD)
    alice.send("/logout")
    lines = alice.lines()
    # Logged out on the account's nick: a guest at once.
    assert lines[-1].startswith("*** you are now known as Guest")
    guest = world.connect()
    guest.take()
    guest.send("alice")
    assert guest.lines()[0] == (
        "!!! error: alice is a registered nick: log in with /identify alice <password>,"
        " or choose another nick"
    )
    guest.send("/format json")
    guest.take()
    guest.send('{"cmd": "nick", "nick": "ALICE"}')
    assert guest.objs()[0]["error"] == "nick_reserved"
    guest.send('{"cmd": "identify", "nick": "alice", "password": "%s"}' % PASSWORD)
    assert guest.objs()[-1] == {
        "type": "ok",
        "cmd": "identify",
        "nick": "alice",
        "account": "alice",
    }
    # Logged in to another account is not enough to rename to it.
    bob = world.user("bob")
    bob.send("/register " + PASSWORD)
    bob.take()
    bob.send("/nick alice")
    assert bob.lines() == ["!!! error: alice is already in use; choose another nick"]


@pytest.mark.parametrize("nick", ["NickServ", "chanserv", "Guest12345"])
def test_service_and_guest_names_are_not_for_users(world: World, nick: str) -> None:
    someone = world.connect()
    someone.take()
    someone.send(nick)
    assert someone.lines()[0].startswith(f"!!! error: {nick} is reserved")
    bob = world.user("bob")
    bob.send(f"/nick {nick}")
    assert bob.lines()[0].startswith(f"!!! error: {nick} is reserved")


# -- JSON mode -------------------------------------------------------------------------------


def test_format_switch(world: World) -> None:
    alice = world.user("alice")
    alice.send("/format json")
    assert alice.objs() == [{"type": "ok", "cmd": "format", "format": "json"}]
    alice.send('{"cmd": "format", "format": "text"}')
    assert alice.lines() == ["*** output format: text"]
    alice.send("/format xml")
    assert alice.lines() == [
        "!!! error: the format is json or text",
        "!!! usage: /format json|text",
    ]


def test_json_before_a_nick() -> None:
    world = World()
    client = world.connect()
    client.take()
    client.send("/format json")
    client.take()
    client.send('{"cmd": "nick", "nick": "9"}')
    objs = client.objs()
    assert objs[0]["type"] == "error" and objs[0]["error"] == "bad_name"
    assert objs[1] == {"type": "prompt", "prompt": "nick"}
    client.send('{"cmd": "nick", "nick": "robot", "tag": 7}')
    assert client.objs() == [
        {"type": "ok", "cmd": "nick", "nick": "robot", "account": None, "tag": 7}
    ]


def json_user(world: World, nick: str, *rooms: str) -> Client:
    client = world.user(nick, *rooms)
    client.send("/format json")
    client.take()
    return client


def test_json_commands_and_results(world: World) -> None:
    bot = json_user(world, "bot")
    human = world.user("human")
    bot.send('{"cmd": "join", "room": "dev", "tag": "j1"}')
    objs = bot.objs()
    assert [o["type"] for o in objs] == ["join", "room", "ok"]
    assert objs[0] == {"type": "join", "ts": START, "room": "dev", "from": "bot", "account": None}
    assert objs[1]["members"] == [
        {"nick": "bot", "op": True, "voice": False, "account": None, "away": None}
    ]
    assert objs[1]["topic"] == "" and objs[1]["modes"] == ["no_external", "topic_lock"]
    assert objs[2] == {
        "type": "ok",
        "cmd": "join",
        "room": "dev",
        "rooms": ["dev"],
        "tag": "j1",
    }
    human.send("/join dev")
    human.take()
    assert bot.objs() == [
        {"type": "join", "ts": START, "room": "dev", "from": "human", "account": None}
    ]
    bot.send('{"cmd": "say", "room": "dev", "text": "hi"}')
    ok = bot.one(type="ok")
    assert ok["cmd"] == "say" and ok["room"] == "dev" and ok["id"]
    assert human.lines() == ["[#dev] <bot> hi"]
    human.send("hello bot")
    msg = bot.one(type="message")
    assert msg == {
        "type": "message",
        "id": msg["id"],
        "ts": START,
        "kind": "privmsg",
        "from": "human",
        "account": None,
        "room": "dev",
        "to": None,
        "status": None,
        "text": "hello bot",
    }
    bot.send('{"cmd": "msg", "to": "human", "text": "x"}')
    assert bot.one(type="ok")["to"] == "human"
    assert human.lines() == ["*bot* x"]
    bot.send('{"cmd": "me", "to": "human", "text": "beeps"}')
    bot.take()
    assert human.lines() == ["* bot beeps"]
    # Plain text lines still work as text commands in JSON mode, with JSON answers.
    bot.send("plain words")
    assert bot.one(type="ok")["cmd"] == "say"
    assert human.lines() == ["[#dev] <bot> plain words"]
    bot.send("/who")
    who = bot.one(type="ok")
    assert [m["nick"] for m in who["members"]] == ["bot", "human"]


def test_json_errors(world: World) -> None:
    bot = json_user(world, "bot", "dev")
    bot.send('{"cmd": "kick"}')
    assert bot.objs() == [
        {
            "type": "error",
            "cmd": "kick",
            "error": "missing_argument",
            "message": "/kick needs nick",
            "usage": "/kick [#room] <nick> [reason]",
        }
    ]
    bot.send('{"cmd": "fly", "tag": 1}')
    assert bot.one(type="error")["error"] == "unknown_command"
    bot.send("{not json")
    assert bot.one(type="error")["error"] == "bad_json"
    bot.send("[1, 2]")
    assert bot.one(type="ok")["cmd"] == "say"  # not an object: plain text
    bot.send('["cmd"]')
    bot.take()
    bot.send('{"text": "no cmd"}')
    assert bot.one(type="error")["error"] == "bad_json"
    bot.send('{"cmd": "say", "text": ["a"]}')
    assert bot.one(type="error")["error"] == "bad_argument"
    bot.send('{"cmd": "join", "room": "a", "key": null}')
    assert bot.one(type="error")["error"] == "bad_argument"
    bot.send('{"cmd": "msg", "to": "ghost", "text": "boo", "tag": "t"}')
    assert bot.objs() == [
        {
            "type": "error",
            "cmd": "msg",
            "error": "no_such_nick",
            "message": "no such nick: ghost",
            "tag": "t",
        }
    ]
    bot.send('{"cmd": "join", "room": "dev,#x y"}')
    err = bot.one(type="error")
    assert err["error"] == "bad_name" and err["room"] == "x y"


def test_json_join_refused_has_why(world: World) -> None:
    alice = world.user("alice", "vault")
    alice.send("/mode +k sesame")
    bot = json_user(world, "bot")
    bot.send('{"cmd": "join", "room": "vault"}')
    err = bot.one(type="error")
    assert err["error"] == "join_refused" and err["why"] == "bad_key" and err["room"] == "vault"
    bot.send('{"cmd": "join", "room": "vault", "key": "sesame"}')
    assert bot.one(type="ok")["room"] == "vault"


def test_json_account_commands(world: World) -> None:
    bot = json_user(world, "bot")
    bot.send(json.dumps({"cmd": "register", "password": PASSWORD, "tag": 1}))
    objs = bot.objs()
    assert objs[0]["type"] == "account" and objs[0]["account"] == "bot"
    assert objs[1] == {"type": "ok", "cmd": "register", "account": "bot", "tag": 1}
    bot.send(json.dumps({"cmd": "identify", "password": "nope"}))
    assert bot.one(type="error")["error"] == "bad_password"
    bot.send(json.dumps({"cmd": "password", "old": PASSWORD, "new": "another one"}))
    assert bot.one(type="ok")["cmd"] == "password"
    bot.send('{"cmd": "drop", "password": "another one"}')
    assert bot.one(type="ok") == {"type": "ok", "cmd": "drop", "account": "bot"}


def test_json_info_commands(world: World) -> None:
    alice = world.user("alice", "dev")
    alice.send("/topic hello")
    alice.send("/ban spammer")
    alice.send("hi")
    bot = json_user(world, "bot", "dev")
    bot.send('{"cmd": "rooms"}')
    assert bot.one(type="ok")["rooms"] == [{"room": "dev", "members": 2, "topic": "hello"}]
    bot.send('{"cmd": "whois", "nick": "alice"}')
    whois = bot.one(type="ok")
    assert whois["rooms"] == [{"room": "dev", "status": "@"}] and whois["account"] is None
    bot.send('{"cmd": "topic", "room": "#dev"}')
    assert bot.one(type="ok")["topic_by"] == "alice"
    bot.send('{"cmd": "mode", "room": "dev"}')
    mode = bot.one(type="ok")
    assert mode["modes"] == ["no_external", "topic_lock"] and mode["key"] is None
    bot.send('{"cmd": "ban"}')
    assert [b["mask"] for b in bot.one(type="ok")["bans"]] == ["spammer!*@*"]
    bot.send('{"cmd": "history", "count": 5}')
    hist = bot.one(type="ok")
    assert [m["text"] for m in hist["messages"]] == ["hi"]
    assert hist["messages"][0]["history"] is True
    bot.send('{"cmd": "help", "command": "msg"}')
    assert bot.one(type="ok")["commands"][0]["usage"] == "/msg <nick|#room> <text>"
    bot.send('{"cmd": "ping"}')
    assert bot.objs() == [{"type": "ok", "cmd": "ping"}]
    bot.send('{"cmd": "quit", "reason": "done"}')
    assert bot.objs() == [{"type": "ok", "cmd": "quit", "reason": "Quit: done"}]
    assert not bot.connected


def test_json_join_replays_history_marked(world: World) -> None:
    alice = world.user("alice", "dev")
    alice.send("earlier")
    bot = json_user(world, "bot")
    bot.send('{"cmd": "join", "room": "dev"}')
    objs = bot.objs()
    assert [o["type"] for o in objs] == ["join", "room", "message", "ok"]
    assert objs[2]["text"] == "earlier" and objs[2]["history"] is True


def test_json_echo_rules(world: World) -> None:
    alice = world.user("alice", "dev")
    alice.send("/register " + PASSWORD)
    alice.take()
    bot = json_user(world, "bot", "dev")
    phone = json_user(world, "phone")
    phone.send(json.dumps({"cmd": "identify", "nick": "alice", "password": PASSWORD}))
    phone.take()
    alice.send("hello from the laptop")
    assert phone.one(type="message")["text"] == "hello from the laptop"
    phone.send('{"cmd": "say", "room": "dev", "text": "from the phone"}')
    assert [o["type"] for o in phone.objs()] == ["ok"]
    assert alice.lines() == ["[#dev] <alice> from the phone"]
    bot.take()
    alice.send("/msg bot psst")
    echo = phone.one(type="message")
    assert echo["from"] == "alice" and echo["to"] == "bot"
    assert bot.one(type="message")["to"] == "bot"


# -- rendering of every event type -----------------------------------------------------------

WHO = Who(nick="alice", ident="alice", host="h.cloak", account="alice")
BOB = Who(nick="bob", ident="bob", host="b.cloak")

SAMPLES: list[tuple[Event, str, dict[str, Any]]] = [
    (
        Message(ts=1.0, id="m1", source=WHO, text="hi", room="dev"),
        "[#dev] <alice> hi",
        {"type": "message", "room": "dev", "from": "alice", "text": "hi", "kind": "privmsg"},
    ),
    (
        Message(ts=1.0, id="m2", source=WHO, text="waves", room="dev", kind="action"),
        "[#dev] * alice waves",
        {"type": "message", "kind": "action"},
    ),
    (
        Message(ts=1.0, id="m3", source=WHO, text="n", room="dev", kind="notice"),
        "[#dev] -alice- n",
        {"kind": "notice"},
    ),
    (
        Message(ts=1.0, id="m4", source=WHO, text="ops only", room="dev", status="op"),
        "[@#dev] <alice> ops only",
        {"status": "op"},
    ),
    (
        Message(ts=1.0, id="m5", source=WHO, text="psst", target="bob"),
        "*alice* psst",
        {"room": None, "to": "bob"},
    ),
    (
        Message(ts=1.0, id="m6", source=WHO, text="pokes", target="bob", kind="action"),
        "* alice pokes",
        {"kind": "action", "to": "bob"},
    ),
    (
        Message(ts=1.0, id="m7", source=WHO, text="fyi", target="bob", kind="notice"),
        "-alice- fyi",
        {"kind": "notice"},
    ),
    (Join(ts=1.0, room="dev", who=WHO), "-!- alice joined #dev", {"type": "join", "room": "dev"}),
    (
        Part(ts=1.0, room="dev", who=WHO, reason="bye"),
        "-!- alice left #dev (bye)",
        {"type": "part", "reason": "bye"},
    ),
    (Part(ts=1.0, room="dev", who=WHO), "-!- alice left #dev", {"reason": ""}),
    (Quit(ts=1.0, who=WHO, reason="gone"), "-!- alice quit (gone)", {"type": "quit"}),
    (
        NickChange(ts=1.0, who=WHO, new_nick="al"),
        "-!- alice is now known as al",
        {"type": "nick", "from": "alice", "nick": "al"},
    ),
    (
        Topic(ts=1.0, room="dev", who=WHO, text="new"),
        "-!- alice changed the topic of #dev to: new",
        {"type": "topic", "text": "new"},
    ),
    (
        Topic(ts=1.0, room="dev", who=WHO, text=""),
        "-!- alice cleared the topic of #dev",
        {"type": "topic", "text": ""},
    ),
    (
        Kick(ts=1.0, room="dev", who=WHO, target=BOB, reason="spam"),
        "-!- alice kicked bob from #dev (spam)",
        {"type": "kick", "target": "bob", "reason": "spam"},
    ),
    (
        ModeChange(
            ts=1.0,
            room="dev",
            who=WHO,
            changes=(ModeItem(True, "moderated"), ModeItem(False, "key", "*")),
        ),
        "-!- alice sets mode +moderated -key on #dev",
        {
            "type": "mode",
            "text": "+moderated -key",
            "changes": [
                {"adding": True, "mode": "moderated", "arg": None},
                {"adding": False, "mode": "key", "arg": "*"},
            ],
        },
    ),
    (
        UserModeChange(ts=1.0, who=WHO, changes=(ModeItem(True, "bot"),)),
        "*** your modes changed: +bot",
        {"type": "usermode", "text": "+bot"},
    ),
    (
        Away(ts=1.0, who=WHO, message="lunch"),
        "-!- alice is away: lunch",
        {"type": "away", "text": "lunch"},
    ),
    (Away(ts=1.0, who=WHO, message=None), "-!- alice is back", {"type": "away", "text": None}),
    (
        Invite(ts=1.0, room="dev", who=WHO, target="bob"),
        "-!- alice invited bob to #dev",
        {"type": "invite", "target": "bob"},
    ),
    (
        RealnameChange(ts=1.0, who=WHO, realname="Alice A."),
        "-!- alice set their real name to: Alice A.",
        {"type": "realname", "realname": "Alice A."},
    ),
    (
        HostChange(ts=1.0, who=WHO, ident="a", host="new.cloak"),
        "-!- alice is now alice!a@new.cloak",
        {"type": "host", "host": "new.cloak"},
    ),
    (
        AccountChange(ts=1.0, who=WHO, account="alice"),
        "-!- alice is now logged in as alice",
        {"type": "account", "account": "alice"},
    ),
    (
        AccountChange(ts=1.0, who=WHO, account=None),
        "-!- alice logged out",
        {"type": "account", "account": None},
    ),
    (
        ServerNotice(ts=1.0, text="restart soon"),
        "-!- Server: restart soon",
        {"type": "server", "text": "restart soon"},
    ),
    (
        Wallops(ts=1.0, who=WHO, text="hello opers"),
        "-!- Wallops from alice: hello opers",
        {"type": "wallops", "text": "hello opers"},
    ),
    (
        OfflineMessages(
            ts=1.0, messages=(Message(ts=1.0, id="m8", source=WHO, text="psst", target="bob"),)
        ),
        "*** while you were away (1 message):\r\n*alice* [00:00] psst\r\n"
        "*** end of messages while you were away",
        {"type": "offline"},
    ),
    (
        MissedMessages(
            ts=1.0,
            room="dev",
            since=0.5,
            messages=(Message(ts=1.0, id="m9", source=WHO, text="hi all", room="dev"),),
        ),
        "*** while you were away in #dev (1 message):\r\n[#dev] [00:00] <alice> hi all\r\n"
        "*** end of messages in #dev while you were away",
        {"type": "missed", "room": "dev", "since": 0.5},
    ),
    (
        ReadMarker(ts=1.0, target="#dev", read_ts=1.0),
        "*** read up to 00:00 in #dev",
        {"type": "read", "room": "dev", "nick": None, "read_ts": 1.0},
    ),
    (
        RoomRenamed(ts=1.0, old="dev", new="code", who=BOB, reason="tidy"),
        "-!- bob renamed #dev to #code (tidy): you are in #code",
        {"type": "rename", "room": "code", "old": "dev", "from": "bob", "reason": "tidy"},
    ),
    (
        MetadataChange(ts=1.0, who=WHO, target="alice", key="display-name", value="Al"),
        "-!- alice set display-name of alice to: Al",
        {"type": "metadata", "nick": "alice", "key": "display-name", "value": "Al"},
    ),
    (
        MetadataChange(ts=1.0, who=WHO, target="dev", room="dev", key="avatar", value=None),
        "-!- alice removed avatar of #dev",
        {"type": "metadata", "room": "dev", "nick": None, "key": "avatar", "value": None},
    ),
    (
        Redaction(ts=1.0, id="r1", who=WHO, msgid="m1", sender=BOB, room="dev", reason="spam"),
        "-!- alice removed bob's message m1 in #dev (spam)",
        {"type": "redact", "room": "dev", "id": "m1", "sender": "bob", "reason": "spam"},
    ),
    (
        TagMessage(
            ts=1.0,
            id="t1",
            source=WHO,
            room="dev",
            tags=(("+draft/react", "\U0001f44d"), ("+draft/reply", "m1")),
        ),
        "-!- alice reacted \U0001f44d to message m1 in #dev",
        {"type": "react", "room": "dev", "react": "\U0001f44d", "id": "m1"},
    ),
]


def test_typing_is_not_shown() -> None:
    typing = TagMessage(ts=1.0, id="t2", source=WHO, room="dev", tags=(("+typing", "active"),))
    assert render.render_text(typing, "carol") == ""
    assert render.render_json(typing) is None


@pytest.mark.parametrize(("event", "text", "fields"), SAMPLES)
def test_render_every_event_type(event: Event, text: str, fields: dict[str, Any]) -> None:
    assert render.render_text(event, "carol") == text
    obj = render.render_json(event)
    assert obj is not None and obj["ts"] == 1.0
    for key, value in fields.items():
        assert obj[key] == value, key


def test_every_delivered_event_type_has_renderers() -> None:
    from chatserver.core import events

    delivered = {
        cls
        for cls in vars(events).values()
        if isinstance(cls, type) and issubclass(cls, Event) and cls is not Event
    } - {
        events.Presence,  # for the core's observers only
        events.KeptRooms,
        events.MessageRun,  # in a batch only, rendered as its messages
    }
    assert delivered <= set(render.TEXT_RENDERERS)
    assert delivered <= set(render.JSON_RENDERERS)
    assert delivered <= {type(sample[0]) for sample in SAMPLES}


def test_events_about_yourself_read_as_you() -> None:
    me = "alice"
    assert render.render_text(Join(ts=1, room="dev", who=WHO), me) == "*** you joined #dev"
    assert render.render_text(Part(ts=1, room="dev", who=WHO, reason="x"), me) == (
        "*** you left #dev (x)"
    )
    kick = Kick(ts=1, room="dev", who=BOB, target=WHO, reason="out")
    assert render.render_text(kick, me) == "*** bob kicked you from #dev (out)"
    invite = Invite(ts=1, room="dev", who=BOB, target="alice")
    assert render.render_text(invite, me) == "-!- bob invites you to #dev"
    nick = NickChange(ts=1, who=WHO, new_nick="al")
    assert render.render_text(nick, "al") == "*** you are now known as al"
    away = Away(ts=1, who=WHO, message="zzz")
    assert render.render_text(away, me) == "*** you are away: zzz"
    account = AccountChange(ts=1, who=WHO, account="alice")
    assert render.render_text(account, me) == "*** you are now logged in as alice"
    sent = Message(ts=1, id="x", source=WHO, text="hi", target="bob")
    assert render.render_text(sent, me) == "-> *bob* hi"
    action = Message(ts=1, id="x", source=WHO, text="pokes", target="bob", kind="action")
    assert render.render_text(action, me) == "-> *bob* * alice pokes"
    notice = Message(ts=1, id="x", source=WHO, text="fyi", target="bob", kind="notice")
    assert render.render_text(notice, me) == "-> -bob- fyi"


def test_events_from_the_service_reach_line_users(world: World) -> None:
    alice = world.user("alice", "dev")
    bob = world.user("bob", "dev")
    conn = alice.session
    world.service.set_realname(conn, "Alice Liddell")
    assert bob.lines() == ["-!- alice set their real name to: Alice Liddell"]
    world.service.set_user_modes(conn, [ModeItem(True, "bot")])
    assert alice.lines()[-1] == "*** your modes changed: +bot"
    world.service.notice_user(world.find("bob"), "maintenance at noon")
    assert bob.lines() == ["-!- Server: maintenance at noon"]
    world.service.set_user_modes(bob.session, [ModeItem(True, "wallops")])
    assert bob.lines() == ["*** your modes changed: +wallops"]
    world.service.grant_oper(conn)
    world.service.wallops(conn, "hi opers")
    assert bob.lines() == ["-!- Wallops from alice: hi opers"]
    bob.proto.deliver(HostChange(ts=1.0, who=WHO, ident="x", host="y"))
    assert bob.lines() == ["-!- alice is now alice!x@y"]


def test_room_messages_are_rendered_once_per_mode(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = {"text": 0, "json": 0}
    text_renderer = render.TEXT_RENDERERS[Message]
    json_renderer = render.JSON_RENDERERS[Message]

    def counting_text(event: Any, me: Any) -> str:
        calls["text"] += 1
        return text_renderer(event, me)

    def counting_json(event: Any) -> dict[str, Any]:
        calls["json"] += 1
        return json_renderer(event)

    monkeypatch.setitem(render.TEXT_RENDERERS, Message, counting_text)
    monkeypatch.setitem(render.JSON_RENDERERS, Message, counting_json)
    speaker = world.user("speaker", "dev")
    readers = [world.user(f"t{n}", "dev") for n in range(5)]
    bots = [json_user(world, f"j{n}", "dev") for n in range(5)]
    speaker.send("one for all")
    assert calls == {"text": 1, "json": 1}
    assert all(r.lines() == ["[#dev] <speaker> one for all"] for r in readers)
    assert all(b.one(type="message")["text"] == "one for all" for b in bots)


def test_shutdown_disconnects_with_the_reason(world: World) -> None:
    alice = world.user("alice")
    bot = json_user(world, "bot")
    world.service.shutdown("Server restarting")
    assert alice.lines() == ["-!- Server closing connection: Server restarting"]
    assert bot.objs() == [{"type": "disconnect", "reason": "Server restarting"}]
    assert not alice.connected and not bot.connected
    assert world.service.connection_count() == 0


# -- input framing and limits ----------------------------------------------------------------


def test_lf_crlf_and_several_lines_in_one_read(world: World) -> None:
    alice = world.user("alice", "dev")
    bob = world.user("bob", "dev")
    alice.raw(b"one\ntwo\r\nthr")
    alice.raw(b"ee\r")
    alice.raw(b"\n")
    assert bob.lines() == ["[#dev] <alice> one", "[#dev] <alice> two", "[#dev] <alice> three"]


def test_invalid_utf8_is_replaced(world: World) -> None:
    alice = world.user("alice", "dev")
    bob = world.user("bob", "dev")
    alice.raw(b"caf\xe9 \xc3\xa9t\xc3\r\n")
    assert bob.lines() == ["[#dev] <alice> caf\ufffd \xe9t\ufffd"]


def test_telnet_commands_are_stripped_even_split_across_reads(world: World) -> None:
    alice = world.user("alice", "dev")
    bob = world.user("bob", "dev")
    for chunk in (b"he\xff", b"\xfb", b"\x01llo", b" wor\xff\xfa\x18", b"\x01\xff", b"\xf0ld\r\n"):
        alice.raw(chunk)
    out = bob.take()
    assert out == b"[#dev] <alice> hello world\r\n"
    # The sender is told no to the option it offered, once.
    assert alice.take() == b"\xff\xfe\x01"
    alice.raw(b"\xff\xfb\x01\xff\xfd\x03\xff\xf1x\n")
    assert alice.take() == b"\xff\xfc\x03"
    assert bob.take() == b"[#dev] <alice> x\r\n"


def test_iac_iac_is_a_literal_byte_never_relayed_raw(world: World) -> None:
    alice = world.user("alice", "dev")
    bob = world.user("bob", "dev")
    alice.raw(b"a\xff\xffb\n")
    out = bob.take()
    assert b"\xff" not in out
    assert out.decode() == "[#dev] <alice> a\ufffdb\r\n"


def test_overlong_lines_are_refused_and_not_buffered() -> None:
    world = World(LineConfig(max_line_bytes=100))
    alice = world.user("alice", "dev")
    bob = world.user("bob", "dev")
    alice.raw(b"x" * 100 + b"\r\n")
    assert bob.lines() == ["[#dev] <alice> " + "x" * 100]
    alice.raw(b"y" * 101 + b"\n")
    assert alice.lines() == ["!!! error: line too long (the limit is 100 bytes); it was dropped"]
    for _ in range(50):
        alice.raw(b"z" * 1000)
        assert alice.proto._framer.pending <= 101
    assert len(alice.lines()) == 1
    alice.raw(b"zzz\nafter\n")
    assert bob.lines() == ["[#dev] <alice> after"]


def test_flood_warns_then_disconnects() -> None:
    world = World(LineConfig(flood_burst=5, flood_rate=1.0, flood_max_warnings=2))
    alice = world.user("alice", "dev")
    bob = world.user("bob", "dev")
    world.clock.advance(10)
    alice.raw(b"".join(b"line %d\n" % n for n in range(8)))
    assert len(bob.lines()) == 5
    assert alice.lines() == [
        "!!! error: you are sending too fast: lines are dropped until you slow down"
        " (warning 1 of 2; the next one closes the connection)"
    ]
    world.clock.advance(1)
    alice.raw(b"a\nb\nc\n")
    assert bob.lines() == ["[#dev] <alice> a"]
    assert "warning 2 of 2" in alice.lines()[0]
    world.clock.advance(1)
    alice.raw(b"d\ne\n")
    assert alice.lines() == ["-!- Server closing connection: Excess flood"]
    assert not alice.connected
    assert bob.lines() == ["[#dev] <alice> d", "-!- alice quit (Excess flood)"]


def test_flood_warnings_are_forgotten_after_a_calm_spell() -> None:
    world = World(LineConfig(flood_burst=3, flood_rate=1.0, flood_max_warnings=1))
    alice = world.user("alice", "dev")
    for _ in range(3):
        world.clock.advance(10)
        alice.raw(b"1\n2\n3\n4\n")
        assert "warning 1 of 1" in alice.lines()[0]
    assert alice.connected


def test_json_flood_and_too_long_errors() -> None:
    world = World(LineConfig(flood_burst=2, flood_rate=1.0, max_line_bytes=64))
    bot = world.user("bot")
    bot.send("/format json")
    bot.take()
    world.clock.advance(5)
    bot.raw(b"x" * 80 + b"\n")
    assert bot.one(type="error")["error"] == "too_long"
    bot.raw(b"/ping\n/ping\n")
    objs = bot.objs()
    assert objs[0] == {"type": "ok", "cmd": "ping"}
    assert objs[1]["error"] == "flood"


def test_idle_probe_then_close() -> None:
    world = World(LineConfig(idle_timeout=100, ping_timeout=20))
    alice = world.user("alice", "dev")
    bob = world.user("bob", "dev")
    world.clock.advance(99)
    assert alice.lines() == []
    alice.send("/ping")
    alice.take()
    world.clock.advance(99)
    assert alice.lines() == []
    world.clock.advance(1)
    assert alice.lines() == ["-!- ping: are you there? (any line answers)"]
    world.clock.advance(10)
    alice.raw(b"\r\n")  # an empty line answers
    bob.raw(b"\r\n")
    world.clock.advance(20)
    assert alice.connected and alice.lines() == []
    # The next probe comes idle_timeout after the answer.
    world.clock.advance(79)
    assert alice.lines() == []
    world.clock.advance(1)
    assert alice.lines() == ["-!- ping: are you there? (any line answers)"]
    bob.raw(b"\r\n")
    world.clock.advance(20)
    assert alice.lines() == ["-!- Server closing connection: Ping timeout: no answer in 20 seconds"]
    assert not alice.connected
    assert bob.lines()[-1] == "-!- alice quit (Ping timeout: no answer in 20 seconds)"


def test_idle_probe_in_json_mode() -> None:
    world = World(LineConfig(idle_timeout=50, ping_timeout=10))
    bot = json_user(world, "bot")
    world.clock.advance(50)
    assert bot.objs() == [{"type": "ping"}]
    world.clock.advance(10)
    assert bot.objs() == [{"type": "disconnect", "reason": "Ping timeout: no answer in 10 seconds"}]


def test_a_client_that_stops_reading_is_dropped(world: World) -> None:
    alice = world.user("alice", "dev")
    bob = world.user("bob", "dev")
    alice.proto.transport.producer.pauseProducing()
    for _ in range(300):
        world.service.say(bob.session, text="y" * 4000, room="dev")
    assert not alice.connected
    assert world.service.find_user("alice") is None
    bob.take()
    # A paused reader that catches up is kept.
    carol = world.user("carol", "dev")
    carol.proto.transport.producer.pauseProducing()
    for _ in range(10):
        world.service.say(bob.session, text="y" * 4000, room="dev")
    carol.proto.transport.producer.resumeProducing()
    assert carol.connected


def test_delivery_never_raises(world: World) -> None:
    alice = world.user("alice")

    class Strange(Event):
        pass

    alice.proto.deliver(Strange(ts=1.0))
    assert alice.lines() == []


def test_a_message_that_cannot_be_written_costs_only_itself(world: World) -> None:
    # The edges let no such text into the core; should one come all the same (a bug), a
    # JSON reader gets it escaped and a text reader loses only that message.
    reader = world.user("reader", "r")
    reader.send("/format json")
    text_reader = world.user("texter", "r")
    speaker = world.user("speaker", "r")
    for text in ("before", "bad \ud800", "after"):
        world.service.say(speaker.session, room="r", text=text)
    said = [o["text"] for o in reader.objs() if o.get("type") == "message"]
    assert said == ["before", "bad \ud800", "after"]
    assert [line for line in text_reader.lines() if "<speaker>" in line] == [
        "[#r] <speaker> before",
        "[#r] <speaker> after",
    ]
    assert reader.connected and text_reader.connected


# Members of one room: (format, /echo on, whether it talks).
_TURN_MEMBERS = (
    ("text", False, True),
    ("text", False, True),
    ("json", False, True),
    ("text", True, True),
    ("json", True, True),
    ("text", False, False),
)


@settings(max_examples=40, deadline=None)
@given(
    said=st.lists(
        st.tuples(
            st.sampled_from([i for i, member in enumerate(_TURN_MEMBERS) if member[2]]),
            st.integers(1, 3),
        ),
        min_size=1,
        max_size=12,
    )
)
def test_a_turn_where_members_talk_reaches_each_member_whole_and_in_order(
    said: list[tuple[int, int]],
) -> None:
    # One member's lines stay within its flood budget (less its setup commands): past it
    # lines are dropped by design, which is not what this test is about.
    for member in {who for who, _ in said}:
        assume(sum(count for who, count in said if who == member) <= 10)
    # Reads of several members in one turn: every member gets everyone else's messages of
    # the turn in the order said, in its own format; with /echo on its own too, in order
    # among themselves (shown as it types them, before the turn's batch).
    world = World()
    members = []
    for i, (fmt, echo, _) in enumerate(_TURN_MEMBERS):
        client = world.user(f"m{i}", "turn")
        client.send(f"/format {fmt}")
        if echo:
            client.send("/echo on")
        members.append(client)
    for client in members:
        client.take()
    order: list[tuple[int, str]] = []
    with world.service.batch():
        for turn, (who, count) in enumerate(said):
            texts = [f"t{turn}.{k}" for k in range(count)]
            order += [(who, text) for text in texts]
            members[who].raw(b"".join(f"{t}\r\n".encode() for t in texts))
    for i, client in enumerate(members):
        fmt, echo, _ = _TURN_MEMBERS[i]
        if fmt == "json":
            got = [(o["from"], o["text"]) for o in client.objs() if o.get("type") == "message"]
        else:
            got = re.findall(r"<(m\d+)> (t[\d.]+)", client.take().decode())
        me = f"m{i}"
        assert [m for m in got if m[0] != me] == [
            (f"m{who}", text) for who, text in order if who != i
        ]
        assert [m for m in got if m[0] == me] == [
            (me, text) for who, text in order if echo and who == i
        ]
