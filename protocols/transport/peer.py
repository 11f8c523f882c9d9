"""Who is at the other end: its address, and whether the connection counts as secure."""

from __future__ import annotations

import ipaddress
import socket
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


def set_no_delay(transport: Any) -> None:
    """Send small writes at once (a chat line should leave in the turn that produced it)."""
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
