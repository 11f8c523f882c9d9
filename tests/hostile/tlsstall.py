"""A TLS handshake that stalls: half a ClientHello, then nothing, on a TLS port."""

from __future__ import annotations

import socket
import ssl
import time

from tests.hostile.clients import ATTACKER, HOST, connect

# The first bytes of a TLS 1.2 ClientHello record that announces 508 bytes and sends 30.
HALF_CLIENT_HELLO = bytes.fromhex("16030101fc010001f80303") + bytes(19)
STALLED = 10


def tls_probe(port: int, send: bytes, expect: bytes, timeout: float = 5.0) -> None:
    """A real TLS client completes the handshake and gets an answer."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection((HOST, port), timeout=timeout) as raw:
        with context.wrap_socket(raw) as tls:
            if send:
                tls.sendall(send)
            data = b""
            deadline = time.monotonic() + timeout
            while expect not in data:
                tls.settimeout(max(deadline - time.monotonic(), 0.001))
                chunk = tls.recv(4096)
                if not chunk:
                    break
                data += chunk
            assert expect in data, f"no {expect!r} over TLS; got {data[:300]!r}"


def assert_tls_stall_dropped(port: int, *, timeout: float, probe: tuple[bytes, bytes]) -> int:
    """Stall ``STALLED`` handshakes; the server keeps serving TLS meanwhile and drops each
    stalled one after about ``timeout`` seconds.  Returns the number of cases."""
    stalled = []
    for _ in range(STALLED):
        sock = connect(port, source=ATTACKER)
        sock.sendall(HALF_CLIENT_HELLO)
        stalled.append(sock)
    start = time.monotonic()
    tls_probe(port, *probe)
    for sock in stalled:
        sock.settimeout(max(timeout + 3.0 - (time.monotonic() - start), 0.001))
        try:
            data = sock.recv(4096)
        except ConnectionResetError:
            data = b""
        except TimeoutError:
            raise AssertionError(
                f"a stalled TLS handshake was still open after {time.monotonic() - start:.1f} s"
            ) from None
        # The server may have sent its alert; either way the connection must end.
        while data:
            data = sock.recv(4096)
        sock.close()
    took = time.monotonic() - start
    assert took >= timeout - 0.5, f"dropped after {took:.1f} s: too early to be the timeout"
    tls_probe(port, *probe)
    return STALLED + 2
