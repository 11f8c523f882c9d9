"""Small TLS clients for the transport tests: a polite one (Python's ssl) and one that does the
handshake and then never answers the server's close (its bytes are read raw, never fed back
into TLS)."""

from __future__ import annotations

import socket
import ssl
import time

HOST = "127.0.0.1"
STREAM_HEADER = (
    b"<?xml version='1.0'?><stream:stream to='localhost' xmlns='jabber:client'"
    b" xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>"
)


def context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def tls_connect(port: int, timeout: float = 5.0) -> ssl.SSLSocket:
    raw = socket.create_connection((HOST, port), timeout=timeout)
    return context().wrap_socket(raw)


def read_until(sock: socket.socket, marker: bytes, timeout: float = 5.0) -> bytes:
    data = b""
    deadline = time.monotonic() + timeout
    while marker not in data:
        sock.settimeout(max(deadline - time.monotonic(), 0.001))
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    assert marker in data, f"no {marker!r} before the end; got {data[-300:]!r}"
    return data


def seconds_to_end(sock: socket.socket, bound: float) -> float:
    """Read and drop until the stream ends (EOF, a TLS close, a reset); seconds it took.

    Fails when the stream is still open after ``bound`` seconds.
    """
    start = time.monotonic()
    while True:
        left = bound - (time.monotonic() - start)
        if left <= 0:
            raise AssertionError(f"the connection was still open after {bound:g} s")
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            raise AssertionError(f"the connection was still open after {bound:g} s") from None
        except (ConnectionResetError, ssl.SSLError):
            return time.monotonic() - start
        if not chunk:
            return time.monotonic() - start


class SilentTlsPeer:
    """A TLS client over a raw socket that completes the handshake, can send application
    data, and then never reads again through TLS: it never answers the server's close_notify
    (nor sends a FIN), like a client that hangs or ignores the close."""

    def __init__(self, port: int, timeout: float = 5.0, source: str | None = None) -> None:
        self.sock = socket.create_connection(
            (HOST, port), timeout=timeout, source_address=(source, 0) if source else None
        )
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.tls = context().wrap_bio(self.incoming, self.outgoing)
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush()
                data = self.sock.recv(65536)
                if not data:
                    raise ConnectionError("closed during the handshake") from None
                self.incoming.write(data)
        self._flush()

    def _flush(self) -> None:
        data = self.outgoing.read()
        if data:
            self.sock.sendall(data)

    def send(self, data: bytes) -> None:
        self.tls.write(data)
        self._flush()

    def read_until(self, marker: bytes, timeout: float = 5.0) -> bytes:
        data = b""
        deadline = time.monotonic() + timeout
        while marker not in data:
            try:
                data += self.tls.read(65536)
                continue
            except ssl.SSLWantReadError:
                pass
            self.sock.settimeout(max(deadline - time.monotonic(), 0.001))
            chunk = self.sock.recv(65536)
            assert chunk, f"closed before {marker!r}; got {data[-300:]!r}"
            self.incoming.write(chunk)
        return data

    def close(self) -> None:
        self.sock.close()
