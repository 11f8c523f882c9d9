"""Recent room messages, some of them still runs of another node's user not yet made.

A run of messages relayed from another cluster node reaches this node's members as the bytes
its node rendered (``MessageRun``); its Message events are made only when something here
reads them (a room's recent history replayed on a join, a dead node's last messages
stored).  A Backlog keeps messages and such runs in order, newest last, up to ``limit``
messages: older ones go without ever being made.
"""

from __future__ import annotations

from collections import deque

from chatserver.core.events import Message, MessageRun


class Backlog:
    __slots__ = ("count", "items", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.items: deque[Message | MessageRun] = deque()
        # Messages in ``items`` (a run counts its own).
        self.count = 0

    def __bool__(self) -> bool:
        return bool(self.items)

    def add(self, item: Message | MessageRun) -> None:
        """Keep ``item`` (a message or a run), forgetting what falls past ``limit``."""
        items = self.items
        items.append(item)
        count = self.count + (item.count if type(item) is MessageRun else 1)
        # Whole items go: what is left holds at least ``limit`` messages.
        while count > self.limit:
            first = items[0]
            size = first.count if type(first) is MessageRun else 1
            if count - size < self.limit:
                break
            items.popleft()
            count -= size
        self.count = count

    def take(self) -> list[Message]:
        """Every message kept, oldest first (runs made now), at most ``limit``; empties it."""
        out: list[Message] = []
        for item in self.items:
            if isinstance(item, MessageRun):
                out.extend(item.messages())
            else:
                out.append(item)
        self.items.clear()
        self.count = 0
        return out[-self.limit :] if self.limit else []
