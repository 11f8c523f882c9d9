"""One "secure or loopback" rule on every protocol: an IPv4 client of a dual-stack listener
arrives as ``::ffff:127.0.0.1`` and is loopback on IRC, line chat and XMPP alike (passwords
may be sent there without TLS)."""

from __future__ import annotations

import ctypes
import errno
import os
import random
import socket
import sys
import time
from pathlib import Path

import pytest

from tests.support.server import LineClient, ServerProcess
from tests.transport.tlsclient import HOST, STREAM_HEADER, read_until

# The system call that copies another process's file descriptor (Linux 5.6).
PIDFD_GETFD = 438


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


def _server_sockets(pid: int) -> list[socket.socket]:
    """The server's TCP sockets, duplicated into this process (pidfd_getfd)."""
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(pid)
    found: list[socket.socket] = []
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if not os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"):
                    continue
            except FileNotFoundError:
                continue
            copy = libc.syscall(PIDFD_GETFD, pidfd, int(fd), 0)
            if copy < 0:
                if ctypes.get_errno() == errno.EPERM:
                    pytest.skip("this system does not let a process look at its child's sockets")
                continue
            sock = socket.socket(fileno=copy)
            if sock.type == socket.SOCK_STREAM and sock.family in (socket.AF_INET, socket.AF_INET6):
                found.append(sock)
            else:
                sock.close()
    finally:
        os.close(pidfd)
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux: pidfd_getfd")
def test_listeners_give_every_accepted_connection_tcp_nodelay(tmp_path: Path) -> None:
    # The listening sockets carry TCP_NODELAY, which Linux copies to each socket they
    # accept: no connection needs a system call of its own for it.
    with ServerProcess(tmp_path, protocols=("line", "irc", "xmpp", "web")) as server:
        clients = {
            name: socket.create_connection((HOST, port)) for name, port in server.ports.items()
        }
        try:
            # Each connection accepted and set up (a greeting, or its TLS handshake waiting).
            time.sleep(0.5)
            assert server.proc is not None
            sockets = _server_sockets(server.proc.pid)
            try:
                listening = {s.getsockname()[1]: s for s in sockets if _listening(s)}
                assert set(server.ports.values()) <= set(listening), server.ports
                for name, port in server.ports.items():
                    assert listening[port].getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY), name
                accepted = {s.getpeername()[1]: s for s in sockets if not _listening(s)}
                for name, client in clients.items():
                    sock = accepted[client.getsockname()[1]]
                    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY), name
            finally:
                for sock in sockets:
                    sock.close()
        finally:
            for client in clients.values():
                client.close()


def _listening(sock: socket.socket) -> bool:
    return bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))
