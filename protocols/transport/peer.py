"""Who is at the other end: its address, and whether the connection counts as secure."""

from __future__ import annotations

import ipaddress
import socket
import sys
import weakref
from typing import Any

from twisted.internet.interfaces import ISSLTransport


def address_of(transport: Any) -> str:
    """The peer's IP address as text ("" when the transport cannot say)."""
    client = getattr(transport, "client", None)
    if type(client) is tuple and client and type(client[0]) is str:
        # A TCP connection (Twisted's tcp.Server) holds the address it was accepted from;
        # ``getPeer`` would build an address object around it for every new connection.
        return client[0]
    peer = transport.getPeer()
    return str(getattr(peer, "host", "") or "")


def is_tls(transport: Any) -> bool:
    """Whether the connection is encrypted (direct TLS, or after STARTTLS)."""
    return ISSLTransport.providedBy(transport)


def is_loopback(address: str) -> bool:
    """Whether ``address`` is this machine, where there is nothing to eavesdrop on.

    An IPv4 client of a dual-stack listener arrives as ``::ffff:127.0.0.1``: that counts.
    """
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address == "localhost"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def is_secure(tls: bool, address: str) -> bool:
    """What every protocol calls secure (passwords may be sent): TLS, or loopback."""
    return tls or is_loopback(address)


# Listening ports whose socket has TCP_NODELAY: Linux gives it to every socket they accept,
# so their connections need not set it again (a system call each).
_NO_DELAY_PORTS: weakref.WeakSet[Any] = weakref.WeakSet()


def listen_no_delay(port: Any) -> None:
    """Give ``port``'s connections TCP_NODELAY through its listening socket, where the
    system copies the option to the sockets it accepts (Linux); elsewhere each connection
    sets it (:func:`set_no_delay`)."""
    if not sys.platform.startswith("linux"):
        return
    # Twisted's TCP port (and TLS port) keeps its listening socket as ``socket``.
    sock = getattr(port, "socket", None)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # type: ignore[union-attr]
    except (AttributeError, OSError):
        return
    _NO_DELAY_PORTS.add(port)


def set_no_delay(transport: Any) -> None:
    """Send small writes at once (a chat line should leave in the turn that produced it)."""
    # Accepted by a listener that has the option (through a TLS wrapper too): it has it.
    if getattr(transport, "server", None) in _NO_DELAY_PORTS:
        return
    try:
        transport.setTcpNoDelay(True)
        return
    except (AttributeError, OSError):
        pass
    # COMPAT: TLS wrappers may not pass the option on; set it on the socket under them.
    handle = getattr(transport, "getHandle", None)
    sock = handle() if handle is not None else None
    setsockopt = getattr(sock, "setsockopt", None)
    if setsockopt is not None:
        try:
            setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
