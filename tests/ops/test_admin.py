"""``chatserver admin …`` and the account commands against the running server, through its
control socket, with the effects checked as real IRC, line and XMPP clients see them."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.ops.helpers import OpsServer, chat, chat_as, cli, join, sync
from tests.support.server import LineClient
from tests.support.xmpp_client import DOMAIN, SlixmppClient

pytestmark = pytest.mark.timeout(90)

PASSWORD = "account-secret"
SERVER_NAME = "test.chatserver"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[OpsServer]:
    server = OpsServer(
        tmp_path,
        protocols=("line", "irc", "xmpp"),
        overrides={"chat": {"history_flush_interval": 0}},
    ).start()
    server.wait_log("ready server=")
    yield server
    server.kill()


def admin(server: OpsServer, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return cli(
        *args,
        "--config",
        str(server.config_path),
        "--data-dir",
        str(server.data_dir),
        stdin=stdin,
    )


def admin_json(server: OpsServer, *args: str) -> dict[str, Any]:
    result = admin(server, "admin", *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def irc(server: OpsServer, nick: str, caps: tuple[str, ...] = ()) -> LineClient:
    client = LineClient(server.ports["irc"])
    if caps:
        client.send("CAP LS 302")
        client.send("CAP REQ :" + " ".join(caps))
    client.send(f"NICK {nick}")
    client.send(f"USER {nick} 0 * :{nick}")
    if caps:
        client.send("CAP END")
    client.expect(" 001 ")
    return client


def irc_sync(client: LineClient) -> None:
    client.send("PING :sync")
    client.expect("PONG")


def irc_login(server: OpsServer, nick: str, password: str = PASSWORD) -> LineClient:
    """An IRC client logged in to the account ``nick`` by SASL PLAIN before registering: a
    registered nick is only for its account's sessions."""
    client = LineClient(server.ports["irc"])
    client.send("CAP REQ :sasl")
    client.send(f"NICK {nick}")
    client.send(f"USER {nick} 0 * :{nick}")
    client.send("AUTHENTICATE PLAIN")
    client.expect("AUTHENTICATE +")
    blob = base64.b64encode(f"{nick}\0{nick}\0{password}".encode()).decode()
    client.send(f"AUTHENTICATE {blob}")
    client.expect(" 903 ")
    client.send("CAP END")
    client.expect(f" 001 {nick} ")
    return client


def xmpp(
    server: OpsServer, name: str, resource: str = "test", plugins: tuple[str, ...] = ()
) -> SlixmppClient:
    client = SlixmppClient(
        server.ports["xmpp"],
        f"{name}@{DOMAIN}/{resource}",
        PASSWORD,
        plugins=plugins,
        events=("message", "disconnected"),
        sasl_mech="SCRAM-SHA-256",
    )
    assert client.logged_in, f"{name} could not log in over XMPP"
    client.do(client.xmpp.send_presence)
    return client


def create(server: OpsServer, name: str, password: str = PASSWORD) -> None:
    result = admin(server, "account", "create", name, "--password-stdin", stdin=password + "\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"created account {name}\n"


def closed(client: LineClient) -> list[str]:
    """Everything the server still sent before it closed the connection."""
    return client.read_until_closed(timeout=5)


# -- looking ------------------------------------------------------------------------------


def test_who_lists_a_line_an_irc_and_an_xmpp_user_with_addresses(server: OpsServer) -> None:
    create(server, "carol")
    line_user = chat(server.ports["line"], "alice")
    join(line_user, "dev")
    irc_user = irc(server, "bob")
    irc_user.send("JOIN #dev")
    irc_user.expect("JOIN")
    carol = xmpp(server, "carol")
    try:
        sessions = admin_json(server, "who")["sessions"]
        by_nick = {s["nick"]: s for s in sessions}
        assert {s["protocol"] for s in sessions} == {"line", "irc", "xmpp"}
        assert by_nick["alice"]["protocol"] == "line"
        assert by_nick["alice"]["rooms"] == ["dev"] == by_nick["bob"]["rooms"]
        assert by_nick["bob"]["protocol"] == "irc" and by_nick["bob"]["account"] is None
        assert by_nick["carol"]["protocol"] == "xmpp" and by_nick["carol"]["account"] == "carol"
        for session in sessions:
            assert session["address"] == "127.0.0.1"
            assert session["cloak"].endswith(".cloak") and "127.0.0.1" not in session["cloak"]
            assert session["since"].endswith("Z")
        only_irc = admin_json(server, "who", "--protocol", "irc")["sessions"]
        assert [s["nick"] for s in only_irc] == ["bob"]

        text = admin(server, "admin", "who")
        assert text.returncode == 0, text.stderr
        header, *rows = text.stdout.splitlines()
        assert header.split() == [
            "PROTOCOL",
            "NICK",
            "ACCOUNT",
            "ADDRESS",
            "CLOAK",
            "SINCE",
            "ROOMS",
        ]
        assert any(row.split()[:4] == ["xmpp", "carol", "carol", "127.0.0.1"] for row in rows)
        # Actions are logged at info (queries at debug), passwords never.
        logged = server.wait_log(r"control: account-create name='carol' \(from pid \d+ uid \d+\)")
        assert PASSWORD not in server.log() and "control: who" not in server.log()
        assert logged
    finally:
        carol.close()


def test_rooms_and_a_kick_seen_on_irc_and_line(server: OpsServer) -> None:
    alice = chat(server.ports["line"], "alice")
    join(alice, "dev")
    alice.send("/topic plans for today")
    alice.expect("changed the topic")
    bob = irc(server, "bob")
    bob.send("JOIN #dev")
    bob.expect("366")
    rooms = admin_json(server, "rooms")["rooms"]
    assert rooms == [
        {
            "name": "dev",
            "members": 2,
            "modes": ["no_external", "topic_lock"],
            "topic": "plans for today",
            "registered": False,
        }
    ]

    result = admin(server, "admin", "kick", "#dev", "bob", "off", "topic")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "kicked bob\n"
    assert bob.expect(" KICK ") == f":{SERVER_NAME} KICK #dev bob :off topic"
    assert alice.expect("kicked") == f"-!- {SERVER_NAME} kicked bob from #dev (off topic)"
    assert admin_json(server, "rooms")["rooms"][0]["members"] == 1
    server.wait_log(r"control: kick room='dev' nick='bob' reason='off topic'")

    missing = admin(server, "admin", "kick", "dev", "nobody")
    assert missing.returncode == 1 and missing.stderr == "chatserver: no such nick: nobody\n"


# -- acting on users ----------------------------------------------------------------------


def test_kill_disconnects_an_irc_user_and_others_see_why(server: OpsServer) -> None:
    victim = irc(server, "bob")
    witness = irc(server, "alice")
    for client in (victim, witness):
        client.send("JOIN #dev")
        client.expect("366")
    line_witness = chat(server.ports["line"], "carol")
    join(line_witness, "dev")
    irc_sync(witness)

    result = admin(server, "admin", "kill", "bob", "flooding")
    assert result.returncode == 0, result.stderr
    reason = f"Killed by {SERVER_NAME}: flooding"
    lines = closed(victim)
    assert "ERROR :Closing Link: bob[" in lines[-1] and lines[-1].endswith(f"({reason})")
    quit_line = witness.expect(" QUIT ")
    assert quit_line.startswith(":bob!") and quit_line.endswith(f"QUIT :{reason}")
    assert line_witness.expect("bob") == f"-!- bob quit ({reason})"
    server.wait_log(r"control: kill nick='bob' reason='flooding'")


def test_a_notice_reaches_every_protocol(server: OpsServer) -> None:
    create(server, "carol")
    alice = chat(server.ports["line"], "alice")
    bob = irc(server, "bob")
    carol = xmpp(server, "carol")
    try:
        result = admin(server, "admin", "notice", "restarting", "in", "5", "minutes")
        assert result.returncode == 0, result.stderr
        assert result.stdout == "sent to 3 connections\n"
        assert "restarting in 5 minutes" in alice.expect("restarting")
        assert bob.expect("restarting").endswith("NOTICE bob :restarting in 5 minutes")
        message = carol.expect_event("message", lambda m: "restarting" in m["body"])
        assert message["body"] == "restarting in 5 minutes"
        assert str(message["from"]) == DOMAIN
    finally:
        carol.close()


def test_kline_disconnects_refuses_and_unkline_lifts(server: OpsServer) -> None:
    bob = irc(server, "bob")
    result = admin(server, "admin", "kline", "bob", "go", "away")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "banned bob!*@*; disconnected: bob\n"
    assert "You are banned from this server: go away" in closed(bob)[-1]

    klines = admin_json(server, "klines")["klines"]
    assert [(b["mask"], b["set_by"], b["reason"]) for b in klines] == [
        ("bob!*@*", "console", "go away")
    ]
    # A new connection taking the nick is refused, on any protocol.
    again = LineClient(server.ports["irc"])
    again.send("NICK bob")
    again.send("USER bob 0 * :bob")
    assert any("You are banned from this server" in line for line in closed(again))
    line_bob = LineClient(server.ports["line"])
    line_bob.expect("Choose a nick")
    line_bob.send("bob")
    assert any("banned" in line for line in closed(line_bob))

    # An address ban refuses the connection itself.
    assert admin(server, "admin", "kline", "127.0.0.1").returncode == 0
    refused = LineClient(server.ports["irc"])
    assert any("banned" in line for line in closed(refused))
    assert admin(server, "admin", "unkline", "127.0.0.1").returncode == 0

    lifted = admin(server, "admin", "unkline", "bob")
    assert lifted.returncode == 0 and lifted.stdout == "lifted the ban on bob!*@*\n"
    irc(server, "bob").close()
    missing = admin(server, "admin", "unkline", "bob")
    assert missing.returncode == 1 and "no server ban on bob!*@*" in missing.stderr
    bad = admin(server, "admin", "kline", "*")
    assert bad.returncode == 1 and "refusing a ban that matches everyone" in bad.stderr


def test_purge_empties_chathistory(server: OpsServer) -> None:
    caps = ("batch", "server-time", "message-tags", "draft/chathistory")
    alice = irc(server, "alice", caps)
    alice.send("JOIN #dev")
    alice.expect("366")
    for i in range(5):
        alice.send(f"PRIVMSG #dev :message {i}")
    irc_sync(alice)

    def history() -> list[str]:
        alice.send("CHATHISTORY LATEST #dev * 50")
        alice.expect(lambda line: "BATCH +" in line and "chathistory" in line)
        found = []
        while "BATCH -" not in (line := alice.read_line()):
            found.append(line)
        return found

    assert len(history()) == 5
    result = admin(server, "admin", "purge", "#dev")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "deleted 5 stored messages\n"
    assert history() == []
    # Someone joining now gets no replay of what was purged.
    bob = chat(server.ports["line"], "bob")
    bob.send("/join dev")
    lines = [bob.read_line() for _ in range(3)]
    assert not any("message" in line for line in lines)
    server.wait_log(r"control: purge room='dev'")


def test_reload_through_the_socket(server: OpsServer) -> None:
    server.edit_config({"line": {"motd": "after reload"}})
    result = admin(server, "admin", "reload")
    assert result.returncode == 0, result.stderr
    assert "[line] motd" in result.stdout
    client = LineClient(server.ports["line"])
    client.expect("after reload")
    server.config_path.write_text(server.config_path.read_text() + "\n[nope]\n")
    # (The data directory alone says where the socket is: this command cannot read the file.)
    broken = cli("admin", "reload", "--data-dir", str(server.data_dir))
    assert broken.returncode == 1
    assert "the configuration has problems; nothing changed" in broken.stderr
    assert "[nope]: unknown section" in broken.stderr


# -- accounts: live effects ---------------------------------------------------------------


def test_deleting_an_online_account_ends_its_sessions_on_every_protocol(server: OpsServer) -> None:
    create(server, "alice")
    irc_alice = irc_login(server, "alice")
    xmpp_alice = xmpp(server, "alice")
    line_alice = chat(server.ports["line"], "alicia")
    line_alice.send(f"/identify alice {PASSWORD}")
    line_alice.expect("logged in as alice")
    watcher = irc(server, "watcher")
    line_watcher = chat(server.ports["line"], "lw")
    try:
        watcher.send("WHOIS alice")
        assert " 330 watcher alice alice " in watcher.expect(" 330 ")
        listed = admin(server, "account", "list")
        assert listed.returncode == 0 and listed.stdout.startswith("alice\t")

        result = admin(server, "account", "delete", "alice")
        assert result.returncode == 0, result.stderr
        assert result.stdout == "deleted account alice\n"

        assert closed(irc_alice)[-1].endswith("(Account deleted)")
        assert any("Account deleted" in line for line in closed(line_alice))
        xmpp_alice.expect_event("disconnected", lambda _: True)
        watcher.send("WHOIS alice")
        assert " 401 watcher alice " in watcher.expect(
            lambda line: " 401 " in line or " 330 " in line
        )
        line_watcher.send("/whois alice")
        assert line_watcher.expect("no such nick") == "!!! error: no such nick: alice"
        assert admin_json(server, "who", "--protocol", "xmpp")["sessions"] == []
        assert admin(server, "account", "list").stdout == ""
        server.wait_log(r"sessions of alice ended \(Account deleted\)")
        missing = admin(server, "account", "delete", "alice")
        assert missing.returncode == 1 and missing.stderr == "chatserver: no such account: alice\n"
    finally:
        xmpp_alice.close()


def test_an_operator_password_change_ends_every_session(server: OpsServer) -> None:
    create(server, "alice")
    irc_alice = irc_login(server, "alice")
    result = admin(server, "account", "passwd", "alice", "--password-stdin", stdin="new-secret\n")
    assert result.returncode == 0, result.stderr
    assert closed(irc_alice)[-1].endswith("(Password changed)")
    again = irc(server, "alice2")
    again.send(f"PRIVMSG NickServ :IDENTIFY alice {PASSWORD}")
    assert "invalid password" in again.expect("IDENTIFY failed")
    again.send("PRIVMSG NickServ :IDENTIFY alice new-secret")
    again.expect("You are now logged in as alice.")


def test_the_owners_password_change_ends_the_other_sessions(server: OpsServer) -> None:
    create(server, "alice")
    irc_alice = irc_login(server, "alice")
    xmpp_alice = xmpp(server, "alice")
    try:
        irc_alice.send(f"PRIVMSG NickServ :SET PASSWORD {PASSWORD} new-secret")
        irc_alice.expect("Your password has been changed.")
        xmpp_alice.expect_event("disconnected", lambda _: True)
        irc_sync(irc_alice)
        irc_alice.send("WHOIS alice")
        assert " 330 alice alice alice " in irc_alice.expect(" 330 ")
    finally:
        xmpp_alice.close()


def test_nickserv_drop_tells_the_owner_then_ends_every_session(server: OpsServer) -> None:
    create(server, "alice")
    irc_alice = irc_login(server, "alice")
    line_alice = chat(server.ports["line"], "alicia")
    line_alice.send(f"/identify alice {PASSWORD}")
    line_alice.expect("logged in as alice")
    irc_alice.send(f"PRIVMSG NickServ :DROP {PASSWORD}")
    lines = closed(irc_alice)
    told = next(i for i, line in enumerate(lines) if "Account alice has been dropped." in line)
    assert lines[-1].startswith("ERROR ") and lines[-1].endswith("(Account deleted)")
    assert told < len(lines) - 1
    assert any("Account deleted" in line for line in closed(line_alice))


def test_xmpp_removal_and_password_change_end_the_other_protocols_sessions(
    server: OpsServer,
) -> None:
    create(server, "alice")
    irc_alice = irc_login(server, "alice")
    phone = xmpp(server, "alice", "phone", plugins=("xep_0077",))
    try:
        phone.wait(phone.xmpp.plugin["xep_0077"].change_password, "new-secret")
        assert closed(irc_alice)[-1].endswith("(Password changed)")
        # The phone holds the nick: a new IRC session joins it by logging in.
        irc_alice = irc(server, "al")
        irc_alice.send("PRIVMSG NickServ :IDENTIFY alice new-secret")
        irc_alice.expect("You are now logged in as alice.")
        line_alice = chat(server.ports["line"], "alicia")
        line_alice.send("/identify alice new-secret")
        line_alice.expect("logged in as alice")

        phone.wait(phone.xmpp.plugin["xep_0077"].cancel_registration)
        phone.expect_event("disconnected", lambda _: True)
        assert closed(irc_alice)[-1].endswith("(Account deleted)")
        assert any("Account deleted" in line for line in closed(line_alice))
        assert admin(server, "account", "list").stdout == ""
    finally:
        phone.close()


def test_account_commands_without_a_running_server_use_the_database(tmp_path: Path) -> None:
    server = OpsServer(tmp_path, protocols=("line",))
    create(server, "alice")
    assert admin(server, "account", "list").stdout.startswith("alice\t")
    result = admin(server, "admin", "who")
    assert result.returncode == 1
    assert "no control socket" in result.stderr and "is the server running?" in result.stderr
    server.start()
    server.wait_log("ready server=")
    alice = chat_as(server.ports["line"], "alice", PASSWORD)
    assert admin(server, "account", "delete", "alice").returncode == 0
    assert any("Account deleted" in line for line in closed(alice))
    server.stop()
    # A socket left by a crashed server does not stop the commands from working offline.
    server.start()
    server.wait_log("ready server=")
    server.kill()
    create(server, "bob")


# -- the socket itself --------------------------------------------------------------------


def test_loose_permissions_and_garbage_get_clear_errors(server: OpsServer) -> None:
    path = server.data_dir / "control.sock"
    assert oct(path.stat().st_mode & 0o777) == oct(0o600)
    os.chmod(path, 0o666)
    result = admin(server, "admin", "who")
    assert result.returncode == 1
    assert "has mode 0666: others could use it; it must be 0600" in result.stderr
    # Nor does an account command fall back to the database behind the server's back.
    refused = admin(server, "account", "list")
    assert refused.returncode == 1 and "mode 0666" in refused.stderr
    os.chmod(path, 0o600)

    bystander = chat(server.ports["line"], "alice")
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(str(path))
    sock.settimeout(5)
    sock.sendall(
        b'garbage\n[1]\n{"cmd": 5}\n{"cmd": "nope"}\n{"cmd": "kill"}\n'
        b'{"cmd": "kill", "nick": 3}\n{"cmd": "who", "extra": 1}\n\xff\xfe\n{"cmd": "rooms"}\n'
    )
    reader = sock.makefile("rb")
    answers = [json.loads(reader.readline()) for _ in range(9)]
    assert [a["ok"] for a in answers] == [False] * 8 + [True]
    assert answers[0]["error"].startswith("not JSON:")
    assert answers[1]["error"] == 'a request is a JSON object, such as {"cmd": "who"}'
    assert answers[2]["error"] == 'a request is a JSON object with "cmd": the command name'
    assert answers[3]["error"].startswith("unknown command 'nope'; known: account-create")
    assert answers[4]["error"] == "kill: nick is needed"
    assert answers[5]["error"] == "kill: nick must be a string"
    assert answers[6]["error"] == "who: unknown parameter extra"
    sock.sendall(b"x" * 70000 + b"\n")
    assert json.loads(reader.readline())["error"] == "request longer than 65536 bytes"
    assert reader.readline() == b""
    sock.close()
    # The server carries on.
    sync(bystander)
    assert admin_json(server, "who")["sessions"][0]["nick"] == "alice"


def test_admin_help_documents_the_socket_and_the_commands() -> None:
    result = cli("admin", "--help")
    assert result.returncode == 0
    for text in ("control.sock", "mode 0600", "JSON lines", "chatserver admin kill bob flooding"):
        assert text in result.stdout
    for command in ("who", "rooms", "kick", "kill", "kline", "unkline", "klines", "notice"):
        assert command in result.stdout
    for command in ("purge", "reload"):
        assert command in result.stdout
    usage = cli("admin", "kick", "dev")
    assert usage.returncode == 2 and "the following arguments are required: NICK" in usage.stderr
