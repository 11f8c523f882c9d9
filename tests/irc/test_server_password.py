"""The server password (``[irc] password``, PASS) through the real server."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from chatserver.passwords import hash_password
from tests.support.server import LineClient, ServerProcess

PASSWORD = "s3cret pass"


@pytest.fixture
def server(make_server: Callable[..., ServerProcess]) -> ServerProcess:
    stored = hash_password(PASSWORD, n=16, r=1, p=1)
    return make_server(protocols=("irc", "line"), overrides={"irc": {"password": stored}})


def _register(client: LineClient, nick: str, password: str | None) -> None:
    if password is not None:
        client.send(f"PASS :{password}")
    client.send(f"NICK {nick}")
    client.send(f"USER u 0 * :{nick}")


def test_right_password_registers(server: ServerProcess) -> None:
    client = LineClient(server.ports["irc"])
    _register(client, "alice", PASSWORD)
    client.expect(" 001 alice ")
    # The commands after PASS waited for its check: nothing came before the welcome.
    client.send("PING :after")
    client.expect("PONG")


@pytest.mark.parametrize("password", [None, "wrong"])
def test_missing_or_wrong_password_gets_464_then_error(
    server: ServerProcess, password: str | None
) -> None:
    client = LineClient(server.ports["irc"])
    _register(client, "bob", password)
    lines = client.read_until_closed()
    codes = [line.split()[1] for line in lines if line.startswith(":")]
    assert "464" in codes and "001" not in codes, lines
    assert lines[-1].startswith("ERROR "), lines
    # Nobody took the nick.
    other = LineClient(server.ports["irc"])
    _register(other, "bob", PASSWORD)
    other.expect(" 001 bob ")


def test_pass_after_nick_and_user_is_too_late(server: ServerProcess) -> None:
    client = LineClient(server.ports["irc"])
    _register(client, "carol", None)
    client.send(f"PASS :{PASSWORD}")
    lines = client.read_until_closed()
    assert not any(" 001 " in line for line in lines), lines


def test_other_protocols_need_no_server_password(server: ServerProcess) -> None:
    line = LineClient(server.ports["line"])
    line.expect("*** Choose a nick:")
    line.send("lina")
    line.expect("*** You are lina.")


def test_a_bad_hash_in_the_config_is_refused(make_server: Callable[..., Any]) -> None:
    with pytest.raises(RuntimeError, match="hash-password"):
        make_server(protocols=("irc",), overrides={"irc": {"password": "plain text"}})
