"""The line-chat listener: a ServerFactory that makes one LineConnection per client."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from twisted.internet.protocol import ServerFactory

import protocols.line.handlers  # noqa: F401  (registers every command)
from chatserver.core.service import ChatService
from protocols.line import handoff as line_handoff
from protocols.line.connection import LineConnection
from protocols.transport import handoff
from protocols.transport.handoff import HandoffState, RelayTransport


class LineSettings(Protocol):
    """What the line protocol reads from its config section (``[line]``)."""

    @property
    def max_line_bytes(self) -> int: ...
    @property
    def flood_burst(self) -> int: ...
    @property
    def flood_rate(self) -> float: ...
    @property
    def flood_max_warnings(self) -> int: ...
    @property
    def idle_timeout(self) -> float: ...
    @property
    def ping_timeout(self) -> float: ...
    @property
    def motd(self) -> str: ...
    @property
    def tls_port(self) -> int: ...
    @property
    def require_tls(self) -> bool: ...
    @property
    def plaintext_passwords(self) -> bool: ...


class LineFactory(ServerFactory):
    """Serves line chat over ``service``.  ``clock`` defaults to the service's clock.

    ``config`` and ``operators`` (``[[operators]]`` entries: name, password hash, for /oper)
    may be replaced while the factory serves (a configuration reload); connections read them
    from here.
    """

    protocol = LineConnection
    # The application logs its listeners; "Starting factory" lines would only repeat that.
    noisy = False

    def __init__(
        self,
        service: ChatService,
        config: LineSettings,
        *,
        clock: Any = None,
        operators: Sequence[Any] = (),
    ) -> None:
        self.service = service
        self.config = config
        self.clock = clock if clock is not None else service.clock
        self.operators = tuple(operators)
        # Cluster mode: clients handed to this node by another are served here.
        handoff.register(service, handoff.LINE, self._resume)

    def _resume(self, transport: RelayTransport, state: HandoffState) -> LineConnection:
        return line_handoff.resume(self, transport, state)

    def buildProtocol(self, addr: Any) -> LineConnection:
        return LineConnection(self)
