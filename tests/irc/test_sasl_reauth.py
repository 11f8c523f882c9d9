"""SASL after registration and re-authentication (SASL 3.2), through the real server."""

from __future__ import annotations

import base64
from collections.abc import Callable

import pytest

from tests.support.server import LineClient, ServerProcess

pytestmark = pytest.mark.timeout(60)

PASSWORD = "correct-horse"


def plain(account: str) -> str:
    return base64.b64encode(f"\0{account}\0{PASSWORD}".encode()).decode()


@pytest.fixture
def server(make_server: Callable[..., ServerProcess]) -> ServerProcess:
    server = make_server(protocols=("irc", "line"))
    for name in ("foo", "jilles"):
        server.create_account(name, PASSWORD)
    return server


def connect(server: ServerProcess, nick: str, account: str | None = None) -> LineClient:
    client = LineClient(server.ports["irc"])
    client.send("CAP LS 302")
    client.send("CAP REQ :sasl account-notify")
    client.expect("ACK")
    if account is not None:
        client.send("AUTHENTICATE PLAIN")
        client.expect("AUTHENTICATE +")
        client.send(f"AUTHENTICATE {plain(account)}")
        client.expect(" 903 ")
    client.send(f"NICK {nick}")
    client.send(f"USER {nick} 0 * :{nick}")
    client.send("CAP END")
    client.expect(" 001 ")
    return client


def authenticate(client: LineClient, account: str) -> list[str]:
    """Log in to ``account`` with SASL PLAIN; the lines up to 903."""
    client.send("AUTHENTICATE PLAIN")
    client.expect("AUTHENTICATE +")
    client.send(f"AUTHENTICATE {plain(account)}")
    seen: list[str] = []
    client.expect(lambda line: seen.append(line) or " 903 " in line)
    logged_in = [line for line in seen if " 900 " in line]
    assert logged_in and logged_in[0].split()[4] == account, seen
    return seen


def test_authenticate_after_registration_then_again(server: ServerProcess) -> None:
    client = connect(server, "user")
    watcher = connect(server, "watcher")
    for who in (client, watcher):
        who.send("JOIN #room")
        who.expect(" 366 ")
    authenticate(client, "foo")
    watcher.expect(":user!user@")  # account-notify: ACCOUNT foo
    authenticate(client, "jilles")
    account = watcher.expect(" ACCOUNT ")
    assert account.endswith(" ACCOUNT jilles"), account
    client.send("WHOIS user")
    assert client.expect(" 330 ").split()[4] == "jilles"


def test_no_switch_while_other_connections_share_the_login(server: ServerProcess) -> None:
    first = connect(server, "foo", account="foo")
    second = connect(server, "foo2", account="foo")  # joins foo's user
    for client in (first, second):
        client.send("AUTHENTICATE PLAIN")
        client.expect(" 907 ")
    first.send("WHOIS foo")
    assert first.expect(" 330 ").split()[4] == "foo"
    # Alone again, it may.
    second.send("QUIT")
    second.read_until_closed()
    authenticate(first, "jilles")


def test_switching_away_from_the_nicks_account_enforces_the_nick(
    make_server: Callable[..., ServerProcess],
) -> None:
    server = make_server(protocols=("irc",), overrides={"chat": {"nick_enforcement": "strict"}})
    for name in ("foo", "jilles"):
        server.create_account(name, PASSWORD)
    client = connect(server, "foo", account="foo")
    seen = authenticate(client, "jilles")
    # The nick is foo's account's: whoever is now jilles may not keep it.
    renamed = [line for line in seen if line.startswith(":foo!") and " NICK " in line]
    assert renamed, seen
    client.send("WHOIS foo")
    client.expect(" 401 ")
