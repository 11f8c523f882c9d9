"""What IRC clients rely on, through the real server over sockets: replies in order, one
line per relayed line, echo-message to oneself, LUSERS, CHATHISTORY selectors, the tag
limits and a handful of numerics.  irctest (``make irctest``) checks the same ground more
widely; these keep it from coming back within ``make test``."""

from __future__ import annotations

import base64
import datetime
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from chatserver.passwords import hash_password
from tests.support.server import LineClient, ServerProcess

pytestmark = pytest.mark.timeout(120)

OPER_NAME = "root"
OPER_PASSWORD = "hunter22"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for the module: IRC and line chat, an operator, no flood delays."""
    directory: Path = tmp_path_factory.mktemp("conformance")
    proc = ServerProcess(
        directory,
        protocols=("irc", "line"),
        overrides={
            "irc": {"flood_exempt": ["127.0.0.1"]},
            "line": {"flood_burst": 1000, "flood_rate": 1000.0},
            "chat": {"history_flush_interval": 0.0},
        },
    )
    # Cheap scrypt parameters: the format and the check are those of real hashes.
    hashed = hash_password(OPER_PASSWORD, n=16, r=1, p=1)
    with open(proc.config_path, "a") as config:
        config.write(f'\n[[operators]]\nname = "{OPER_NAME}"\npassword = "{hashed}"\n')
    proc.start()
    yield proc
    proc.kill()


class Irc(LineClient):
    """A raw IRC client: ``sync()`` sends PING and returns every line before its PONG."""

    tokens = 0

    def register(self, nick: str, caps: str = "", realname: str = "Real Name") -> Irc:
        if caps:
            self.send("CAP LS 302")
            self.send(f"CAP REQ :{caps}")
        self.send(f"NICK {nick}")
        self.send(f"USER {nick} 0 * :{realname}")
        if caps:
            self.send("CAP END")
        self.expect(lambda line: " 376 " in line or " 422 " in line)
        self.sync()
        return self

    def sync(self) -> list[str]:
        Irc.tokens += 1
        token = f"sync{Irc.tokens}"
        self.send(f"PING {token}")
        lines = []
        while True:
            line = self.read_line()
            if " PONG " in line and line.endswith(token):
                return lines
            lines.append(line)

    def ask(self, line: str) -> list[str]:
        self.send(line)
        return self.sync()


def connect(server: ServerProcess, nick: str, caps: str = "") -> Irc:
    return Irc(server.ports["irc"]).register(nick, caps)


def command_of(line: str) -> str:
    words = line.split(" ")
    if words[0].startswith("@"):
        words = words[1:]
    if words[0].startswith(":"):
        words = words[1:]
    return words[0]


def tags_of(line: str) -> dict[str, str]:
    if not line.startswith("@"):
        return {}
    raw = line[1 : line.index(" ")]
    return dict(item.partition("=")[::2] for item in raw.split(";"))


def trailing(line: str) -> str:
    body = line[line.index(" ") + 1 :] if line.startswith("@") else line
    return body.split(" :", 1)[1]


# -- replies in order --------------------------------------------------------------------------


def test_oper_is_answered_before_a_later_ping(server: ServerProcess) -> None:
    client = connect(server, "oporder")
    # The password check runs in a thread; the PING after it must still be answered after.
    client.send(f"OPER {OPER_NAME} {OPER_PASSWORD}\r\nPING after-oper")
    lines = []
    while not lines or " PONG " not in lines[-1]:
        lines.append(client.read_line())
    assert [command_of(line) for line in lines] == ["MODE", "381", "PONG"]


def test_chathistory_is_answered_before_a_later_ping(server: ServerProcess) -> None:
    client = connect(server, "historder", "batch server-time message-tags draft/chathistory")
    client.ask("JOIN #historder")
    client.send("PRIVMSG #historder :one\r\nCHATHISTORY LATEST #historder * 10\r\nPING after")
    lines = []
    while not lines or " PONG " not in lines[-1]:
        lines.append(client.read_line())
    assert [command_of(line) for line in lines] == ["BATCH", "PRIVMSG", "BATCH", "PONG"]
    assert trailing(lines[1]) == "one"


def test_labeled_oper_failure_keeps_its_label_and_its_place(server: ServerProcess) -> None:
    client = connect(server, "oplabel", "labeled-response batch")
    client.send(f"@label=a OPER {OPER_NAME} wrong\r\n@label=b PING x")
    first, second = client.read_line(), client.read_line()
    assert first.startswith("@label=a ") and command_of(first) == "464"
    assert second.startswith("@label=b ") and command_of(second) == "PONG"


# -- one line per relayed line -----------------------------------------------------------------


def test_a_full_line_is_relayed_as_one_line_cut_at_a_character(server: ServerProcess) -> None:
    sender = connect(server, "longsender")
    reader = connect(server, "longreader")
    sender.ask("JOIN #long")
    reader.ask("JOIN #long")
    head = "PRIVMSG #long :"
    # The longest line the sender may send, ending in two-byte characters: with its
    # prefix it no longer fits, and the cut must not leave half a character.
    text = "x" * 300 + "é" * ((510 - len(head) - 300) // 2)
    assert len((head + text).encode()) <= 510
    sender.ask(head + text)
    got = reader.sync()
    relayed = [line for line in got if command_of(line) == "PRIVMSG"]
    assert len(relayed) == 1, got
    assert len(relayed[0].encode()) + 2 <= 512
    body = trailing(relayed[0])
    assert text.startswith(body) and len(body) < len(text)
    assert "\ufffd" not in body


def test_text_longer_than_an_irc_line_from_line_chat_is_split(server: ServerProcess) -> None:
    reader = connect(server, "splitreader")
    reader.ask("JOIN #split")
    line = LineClient(server.ports["line"])
    line.expect("Choose a nick")
    line.send("linesplit")
    line.expect("You are linesplit")
    line.send("/join split")
    line.expect("now talking in #split")
    reader.sync()
    words = " ".join(f"w{i}" for i in range(400))
    line.send(words)
    lines = [reader.expect(" PRIVMSG #split :")]
    while " ".join(trailing(x) for x in lines).replace("  ", " ") != words:
        lines.append(reader.expect(" PRIVMSG #split :"))
    assert len(lines) > 1
    assert all(len(x.encode()) + 2 <= 512 for x in lines)


# -- echo-message to oneself -------------------------------------------------------------------


@pytest.mark.parametrize("labeled", [False, True])
def test_message_to_self_with_echo_message_arrives_twice(
    server: ServerProcess, labeled: bool
) -> None:
    nick = f"selfecho{int(labeled)}"
    caps = "echo-message batch labeled-response" if labeled else "echo-message"
    client = connect(server, nick, caps)
    label = "@label=me " if labeled else ""
    got = client.ask(f"{label}PRIVMSG {nick} :hi me")
    privmsgs = [line for line in got if command_of(line) == "PRIVMSG"]
    assert len(privmsgs) == 2, got
    assert all(trailing(line) == "hi me" for line in privmsgs)
    assert "BATCH" not in [command_of(line) for line in got]
    if labeled:
        assert sum(1 for line in privmsgs if tags_of(line).get("label") == "me") == 1


def test_tagmsg_to_self_with_echo_message_arrives_twice(server: ServerProcess) -> None:
    client = connect(server, "selftag", "echo-message batch labeled-response message-tags")
    got = client.ask("@label=t;+typing=active TAGMSG selftag")
    tagmsgs = [line for line in got if command_of(line) == "TAGMSG"]
    assert len(tagmsgs) == 2, got
    assert [tags_of(line).get("label") for line in tagmsgs].count("t") == 1


def test_message_to_self_without_echo_message_arrives_once(server: ServerProcess) -> None:
    client = connect(server, "selfnoecho")
    got = client.ask("PRIVMSG selfnoecho :hi me")
    assert [command_of(line) for line in got] == ["PRIVMSG"]


# -- LUSERS ------------------------------------------------------------------------------------


def _unknown_count(client: Irc) -> int:
    got = client.ask("LUSERS")
    return int(next(line for line in got if command_of(line) == "253").split(" ")[3])


def test_lusers_forgets_a_client_once_it_is_sent_error(server: ServerProcess) -> None:
    watcher = connect(server, "lusers")
    before = _unknown_count(watcher)
    leaving = Irc(server.ports["irc"])
    leaving.ask("NICK half")
    assert _unknown_count(watcher) == before + 1
    leaving.send("QUIT")
    leaving.expect("ERROR ")
    # The leaving client has not closed its side: it is gone all the same.
    assert _unknown_count(watcher) == before
    leaving.close()


# -- CHATHISTORY selectors ---------------------------------------------------------------------


def _say_timed(client: Irc, target: str, texts: list[str]) -> list[str]:
    """Send each text (a few milliseconds apart); the server-time of each, from its echo."""
    times = []
    for text in texts:
        echo = next(line for line in client.ask(f"PRIVMSG {target} :{text}") if "PRIVMSG" in line)
        times.append(tags_of(echo)["time"])
        time.sleep(0.005)
    return times


def _history(client: Irc, command: str) -> list[str]:
    return [trailing(line) for line in client.ask(command) if command_of(line) == "PRIVMSG"]


def test_chathistory_timestamp_selectors_are_exact_to_the_millisecond(
    server: ServerProcess,
) -> None:
    caps = "batch server-time message-tags echo-message draft/chathistory"
    client = connect(server, "tsexact", caps)
    client.ask("JOIN #tsexact")
    t1, t2, t3 = _say_timed(client, "#tsexact", ["m1", "m2", "m3"])
    room = "#tsexact"
    assert _history(client, f"CHATHISTORY AFTER {room} timestamp={t1} 10") == ["m2", "m3"]
    assert _history(client, f"CHATHISTORY BEFORE {room} timestamp={t3} 10") == ["m1", "m2"]
    assert _history(client, f"CHATHISTORY BETWEEN {room} timestamp={t1} timestamp={t3} 10") == [
        "m2"
    ]
    assert _history(client, f"CHATHISTORY BETWEEN {room} timestamp={t3} timestamp={t1} 10") == [
        "m2"
    ]
    assert _history(client, f"CHATHISTORY LATEST {room} timestamp={t2} 10") == ["m3"]
    # Digits past the millisecond name the same millisecond.
    assert _history(client, f"CHATHISTORY AFTER {room} timestamp={t1[:-1]}999Z 10") == [
        "m2",
        "m3",
    ] or t1.endswith("999Z")


def _logged_in(server: ServerProcess, nick: str, caps: str) -> Irc:
    """A client logged in to the account ``nick`` (made first) with SASL PLAIN."""
    server.create_account(nick, "sesame-" + nick)
    client = Irc(server.ports["irc"])
    client.send("CAP LS 302")
    client.send(f"CAP REQ :sasl {caps}")
    client.send("AUTHENTICATE PLAIN")
    client.expect("AUTHENTICATE +")
    token = base64.b64encode(f"{nick}\0{nick}\0sesame-{nick}".encode()).decode()
    client.send(f"AUTHENTICATE {token}")
    client.expect(" 903 ")
    client.send(f"NICK {nick}")
    client.send(f"USER {nick} 0 * :Real Name")
    client.send("CAP END")
    client.expect(lambda line: " 376 " in line or " 422 " in line)
    client.sync()
    return client


def test_private_chathistory_timestamp_selectors_are_exact_to_the_millisecond(
    server: ServerProcess,
) -> None:
    caps = "batch server-time message-tags echo-message draft/chathistory"
    client = _logged_in(server, "pvexact", caps)
    peer = _logged_in(server, "pvpeer", caps)
    t1, t2, t3 = _say_timed(client, "pvpeer", ["m1", "m2", "m3"])
    peer.sync()
    assert _history(client, f"CHATHISTORY AFTER pvpeer timestamp={t1} 10") == ["m2", "m3"]
    assert _history(client, f"CHATHISTORY BEFORE pvpeer timestamp={t3} 10") == ["m1", "m2"]
    assert _history(client, f"CHATHISTORY LATEST pvpeer timestamp={t1} 10") == ["m2", "m3"]
    assert _history(client, f"CHATHISTORY BETWEEN pvpeer timestamp={t1} timestamp={t3} 10") == [
        "m2"
    ]
    assert _history(client, f"CHATHISTORY BETWEEN pvpeer timestamp={t3} timestamp={t1} 10") == [
        "m2"
    ]
    assert _history(peer, f"CHATHISTORY AROUND pvexact timestamp={t2} 1") == ["m2"]


def test_chathistory_targets_keeps_to_its_window(server: ServerProcess) -> None:
    caps = "batch server-time message-tags echo-message draft/chathistory"
    client = connect(server, "tgtwin", caps)
    client.ask("JOIN #tgtwin1")
    client.ask("JOIN #tgtwin2")
    client.ask("JOIN #tgtwin3")
    (t1,) = _say_timed(client, "#tgtwin1", ["a"])
    (t2,) = _say_timed(client, "#tgtwin2", ["b"])
    (t3,) = _say_timed(client, "#tgtwin3", ["c"])
    got = client.ask(f"CHATHISTORY TARGETS timestamp={t1} timestamp={t3} 10")
    rooms = [line.split(" ")[-2] for line in got if command_of(line) == "CHATHISTORY"]
    # The window is open at both ends: only the room spoken in strictly inside it.
    assert rooms == ["#tgtwin2"], got
    late = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1)
    stamp = late.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    got = client.ask(f"CHATHISTORY TARGETS timestamp={t2} timestamp={stamp} 10")
    rooms = [line.split(" ")[-2] for line in got if command_of(line) == "CHATHISTORY"]
    assert rooms == ["#tgtwin3"], got


# -- tag limits --------------------------------------------------------------------------------


def test_client_tags_past_4094_bytes_get_417_and_at_the_limit_are_relayed(
    server: ServerProcess,
) -> None:
    caps = "message-tags echo-message"
    alice = connect(server, "tagalice", caps)
    bob = connect(server, "tagbob", caps)
    alice.ask("JOIN #tags")
    bob.ask("JOIN #tags")
    # "foo=bar;+baz=" and the value: 4094 bytes of tag data exactly.
    at_limit = "@foo=bar;+baz=" + "a" * 4081 + " TAGMSG #tags"
    echo = [line for line in alice.ask(at_limit) if command_of(line) == "TAGMSG"]
    assert len(echo) == 1 and tags_of(echo[0])["+baz"] == "a" * 4081
    relayed = [line for line in bob.sync() if command_of(line) == "TAGMSG"]
    assert len(relayed) == 1 and tags_of(relayed[0])["+baz"] == "a" * 4081
    over = "@foo=bar;+baz=" + "a" * 4082 + " TAGMSG #tags"
    assert [command_of(line) for line in alice.ask(over)] == ["417"]
    assert bob.sync() == []


# -- single numerics and notifications ---------------------------------------------------------


def test_an_away_user_joining_is_followed_by_away_for_away_notify(server: ServerProcess) -> None:
    member = connect(server, "awaymember", "away-notify")
    member.ask("JOIN #awayjoin")
    joiner = connect(server, "awayjoiner", "away-notify")
    joiner.ask("AWAY :gone fishing")
    own = joiner.ask("JOIN #awayjoin")
    assert "AWAY" not in [command_of(line) for line in own]
    got = member.sync()
    assert [command_of(line) for line in got] == ["JOIN", "AWAY"]
    assert got[1].startswith(":awayjoiner!") and trailing(got[1]) == "gone fishing"


def test_empty_realname_gets_461(server: ServerProcess) -> None:
    client = Irc(server.ports["irc"])
    client.send("NICK norealname")
    got = client.ask("USER u 0 * :")
    assert [command_of(line) for line in got] == ["461"]


def test_a_bad_key_gets_696_without_repeating_it(server: ServerProcess) -> None:
    client = connect(server, "badkey")
    client.ask("JOIN #badkey")
    got = client.ask("MODE #badkey +k :secret with spaces")
    assert [line.split(" ")[1:6] for line in got] == [["696", "badkey", "#badkey", "k", "*"]]


def test_a_change_of_case_is_not_offline_and_online_to_monitor(server: ServerProcess) -> None:
    watcher = connect(server, "casewatcher")
    watched = connect(server, "casenick")
    watcher.ask("MONITOR + casenick")
    watched.ask("NICK CaseNick")
    assert [command_of(line) for line in watcher.sync()] == []
    watched.ask("NICK othernick")
    assert [command_of(line) for line in watcher.sync()] == ["731"]


def test_names_of_several_channels_ends_with_one_366(server: ServerProcess) -> None:
    client = connect(server, "namesmany")
    client.ask("JOIN #names1")
    client.ask("JOIN #names2")
    got = client.ask("NAMES #names1,#names2")
    assert [line.split(" ")[1] for line in got] == ["353", "353", "366"]
    assert got[2].split(" ")[3] == "#names1,#names2"


def test_who_exact_nick_shows_an_invisible_user(server: ServerProcess) -> None:
    hidden = connect(server, "whohidden")
    hidden.ask("MODE whohidden +i")
    asker = connect(server, "whoasker")
    got = asker.ask("WHO whohidden")
    assert [line.split(" ")[1] for line in got] == ["352", "315"]
    assert [line.split(" ")[1] for line in asker.ask("WHO whohid*")] == ["315"]


def test_an_oversized_sasl_chunk_gets_905(server: ServerProcess) -> None:
    client = Irc(server.ports["irc"])
    client.send("CAP LS 302")
    client.send("CAP REQ :sasl")
    client.expect("ACK")
    client.send("AUTHENTICATE PLAIN")
    client.expect("AUTHENTICATE +")
    # 440 bytes: past the 400 of a chunk, within one line.
    got = client.ask("AUTHENTICATE " + base64.b64encode(b"x" * 330).decode())
    assert [line.split(" ")[1:3] for line in got] == [["905", "*"]]


def test_an_endless_sasl_response_gets_904(server: ServerProcess) -> None:
    client = Irc(server.ports["irc"])
    client.send("CAP LS 302")
    client.send("CAP REQ :sasl")
    client.expect("ACK")
    client.send("AUTHENTICATE PLAIN")
    client.expect("AUTHENTICATE +")
    chunk = "AUTHENTICATE " + "A" * 400
    got = client.ask("\r\n".join([chunk] * 100))
    # (The chunks after it are taken for new exchanges with unknown mechanisms.)
    assert got[0].split(" ")[1:3] == ["904", "*"]
    assert "905" not in [line.split(" ")[1] for line in got]


def test_register_before_connecting_fails_naming_the_account(server: ServerProcess) -> None:
    client = Irc(server.ports["irc"])
    client.send("CAP LS 302")
    client.send("CAP REQ :draft/account-registration")
    client.expect("ACK")
    got = client.ask("REGISTER early * hunter2hunter2")
    fails = [line for line in got if command_of(line) == "FAIL"]
    assert len(fails) == 1
    assert fails[0].split(" ")[2:5] == ["REGISTER", "COMPLETE_CONNECTION_REQUIRED", "early"]


# -- account registration before connecting ----------------------------------------------------


@pytest.fixture(scope="module")
def early_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server that lets clients REGISTER before they finish connecting."""
    proc = ServerProcess(
        tmp_path_factory.mktemp("early"),
        protocols=("irc",),
        overrides={"irc": {"flood_exempt": ["127.0.0.1"], "registration_before_connect": True}},
    )
    proc.start()
    yield proc
    proc.kill()


def _early_client(server: ServerProcess) -> Irc:
    client = Irc(server.ports["irc"])
    client.send("CAP LS 302")
    assert "draft/account-registration=before-connect" in client.cap_ls()
    client.send("CAP REQ :draft/account-registration")
    client.expect("ACK")
    return client


def test_register_before_connecting_logs_the_new_account_in(early_server: ServerProcess) -> None:
    client = _early_client(early_server)
    client.send("NICK earlybird")
    got = client.ask("REGISTER * * hunter2hunter2")
    assert [line.split(" ")[1:4] for line in got if "REGISTER" in line] == [
        ["REGISTER", "SUCCESS", "earlybird"]
    ]
    client.send("USER e 0 * :Early")
    client.send("CAP END")
    client.expect(" 001 earlybird ")
    client.expect(lambda line: " 376 " in line or " 422 " in line)
    whois = client.ask("WHOIS earlybird")
    assert any(line.split(" ")[1] == "330" for line in whois), whois


def test_register_before_connecting_cannot_take_a_nick_in_use(
    early_server: ServerProcess,
) -> None:
    holder = connect(early_server, "holder")
    client = _early_client(early_server)
    got = client.ask("NICK holder")
    assert got and " 433 " in got[0], client.seen
    got = client.ask("REGISTER * * hunter2hunter2")
    fails = [line for line in got if command_of(line) == "FAIL"]
    assert [line.split(" ")[2:5] for line in fails] == [["REGISTER", "ACCOUNT_EXISTS", "holder"]]
    # The holder is not logged in to an account made from under it either.
    assert "330" not in [line.split(" ")[1] for line in holder.ask("WHOIS holder")]
    holder.close()


# -- registration that needs an email address --------------------------------------------------


@pytest.fixture(scope="module")
def email_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(
        tmp_path_factory.mktemp("email"),
        protocols=("irc", "line"),
        overrides={
            "irc": {"flood_exempt": ["127.0.0.1"]},
            "chat": {"registration_email_required": True},
        },
    )
    proc.start()
    yield proc
    proc.kill()


def test_register_needs_an_email_when_the_server_requires_one(
    email_server: ServerProcess,
) -> None:
    client = Irc(email_server.ports["irc"]).register("mailer", "draft/account-registration")
    assert any("draft/account-registration=email-required" in line for line in client.seen)
    got = client.ask("REGISTER * * hunter2hunter2")
    assert [line.split(" ")[2:5] for line in got if command_of(line) == "FAIL"] == [
        ["REGISTER", "INVALID_EMAIL", "mailer"]
    ]
    got = client.ask("PRIVMSG NickServ :REGISTER hunter2hunter2")
    assert "email address is needed" in trailing(got[-1])
    got = client.ask("REGISTER * mailer@example.org hunter2hunter2")
    assert [line.split(" ")[1:4] for line in got if command_of(line) == "REGISTER"] == [
        ["REGISTER", "SUCCESS", "mailer"]
    ]


def test_line_chat_register_needs_an_email_too(email_server: ServerProcess) -> None:
    line = LineClient(email_server.ports["line"])
    line.expect("Choose a nick")
    line.send("linemailer")
    line.expect("You are linemailer")
    line.send("/register hunter2hunter2")
    line.expect("email address is needed")
    line.send("/register hunter2hunter2 linemailer@example.org")
    line.expect("linemailer is now registered")


# -- HELP and LINKS ----------------------------------------------------------------------------


def test_every_command_has_help() -> None:
    import protocols.irc.handlers  # noqa: F401  (fills the table)
    from protocols.irc.commands import COMMANDS
    from protocols.irc.handlers.help import HELP_TEXT

    assert sorted(set(COMMANDS) - set(HELP_TEXT)) == []


@pytest.mark.parametrize("command", ["HELP", "HELPOP"])
def test_help_lists_commands_and_explains_one(server: ServerProcess, command: str) -> None:
    client = connect(server, f"helper{command.lower()}")
    index = client.ask(command)
    numerics = [line.split(" ")[1] for line in index]
    assert numerics[0] == "704" and numerics[-1] == "706"
    assert set(numerics[1:-1]) == {"705"}
    assert "PRIVMSG" in " ".join(index)
    got = client.ask(f"{command} privmsg")
    assert got[0].split(" ")[1:4] == ["704", f"helper{command.lower()}", "PRIVMSG"]
    assert "PRIVMSG <target>" in trailing(got[0])
    assert [line.split(" ")[1] for line in client.ask(f"{command} NOSUCHTHING")] == ["524"]


def test_links_shows_this_server(server: ServerProcess) -> None:
    client = connect(server, "linker")
    got = client.ask("LINKS")
    assert [line.split(" ")[1:5] for line in got] == [
        ["364", "linker", "test.chatserver", "test.chatserver"],
        ["365", "linker", "*", ":End"],
    ]
    assert trailing(got[0]).startswith("0 ")


# -- extended-monitor --------------------------------------------------------------------------


def test_extended_monitor_follows_away_and_realname_of_watched_users(
    server: ServerProcess,
) -> None:
    watcher = connect(server, "extwatcher", "extended-monitor away-notify setname")
    watched = connect(server, "extwatched")
    watcher.ask("MONITOR + extwatched")
    watched.ask("AWAY :lunch")
    got = watcher.sync()
    assert [command_of(line) for line in got] == ["AWAY"]
    assert got[0].startswith(":extwatched!") and trailing(got[0]) == "lunch"
    watched.ask("SETNAME :New Name")
    got = watcher.sync()
    assert [command_of(line) for line in got] == ["SETNAME"]
    # Sharing a room, the watcher hears it once, from the room.
    watcher.ask("JOIN #extmon")
    watched.ask("JOIN #extmon")
    watcher.sync()
    watched.ask("AWAY")
    assert [command_of(line) for line in watcher.sync()] == ["AWAY"]


def test_extended_monitor_follows_line_chat_users_too(server: ServerProcess) -> None:
    watcher = connect(server, "extlinewatcher", "extended-monitor away-notify")
    watcher.ask("MONITOR + extliner")
    line = LineClient(server.ports["line"])
    line.expect("Choose a nick")
    line.send("extliner")
    line.expect("You are extliner")
    assert [command_of(x) for x in watcher.sync()] == ["730"]
    line.send("/away making tea")
    line.expect("away")
    got = watcher.sync()
    assert [command_of(x) for x in got] == ["AWAY"] and trailing(got[0]) == "making tea"


def test_monitor_without_extended_monitor_hears_only_presence(server: ServerProcess) -> None:
    watcher = connect(server, "plainwatcher", "away-notify")
    watched = connect(server, "plainwatched")
    watcher.ask("MONITOR + plainwatched")
    watched.ask("AWAY :gone")
    assert watcher.sync() == []


# -- +C: no CTCP -------------------------------------------------------------------------------


def test_no_ctcp_mode_refuses_ctcp_but_not_actions(server: ServerProcess) -> None:
    chanop = connect(server, "ctcpop")
    user = connect(server, "ctcpuser")
    chanop.ask("JOIN #noctcp")
    user.ask("JOIN #noctcp")
    chanop.sync()
    got = chanop.ask("MODE #noctcp +C")
    assert [command_of(line) for line in got] == ["MODE"]
    assert [command_of(line) for line in user.sync()] == ["MODE"]
    assert user.ask("PRIVMSG #noctcp :\x01ACTION waves\x01") == []
    got = user.ask("PRIVMSG #noctcp :\x01VERSION\x01")
    assert [line.split(" ")[1:4] for line in got] == [["404", "ctcpuser", "#noctcp"]]
    relayed = [trailing(line) for line in chanop.sync() if command_of(line) == "PRIVMSG"]
    assert relayed == ["\x01ACTION waves\x01"]
    assert "+C" in " ".join(chanop.ask("MODE #noctcp"))
