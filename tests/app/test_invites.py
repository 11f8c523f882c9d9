"""Registration by invitation end to end: the real server with ``registration = "invite"``, the
operator's ``chatserver account invite`` while it runs, and registrations over line chat, IRC
and XMPP against the one invitation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.hostile.clients import XmppClient, local
from tests.support.server import LineClient, ServerProcess

pytestmark = pytest.mark.timeout(90)

PASSWORD = "invited-pw"
NOT_INVITED = "registration on this server is by invitation; ask an operator"


def account_cli(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "chatserver",
            "account",
            *args,
            "--config",
            str(server.config_path),
            "--data-dir",
            str(server.data_dir),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def line_user(server: ServerProcess, nick: str) -> LineClient:
    client = LineClient(server.ports["line"])
    client.expect("*** Choose a nick:")
    client.send(nick)
    client.expect(f"*** You are {nick}.")
    return client


def line_answer(client: LineClient, command: str) -> str:
    client.send(command)
    return client.expect(
        lambda line: line.startswith(("*** ", "!!! ")) and "now logged" not in line
    )


def irc_user(server: ServerProcess, nick: str) -> LineClient:
    client = LineClient(server.ports["irc"])
    client.send("CAP REQ :draft/account-registration")
    client.send(f"NICK {nick}")
    client.send(f"USER {nick} 0 * :{nick}")
    client.send("CAP END")
    client.expect(f" 001 {nick} ")
    return client


def irc_register(client: LineClient) -> str:
    client.send(f"REGISTER * * {PASSWORD}")
    return client.expect(" REGISTER ")


def test_an_invitation_made_while_the_server_runs_admits_one_registration(
    tmp_path: Path,
) -> None:
    server = ServerProcess(
        tmp_path,
        protocols=("line", "irc", "xmpp"),
        overrides={"chat": {"registration": "invite"}},
    ).start()
    try:
        bob = line_user(server, "bob")
        assert line_answer(bob, f"/register {PASSWORD}") == f"!!! error: {NOT_INVITED}"

        invited = account_cli(server, "invite", "bob")
        assert invited.returncode == 0, invited.stderr
        assert invited.stdout.startswith("invited bob to register once, until ")
        listed = account_cli(server, "invites")
        assert [line.split("\t")[0] for line in listed.stdout.splitlines()] == ["bob"]

        # The invitation counts at once, from the database the command wrote.
        assert line_answer(bob, f"/register {PASSWORD}") == "*** bob is now registered"
        bob.send("/quit")
        bob.read_until_closed()

        # Used up: neither the same name over another protocol nor any other name gets in.
        # (The nick itself is the account's now: an IRC client cannot even take it.)
        irc_bob = LineClient(server.ports["irc"])
        irc_bob.send("NICK Bob")
        irc_bob.send("USER Bob 0 * :Bob")
        assert " 433 * Bob :Nickname is reserved by a different account" in irc_bob.expect(" 433 ")
        irc_eve = irc_user(server, "eve")
        assert irc_register(irc_eve).endswith(
            f" FAIL REGISTER TEMPORARILY_UNAVAILABLE eve :{NOT_INVITED}"
        )
        xmpp = XmppClient(server.ports["xmpp"])
        answer = xmpp.register("mallory", PASSWORD)
        assert answer.get("type") == "error"
        error = answer.find("{jabber:client}error")
        assert error is not None
        assert error.find("{urn:ietf:params:xml:ns:xmpp-stanzas}not-allowed") is not None
        assert error.findtext("{urn:ietf:params:xml:ns:xmpp-stanzas}text") == NOT_INVITED
        xmpp.close()
        for client in (irc_bob, irc_eve):
            client.close()

        assert account_cli(server, "invites").stdout == ""
        server.restart()
        # After a restart: the account is there (logging in over XMPP), the invitation not.
        xmpp = XmppClient(server.ports["xmpp"])
        assert local(xmpp.auth_plain("bob", PASSWORD)) == "success"
        xmpp.close()
        stranger = XmppClient(server.ports["xmpp"])
        assert local(stranger.auth_plain("eve", PASSWORD)) == "failure"
        stranger.close()
        assert account_cli(server, "invites").stdout == ""
        accounts = account_cli(server, "list")
        assert [line.split("\t")[0] for line in accounts.stdout.splitlines()] == ["bob"]
        again = line_user(server, "carol")
        assert line_answer(again, f"/register {PASSWORD}") == f"!!! error: {NOT_INVITED}"
        again.close()
    finally:
        server.kill()
