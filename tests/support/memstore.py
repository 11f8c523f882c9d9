"""An in-memory implementation of the storage interfaces, for core and protocol tests."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.task import Clock
from zope.interface import implementer

from chatserver.core.accounts import AccountManager, RegistrationInvite, not_invited
from chatserver.core.bans import ServerBan
from chatserver.core.errors import AccountError
from chatserver.core.events import Message
from chatserver.core.interfaces import (
    IAccountSettingsStore,
    IAccountStore,
    IHistoryStore,
    IRoomStore,
    IServerBanStore,
)
from chatserver.core.names import casefold
from chatserver.core.records import (
    AccountRecord,
    AlwaysOnRecord,
    ArchivePrefs,
    ArchiveQuery,
    RoomEventRecord,
    RoomRecord,
)
from chatserver.core.service import ChatService
from chatserver.core.settings import CoreSettings


@implementer(IAccountStore, IRoomStore, IHistoryStore, IServerBanStore, IAccountSettingsStore)
class MemoryStore:
    def __init__(self) -> None:
        self.accounts: dict[str, AccountRecord] = {}
        self.rooms: dict[str, RoomRecord] = {}
        self.messages: list[Message] = []
        self.events: list[RoomEventRecord] = []
        self.invites: dict[str, RegistrationInvite] = {}
        self.server_bans: dict[str, ServerBan] = {}
        self.always_on: dict[str, AlwaysOnRecord] = {}
        self.archive_prefs: dict[str, ArchivePrefs] = {}

    # accounts
    def get_account(self, name: str) -> Deferred:
        return succeed(self.accounts.get(casefold(name)))

    def registered_keys(self, keys: Sequence[str]) -> Deferred:
        return succeed({casefold(key) for key in keys if casefold(key) in self.accounts})

    def account_keys(self) -> Deferred:
        return succeed(list(self.accounts))

    def create_account(self, record: AccountRecord) -> Deferred:
        key = casefold(record.name)
        if key in self.accounts:
            return maybeDeferred(_raise, AccountError(AccountError.EXISTS, "exists"))
        self.accounts[key] = record
        return succeed(None)

    def update_credentials(self, name: str, credentials: Any) -> Deferred:
        key = casefold(name)
        if key not in self.accounts:
            return succeed(False)
        old = self.accounts[key]
        self.accounts[key] = AccountRecord(old.name, tuple(credentials), old.created_at, old.email)
        return succeed(True)

    def delete_account(self, name: str) -> Deferred:
        self.always_on.pop(casefold(name), None)
        self.archive_prefs.pop(casefold(name), None)
        return succeed(self.accounts.pop(casefold(name), None) is not None)

    # per-account settings
    def load_always_on(self) -> Deferred:
        return succeed(
            [
                dataclasses.replace(record, name=self.accounts[key].name)
                for key, record in sorted(self.always_on.items())
                if key in self.accounts
            ]
        )

    def save_always_on(self, record: AlwaysOnRecord) -> Deferred:
        self.always_on[record.account] = record
        return succeed(None)

    def touch_always_on(self, accounts: list[str], ts: float) -> Deferred:
        for account in accounts:
            if account in self.always_on:
                self.always_on[account] = dataclasses.replace(self.always_on[account], last_seen=ts)
        return succeed(None)

    def delete_always_on(self, account: str) -> Deferred:
        self.always_on.pop(casefold(account), None)
        return succeed(None)

    def load_archive_prefs(self) -> Deferred:
        return succeed(list(self.archive_prefs.items()))

    def save_archive_prefs(self, account: str, prefs: ArchivePrefs) -> Deferred:
        self.archive_prefs[casefold(account)] = prefs
        return succeed(None)

    def list_accounts(self) -> Deferred:
        return succeed(sorted(self.accounts.values(), key=lambda r: casefold(r.name)))

    # registration invitations, as SqliteStore keeps them
    def create_invited_account(self, record: AccountRecord, now: float) -> Deferred:
        key = casefold(record.name)
        invite = self.invites.get(key)
        if invite is None or invite.expires_at <= now:
            return maybeDeferred(_raise, not_invited())
        if key in self.accounts:
            return maybeDeferred(_raise, AccountError(AccountError.EXISTS, "exists"))
        del self.invites[key]
        self.accounts[key] = record
        return succeed(None)

    def save_invite(self, invite: RegistrationInvite) -> Deferred:
        self._purge(invite.created_at)
        self.invites[casefold(invite.name)] = invite
        return succeed(None)

    def get_invite(self, name: str, now: float) -> Deferred:
        invite = self.invites.get(casefold(name))
        return succeed(invite if invite is not None and invite.expires_at > now else None)

    def delete_invite(self, name: str) -> Deferred:
        return succeed(self.invites.pop(casefold(name), None) is not None)

    def purge_invites(self, now: float) -> Deferred:
        return succeed(self._purge(now))

    def list_invites(self, now: float) -> Deferred:
        self._purge(now)
        return succeed([self.invites[key] for key in sorted(self.invites)])

    def _purge(self, now: float) -> int:
        expired = [key for key, invite in self.invites.items() if invite.expires_at <= now]
        for key in expired:
            del self.invites[key]
        return len(expired)

    # rooms
    def load_rooms(self) -> Deferred:
        return succeed(list(self.rooms.values()))

    def save_room(self, record: RoomRecord) -> Deferred:
        self.rooms[record.name] = record
        return succeed(None)

    def delete_room(self, name: str) -> Deferred:
        return succeed(self.rooms.pop(name, None) is not None)

    # history
    def _of(self, target: str) -> list[Message]:
        return sorted((m for m in self.messages if m.room == target), key=lambda m: (m.ts, m.id))

    def append(self, messages: Any) -> Deferred:
        known = {m.id for m in self.messages}
        self.messages.extend(m for m in messages if m.id not in known)
        return succeed(None)

    def latest(self, target: str, limit: int) -> Deferred:
        return succeed(self._of(target)[-limit:] if limit > 0 else [])

    def before(self, target: str, ts: float, limit: int) -> Deferred:
        found = [m for m in self._of(target) if m.ts < ts]
        return succeed(found[-limit:] if limit > 0 else [])

    def after(self, target: str, ts: float, limit: int) -> Deferred:
        return succeed([m for m in self._of(target) if m.ts > ts][:limit])

    def between(self, target: str, start: float, end: float, limit: int) -> Deferred:
        return succeed([m for m in self._of(target) if start < m.ts < end][:limit])

    def find(self, msgid: str) -> Deferred:
        return succeed(next((m for m in self.messages if m.id == msgid), None))

    def targets(self, start: float, end: float, limit: int) -> Deferred:
        latest: dict[str, float] = {}
        for m in self.messages:
            if m.room and start < m.ts:
                latest[m.room] = max(latest.get(m.room, 0.0), m.ts)
        # Listed when the latest message is in the window (as the SQLite store does).
        rows = [(room, ts) for room, ts in latest.items() if ts < end]
        return succeed(sorted(rows, key=lambda kv: (kv[1], kv[0]))[:limit])

    def append_events(self, records: Any) -> Deferred:
        known = {e.id for e in self.events}
        self.events.extend(e for e in records if e.id not in known)
        return succeed(None)

    def query_events(self, query: ArchiveQuery) -> Deferred:
        found = sorted(
            (e for e in self.events if e.room == query.owner), key=lambda e: (e.ts, e.id)
        )
        if query.after is not None:
            found = [e for e in found if (e.ts, e.id) > query.after]
        if query.before is not None:
            found = [e for e in found if (e.ts, e.id) < query.before]
        return succeed(found[-query.limit :] if query.newest else found[: query.limit])

    def rename_target(self, old: str, new: str) -> Deferred:
        moved = [m for m in self.messages if m.room == old]
        self.messages[:] = [m for m in self.messages if m.room != old] + [
            dataclasses.replace(m, room=new) for m in moved
        ]
        self.events[:] = [
            dataclasses.replace(e, room=new) if e.room == old else e for e in self.events
        ]
        return succeed(len(moved))

    def find_event(self, msgid: str) -> Deferred:
        return succeed(next((e for e in self.events if e.id == msgid), None))

    def delete_message(self, msgid: str, owners: Any = ()) -> Deferred:
        kept = [m for m in self.messages if m.id != msgid]
        deleted = len(self.messages) - len(kept)
        self.messages[:] = kept
        return succeed(deleted)

    def purge(self, target: str) -> Deferred:
        self.events[:] = [e for e in self.events if e.room != target]
        kept = [m for m in self.messages if m.room != target]
        deleted = len(self.messages) - len(kept)
        self.messages[:] = kept
        return succeed(deleted)

    def close(self) -> Deferred:
        return succeed(None)

    # server bans

    def load_server_bans(self) -> Deferred:
        return succeed(list(self.server_bans.values()))

    def save_server_ban(self, ban: ServerBan) -> Deferred:
        self.server_bans[ban.mask] = ban
        return succeed(None)

    def delete_server_ban(self, mask: str) -> Deferred:
        return succeed(self.server_bans.pop(mask, None) is not None)


def _raise(err: Exception) -> None:
    raise err


def run_now(f: Any, *args: Any, **kwargs: Any) -> Deferred:
    """A ``run_in_thread`` that runs at once: tests stay deterministic."""
    return maybeDeferred(f, *args, **kwargs)


def make_service(
    settings: CoreSettings | None = None,
    *,
    store: MemoryStore | None = None,
    clock: Clock | None = None,
    end_of_turn: Callable[[Callable[[], None]], object] | None = None,
) -> ChatService:
    """A started ChatService on a MemoryStore and a fake clock (``service.clock``)."""
    settings = settings or CoreSettings(scram_iterations=4096)
    store = store or MemoryStore()
    clock = clock or Clock()
    clock.advance(1_700_000_000)
    accounts = AccountManager(store, settings, clock=clock, run_in_thread=run_now)
    service = ChatService(
        settings,
        clock=clock,
        accounts=accounts,
        room_store=store,
        history_store=store,
        end_of_turn=end_of_turn,
    )
    service.start()
    return service
