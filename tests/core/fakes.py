"""A recording IChatClient for core tests."""

from __future__ import annotations

from typing import Any

from zope.interface import implementer

from chatserver.core.interfaces import IChatClient


@implementer(IChatClient)
class FakeClient:
    echo_at_turn_end = False

    def __init__(
        self,
        protocol: str = "line",
        address: str = "192.0.2.1",
        secure: bool = True,
        echoes_own_messages: bool = True,
    ) -> None:
        self.protocol = protocol
        self.echoes_own_messages = echoes_own_messages
        self.address = address
        self.secure = secure
        self.events: list[Any] = []
        # Each MessageBatch as it came (its messages are in ``events`` too).
        self.batches: list[Any] = []
        self.disconnected: str | None = None

    def deliver(self, event: Any) -> None:
        self.events.append(event)

    def deliver_batch(self, batch: Any) -> None:
        self.batches.append(batch)
        self.events.extend(batch.messages)

    def disconnect(self, reason: str) -> None:
        self.disconnected = reason

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]

    def clear(self) -> None:
        self.events.clear()
