"""An in-memory IRosterStore: for tests, and for account stores that keep no rosters."""

from __future__ import annotations

from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from chatserver.core.interfaces import IRosterStore
from chatserver.core.names import casefold
from chatserver.core.records import RosterItem


@implementer(IRosterStore)
class MemoryRosterStore:
    def __init__(self) -> None:
        self.rosters: dict[str, dict[str, RosterItem]] = {}

    def get_roster(self, account: str) -> Deferred[list[RosterItem]]:
        items = self.rosters.get(casefold(account), {})
        return succeed([items[jid] for jid in sorted(items)])

    def set_item(self, account: str, item: RosterItem) -> Deferred[None]:
        self.rosters.setdefault(casefold(account), {})[item.jid] = item
        return succeed(None)

    def remove_item(self, account: str, jid: str) -> Deferred[bool]:
        return succeed(self.rosters.get(casefold(account), {}).pop(jid, None) is not None)

    def delete_account(self, account: str) -> None:
        """Forget a deleted account's roster (SQL stores do this by cascade)."""
        self.rosters.pop(casefold(account), None)
