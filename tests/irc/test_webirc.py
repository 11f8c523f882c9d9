"""WEBIRC through the real server: a web gateway names its users' addresses."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from chatserver.passwords import hash_password
from tests.support.server import LineClient, ServerProcess

PASSWORD = "gateway-secret"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(
        Path(tmp_path_factory.mktemp("webirc")),
        protocols=("irc",),
        overrides={"chat": {"max_connections_per_address": 2, "address_limit_exempt": []}},
    )
    with open(proc.config_path, "a") as config:
        config.write(
            f'\n[[webirc]]\nname = "lounge"\npassword = "{hash_password(PASSWORD)}"\n'
            'hosts = ["127.0.0.1/32"]\n'
            '\n[[bans]]\nmask = "*!*@198.51.100.66"\nreason = "spam from there"\n'
        )
    proc.start()
    # The start-up probes of each port are connections from 127.0.0.1 too: once a PING is
    # answered, the server has seen them close, and the per-address counts start from 0.
    # Until it has read their ends, a third connection is over the limit and refused.
    deadline = time.monotonic() + 10
    while True:
        probe = LineClient(proc.ports["irc"])
        try:
            probe.send("PING :settled")
            probe.expect("settled")
            break
        except ConnectionError:
            assert not probe.seen or "too many connections" in " ".join(probe.seen)
            assert time.monotonic() < deadline
            time.sleep(0.05)
        finally:
            probe.close()
    time.sleep(0.3)
    yield proc
    proc.kill()


def _client(server: ServerProcess, source: str = "127.0.0.1") -> LineClient:
    # LineClient's own connection, from the chosen source address (and only that one: the
    # per-address limit counts every connection).
    client = LineClient.__new__(LineClient)
    client.sock = socket.create_connection(("127.0.0.1", server.ports["irc"]), 5, (source, 0))
    client.timeout = 5.0
    client.buffer = b""
    client.seen = []
    return client


def _webirc(
    server: ServerProcess, ip: str, password: str = PASSWORD, options: str = "secure"
) -> LineClient:
    client = _client(server)
    client.send(f"WEBIRC {password} lounge user.example {ip} :{options}")
    return client


def _register(client: LineClient, nick: str) -> str:
    client.send(f"NICK {nick}")
    client.send(f"USER {nick} 0 * :{nick}")
    return client.expect(lambda line: f" 001 {nick} " in line or line.startswith("ERROR"))


def test_each_user_of_a_gateway_counts_from_its_own_address(server: ServerProcess) -> None:
    # Three users of one gateway, past the limit of 2 connections per address: each counts
    # from the address the gateway named, none from the gateway's.
    clients = []
    try:
        for i in range(1, 4):
            # Registration waits for WEBIRC's check: once welcome, the address has moved.
            clients.append(_webirc(server, f"203.0.113.{i}"))
            assert " 001 " in _register(clients[-1], f"lounger{i}")
        # The per-address limit holds for the named address.
        same = []
        replies = []
        for i in range(3):
            same.append(_webirc(server, "203.0.113.50"))
            replies.append(_register(same[-1], f"same{i}"))
        assert [" 001 " in r for r in replies] == [True, True, False]
        assert "too many connections" in replies[2]
        for c in same:
            c.close()
    finally:
        for client in clients:
            client.close()


def test_a_banned_address_behind_the_gateway_is_refused(server: ServerProcess) -> None:
    client = _webirc(server, "198.51.100.66")
    try:
        error = client.expect("ERROR")
        assert "spam from there" in error
        client.read_until_closed()
    finally:
        client.close()


def test_a_wrong_password_closes_the_connection(server: ServerProcess) -> None:
    client = _webirc(server, "203.0.113.9", password="guess")
    try:
        assert "wrong gateway name or password" in client.expect("ERROR")
        client.read_until_closed()
    finally:
        client.close()


def test_webirc_from_another_address_is_refused(server: ServerProcess) -> None:
    client = _client(server, source="127.0.0.3")
    try:
        client.send(f"WEBIRC {PASSWORD} lounge user.example 203.0.113.7")
        assert "not allowed from your address" in client.expect("ERROR")
        client.read_until_closed()
    finally:
        client.close()


def test_webirc_after_nick_is_refused(server: ServerProcess) -> None:
    client = _client(server)
    try:
        client.send("NICK early")
        client.send(f"WEBIRC {PASSWORD} lounge user.example 203.0.113.8")
        assert " 462 " in client.expect(" 462 ")
    finally:
        client.close()


def _whois_self(client: LineClient, nick: str) -> list[str]:
    client.send(f"WHOIS {nick}")
    lines = []
    while True:
        line = client.expect(lambda line: f" {nick} " in line)
        lines.append(line)
        if " 318 " in line:
            return lines


@pytest.mark.parametrize(
    ("options", "secure"),
    [
        ("secure", True),
        ("secure local-port=6697 remote-port=51234", True),
        ("remote-port=51234", False),
        ("", False),
    ],
)
def test_the_gateways_secure_flag_decides_whether_its_user_is_secure(
    server: ServerProcess, options: str, secure: bool
) -> None:
    # The gateway's link is loopback (secure), so the flag alone says how the user reached
    # the gateway: with it the user is secure, without it not, though the link is loopback.
    client = _webirc(server, "203.0.113.77", options=options)
    try:
        assert " 001 " in _register(client, "hopper")
        whois = _whois_self(client, "hopper")
        assert any(" 671 hopper hopper " in line for line in whois) is secure, whois
        # Passwords: refused over a plain hop, looked at over a secure one.
        client.send("PRIVMSG NickServ :IDENTIFY hopper not-the-password")
        answer = client.expect(lambda line: "NOTICE hopper" in line)
        assert ("passwords are not accepted over plaintext" in answer) is not secure, answer
    finally:
        client.close()
