"""One block list per account, on every protocol: a blocked user's private messages and
invitations reach none of the account's connections.

An entry is a name (casefolded): a blocked sender is matched by its account, or by its nick
when it has none.  What a blocked user sends is dropped without telling it (telling would
say it is blocked, which XEP-0191 leaves to the blocker); its room messages are not
filtered, since a room is shared with others.  Lists are kept in ``block_store`` when there
is one, else in memory only; all of them are loaded at start, so the check on each private
message is a set lookup.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks, succeed

from chatserver.core.errors import ChatError
from chatserver.core.interfaces import IBlockStore
from chatserver.core.names import casefold

# Entries one account may block: a list is loaded for every account at start.
MAX_BLOCKS = 1000


class Blocking:
    """Mixin of :class:`~chatserver.core.service.ChatService`: block lists by account."""

    def _init_blocking(self, block_store: IBlockStore | None) -> None:
        self.block_store = block_store
        # casefold(account) -> casefolded names it blocks.
        self.block_lists: dict[str, set[str]] = {}

    @inlineCallbacks
    def _load_blocks(self):
        if self.block_store is not None:
            for account, name in (yield self.block_store.load_blocks()):
                self.block_lists.setdefault(account, set()).add(name)

    def _blocker_key(self, conn: Any) -> str:
        user = self._user(conn)  # type: ignore[attr-defined]
        if user.account is None:
            raise ChatError("log in to an account to keep a block list")
        return casefold(user.account)

    def blocks(self, conn: Any) -> list[str]:
        """The names the connection's account blocks, sorted."""
        return sorted(self.block_lists.get(self._blocker_key(conn), ()))

    def block(self, conn: Any, names: list[str]) -> Deferred[list[str]]:
        """Add ``names`` to the account's list; fire with those that were not there."""
        key = self._blocker_key(conn)
        current = self.block_lists.setdefault(key, set())
        added = sorted({casefold(n) for n in names if n} - current)
        if len(current) + len(added) > MAX_BLOCKS:
            raise ChatError(f"a block list holds at most {MAX_BLOCKS} names")
        current.update(added)
        if added and self.block_store is not None:
            return self.block_store.add_blocks(key, added).addCallback(lambda _: added)
        return succeed(added)

    def unblock(self, conn: Any, names: list[str] | None) -> Deferred[list[str]]:
        """Remove ``names`` (None: every name); fire with those that were there."""
        key = self._blocker_key(conn)
        current = self.block_lists.get(key, set())
        gone = sorted(current if names is None else {casefold(n) for n in names} & current)
        current.difference_update(gone)
        if not current:
            self.block_lists.pop(key, None)
        if gone and self.block_store is not None:
            return self.block_store.remove_blocks(key, gone).addCallback(lambda _: gone)
        return succeed(gone)

    def _blocks_sender(self, target: Any, sender: Any) -> bool:
        """Whether ``target`` (a User) blocks ``sender`` (a User)."""
        if target.account is None or not self.block_lists:
            return False
        blocked = self.block_lists.get(casefold(target.account))
        if not blocked:
            return False
        return casefold(sender.account or sender.nick) in blocked

    def _forget_blocks(self, account: str) -> None:
        """A deleted account's list goes with it (stores delete it by cascade)."""
        self.block_lists.pop(casefold(account), None)
