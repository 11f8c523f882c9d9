"""One "secure or loopback" rule on every protocol: an IPv4 client of a dual-stack listener
arrives as ``::ffff:127.0.0.1`` and is loopback on IRC, line chat and XMPP alike (passwords
may be sent there without TLS)."""

from __future__ import annotations

import random
import socket
from pathlib import Path

from tests.support.server import LineClient, ServerProcess
from tests.transport.tlsclient import HOST, STREAM_HEADER, read_until


def wildcard_port() -> int:
    """A port free on every address, outside the range the kernel hands out to clients (a
    client's connection in TIME_WAIT on another loopback address blocks a wildcard bind)."""
    low, _high = (
        int(n) for n in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    )
    for _ in range(200):
        port = random.randrange(max(1024, low - 12_000), low)
        with socket.socket(socket.AF_INET6) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("::", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no port free on every address")


def test_an_ipv4_mapped_loopback_client_is_loopback_everywhere(tmp_path: Path) -> None:
    ports = {"line": wildcard_port(), "irc": wildcard_port(), "xmpp": wildcard_port()}
    server = ServerProcess(
        tmp_path,
        protocols=("line", "irc", "xmpp"),
        overrides={
            "server": {"listen": ["::"]},
            "line": {"port": ports["line"]},
            "irc": {"port": ports["irc"], "tls_port": 0},
            "xmpp": {"port": ports["xmpp"], "tls_port": 0, "domain": "localhost"},
        },
    )
    server.ports = dict(ports)
    server.start()
    try:
        check_loopback(server)
    finally:
        server.kill()


def check_loopback(server: ServerProcess) -> None:
    # IRC offers SASL PLAIN only where passwords may be sent.
    irc = LineClient(server.ports["irc"], host=HOST)
    irc.send("CAP LS 302")
    ls = irc.cap_ls()
    assert "sasl=PLAIN" in ls, ls
    # Line chat takes password commands only there.
    line = LineClient(server.ports["line"], host=HOST)
    line.expect("Choose a nick")
    line.send("mapped")
    line.expect("You are mapped")
    line.send("/register secret-password-1")
    reply = line.read_line()
    assert "plaintext" not in reply, reply
    # XMPP offers authentication without STARTTLS only there.
    with socket.create_connection((HOST, server.ports["xmpp"]), timeout=5) as xmpp:
        xmpp.sendall(STREAM_HEADER)
        features = read_until(xmpp, b"</stream:features>")
    assert b"<mechanisms" in features and b"<required" not in features, features
    # The server saw the client as the mapped address (else this test proves nothing).
    assert "::ffff:127.0.0.1" in server.log()
