"""The stand-in connection of a user whose real connections are on another node."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from zope.interface import implementer

from chatserver.core.interfaces import IChatClient

# The protocol name of stand-ins: metrics leave them out (their own node counts them).
REMOTE_PROTOCOL = "cluster"


@implementer(IChatClient)
class RemoteClient:
    """Present in the local core so that rooms, NAMES, WHO and rosters show the user; its
    node delivers to its real connections, so delivering here does nothing."""

    protocol = REMOTE_PROTOCOL
    address = ""
    echoes_own_messages = False
    echo_at_turn_end = False

    def __init__(
        self, node: str, secure: bool, on_disconnect: Callable[[RemoteClient, str], None]
    ) -> None:
        self.node = node
        self.secure = secure
        # The core's connection for it, once attached.
        self.conn: Any = None
        self._on_disconnect = on_disconnect

    def deliver(self, event: Any) -> None:
        pass

    def deliver_batch(self, batch: Any) -> None:
        pass

    def hold_output(self) -> None:
        pass

    def let_output_go(self) -> None:
        pass

    def disconnect(self, reason: str) -> None:
        # An operator here ends the user: its own node must end its real connections.
        self._on_disconnect(self, reason)
