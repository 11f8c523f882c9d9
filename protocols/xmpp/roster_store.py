"""XMPP rosters' storage: the interface a roster store gives, and one in memory (for tests).

The server's store keeps rosters in its own table and is handed to the XMPP factory by the
wiring; XMPP owns the interface, since nothing else keeps rosters.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, succeed
from zope.interface import Interface, implementer

from chatserver.core.names import casefold
from chatserver.core.records import RosterItem


class IRosterStore(Interface):
    """XMPP rosters: per account, a list of RosterItem.  Every method returns a Deferred."""

    def get_roster(account):
        """Fire with the RosterItems of ``account`` (any case), sorted by JID."""

    def set_item(account, item):
        """Insert or replace the item with ``item.jid`` in the roster of ``account``."""

    def remove_item(account, jid):
        """Remove one item; fire True if it existed."""


@implementer(IRosterStore)
class MemoryRosterStore:
    """Rosters in memory, lost at restart."""

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
