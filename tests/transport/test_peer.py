"""One "secure or loopback" rule on every protocol: an IPv4 client of a dual-stack listener
arrives as ``::ffff:127.0.0.1`` and is loopback on IRC, line chat and XMPP alike (passwords
may be sent there without TLS)."""

from __future__ import annotations

import socket
from collections.abc import Callable

from tests.support.server import LineClient, ServerProcess
from tests.transport.tlsclient import HOST, STREAM_HEADER, read_until


def test_an_ipv4_mapped_loopback_client_is_loopback_everywhere(
    make_server: Callable[..., ServerProcess],
) -> None:
    server = make_server(
        protocols=("line", "irc", "xmpp"),
        overrides={"server": {"listen": ["::"]}, "xmpp": {"domain": "localhost"}},
    )
    # IRC offers SASL PLAIN only where passwords may be sent.
    irc = LineClient(server.ports["irc"], host=HOST)
    irc.send("CAP LS 302")
    ls = irc.expect("CAP * LS")
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
