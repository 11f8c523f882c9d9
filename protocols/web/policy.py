"""Who may open a WebSocket, and who the client is: the origin check and the proxy rule.

A browser sends the page's origin with every WebSocket handshake; a page on another site must
not be able to use a visitor's browser to chat here, so only the allowed origins get in.  With
``[web] allowed_origins`` empty, those are the server's own page: the origin whose host and
port are the ones the request was addressed to (what the bundled client sends), and the
server's names on the web ports.  Clients that are not browsers send no origin and are let in:
the check protects browsers' users, not the server (limits do that).

Behind a reverse proxy every connection comes from the proxy: only when the peer is in
``[web] trusted_proxies`` is the client's address taken from ``X-Forwarded-For`` or
``Forwarded``, so that a client cannot choose its own address (and escape per-address limits),
and only then does the proxy's word that the client came over HTTPS make the connection
count as encrypted (where passwords may be sent).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from twisted.web.server import Request

_FORWARDED_PROTO = re.compile(r'proto="?https"?(?:[;,\s]|$)', re.IGNORECASE)
_FORWARDED_FOR = re.compile(r'for="?\[?([^\]";,]+)\]?(?::\d+)?"?', re.IGNORECASE)


def _address(text: str) -> str | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:
        # IPv4 with a port.
        text = text.split(":")[0]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


class WebPolicy:
    """The ``[web]`` rules one listener applies (replaced as a whole on a reload)."""

    def __init__(
        self,
        *,
        allowed_origins: Iterable[str],
        trusted_proxies: Iterable[str],
        own_names: Iterable[str],
        ports: Iterable[int],
        max_message_bytes: int,
        clock: Any,
    ) -> None:
        self.allowed_origins = {o.rstrip("/").lower() for o in allowed_origins}
        self.trusted_proxies = tuple(ipaddress.ip_network(n, strict=False) for n in trusted_proxies)
        self.own_names = {n.lower() for n in own_names}
        self.ports = set(ports)
        self.max_message_bytes = max_message_bytes
        self.clock = clock

    # -- origins ------------------------------------------------------------------------

    def origin_allowed(self, origin: str | None, request: Request) -> bool:
        if origin is None:
            return True
        origin = origin.rstrip("/").lower()
        if self.allowed_origins:
            return "*" in self.allowed_origins or origin in self.allowed_origins
        try:
            parts = urlsplit(origin)
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            return False
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return False
        host = request.getHeader("host")
        if host is not None and origin.split("://", 1)[1] == host.lower():
            # The page was loaded from the address this request is addressed to.
            return True
        return parts.hostname in self.own_names and port in self.ports

    # -- the client's address ------------------------------------------------------------

    def trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self.trusted_proxies)

    def client_secure(self, request: Request) -> bool:
        """Whether the client's connection is encrypted: ours (HTTPS), or the trusted proxy's
        in front of us (``X-Forwarded-Proto: https``, ``Forwarded: proto=https``)."""
        if request.isSecure():
            return True
        peer = str(getattr(request.getClientAddress(), "host", "") or "")
        if not self.trusted_proxies or not self.trusted(peer):
            return False
        forwarded = request.getHeader("forwarded")
        if forwarded:
            return _FORWARDED_PROTO.search(forwarded) is not None
        proto = request.getHeader("x-forwarded-proto") or ""
        return proto.split(",")[-1].strip().lower() == "https"

    def client_address(self, request: Request) -> str:
        """The peer's address, or what a trusted proxy says the client's is."""
        address = str(getattr(request.getClientAddress(), "host", "") or "")
        if not self.trusted_proxies or not self.trusted(address):
            return address
        # The nearest hop the trusted proxies did not add is the client (a client may put
        # anything it likes at the left of the list).
        hops: list[str] = []
        forwarded = request.getHeader("forwarded")
        if forwarded:
            hops = [m.group(1) for m in _FORWARDED_FOR.finditer(forwarded)]
        else:
            xff = request.getHeader("x-forwarded-for")
            if xff:
                hops = xff.split(",")
        for hop in reversed(hops):
            found = _address(hop)
            if found is None:
                break
            address = found
            if not self.trusted(found):
                break
        return address
