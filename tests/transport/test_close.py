"""Every close the server decides completes, TLS included: the client sees the end of the
stream (a TLS close_notify, then the TCP connection closing) at once, and a peer that never
answers the close, or never reads, still has its connection closed within a bound."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import pytest

from protocols.transport.close import CLOSE_TIMEOUT
from tests.support.server import ServerProcess
from tests.transport.conftest import REGISTRATION_TIMEOUT
from tests.transport.tlsclient import (
    HOST,
    STREAM_HEADER,
    SilentTlsPeer,
    context,
    read_until,
    seconds_to_end,
    tls_connect,
)

# A client that answers the close sees the end this quickly (it took forever before).
PROMPT = 1.5


def irc_register(sock: socket.socket, nick: str) -> None:
    sock.sendall(f"NICK {nick}\r\nUSER {nick} 0 * :{nick}\r\n".encode())
    read_until(sock, b" 001 ")


def test_irc_quit_over_tls_ends_the_stream(server: ServerProcess) -> None:
    with tls_connect(server.ports["irc_tls"]) as sock:
        irc_register(sock, "quitter")
        sock.sendall(b"QUIT :done\r\n")
        read_until(sock, b"ERROR :Closing Link")
        assert seconds_to_end(sock, PROMPT) < PROMPT


def test_irc_flood_disconnect_over_tls_ends_the_stream(server: ServerProcess) -> None:
    with tls_connect(server.ports["irc_tls"]) as sock:
        irc_register(sock, "flooder")
        sock.sendall(b"PRIVMSG flooder :x\r\n" * 400)
        read_until(sock, b"Excess Flood")
        seconds_to_end(sock, PROMPT)


def test_irc_registration_timeout_over_tls_ends_the_stream(server: ServerProcess) -> None:
    with tls_connect(server.ports["irc_tls"]) as sock:
        sock.sendall(b"NICK late\r\n")
        read_until(sock, b"Registration timed out", timeout=REGISTRATION_TIMEOUT + 3)
        seconds_to_end(sock, PROMPT)


def xmpp_open(sock: socket.socket) -> None:
    sock.sendall(STREAM_HEADER)
    read_until(sock, b"</stream:features>")


def starttls(port: int) -> socket.socket:
    raw = socket.create_connection((HOST, port), timeout=5)
    xmpp_open(raw)
    raw.sendall(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
    read_until(raw, b"<proceed")
    sock = context().wrap_socket(raw)
    xmpp_open(sock)
    return sock


def direct_tls(port: int) -> socket.socket:
    sock = tls_connect(port)
    xmpp_open(sock)
    return sock


@pytest.mark.parametrize("how", ["direct_tls", "starttls"])
def test_xmpp_stream_close_over_tls_ends_the_stream(server: ServerProcess, how: str) -> None:
    sock = (
        direct_tls(server.ports["xmpp_tls"])
        if how == "direct_tls"
        else starttls(server.ports["xmpp"])
    )
    with sock:
        sock.sendall(b"</stream:stream>")
        read_until(sock, b"</stream:stream>")
        assert seconds_to_end(sock, PROMPT) < PROMPT


@pytest.mark.parametrize("how", ["direct_tls", "starttls"])
def test_xmpp_stream_error_over_tls_ends_the_stream(server: ServerProcess, how: str) -> None:
    sock = (
        direct_tls(server.ports["xmpp_tls"])
        if how == "direct_tls"
        else starttls(server.ports["xmpp"])
    )
    with sock:
        sock.sendall(b"<no-such-element/>")
        read_until(sock, b"unsupported-stanza-type")
        seconds_to_end(sock, PROMPT)


def test_line_quit_over_tls_ends_the_stream(server: ServerProcess) -> None:
    with tls_connect(server.ports["line_tls"]) as sock:
        read_until(sock, b"Choose a nick")
        sock.sendall(b"liner\r\n/quit\r\n")
        seconds_to_end(sock, PROMPT)


@pytest.mark.parametrize("port", ["irc_tls", "xmpp_tls"])
def test_a_peer_that_never_answers_the_close_is_closed_in_time(
    server: ServerProcess, port: str
) -> None:
    peer = SilentTlsPeer(server.ports[port])
    try:
        if port == "irc_tls":
            peer.send(b"NICK silent\r\nUSER silent 0 * :silent\r\n")
            peer.read_until(b" 001 ")
            peer.send(b"QUIT\r\n")
        else:
            peer.send(STREAM_HEADER)
            peer.read_until(b"</stream:features>")
            peer.send(b"</stream:stream>")
        # Raw bytes from here on: the close_notify comes, and is never answered.
        took = seconds_to_end(peer.sock, CLOSE_TIMEOUT + 3)
        assert took > 0.5, "closed before the peer had a chance to answer the close"
    finally:
        peer.close()


def test_a_peer_that_never_reads_is_closed_in_time(
    make_server: Callable[..., ServerProcess],
) -> None:
    # Flood control off, and a SendQ larger than what is asked for: only the close can end it.
    srv = make_server(
        protocols=("irc",), overrides={"irc": {"flood_burst": 0, "sendq_bytes": 64 << 20}}
    )
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.settimeout(5)
    raw.connect((HOST, srv.ports["irc_tls"]))
    with context().wrap_socket(raw) as sock:
        irc_register(sock, "sleeper")
        # About 2 MB of PONGs that are never read, then QUIT.
        sock.sendall((b"PING :" + b"z" * 64 + b"\r\n") * 20_000 + b"QUIT\r\n")
        deadline = time.monotonic() + CLOSE_TIMEOUT + 5
        while "closed (Quit)" not in srv.log():
            assert time.monotonic() < deadline, "the server still holds the connection"
            time.sleep(0.1)
        # Nothing of it is left on the server: the rest of the stream ends at once.
        seconds_to_end(sock, 5)


def test_irc_quit_over_plain_tcp_sends_the_end_at_once_and_drops_later_input(
    server: ServerProcess,
) -> None:
    with socket.create_connection((HOST, server.ports["irc"]), timeout=5) as sock:
        irc_register(sock, "plainquit")
        sock.sendall(b"QUIT :done\r\n")
        read_until(sock, b"ERROR :Closing Link")
        # The end of the stream (FIN) follows the ERROR line at once, while this side is
        # still open and still sending: what it sends is read and dropped, not answered with
        # a reset that would throw the ERROR line away.
        sock.sendall(b"PING :after\r\n" * 50)
        assert seconds_to_end(sock, PROMPT) < PROMPT
        # The server closes its side for good after its linger, or when this side closes.
    with socket.create_connection((HOST, server.ports["irc"]), timeout=5) as other:
        irc_register(other, "stillhere")


def test_a_plain_tcp_peer_that_never_reads_is_closed_in_time(
    make_server: Callable[..., ServerProcess],
) -> None:
    # Output still queued when the server closes: the end waits for it, within the timeout.
    srv = make_server(
        protocols=("irc",), overrides={"irc": {"flood_burst": 0, "sendq_bytes": 64 << 20}}
    )
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(5)
        sock.connect((HOST, srv.ports["irc"]))
        irc_register(sock, "plainsleeper")
        sock.sendall((b"PING :" + b"z" * 64 + b"\r\n") * 20_000 + b"QUIT\r\n")
        deadline = time.monotonic() + CLOSE_TIMEOUT + 5
        while "closed (Quit)" not in srv.log():
            assert time.monotonic() < deadline, "the server still holds the connection"
            time.sleep(0.1)
        seconds_to_end(sock, 5)
