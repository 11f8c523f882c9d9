"""Storage of XMPP accounts' personal data: the interface a PEP store gives, and one in memory
(for tests).

Personal data is PEP nodes (XEP-0163), private XML storage (XEP-0049) and vCards (XEP-0054),
told apart by a node's ``kind``.  The server's store keeps them in tables of its own and is
handed to the XMPP factory by the wiring; XMPP owns the interface, since nothing else keeps
them.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, succeed
from zope.interface import Interface, implementer

from chatserver.core.names import casefold
from chatserver.core.records import PepNode


class IPepStore(Interface):
    """Per account, PepNodes with their items.  Every method returns a Deferred."""

    def get_pep(account):
        """Fire with every PepNode of ``account`` (any case), items oldest first."""

    def save_pep_node(account, node):
        """Insert or replace ``node`` (its configuration and all its items)."""

    def delete_pep_node(account, kind, node):
        """Delete one node with its items; fire True if it existed."""


@implementer(IPepStore)
class MemoryPepStore:
    """Personal data in memory, lost at restart."""

    def __init__(self) -> None:
        self.nodes: dict[str, dict[tuple[str, str], PepNode]] = {}

    def get_pep(self, account: str) -> Deferred[list[PepNode]]:
        nodes = self.nodes.get(casefold(account), {})
        return succeed([nodes[key] for key in sorted(nodes)])

    def save_pep_node(self, account: str, node: PepNode) -> Deferred[None]:
        self.nodes.setdefault(casefold(account), {})[(node.kind, node.node)] = node
        return succeed(None)

    def delete_pep_node(self, account: str, kind: str, node: str) -> Deferred[bool]:
        found = self.nodes.get(casefold(account), {}).pop((kind, node), None)
        return succeed(found is not None)

    def delete_account(self, account: str) -> None:
        """Forget a deleted account's data (SQL stores do this by cascade)."""
        self.nodes.pop(casefold(account), None)
