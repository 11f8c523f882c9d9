"""TLS as clients meet it on the real server: TLS 1.2 offers only forward-secret AEAD suites
(TLS 1.3 as OpenSSL has it), and a connection refused by the per-address limit on a TLS
port is told why over TLS instead of being reset."""

from __future__ import annotations

import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.server import ServerProcess, free_port
from tests.transport.tlsclient import HOST, STREAM_HEADER, context, read_until, tls_connect


def start(tmp: Path, chat: dict[str, object]) -> ServerProcess:
    line_tls = free_port()
    proc = ServerProcess(
        tmp,
        protocols=("line", "irc", "xmpp"),
        overrides={"line": {"tls_port": line_tls}, "xmpp": {"domain": "localhost"}, "chat": chat},
    )
    proc.ports["line_tls"] = line_tls
    return proc.start()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = start(Path(tmp_path_factory.mktemp("tls")), {})
    yield proc
    proc.kill()


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    # One connection per address, loopback included.
    proc = start(
        Path(tmp_path_factory.mktemp("limited")),
        {"max_connections_per_address": 1, "address_limit_exempt": []},
    )
    yield proc
    proc.kill()


def handshake_12(port: int, ciphers: str) -> str:
    """The TLS 1.2 suite agreed with a client that offers only ``ciphers`` (ssl.SSLError
    when the server refuses them all)."""
    ctx = context()
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(ciphers)
    with socket.create_connection((HOST, port), timeout=5) as raw:
        with ctx.wrap_socket(raw) as tls:
            cipher = tls.cipher()
            assert cipher is not None
            return cipher[0]


@pytest.mark.parametrize(
    "ciphers",
    [
        "AES128-SHA",  # RSA key exchange, CBC
        "AES256-GCM-SHA384",  # RSA key exchange
        "ECDHE-RSA-AES128-SHA",  # CBC
        "ECDHE-RSA-AES256-SHA384",  # CBC
        "DHE-RSA-AES128-GCM-SHA256",  # finite-field DH
    ],
)
def test_tls12_refuses_suites_without_forward_secrecy_or_with_cbc(
    server: ServerProcess, ciphers: str
) -> None:
    with pytest.raises(ssl.SSLError):
        handshake_12(server.ports["irc_tls"], ciphers)


@pytest.mark.parametrize(
    "ciphers",
    ["ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-RSA-CHACHA20-POLY1305"],
)
def test_tls12_accepts_modern_suites(server: ServerProcess, ciphers: str) -> None:
    assert handshake_12(server.ports["xmpp_tls"], ciphers) == ciphers


def test_tls13_is_unchanged(server: ServerProcess) -> None:
    ctx = context()
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    with socket.create_connection((HOST, server.ports["irc_tls"]), timeout=5) as raw:
        with ctx.wrap_socket(raw) as tls:
            assert tls.version() == "TLSv1.3"


def s_client(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["openssl", "s_client", "-connect", f"{HOST}:{port}", *args],
        input="",
        capture_output=True,
        text=True,
        timeout=20,
    )


def test_openssl_s_client_sees_the_same(server: ServerProcess) -> None:
    port = server.ports["line_tls"]
    refused = s_client(port, "-tls1_2", "-cipher", "AES128-SHA:ECDHE-RSA-AES128-SHA")
    assert refused.returncode != 0
    assert "handshake failure" in refused.stderr or "alert" in refused.stderr
    accepted = s_client(port, "-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256")
    assert accepted.returncode == 0, accepted.stderr
    assert "ECDHE-RSA-AES128-GCM-SHA256" in accepted.stdout


def first_in(port: str, server: ServerProcess) -> socket.socket:
    """A client that takes the address's one connection (and keeps it), once the server
    has seen the connections of earlier tests close."""
    deadline = time.monotonic() + 10
    while True:
        sock = tls_connect(server.ports[port])
        try:
            if port == "xmpp_tls":
                sock.sendall(STREAM_HEADER)
                read_until(sock, b"</stream:features>")
            elif port == "irc_tls":
                sock.sendall(b"NICK first\r\nUSER first 0 * :first\r\n")
                read_until(sock, b" 001 ")
            else:
                read_until(sock, b"Choose a nick")
            return sock
        except (AssertionError, OSError):
            sock.close()
            assert time.monotonic() < deadline, "the first connection was never accepted"
            time.sleep(0.2)


@pytest.mark.parametrize(
    ("port", "said"),
    [
        ("xmpp_tls", b"<policy-violation"),
        ("irc_tls", b"ERROR :Closing Link"),
        ("line_tls", b"error: "),
    ],
)
def test_the_per_address_limit_says_why_over_tls(
    limited: ServerProcess, port: str, said: bytes
) -> None:
    server = limited
    with first_in(port, server):
        # The handshake completes and the refusal comes over TLS, then the close.
        with tls_connect(server.ports[port]) as second:
            if port == "xmpp_tls":
                second.sendall(STREAM_HEADER)
            data = b""
            second.settimeout(5)
            while True:
                try:
                    chunk = second.recv(65536)
                except ssl.SSLError as err:
                    raise AssertionError(f"the refusal was not a clean TLS close: {err}") from None
                if not chunk:
                    break
                data += chunk
    assert said in data, data
    assert b"connections" in data.lower(), data
