"""The IRC listener's factory: shared per-server state for every IRC connection."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from twisted.internet.protocol import Factory
from twisted.logger import Logger

import protocols.irc.handlers  # noqa: F401  (registers every command)
from protocols.irc import handoff
from protocols.irc.connection import IrcConnection

log = Logger()

try:
    from importlib.metadata import version as _dist_version

    VERSION = "chatserver-" + _dist_version("chatserver")
except Exception:  # not installed (running from a checkout)
    VERSION = "chatserver-dev"

# A MOTD line longer than this (in characters) is cut into several 372 lines.
MOTD_WIDTH = 400


class IrcFactory(Factory):
    """Builds :class:`IrcConnection`s for one or more listeners (plain and TLS share one)."""

    protocol = IrcConnection
    # The application logs its listeners; "Starting factory" lines would only repeat that.
    noisy = False

    def __init__(
        self,
        service: Any,
        config: Any,
        server: Any,
        *,
        operators: Sequence[Any] = (),
        webirc: Sequence[Any] = (),
    ) -> None:
        self.service = service
        self.config = config
        self.server = server
        # [[operators]] entries (name, password hash) for OPER.
        self.operators = tuple(operators)
        # [[webirc]] entries (name, password hash, hosts): web gateways allowed WEBIRC.
        self.webirc = tuple(webirc)
        self.version = VERSION
        self.created_at = service.clock.seconds()
        self.connections: set[IrcConnection] = set()
        # Kept as a set of its own: LUSERS reports its size on every registration.
        self._unregistered: set[IrcConnection] = set()
        self._exempt = [ipaddress.ip_network(net, strict=False) for net in config.flood_exempt]
        self.motd_lines = load_motd(config.motd_file)
        # The welcome burst's fixed lines, made on the first registration (handlers.registration).
        self.welcome_templates: Any = None
        # Cluster mode: clients of this node's users that connect to another node come here.
        handoff.register(self)

    def buildProtocol(self, addr: Any) -> IrcConnection:
        return IrcConnection(self)

    def flood_exempt(self, address: str) -> bool:
        """Whether ``address`` is in ``[irc] flood_exempt`` (trusted bots, bridges)."""
        if not self._exempt:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self._exempt)

    def connection_opened(self, conn: IrcConnection) -> None:
        self.connections.add(conn)
        self._unregistered.add(conn)

    def connection_registered(self, conn: IrcConnection) -> None:
        self._unregistered.discard(conn)

    def connection_closed(self, conn: IrcConnection) -> None:
        self.connections.discard(conn)
        self._unregistered.discard(conn)

    def unregistered_count(self) -> int:
        return len(self._unregistered)


def load_motd(path: str) -> list[str] | None:
    """The MOTD file's lines (None when unset or unreadable: the client gets 422)."""
    if not path:
        return None
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as err:
        log.warn("cannot read the MOTD file {path}: {error}", path=path, error=str(err))
        return None
    lines: list[str] = []
    for raw in text.splitlines():
        raw = raw.rstrip()
        while len(raw) > MOTD_WIDTH:
            lines.append(raw[:MOTD_WIDTH])
            raw = raw[MOTD_WIDTH:]
        lines.append(raw)
    return lines
