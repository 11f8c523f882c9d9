"""Registration: PASS/NICK/USER, CAP negotiation, the welcome burst, LUSERS, MOTD, PING, QUIT,
and the dispatcher's own numerics."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatserver.config import IrcConfig
from chatserver.core.settings import CoreSettings
from protocols.irc import caps as capmod
from protocols.irc import numerics
from protocols.irc.commands import COMMANDS, CommandSpec
from protocols.irc.handlers.registration import (
    EXTRA_ISUPPORT,
    _send_own,
    isupport_tokens,
    send_isupport,
    send_motd,
)
from protocols.irc.message import parse, serialize_fitted
from protocols.irc.services_registry import SERVICES
from tests.irc.conftest import IrcWorld, cap_ls, commands, find, last_param, one

WELCOME = ["001", "002", "003", "004", "005"]


def test_plain_registration_sends_the_welcome_burst(irc: IrcWorld) -> None:
    c = irc.connect()
    c.send("NICK alice")
    assert c.take() == []
    c.send("USER al 0 * :Alice Liddell")
    out = c.take()
    names = commands(out)
    assert names[:4] == ["001", "002", "003", "004"]
    assert "005" in names
    for numeric in ("251", "252", "253", "254", "255", "265", "266", "422"):
        assert numeric in names
    welcome = one(out, "001")
    assert welcome.source == "irc.test"
    assert welcome.params[0] == "alice"
    assert "TestNet" in last_param(welcome)
    assert "alice!al@" in last_param(welcome)
    myinfo = one(out, "004")
    assert myinfo.params[1] == "irc.test"
    assert "B" in myinfo.params[3] and "i" in myinfo.params[3]
    assert c.user.realname == "Alice Liddell"
    assert c.user.ident == "al"
    assert c.conn.registered


def test_welcome_burst_lines_are_the_serializers_own(irc: IrcWorld) -> None:
    # 001 and LUSERS are written without the generic serializer: byte for byte the same.
    c = irc.connect()
    c.send("NICK alice", "USER al 0 * :Alice Liddell")
    raw_lines = [ln + b"\r\n" for ln in c.raw().split(b"\r\n") if ln]
    seen = set()
    for raw in raw_lines:
        msg = parse(raw[:-2], max_body=1 << 20)
        assert serialize_fitted(msg, force_trailing=True) == raw
        seen.add(msg.command)
    assert {"001", "251", "252", "253", "254", "255", "265", "266"} <= seen
    c.send("LUSERS")
    lusers = [ln + b"\r\n" for ln in c.raw().split(b"\r\n") if ln]
    assert len(lusers) == 7
    for raw in lusers:
        assert serialize_fitted(parse(raw[:-2], max_body=1 << 20), force_trailing=True) == raw


def test_own_replies_with_a_line_break_go_the_careful_way(irc: IrcWorld) -> None:
    c = irc.connect()
    c.register("alice")
    c.conn._begin(None)
    with pytest.raises(ValueError):
        _send_own(c.conn, [(numerics.RPL_WELCOME, ("odd\r\nPRIVMSG #x :injected",))])
    c.conn._flush_command()
    assert b"injected" not in c.raw()


def test_isupport_tokens(irc: IrcWorld) -> None:
    c = irc.connect()
    c.send("NICK alice", "USER al 0 * :A")
    tokens = [p for m in find(c.take(), "005") for p in m.params[1:-1]]
    values = dict(t.split("=", 1) if "=" in t else (t, "") for t in tokens)
    assert values["CASEMAPPING"] == "ascii"
    assert values["CHANTYPES"] == "#"
    assert values["PREFIX"] == "(ov)@+"
    assert values["CHANMODES"] == "Ibe,k,l,CimnstR"
    assert values["EXCEPTS"] == "e" and values["EXTBAN"] == "$,am"
    assert values["STATUSMSG"] == "@+"
    assert values["NETWORK"] == "TestNet"
    assert values["BOT"] == "B"
    for key in (
        "NICKLEN",
        "CHANNELLEN",
        "TOPICLEN",
        "KICKLEN",
        "AWAYLEN",
        "MAXTARGETS",
        "MODES",
        "TARGMAX",
        "UTF8ONLY",
        "ELIST",
    ):
        assert key in values
    # Lines stay within the limits clients expect.
    assert all(len(m.params) <= 15 for m in find(c.take(), "005"))


def test_isupport_reflects_the_command_table(
    irc: IrcWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = irc.client("alice")
    monkeypatch.delitem(COMMANDS, "CHATHISTORY", raising=False)
    monkeypatch.delitem(COMMANDS, "MONITOR", raising=False)
    monkeypatch.delitem(EXTRA_ISUPPORT, "CHATHISTORY", raising=False)
    monkeypatch.delitem(EXTRA_ISUPPORT, "MONITOR", raising=False)
    tokens = isupport_tokens(c.conn)
    assert not any(t.startswith(("CHATHISTORY", "MONITOR")) for t in tokens)
    ls = c.ask("CAP LS 302")
    assert "draft/chathistory" not in cap_ls(ls).split()


def test_motd_from_file(make_irc, tmp_path: Path) -> None:
    motd = tmp_path / "motd.txt"
    motd.write_text("Hello\n" + "x" * 450 + "\n")
    world = make_irc(config=IrcConfig(flood_burst=0, motd_file=str(motd)))
    c = world.connect()
    c.send("NICK alice", "USER a 0 * :A")
    out = c.take()
    assert "422" not in commands(out)
    lines = [last_param(m) for m in find(out, "372")]
    assert lines[0] == "- Hello"
    assert len(lines) == 3  # the long line is cut in two
    assert commands(out)[-1] == "376" or "376" in commands(out)
    again = c.ask("MOTD")
    assert commands(again)[0] == "375" and commands(again)[-1] == "376"


@pytest.mark.parametrize("nick", ["al", "a" * 30])
def test_the_welcome_burst_is_what_each_reply_would_say(make_irc, tmp_path: Path, nick) -> None:
    # The fixed lines of the burst come from templates: byte for byte what the replies
    # rendered one by one (the ISUPPORT and MOTD commands) say, for any nick length.
    motd = tmp_path / "motd.txt"
    motd.write_text("Hello\n" + "x" * 480 + "\n")
    world = make_irc(config=IrcConfig(flood_burst=0, motd_file=str(motd)))
    for _ in range(2):  # the second registration uses the templates the first made
        c = world.connect()
        c.send(f"NICK {nick}", "USER a 0 * :A")
        burst = c.raw()
        for send in (send_isupport, send_motd):
            send(c.conn)
            one_by_one = c.raw()
            assert one_by_one and one_by_one in burst
        assert all(len(line) <= 510 for line in burst.split(b"\r\n"))
        c.send("QUIT")


def test_a_reloaded_motd_is_in_the_next_welcome(make_irc, tmp_path: Path) -> None:
    world = make_irc()
    first = world.connect()
    first.send("NICK alice", "USER a 0 * :A")
    assert "422" in commands(first.take())
    # What a reload does: the factory gets new lines (a new object).
    world.factory.motd_lines = ["fresh news"]
    second = world.connect()
    second.send("NICK bob", "USER b 0 * :B")
    out = second.take()
    assert "422" not in commands(out)
    assert [last_param(m) for m in find(out, "372")] == ["- fresh news"]


def test_lusers_counts(irc: IrcWorld) -> None:
    a = irc.client("alice")
    irc.client("bob")
    irc.connect()  # unregistered
    a.send("MODE alice +i", "JOIN #r")
    out = a.ask("LUSERS")
    assert "1 users and 1 invisible" in last_param(one(out, "251"))
    assert one(out, "253").params[1] == "1"
    assert one(out, "254").params[1] == "1"
    assert one(out, "265").params[1:3] == ("2", "2")


def test_lusers_counts_follow_quits_renames_and_registration(irc: IrcWorld) -> None:
    a = irc.client("alice")
    b = irc.client("bob")
    pending = irc.connect()
    b.send("MODE bob +i", "NICK robert")
    out = a.ask("LUSERS")
    assert "1 users and 1 invisible" in last_param(one(out, "251"))
    assert one(out, "253").params[1] == "1"
    b.send("MODE robert -i")
    a.send("MODE alice +i")
    pending.send("NICK carol", "USER c 0 * :Carol")
    out = a.ask("LUSERS")
    assert "2 users and 1 invisible" in last_param(one(out, "251"))
    assert one(out, "253").params[1] == "0"
    a.send("QUIT :bye")
    out = b.ask("LUSERS")
    assert "2 users and 0 invisible" in last_param(one(out, "251"))


# -- CAP ---------------------------------------------------------------------------------------


def test_cap_negotiation_holds_registration_until_end(irc: IrcWorld) -> None:
    c = irc.connect()
    c.send("CAP LS 302")
    ls = c.take()
    assert all(m.params[:2] == ("*", "LS") for m in find(ls, "CAP"))
    offered = cap_ls(ls).split()
    assert "sasl=PLAIN,SCRAM-SHA-256" in offered
    for cap in (
        "multi-prefix",
        "message-tags",
        "server-time",
        "echo-message",
        "batch",
        "labeled-response",
        "cap-notify",
    ):
        assert cap in offered
    c.send("NICK alice", "USER a 0 * :A")
    assert c.take() == []
    c.send("CAP REQ :multi-prefix server-time")
    ack = one(c.take(), "CAP")
    assert ack.params[1:] == ("ACK", "multi-prefix server-time")
    c.send("CAP REQ :multi-prefix bogus-cap")
    nak = one(c.take(), "CAP")
    assert nak.params[1:] == ("NAK", "multi-prefix bogus-cap")
    c.send("CAP END")
    assert "001" in commands(c.take())
    assert c.conn.caps == {"multi-prefix", "server-time", "cap-notify"}
    listed = c.ask("CAP LIST")
    assert one(listed, "CAP").params[:2] == ("alice", "LIST")
    assert set(last_param(one(listed, "CAP")).split()) == {
        "multi-prefix",
        "server-time",
        "cap-notify",
    }


def test_cap_req_can_remove_and_is_all_or_nothing(irc: IrcWorld) -> None:
    c = irc.client("alice", caps=("server-time", "echo-message"))
    out = c.ask("CAP REQ :-echo-message")
    assert one(out, "CAP").params[1] == "ACK"
    assert "echo-message" not in c.conn.caps
    c.ask("CAP REQ :echo-message nope")
    assert "echo-message" not in c.conn.caps


def test_cap_ls_without_version_has_no_values(irc: IrcWorld) -> None:
    c = irc.connect()
    out = c.ask("CAP LS")
    tokens = last_param(one(out, "CAP")).split()
    assert "sasl" in tokens
    assert not any("=" in t for t in tokens)


def test_cap_ls_302_continues_long_lists(irc: IrcWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(60):
        monkeypatch.setitem(
            capmod.CAPABILITIES,
            f"vendor.example/cap{i:02d}",
            capmod.Capability(f"vendor.example/cap{i:02d}"),
        )
    c = irc.connect()
    raw = c.lines()
    c.send("CAP LS 302")
    raw = c.lines()
    assert len(raw) >= 2
    assert all(len(line.encode()) <= 510 for line in raw)
    out = [line.split(" ") for line in raw]
    assert all(parts[4] == "*" for parts in out[:-1])
    assert out[-1][4] != "*"


def test_cap_unknown_subcommand(irc: IrcWorld) -> None:
    c = irc.connect()
    out = c.ask("CAP FROB")
    assert one(out, "410").params[1] == "FROB"


def test_cap_after_registration_does_not_hold(irc: IrcWorld) -> None:
    c = irc.client("alice")
    c.ask("CAP LS 302")
    out = c.ask("CAP REQ :away-notify")
    assert one(out, "CAP").params[:2] == ("alice", "ACK")
    assert "away-notify" in c.conn.caps


# -- NICK / USER / PASS ------------------------------------------------------------------------


def test_nick_errors(irc: IrcWorld) -> None:
    irc.client("alice")
    c = irc.connect()
    assert commands(c.ask("NICK")) == ["431"]
    out = c.ask("NICK 9lives")
    assert one(out, "432").params[1] == "9lives"
    out = c.ask("NICK Alice")
    assert one(out, "433").params[:2] == ("*", "Alice")
    c.send("NICK carol", "USER c 0 * :C")
    assert "001" in commands(c.take())


def test_service_nicks_are_reserved(irc: IrcWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(SERVICES, "reservedserv", lambda conn, text: None)
    c = irc.connect()
    assert one(c.ask("NICK ReservedServ"), "432")
    c.send("NICK alice", "USER a 0 * :A")
    c.take()
    assert one(c.ask("NICK ReservedServ"), "432")


def test_nick_change_after_registration(irc: IrcWorld) -> None:
    a = irc.client("alice")
    b = irc.client("bob")
    a.send("JOIN #r")
    b.send("JOIN #r")
    a.take()
    b.take()
    out = a.ask("NICK alicia")
    nick = one(out, "NICK")
    assert nick.source.startswith("alice!") and nick.params == ("alicia",)
    assert one(b.take(), "NICK").params == ("alicia",)
    assert a.conn.nick == "alicia"
    assert one(a.ask("NICK bob"), "433").params[1] == "bob"
    assert one(a.ask("NICK -bad"), "432")
    # Changing only the case is allowed.
    assert one(a.ask("NICK Alicia"), "NICK").params == ("Alicia",)


def test_nick_taken_between_nick_and_user(irc: IrcWorld) -> None:
    c = irc.connect()
    c.send("NICK alice")
    irc.client("alice")
    c.send("USER a 0 * :A")
    out = c.take()
    assert one(out, "433")
    assert not c.conn.registered
    c.send("NICK alice2")
    assert "001" in commands(c.take())


def test_user_and_pass_rules(irc: IrcWorld) -> None:
    c = irc.connect()
    assert one(c.ask("USER a 0 *"), "461").params[1] == "USER"
    c.send("PASS secret", "NICK alice", "USER a 0 * :A")
    c.take()
    assert one(c.ask("USER a 0 * :A"), "462")
    assert one(c.ask("PASS x"), "462")


def test_ident_is_sanitized(irc: IrcWorld) -> None:
    c = irc.connect()
    c.send("NICK alice", "USER ~a@b!c 0 * :A")
    assert c.user.ident == "abc"


# -- dispatcher rules --------------------------------------------------------------------------


def test_dispatcher_numerics(irc: IrcWorld) -> None:
    c = irc.connect()
    assert one(c.ask("JOIN #a"), "451")
    assert one(c.ask("FROBNICATE x"), "421").params[1] == "FROBNICATE"
    c.send("NICK alice", "USER a 0 * :A")
    c.take()
    assert one(c.ask("FROBNICATE x"), "421")
    assert one(c.ask("JOIN"), "461").params[1] == "JOIN"


def test_oper_only_and_handler_bugs(irc: IrcWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def secret(conn, msg):  # type: ignore[no-untyped-def]
        calls.append(msg)

    def buggy(conn, msg):  # type: ignore[no-untyped-def]
        return {}["missing"]

    monkeypatch.setitem(COMMANDS, "SECRETCMD", CommandSpec("SECRETCMD", secret, oper_only=True))
    monkeypatch.setitem(COMMANDS, "BUGGYCMD", CommandSpec("BUGGYCMD", buggy))
    c = irc.client("alice")
    assert one(c.ask("SECRETCMD"), "481")
    assert calls == []
    c.world.service.users.set_mode(c.user, "oper", True)
    assert c.ask("SECRETCMD") == []
    assert len(calls) == 1
    # A KeyError inside a handler is a bug report, not "unknown command".
    out = c.ask("BUGGYCMD")
    assert commands(out) == ["400"]
    assert not c.closed


# -- PING / PONG / QUIT ------------------------------------------------------------------------


def test_ping_echoes_token(irc: IrcWorld) -> None:
    c = irc.connect()
    pong = one(c.ask("PING :abc def"), "PONG")
    assert pong.params == ("irc.test", "abc def")
    c.send("NICK alice", "USER a 0 * :A")
    c.take()
    assert one(c.ask("PING x"), "PONG").params == ("irc.test", "x")
    assert one(c.ask("PING"), "461")
    assert c.ask("PONG :whatever") == []


def test_quit_before_registration(irc: IrcWorld) -> None:
    c = irc.connect()
    out = c.ask("QUIT :bye")
    error = one(out, "ERROR")
    assert "Quit: bye" in last_param(error)
    assert c.closed


def test_quit_after_registration_tells_others(irc: IrcWorld) -> None:
    a = irc.client("alice")
    b = irc.client("bob")
    a.send("JOIN #r")
    b.send("JOIN #r")
    b.take()
    out = a.ask("QUIT :gone fishing")
    assert last_param(one(out, "ERROR")).startswith("Closing Link: alice[")
    assert a.closed
    quit_msg = one(b.take(), "QUIT")
    assert quit_msg.source.startswith("alice!")
    assert last_param(quit_msg) == "Quit: gone fishing"
    assert irc.service.find_user("alice") is None


def test_registration_timeout(make_irc) -> None:
    world = make_irc(config=IrcConfig(flood_burst=0, registration_timeout=30))
    c = world.connect()
    c.send("NICK alice")
    world.clock.advance(29)
    assert not c.closed
    world.clock.advance(2)
    assert c.closed
    assert "Registration timed out" in last_param(one(c.take(), "ERROR"))
    done = world.connect()
    done.send("NICK bob", "USER b 0 * :B")
    world.clock.advance(60)
    assert not done.closed


def test_connection_limit_per_address(make_irc) -> None:
    from chatserver.core.settings import CoreSettings

    world = make_irc(settings=CoreSettings(server_name="irc.test", max_connections_per_address=1))
    world.connect(address="198.51.100.7")
    second = world.connect(address="198.51.100.7")
    assert second.closed
    assert "too many connections" in last_param(one(second.take(), "ERROR"))


def test_registered_nick_notice_follows_the_welcome() -> None:
    irc = IrcWorld(
        settings=CoreSettings(
            server_name="irc.test", scram_iterations=4096, nick_enforcement="timeout"
        )
    )
    irc.service.accounts.create("alice", "password1")
    c = irc.connect()
    c.send("NICK alice", "USER a 0 * :A")
    out = c.take()
    names = commands(out)
    assert names[0] == "001"
    notice = one(out, "NOTICE")
    assert "registered nick" in last_param(notice)
    assert names.index("NOTICE") > names.index("422")


def test_a_registered_nick_is_refused_until_its_account_is_proven(irc: IrcWorld) -> None:
    irc.service.accounts.create("alice", "password1")
    irc.service.accounts.create("bob", "password2")
    c = irc.connect()
    c.send("NICK alice", "USER a 0 * :A")
    refused = one(c.take(), "433")
    assert refused.params[1:] == (
        "alice",
        "Nickname is reserved by a different account: log in (SASL or NickServ) to use it",
    )
    # The client picks another nick, proves the account, then takes its nick.
    c.send("NICK alice_")
    assert one(c.take(), "001").params[0] == "alice_"
    out = c.ask("PRIVMSG NickServ :IDENTIFY alice password1")
    assert one(out, "900")
    out = c.ask("NICK alice")
    assert one(out, "NICK").params == ("alice",)
    # Logged in to another account is not enough.
    b = irc.connect()
    irc.service.login(b.conn.core, "bob")
    b.register("bob")
    assert one(b.ask("NICK Alice"), "433").params[1] == "Alice"
    assert b.user.nick == "bob"


@pytest.mark.parametrize("nick", ["MemoServ", "Guest123", "guest7"])
def test_service_and_guest_names_are_refused(irc: IrcWorld, nick: str) -> None:
    c = irc.connect()
    c.send(f"NICK {nick}", "USER a 0 * :A")
    assert one(c.take(), "432").params[1] == nick
    c.send("NICK fine")
    assert one(c.take(), "001")
    assert one(c.ask(f"NICK {nick}"), "432").params[1] == nick
