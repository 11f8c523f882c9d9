"""ChatService: the one API that protocols call, and the router of events to connections.

Protocols call these methods with the :class:`Connection` that :meth:`ChatService.connect`
gave them; each returns a result or raises a :mod:`chatserver.core.errors` error that the
protocol turns into its own numeric, stanza error or text.  The core calls connections only
through ``IChatClient.deliver`` (and ``disconnect``).
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import os
import random
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, fail, inlineCallbacks, succeed
from twisted.logger import Logger

from chatserver.core.accounts import INVITE_DAYS, AccountManager
from chatserver.core.bans import ServerBan, ban_matches, normalize_ban_mask
from chatserver.core.errors import (
    AccountError,
    AlreadyOnRoom,
    Banned,
    CannotSend,
    ChatError,
    JoinRefused,
    LimitExceeded,
    NickInUse,
    NoSuchNick,
    NoSuchRoom,
    NotOnRoom,
    NotPermitted,
    UnknownMode,
)
from chatserver.core.events import (
    AccountChange,
    Away,
    Event,
    Invite,
    Join,
    Kick,
    Message,
    MessageBatch,
    MessageKind,
    ModeChange,
    ModeItem,
    NickChange,
    Part,
    Presence,
    Quit,
    RealnameChange,
    ServerNotice,
    Topic,
    UserModeChange,
    Wallops,
    Who,
)
from chatserver.core.limits import AddressSet, KeyedBuckets
from chatserver.core.names import casefold, check_nick, is_valid_room, room_key
from chatserver.core.records import BanRecord
from chatserver.core.rooms import (
    ALL_MODES,
    FLAG_MODES,
    LIST_MODES,
    STATUS_MODES,
    Member,
    Room,
    normalize_mask,
)
from chatserver.core.settings import CoreSettings
from chatserver.core.users import Connection, NickTable, User

USER_MODES_SELF = frozenset({"invisible", "wallops", "bot"})


class ChatService:
    log = Logger()

    def __init__(
        self,
        settings: CoreSettings,
        *,
        clock: Any,
        accounts: AccountManager,
        room_store: Any,
        history_store: Any,
        ban_store: Any = None,
        end_of_turn: Callable[[Callable[[], None]], object] | None = None,
    ) -> None:
        """``end_of_turn(f)`` must call ``f`` once the reactor has handled every connection
        that is ready in this turn (``reactor.callLater(0, f)`` does).  Without it, room
        messages are delivered at the end of each read instead (what unit tests see)."""
        self.settings = settings
        self.clock = clock
        self.accounts = accounts
        self.room_store = room_store
        self.history_store = history_store
        self.users = NickTable()
        self.rooms: dict[str, Room] = {}
        self.connections: dict[int, Connection] = {}
        self.by_account: dict[str, User] = {}
        self.whowas_log: deque[tuple[Who, float]] = deque(maxlen=2000)
        self.server_who = Who(nick=settings.server_name, ident="", host=settings.server_name)
        self.started_at = clock.seconds()
        self.max_users_seen = 0
        self.stats: dict[str, int] = {"messages": 0, "deliveries": 0}
        # Counters by protocol, read by the metrics endpoint when it is scraped.  Deliveries
        # of room messages are added per room fan-out (Room.fanout), not per recipient.
        self.messages_by_protocol: dict[str, int] = {}
        self.deliveries_by_protocol: dict[str, int] = {}
        self.logins_by_protocol: dict[str, int] = {}
        # (protocol, "flood" or "slow_reader") -> connections closed for it, told apart by
        # the quit reason each protocol gives (see DROP_REASONS).
        self.drops: dict[tuple[str, str], int] = {}
        # Server-wide bans: from the config file (replaced on reload) and set by operators
        # at run time (kept in ``ban_store`` when it has the methods, else in memory).
        self.ban_store = ban_store
        self.config_bans: tuple[ServerBan, ...] = ()
        self.runtime_bans: dict[str, ServerBan] = {}
        self._conn_ids = itertools.count(1)
        self._msg_ids = itertools.count(1)
        self._id_prefix = os.urandom(5).hex()
        secret = settings.cloak_secret.encode() or os.urandom(16)
        self._cloak_key = hashlib.sha256(b"cloak:" + secret).digest()
        self._per_address: dict[str, int] = {}
        self._limit_exempt = AddressSet(settings.address_limit_exempt)
        # New accounts per address (line and IRC registration, XMPP in-band registration).
        self._registrations = KeyedBuckets(
            settings.registration_burst, 1.0 / settings.registration_period
        )
        self._pending_history: list[Message] = []
        self._flush_call: Any = None
        self._flushing: Deferred | None = None
        self._stopping = False
        # Room messages said while connections' input is being handled (see batch()): their
        # delivery to the other members waits for the end of the reactor turn (or of the read,
        # without ``end_of_turn``), one write per member.
        self._batch_depth = 0
        self._batched: dict[Room, _PendingRoom] = {}
        self._end_of_turn = end_of_turn
        self._flush_scheduled = False
        # Nicks just taken, to look up in the store at the end of the turn (enforcement).
        self._nicks_to_check: dict[User, str] = {}
        self._nick_check_scheduled = False
        # Called with every Presence event (a nick online or offline) and every Away event,
        # for notify lists such as IRC MONITOR and XMPP rosters; an observer must ignore the
        # event types it does not know, and must not raise or block.
        self.observers: list[Callable[[Event], None]] = []

    # -- lifecycle -------------------------------------------------------------------------

    @inlineCallbacks
    def start(self):
        """Load registered rooms (with their recent history) and server bans from the store."""
        if hasattr(self.ban_store, "load_server_bans"):
            for ban in (yield self.ban_store.load_server_bans()):
                self.runtime_bans[ban.mask] = ban
        records = yield self.room_store.load_rooms()
        for record in records:
            room = Room.from_record(record, self.settings.history_in_memory)
            self.rooms[room.name] = room
        yield DeferredList(
            [self._load_recent(room) for room in self.rooms.values()], consumeErrors=True
        )
        self.log.info("core started: {rooms} registered rooms loaded", rooms=len(records))

    def _load_recent(self, room: Room) -> Deferred:
        if not room.history.maxlen:
            return succeed(None)

        def loaded(messages: list[Message]) -> None:
            # Messages said since the room was created in memory stay after the loaded ones.
            newer = list(room.history)
            room.history.clear()
            seen = {m.id for m in newer}
            room.history.extend(m for m in messages if m.id not in seen)
            room.history.extend(newer)

        d = self.history_store.latest(room.name, room.history.maxlen)
        d.addCallback(loaded)
        d.addErrback(lambda f: self.log.failure("loading history of {room}", f, room=room.name))
        return d

    @inlineCallbacks
    def shutdown(self, reason: str = "Server shutting down"):
        """Tell every connection, close them all, and write pending history."""
        self._stopping = True
        for conn in list(self.connections.values()):
            try:
                conn.client.disconnect(reason)
            except Exception:
                self.log.failure("disconnecting {conn}", conn=conn)
        for user in self.users:
            if user.enforce_timer is not None and user.enforce_timer.active():
                user.enforce_timer.cancel()
        yield self.flush_history()

    # -- connections and nicks -------------------------------------------------------------

    def connect(self, client: Any) -> Connection:
        """Attach a new connection (no nick yet); raises LimitExceeded past the per-address cap."""
        conn = Connection(client, next(self._conn_ids), self.clock.seconds())
        ban = self.server_ban_for(conn.address)
        if ban is not None:
            raise Banned(_banned_text(ban), ban.mask)
        limit = self.settings.max_connections_per_address
        count = self._per_address.get(conn.address, 0)
        if limit > 0 and count >= limit and conn.address not in self._limit_exempt:
            raise LimitExceeded(f"too many connections from your address (limit {limit})")
        self._per_address[conn.address] = count + 1
        self.connections[conn.id] = conn
        return conn

    def cloak(self, address: str, protocol: str) -> str:
        """A stable host that stands for ``address`` without revealing it."""
        digest = hmac.new(self._cloak_key, address.encode(), hashlib.sha256).hexdigest()
        return f"{protocol}-{digest[:10]}.cloak"

    def claim_nick(
        self, conn: Connection, nick: str, *, ident: str | None = None, realname: str = ""
    ) -> User:
        """Give a connection its user.

        A connection that proved an account first (``login`` before a nick) joins the user
        already online for that account, whatever nick it asked for: check ``user.nick``.
        """
        if conn.user is not None:
            self.rename(conn, nick)
            return conn.user
        self._refuse_if_banned(conn, nick=nick, ident=(ident or nick)[:16], account=conn.account)
        if conn.account is not None:
            existing = self.by_account.get(casefold(conn.account))
            if existing is not None:
                self._attach(conn, existing)
                return existing
        check_nick(nick)
        holder = self.users.get(nick)
        if holder is not None:
            raise NickInUse(holder.nick)
        now = self.clock.seconds()
        user = User(
            nick,
            ident=(ident or nick)[:16],
            host=self.cloak(conn.address, conn.protocol),
            realname=realname[: self.settings.realname_max],
            now=now,
        )
        self.users.add(user)
        self.max_users_seen = max(self.max_users_seen, len(self.users))
        self._attach(conn, user)
        if conn.account is not None:
            user.account = conn.account
            self.by_account[casefold(conn.account)] = user
        self._observe(Presence(ts=now, who=user.who(), online=True))
        self._check_enforcement(user)
        return user

    def _attach(self, conn: Connection, user: User) -> None:
        conn.user = user
        user.connections.append(conn)
        for room in user.rooms.values():
            room.members_changed()

    def _detach(self, conn: Connection) -> User | None:
        user = conn.user
        if user is None:
            return None
        conn.user = None
        if conn in user.connections:
            user.connections.remove(conn)
        for room in user.rooms.values():
            room.members_changed()
        return user

    def rename(self, conn: Connection, new_nick: str) -> None:
        user = self._user(conn)
        check_nick(new_nick)
        if new_nick == user.nick:
            return
        holder = self.users.get(new_nick)
        if holder is not None and holder is not user:
            raise NickInUse(holder.nick)
        self._rename_user(user, new_nick)

    def _rename_user(self, user: User, new_nick: str) -> None:
        old = user.who()
        audience = self._audience(user)
        self.whowas_log.append((old, self.clock.seconds()))
        self.users.rename(user, new_nick)
        now = self.clock.seconds()
        self._send(audience, NickChange(ts=now, who=old, new_nick=new_nick))
        if casefold(old.nick) != casefold(new_nick):
            # A change of case only is the same nick: nobody went offline or came online.
            self._observe(Presence(ts=now, who=old, online=False))
            self._observe(Presence(ts=now, who=user.who(), online=True))
        self._check_enforcement(user)

    def quit(self, conn: Connection, reason: str = "") -> None:
        """A connection has closed (or asked to quit).  Safe to call more than once."""
        if self.connections.pop(conn.id, None) is None:
            return
        drop = DROP_REASONS.get(reason.lower())
        if drop is not None:
            key = (conn.protocol, drop)
            self.drops[key] = self.drops.get(key, 0) + 1
        count = self._per_address.get(conn.address, 1) - 1
        if count > 0:
            self._per_address[conn.address] = count
        else:
            self._per_address.pop(conn.address, None)
        user = self._detach(conn)
        if user is not None and not user.connections:
            self._user_gone(user, reason)

    def _user_gone(self, user: User, reason: str) -> None:
        who = user.who()
        now = self.clock.seconds()
        if not self._stopping:
            # At shutdown everyone is told once; a QUIT per user to everyone left would be N².
            self._send(self._audience(user), Quit(ts=now, who=who, reason=reason))
        for room in list(user.rooms.values()):
            self._remove_member(room, user)
        self.users.remove(user)
        if user.account is not None and self.by_account.get(casefold(user.account)) is user:
            del self.by_account[casefold(user.account)]
        if user.enforce_timer is not None and user.enforce_timer.active():
            user.enforce_timer.cancel()
        user.enforce_timer = None
        self.whowas_log.append((who, now))
        self._observe(Presence(ts=now, who=who, online=False))

    def kill(self, conn: Connection, nick: str, reason: str) -> None:
        """An operator disconnects every connection of ``nick``."""
        actor = self._user(conn)
        if "oper" not in actor.modes:
            raise NotPermitted("only server operators may do that")
        target = self._find(nick)
        for tconn in list(target.connections):
            tconn.client.disconnect(f"Killed by {actor.nick}: {reason}")
            self.quit(tconn, f"Killed by {actor.nick}: {reason}")

    # -- rooms -----------------------------------------------------------------------------

    def join(self, conn: Connection, name: str, key: str | None = None) -> Room:
        """Join (creating the room if needed: the creator becomes operator)."""
        user = self._user(conn)
        rk = room_key(name)
        room = self.rooms.get(rk)
        if room is not None and user in room.members:
            return room
        if len(user.rooms) >= self.settings.max_rooms_per_user:
            raise JoinRefused(rk, JoinRefused.TOO_MANY_ROOMS, "you have joined too many rooms")
        now = self.clock.seconds()
        created = room is None
        if room is None:
            room = Room(rk, now, self.settings.history_in_memory)
            self.rooms[rk] = room
            self._load_recent(room)
        else:
            self._check_join(room, user, key)
        room.invited.discard(user.key)
        member = Member(op=created)
        if room.registered and user.account is not None:
            account = casefold(user.account)
            member.op = member.op or account in room.reg_ops
            member.voice = account in room.reg_voices
        room.members[user] = member
        room.members_changed()
        user.rooms[rk] = room
        self._send(room.clients(), Join(ts=now, room=rk, who=user.who()))
        return room

    def _check_join(self, room: Room, user: User, key: str | None) -> None:
        who = user.who()
        invited = user.key in room.invited
        if room.is_banned(who) and not room.is_invite_excepted(who):
            raise JoinRefused(room.name, JoinRefused.BANNED, "you are banned from this room")
        if "invite_only" in room.flags and not invited and not room.is_invite_excepted(who):
            raise JoinRefused(room.name, JoinRefused.INVITE_ONLY, "this room is invite-only")
        if room.key is not None and key != room.key and not invited:
            raise JoinRefused(room.name, JoinRefused.BAD_KEY, "this room needs the right key")
        if room.limit is not None and len(room.members) >= room.limit and not invited:
            raise JoinRefused(room.name, JoinRefused.FULL, "this room is full")
        if "registered_only" in room.flags and user.account is None:
            raise JoinRefused(
                room.name, JoinRefused.REGISTERED_ONLY, "only registered users may join this room"
            )

    def part(self, conn: Connection, name: str, reason: str = "") -> None:
        user = self._user(conn)
        room = self._room(name)
        if user not in room.members:
            raise NotOnRoom(room.name)
        self._send(
            room.clients(),
            Part(ts=self.clock.seconds(), room=room.name, who=user.who(), reason=reason),
        )
        self._remove_member(room, user)

    def _remove_member(self, room: Room, user: User) -> None:
        room.members.pop(user, None)
        room.members_changed()
        user.rooms.pop(room.name, None)
        if not room.members and not room.registered:
            self.rooms.pop(room.name, None)

    def set_topic(self, conn: Connection, name: str, text: str) -> None:
        user = self._user(conn)
        room = self._room(name)
        member = room.members.get(user)
        if member is None:
            raise NotOnRoom(room.name)
        if "topic_lock" in room.flags and not member.op:
            raise NotPermitted("only room operators may change the topic", room=room.name)
        now = self.clock.seconds()
        room.topic = text[: self.settings.topic_max]
        room.topic_by = user.who().mask
        room.topic_at = now
        self._send(room.clients(), Topic(ts=now, room=room.name, who=user.who(), text=room.topic))
        self._persist(room)

    def kick(self, conn: Connection, name: str, nick: str, reason: str = "") -> None:
        user = self._user(conn)
        room = self._room(name)
        member = room.members.get(user)
        if member is None:
            raise NotOnRoom(room.name)
        if not member.op:
            raise NotPermitted("only room operators may kick", room=room.name)
        target = room.find_member(nick)
        if target is None:
            self._find(nick)
            raise NotOnRoom(room.name, nick)
        event = Kick(
            ts=self.clock.seconds(),
            room=room.name,
            who=user.who(),
            target=target.who(),
            reason=reason[: self.settings.kick_reason_max],
        )
        self._send(room.clients(), event)
        self._remove_member(room, target)

    def set_mode(
        self, conn: Connection, name: str, changes: Sequence[ModeItem]
    ) -> tuple[tuple[ModeItem, ...], list[ChatError]]:
        """Apply room mode changes; returns (applied, errors for the items that were refused)."""
        user = self._user(conn)
        room = self._room(name)
        member = room.members.get(user)
        if member is None and "oper" not in user.modes:
            raise NotOnRoom(room.name)
        if (member is None or not member.op) and "oper" not in user.modes:
            raise NotPermitted("only room operators may change modes", room=room.name)
        return self._apply_modes(room, user, changes, user.who())

    def _apply_modes(
        self, room: Room, user: User, changes: Sequence[ModeItem], shown_as: Who
    ) -> tuple[tuple[ModeItem, ...], list[ChatError]]:
        """Apply each change it can, announce them as one ModeChange by ``shown_as``."""
        applied: list[ModeItem] = []
        errors: list[ChatError] = []
        now = self.clock.seconds()
        for item in changes:
            try:
                done = self._apply_mode(room, user, item, now)
            except ChatError as err:
                errors.append(err)
                continue
            if done is not None:
                applied.append(done)
        if applied:
            event = ModeChange(ts=now, room=room.name, who=shown_as, changes=tuple(applied))
            self._send(room.clients(), event)
            self._persist(room)
        return tuple(applied), errors

    def _apply_mode(self, room: Room, user: User, item: ModeItem, now: float) -> ModeItem | None:
        mode, adding, arg = item.mode, item.adding, item.arg
        if mode not in ALL_MODES:
            raise UnknownMode(mode)
        if mode in FLAG_MODES:
            if adding == (mode in room.flags):
                return None
            (room.flags.add if adding else room.flags.discard)(mode)
            return ModeItem(adding, mode)
        if mode == "key":
            if adding:
                if not arg or " " in arg:
                    return None
                room.key = arg
                return ModeItem(True, "key", arg)
            if room.key is None:
                return None
            room.key = None
            return ModeItem(False, "key", "*")
        if mode == "limit":
            if adding:
                if not arg or not arg.isdigit() or int(arg) <= 0:
                    return None
                room.limit = int(arg)
                return ModeItem(True, "limit", str(room.limit))
            if room.limit is None:
                return None
            room.limit = None
            return ModeItem(False, "limit")
        if mode in LIST_MODES:
            if not arg:
                return None
            mask = normalize_mask(arg)
            if mode == "ban":
                present = [b for b in room.bans if casefold(b.mask) == casefold(mask)]
                if adding and not present:
                    room.bans.append(BanRecord(mask, user.who().mask, now))
                elif not adding and present:
                    room.bans.remove(present[0])
                    mask = present[0].mask
                else:
                    return None
            else:
                present_masks = [m for m in room.invites if casefold(m) == casefold(mask)]
                if adding and not present_masks:
                    room.invites.append(mask)
                elif not adding and present_masks:
                    room.invites.remove(present_masks[0])
                else:
                    return None
            return ModeItem(adding, mode, mask)
        # Status modes: op, voice on a member.
        assert mode in STATUS_MODES
        if not arg:
            return None
        target = room.find_member(arg)
        if target is None:
            self._find(arg)
            raise NotOnRoom(room.name, arg)
        tmember = room.members[target]
        if getattr(tmember, mode) == adding:
            return None
        setattr(tmember, mode, adding)
        if room.registered and target.account is not None:
            reg = room.reg_ops if mode == "op" else room.reg_voices
            (reg.add if adding else reg.discard)(casefold(target.account))
        return ModeItem(adding, mode, target.nick)

    def set_mode_registered(
        self, conn: Connection, name: str, changes: Sequence[ModeItem], *, by: Who
    ) -> tuple[tuple[ModeItem, ...], list[ChatError]]:
        """Room mode changes through the room service (ChanServ), shown as made by ``by``.

        Allowed to the owner and the registered operators (by account) of a registered room,
        whether or not they are in the room or opped there.
        """
        user = self._user(conn)
        room = self._room(name)
        if not room.registered:
            raise ChatError(f"{room.name} is not registered")
        account = casefold(user.account) if user.account is not None else None
        if account is None or (
            account != casefold(room.owner or "") and account not in room.reg_ops
        ):
            raise NotPermitted(
                "only the room's owner and registered operators may do that", room=room.name
            )
        return self._apply_modes(room, user, changes, by)

    def invite(self, conn: Connection, nick: str, name: str) -> User:
        user = self._user(conn)
        room = self._room(name)
        member = room.members.get(user)
        if member is None:
            raise NotOnRoom(room.name)
        if "invite_only" in room.flags and not member.op:
            raise NotPermitted(
                "only room operators may invite to an invite-only room", room=room.name
            )
        target = self._find(nick)
        if target in room.members:
            raise AlreadyOnRoom(room.name, target.nick)
        room.invited.add(target.key)
        event = Invite(ts=self.clock.seconds(), room=room.name, who=user.who(), target=target.nick)
        self._send(_unique(room.clients(), target.clients()), event)
        return target

    def register_room(self, conn: Connection, name: str) -> Deferred:
        """An operator with an account registers the room: it then persists across restarts."""
        try:
            user = self._user(conn)
            room = self._room(name)
            member = room.members.get(user)
            if user.account is None:
                raise AccountError(
                    AccountError.NOT_LOGGED_IN, "log in to an account to register a room"
                )
            if member is None:
                raise NotOnRoom(room.name)
            if not member.op:
                raise NotPermitted("only room operators may register a room", room=room.name)
            if room.registered:
                raise ChatError(f"{room.name} is already registered")
        except ChatError as err:
            return fail(err)
        room.registered = True
        room.owner = user.account
        room.reg_ops.add(casefold(user.account))
        return self.room_store.save_room(room.to_record())

    def drop_room(self, conn: Connection, name: str) -> Deferred:
        try:
            user = self._user(conn)
            room = self._room(name)
            if not room.registered:
                raise ChatError(f"{room.name} is not registered")
            if user.account is None or casefold(user.account) != casefold(room.owner or ""):
                raise NotPermitted(
                    "only the room's owner may drop its registration", room=room.name
                )
        except ChatError as err:
            return fail(err)
        room.registered = False
        room.owner = None
        if not room.members:
            self.rooms.pop(room.name, None)
        return self.room_store.delete_room(room.name)

    def _persist(self, room: Room) -> None:
        if room.registered:
            d = self.room_store.save_room(room.to_record())
            d.addErrback(lambda f: self.log.failure("saving room {room}", f, room=room.name))

    # -- messages --------------------------------------------------------------------------

    def say(
        self,
        conn: Connection,
        *,
        text: str,
        room: str | None = None,
        nick: str | None = None,
        kind: MessageKind = "privmsg",
        tags: tuple[tuple[str, str], ...] = (),
        status: str | None = None,
    ) -> Message:
        """Send a message to a room or to a nick; returns the Message that was delivered."""
        user = self._user(conn)
        if not text:
            raise ChatError("no text to send")
        now = self.clock.seconds()
        if kind != "notice":
            user.last_active = now
        conn.last_active = now
        protocol = conn.protocol
        self.messages_by_protocol[protocol] = self.messages_by_protocol.get(protocol, 0) + 1
        who = user.who()
        if room is not None:
            r = self._room(room)
            member = r.members.get(user)
            self._check_send(r, user, member)
            msg = Message(
                ts=now,
                id=self._new_id(),
                source=who,
                text=text,
                kind=kind,
                room=r.name,
                tags=tags,
                status=status,
                origin=conn.client,
            )
            if status is not None:
                clients: Iterable[Any] = [
                    c
                    for u, m in r.members.items()
                    if m.has(status) or u is user
                    for c in u.clients()
                ]
            else:
                clients = r.clients()
            if member is None:
                clients = _unique(clients, user.clients())
                self._send(clients, msg)
            elif status is None:
                if self._batch_depth:
                    self._batch_message(r, msg)
                else:
                    # The hot path: the room's cached fan-out counts feed the per-protocol
                    # delivery counters without a lookup per recipient.
                    self._send(clients, msg, r.fanout())
            else:
                self._send(clients, msg)
            if status is None:
                self._record(r, msg)
            return msg
        if nick is None:
            raise ChatError("a message needs a room or a nick")
        target = self._find(nick)
        msg = Message(
            ts=now,
            id=self._new_id(),
            source=who,
            text=text,
            kind=kind,
            target=target.nick,
            tags=tags,
            origin=conn.client,
        )
        clients = list(target.clients())
        if target is not user:
            clients.extend(user.clients())
        self._send(clients, msg)
        return msg

    def _check_send(self, room: Room, user: User, member: Member | None) -> None:
        if member is None and "no_external" in room.flags:
            raise CannotSend(room.name, "you must join the room to send to it")
        voiced = member is not None and member.has("voice")
        if "moderated" in room.flags and not voiced:
            raise CannotSend(room.name, "the room is moderated: only voiced members may speak")
        if not voiced and room.is_banned(user.who()):
            raise CannotSend(room.name, "you are banned from this room")

    def _new_id(self) -> str:
        return f"{self._id_prefix}{next(self._msg_ids):x}"

    # -- presence and identity -------------------------------------------------------------

    def set_away(self, conn: Connection, message: str | None) -> None:
        user = self._user(conn)
        if message is not None:
            message = message[: self.settings.away_max] or None
        user.away = message
        user.changed()
        event = Away(ts=self.clock.seconds(), who=user.who(), message=message)
        self._send(self._audience(user), event)
        # Contact lists (XMPP rosters) follow away states of users they share no room with.
        self._observe(event)

    def set_realname(self, conn: Connection, realname: str) -> None:
        user = self._user(conn)
        user.realname = realname[: self.settings.realname_max]
        user.changed()
        event = RealnameChange(ts=self.clock.seconds(), who=user.who(), realname=user.realname)
        self._send(self._audience(user), event)

    def set_user_modes(self, conn: Connection, changes: Sequence[ModeItem]) -> tuple[ModeItem, ...]:
        """Change the user's own modes: invisible, wallops, bot; 'oper' may only be dropped."""
        user = self._user(conn)
        applied = []
        for item in changes:
            allowed = item.mode in USER_MODES_SELF or (item.mode == "oper" and not item.adding)
            if not allowed:
                if item.mode not in USER_MODES_SELF | {"oper"}:
                    raise UnknownMode(item.mode)
                continue
            if self.users.set_mode(user, item.mode, item.adding):
                applied.append(ModeItem(item.adding, item.mode))
        if applied:
            user.changed()
            self._send(
                user.clients(),
                UserModeChange(ts=self.clock.seconds(), who=user.who(), changes=tuple(applied)),
            )
        return tuple(applied)

    def grant_oper(self, conn: Connection) -> None:
        """Make the user a server operator (the protocol has checked the operator credentials)."""
        user = self._user(conn)
        if self.users.set_mode(user, "oper", True):
            user.changed()
            event = UserModeChange(
                ts=self.clock.seconds(), who=user.who(), changes=(ModeItem(True, "oper"),)
            )
            self._send(user.clients(), event)

    def wallops(self, conn: Connection, text: str) -> None:
        user = self._user(conn)
        if "oper" not in user.modes:
            raise NotPermitted("only server operators may do that")
        event = Wallops(ts=self.clock.seconds(), who=user.who(), text=text)
        self._send([c for u in self.users if "wallops" in u.modes for c in u.clients()], event)

    def notice_user(self, user: User, text: str) -> None:
        self._send(user.clients(), ServerNotice(ts=self.clock.seconds(), text=text))

    # -- accounts --------------------------------------------------------------------------

    def register(
        self, conn: Connection, password: str, email: str | None = None, *, name: str = ""
    ) -> Deferred:
        """Register the connection's nick as an account and log in to it.

        Before the connection has a nick, ``name`` is the nick it asks for: one that someone
        is using cannot be registered from under them.
        """
        try:
            if conn.user is None and name:
                if conn.account is not None:
                    raise AccountError(
                        AccountError.ALREADY_LOGGED_IN,
                        f"you are already logged in as {conn.account}",
                    )
                if self.users.get(name) is not None:
                    raise AccountError(AccountError.EXISTS, f"{name} is in use")
                nick = name
            else:
                user = self._user(conn)
                if user.account is not None:
                    raise AccountError(
                        AccountError.ALREADY_LOGGED_IN,
                        f"you are already logged in as {user.account}",
                    )
                nick = user.nick
        except ChatError as err:
            return fail(err)
        d = self.accounts.register(
            nick,
            password,
            email,
            mode=self.settings.registration,
            admit=lambda: self.take_registration(conn.address),
        )

        def created(record: Any) -> Any:
            if conn.user is not None or name:
                # Before a nick is claimed, login remembers the account for the claim.
                self.login(conn, record.name)
            return record

        return d.addCallback(created)

    def identify(self, conn: Connection, password: str, account: str | None = None) -> Deferred:
        """Check a password and log the connection in; fires with the (possibly other) User."""
        name = account or (conn.user.nick if conn.user is not None else None)
        if name is None:
            return fail(AccountError(AccountError.NO_ACCOUNT, "say which account to identify to"))
        d = self.accounts.verify_password(name, password, conn.address, conn.protocol)
        d.addCallback(lambda record: self.login(conn, record.name))
        d.addErrback(self._log_login_failure, conn, name)
        return d

    def invite_registration(
        self, conn: Connection, name: str, days: float = INVITE_DAYS
    ) -> Deferred:
        """A server operator lets ``name`` be registered once, by whoever asks first, within
        ``days`` (see AccountManager.invite); fires with the expiry time."""
        try:
            user = self._require_server_oper(conn)
        except ChatError as err:
            return fail(err)
        d = self.accounts.invite(name, days, invited_by=user.nick)
        return d.addCallback(lambda invite: invite.expires_at)

    def uninvite_registration(self, conn: Connection, name: str) -> Deferred:
        """A server operator withdraws the invitation of ``name``; fires True if there was one."""
        try:
            self._require_server_oper(conn)
        except ChatError as err:
            return fail(err)
        return self.accounts.uninvite(name)

    def registration_invites(self, conn: Connection) -> Deferred:
        """Fire with the unexpired RegistrationInvites, by name (server operators only)."""
        try:
            self._require_server_oper(conn)
        except ChatError as err:
            return fail(err)
        return self.accounts.invites()

    def _require_server_oper(self, conn: Connection) -> User:
        user = self._user(conn)
        if "oper" not in user.modes:
            raise NotPermitted("only server operators may do that")
        return user

    def _log_login_failure(self, failure: Any, conn: Connection, name: str) -> Any:
        failure.trap(AccountError)
        self.log.info(
            "login failed for {account} from {address} ({protocol}): {reason}",
            account=name,
            address=conn.address,
            protocol=conn.protocol,
            reason=failure.value.code,
        )
        return failure

    def login(self, conn: Connection, account: str) -> User | None:
        """Log a connection in to ``account`` (its credentials already checked).

        Before a nick is claimed this only remembers the account.  If another user is already
        online for the account, this connection moves to that user (one user, several
        connections): it is shown leaving its old rooms, its nick changing, and the rooms of
        the account's user; its old user quits if it has no other connection.
        """
        self.log.info(
            "login {account} from {address} ({protocol})",
            account=account,
            address=conn.address,
            protocol=conn.protocol,
        )
        user = conn.user
        self._refuse_if_banned(
            conn,
            nick=user.nick if user is not None else None,
            ident=user.ident if user is not None else None,
            account=account,
        )
        protocol = conn.protocol
        self.logins_by_protocol[protocol] = self.logins_by_protocol.get(protocol, 0) + 1
        if user is None:
            conn.account = account
            return None
        key = casefold(account)
        if user.account is not None and casefold(user.account) == key:
            return user
        existing = self.by_account.get(key)
        if existing is not None and existing is not user:
            self._move_connection(conn, existing)
            return existing
        if user.account is not None and self.by_account.get(casefold(user.account)) is user:
            del self.by_account[casefold(user.account)]
        user.account = account
        user.changed()
        self.by_account[key] = user
        self._send(
            self._audience(user),
            AccountChange(ts=self.clock.seconds(), who=user.who(), account=account),
        )
        if key == user.key and user.enforce_timer is not None:
            if user.enforce_timer.active():
                user.enforce_timer.cancel()
            user.enforce_timer = None
        return user

    def _move_connection(self, conn: Connection, target: User) -> None:
        old = self._detach(conn)
        assert old is not None
        now = self.clock.seconds()
        old_who = old.who()
        for room in old.rooms.values():
            self._send(
                (conn.client,), Part(ts=now, room=room.name, who=old_who, reason="logged in")
            )
        if old.nick != target.nick:
            self._send((conn.client,), NickChange(ts=now, who=old_who, new_nick=target.nick))
        self._attach(conn, target)
        conn.account = target.account
        target_who = target.who()
        for room in target.rooms.values():
            self._send((conn.client,), Join(ts=now, room=room.name, who=target_who))
        if not old.connections:
            self._user_gone(old, f"Logged in as {target.nick}")

    def logout(self, conn: Connection) -> None:
        user = self._user(conn)
        if user.account is None:
            raise AccountError(AccountError.NOT_LOGGED_IN, "you are not logged in")
        self._logout_user(user)

    def _logout_user(self, user: User) -> None:
        if self.by_account.get(casefold(user.account or "")) is user:
            del self.by_account[casefold(user.account or "")]
        user.account = None
        user.changed()
        for conn in user.connections:
            conn.account = None
        self._send(
            self._audience(user),
            AccountChange(ts=self.clock.seconds(), who=user.who(), account=None),
        )
        self._check_enforcement(user)

    @inlineCallbacks
    def change_password(self, conn: Connection, old_password: str, new_password: str):
        user = self._user(conn)
        if user.account is None:
            raise AccountError(AccountError.NOT_LOGGED_IN, "log in to change your password")
        self.accounts.check_password_rules(new_password)
        yield self.accounts.verify_password(user.account, old_password, conn.address, conn.protocol)
        yield self.accounts.set_password(user.account, new_password)

    @inlineCallbacks
    def drop(self, conn: Connection, password: str):
        """Delete the logged-in account (after checking its password)."""
        user = self._user(conn)
        if user.account is None:
            raise AccountError(AccountError.NOT_LOGGED_IN, "log in to drop your account")
        account = user.account
        yield self.accounts.verify_password(account, password, conn.address, conn.protocol)
        yield self.accounts.delete(account)
        holder = self.by_account.get(casefold(account))
        if holder is not None:
            self._logout_user(holder)

    # -- nick enforcement ------------------------------------------------------------------

    def _check_enforcement(self, user: User) -> None:
        if user.enforce_timer is not None:
            if user.enforce_timer.active():
                user.enforce_timer.cancel()
            user.enforce_timer = None
        if user.account is not None and casefold(user.account) == user.key:
            return
        # Checked together with every other nick taken in this reactor turn: one trip to the
        # store's thread for a burst of new connections, not one each.
        self._nicks_to_check[user] = user.key
        if self._end_of_turn is None:
            self._check_nicks()
        elif not self._nick_check_scheduled:
            self._nick_check_scheduled = True
            self._end_of_turn(self._check_nicks)

    def _check_nicks(self) -> None:
        self._nick_check_scheduled = False
        waiting, self._nicks_to_check = self._nicks_to_check, {}
        if not waiting:
            return
        d = self.accounts.registered_keys(list(waiting.values()))

        def found(registered: set[str]) -> None:
            for user, key in waiting.items():
                if key in registered:
                    self._warn_unidentified(user, key)

        d.addCallback(found)
        d.addErrback(lambda f: self.log.failure("checking {n} nicks", f, n=len(waiting)))

    def _warn_unidentified(self, user: User, key: str) -> None:
        if user.key != key or self.users.get(user.nick) is not user:
            return
        if user.account is not None and casefold(user.account) == key:
            return
        timeout = self.settings.nick_enforce_timeout
        self.notice_user(
            user,
            f"{user.nick} is a registered nick. Identify within {timeout:g} seconds"
            " or you will be renamed.",
        )
        if user.enforce_timer is None or not user.enforce_timer.active():
            user.enforce_timer = self.clock.callLater(timeout, self._enforce, user, key)

    def _enforce(self, user: User, key: str) -> None:
        user.enforce_timer = None
        if user.key != key or self.users.get(user.nick) is not user:
            return
        if user.account is not None and casefold(user.account) == key:
            return
        guest = self._guest_nick()
        self.notice_user(user, f"You did not identify for {user.nick}; your nick is now {guest}.")
        self._rename_user(user, guest)

    def release_nick(self, nick: str, account: str) -> bool:
        """Free ``nick`` for the owner of ``account`` (GHOST/REGAIN, an XMPP login on the nick).

        A holder not logged in to that account is renamed to a guest nick; returns whether the
        nick is now free for the account.
        """
        holder = self.users.get(nick)
        if holder is None:
            return True
        if holder.account is not None and casefold(holder.account) == casefold(account):
            return False
        guest = self._guest_nick()
        self.notice_user(
            holder, f"{holder.nick} was claimed by its owner; your nick is now {guest}."
        )
        self._rename_user(holder, guest)
        return True

    def _guest_nick(self) -> str:
        while True:
            nick = f"{self.settings.guest_prefix}{random.randint(10000, 99999)}"
            if nick not in self.users:
                return nick

    # -- history ---------------------------------------------------------------------------

    def _record(self, room: Room, msg: Message) -> None:
        room.history.append(msg)
        self._pending_history.append(msg)
        self.stats["messages"] += 1
        if self._flush_call is None and not self._stopping:
            interval = self.settings.history_flush_interval
            if interval <= 0:
                # Written at once, or, while a write is in progress, together with everything
                # said meanwhile as soon as it ends (group commit): one transaction per message
                # would fall behind a busy server.
                if self._flushing is None:
                    self.flush_history()
            else:
                self._flush_call = self.clock.callLater(interval, self.flush_history)

    def flush_history(self) -> Deferred:
        """Write pending messages in one batch; fires when everything pending so far is stored."""
        if self._flush_call is not None:
            if self._flush_call.active():
                self._flush_call.cancel()
            self._flush_call = None
        batch, self._pending_history = self._pending_history, []
        if not batch:
            return self._when_flushed()
        previous = self._when_flushed()
        d: Deferred = Deferred()
        # Set before the write starts: a store that answers at once runs done() right away.
        self._flushing = d

        def write(_: Any) -> Deferred:
            return self.history_store.append(batch)

        def done(result: Any) -> None:
            if self._flushing is d:
                self._flushing = None
            d.callback(None)
            if (
                self._pending_history
                and self._flushing is None
                and self._flush_call is None
                and self.settings.history_flush_interval <= 0
                and not self._stopping
            ):
                self.flush_history()

        def failed(f: Any) -> None:
            self.log.failure("writing {n} history messages", f, n=len(batch))
            # Keep them to retry with the next batch rather than lose them.
            self._pending_history[:0] = batch
            if self._flushing is d:
                self._flushing = None
            d.callback(None)

        previous.addCallback(write).addCallbacks(done, failed)
        return self._when_flushed()

    def _when_flushed(self) -> Deferred:
        """A new Deferred that fires (with None) when the write in progress is done.

        Every caller gets its own: callbacks that callers add to one shared Deferred would
        run inside each other's chains and see each other's results.
        """
        current = self._flushing
        if current is None:
            return succeed(None)
        waiter: Deferred = Deferred()

        def fire(result: Any) -> Any:
            waiter.callback(None)
            return result

        current.addBoth(fire)
        return waiter

    def recent(self, name: str, count: int) -> list[Message]:
        """The last ``count`` messages of a room from memory (for replay on join)."""
        room = self._room(name)
        if count <= 0:
            return []
        return list(room.history)[-count:]

    def _history(self, method: str, name: str, *args: Any) -> Deferred:
        try:
            key = self._room(name).name if name in self.rooms else room_key(name)
        except ChatError as err:
            return fail(err)
        d = self.flush_history()
        d.addCallback(lambda _: getattr(self.history_store, method)(key, *args))
        return d

    def history_latest(self, room: str, limit: int) -> Deferred:
        return self._history("latest", room, limit)

    def history_before(self, room: str, ts: float, limit: int) -> Deferred:
        return self._history("before", room, ts, limit)

    def history_after(self, room: str, ts: float, limit: int) -> Deferred:
        return self._history("after", room, ts, limit)

    def history_between(self, room: str, start: float, end: float, limit: int) -> Deferred:
        return self._history("between", room, start, end, limit)

    @inlineCallbacks
    def history_around(self, room: str, ts: float, limit: int):
        """About ``limit`` messages centred on ``ts`` (the message at ``ts`` included)."""
        half = max(limit - limit // 2, 1)
        older = yield self._history("before", room, ts + 1e-6, half)
        newer = yield self._history("after", room, ts + 1e-6, max(limit - len(older), 0))
        return (older + newer)[:limit]

    def history_find(self, msgid: str) -> Deferred:
        return self.flush_history().addCallback(lambda _: self.history_store.find(msgid))

    def history_targets(self, conn: Connection, start: float, end: float, limit: int) -> Deferred:
        """Rooms of the user whose latest message is between ``start`` and ``end``:
        [(room, latest ts)]."""
        user = self._user(conn)
        mine = set(user.rooms)
        d = self.flush_history()
        d.addCallback(lambda _: self.history_store.targets(start, end, limit + len(self.rooms)))
        d.addCallback(lambda rows: [(t, ts) for t, ts in rows if t in mine][:limit])
        return d

    # -- server bans and live settings -----------------------------------------------------

    @property
    def server_bans(self) -> list[ServerBan]:
        """Every server ban in force: the config's, then those set by operators."""
        return [*self.config_bans, *self.runtime_bans.values()]

    def server_ban_for(
        self,
        address: str,
        *,
        cloak: str = "",
        nick: str | None = None,
        ident: str | None = None,
        account: str | None = None,
    ) -> ServerBan | None:
        for ban in self.server_bans:
            if ban_matches(
                ban, address=address, cloak=cloak, nick=nick, ident=ident, account=account
            ):
                return ban
        return None

    def _refuse_if_banned(
        self, conn: Connection, *, nick: str | None, ident: str | None, account: str | None
    ) -> None:
        if not self.config_bans and not self.runtime_bans:
            return
        ban = self.server_ban_for(
            conn.address,
            cloak=self.cloak(conn.address, conn.protocol),
            nick=nick,
            ident=ident,
            account=account,
        )
        if ban is None:
            return
        text = _banned_text(ban)
        self.log.info(
            "banned {address} ({protocol}) by {mask}",
            address=conn.address,
            protocol=conn.protocol,
            mask=ban.mask,
        )
        try:
            conn.client.disconnect(text)
        except Exception:
            self.log.failure("disconnecting {conn}", conn=conn)
        raise Banned(text, ban.mask)

    def set_config_bans(self, bans: Iterable[ServerBan]) -> list[str]:
        """Replace the config file's bans (at start and on reload); returns the nicks of the
        users disconnected because a ban now matches them."""
        self.config_bans = tuple(bans)
        return self._enforce_bans()

    def add_server_ban(
        self, conn: Connection, mask: str, reason: str
    ) -> tuple[ServerBan, list[str]]:
        """An operator bans ``mask`` from the server (stored when the store can); users it
        matches are disconnected.  Returns the ban and their nicks."""
        actor = self._user(conn)
        if "oper" not in actor.modes:
            raise NotPermitted("only server operators may do that")
        ban = ServerBan(normalize_ban_mask(mask), reason.strip(), actor.nick, self.clock.seconds())
        self.runtime_bans[ban.mask] = ban
        if hasattr(self.ban_store, "save_server_ban"):
            d = self.ban_store.save_server_ban(ban)
            d.addErrback(lambda f: self.log.failure("saving the ban {mask}", f, mask=ban.mask))
        self.log.info(
            "{oper} banned {mask}: {reason}", oper=actor.nick, mask=ban.mask, reason=ban.reason
        )
        return ban, self._enforce_bans()

    def remove_server_ban(self, conn: Connection, mask: str) -> ServerBan:
        """An operator lifts a ban set at run time (config bans are lifted in the config)."""
        actor = self._user(conn)
        if "oper" not in actor.modes:
            raise NotPermitted("only server operators may do that")
        key = normalize_ban_mask(mask)
        ban = self.runtime_bans.pop(key, None)
        if ban is None:
            if any(b.mask == key for b in self.config_bans):
                raise ChatError(f"{key} is set in the configuration file: remove it there")
            raise ChatError(f"no server ban on {key}")
        if hasattr(self.ban_store, "delete_server_ban"):
            d = self.ban_store.delete_server_ban(key)
            d.addErrback(lambda f: self.log.failure("deleting the ban {mask}", f, mask=key))
        self.log.info("{oper} lifted the ban on {mask}", oper=actor.nick, mask=key)
        return ban

    def _enforce_bans(self) -> list[str]:
        gone: list[str] = []
        for conn in list(self.connections.values()):
            user = conn.user
            if user is not None and "oper" in user.modes:
                # An operator is never locked out by a mistyped mask; they can lift it.
                continue
            ban = self.server_ban_for(
                conn.address,
                cloak=user.host if user is not None else "",
                nick=user.nick if user is not None else None,
                ident=user.ident if user is not None else None,
                account=user.account if user is not None else conn.account,
            )
            if ban is None:
                continue
            if user is not None and user.nick not in gone:
                gone.append(user.nick)
            try:
                conn.client.disconnect(_banned_text(ban))
            except Exception:
                self.log.failure("disconnecting {conn}", conn=conn)
            self.quit(conn, _banned_text(ban))
        return gone

    def take_registration(self, address: str) -> bool:
        """Whether ``address`` may create one more account now; counts it if so."""
        if address in self._limit_exempt:
            return True
        return self._registrations.take(address, self.clock.seconds())

    def apply_settings(self, settings: CoreSettings) -> None:
        """Use new settings from here on (a config reload).  The caller keeps the settings in
        RESTART_ONLY_SETTINGS unchanged: they shaped state that exists already."""
        self.settings = settings
        self.accounts.apply_settings(settings)
        self._limit_exempt = AddressSet(settings.address_limit_exempt)
        self._registrations.capacity = settings.registration_burst
        self._registrations.rate = 1.0 / settings.registration_period

    # -- lookups for protocols -------------------------------------------------------------

    def find_user(self, nick: str) -> User | None:
        return self.users.get(nick)

    def get_room(self, name: str) -> Room | None:
        if not is_valid_room(name):
            return None
        return self.rooms.get(casefold(name))

    def whowas(self, nick: str, limit: int = 10) -> list[tuple[Who, float]]:
        key = casefold(nick)
        found = [(w, t) for w, t in reversed(self.whowas_log) if casefold(w.nick) == key]
        return found[:limit]

    def connection_count(self) -> int:
        return len(self.connections)

    def history_pending(self) -> int:
        """Messages said but not yet handed to the history store."""
        return len(self._pending_history)

    # -- internals -------------------------------------------------------------------------

    def _user(self, conn: Connection) -> User:
        if conn.user is None:
            raise ChatError("choose a nick first")
        return conn.user

    def _room(self, name: str) -> Room:
        key = room_key(name)
        room = self.rooms.get(key)
        if room is None:
            raise NoSuchRoom(key)
        return room

    def _find(self, nick: str) -> User:
        user = self.users.get(nick)
        if user is None:
            raise NoSuchNick(nick)
        return user

    def _audience(self, user: User) -> list[Any]:
        """Every connection that shares a room with ``user``, and the user's own, once each."""
        seen: set[int] = set()
        clients: list[Any] = []
        for client in user.clients():
            seen.add(id(client))
            clients.append(client)
        for room in user.rooms.values():
            for client in room.clients():
                if id(client) not in seen:
                    seen.add(id(client))
                    clients.append(client)
        return clients

    def _observe(self, event: Event) -> None:
        for observer in list(self.observers):
            try:
                observer(event)
            except Exception:
                self.log.failure("observer {observer} failed", observer=observer)

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Handle one read of a connection's input inside this.

        Room messages said meanwhile reach their sender at once (so an IRC label or echo
        stays with its command), and every other member at the end of the reactor turn, as
        one :class:`MessageBatch` per room: the messages of every connection read in the turn
        cost each member one write, not one per message.  Any other event flushes the
        batches first, so order is kept.
        """
        self._batch_depth += 1
        try:
            yield
        finally:
            self._batch_depth -= 1
            if not self._batch_depth and self._batched and self._end_of_turn is None:
                self._flush_batches()

    def _batch_message(self, room: Room, msg: Message) -> None:
        pending = self._batched.get(room)
        if pending is None:
            pending = self._batched[room] = _PendingRoom()
            if self._end_of_turn is not None and not self._flush_scheduled:
                self._flush_scheduled = True
                self._end_of_turn(self._flush_turn)
        origin = msg.origin
        key = id(origin)
        if getattr(origin, "echo_at_turn_end", False):
            # Its own copy comes in its place in the turn's batch, like everyone's: one write.
            pending.messages.append(msg)
            self.stats["deliveries"] += 1
            protocol = getattr(origin, "protocol", "?")
            self.deliveries_by_protocol[protocol] = self.deliveries_by_protocol.get(protocol, 0) + 1
            return
        if getattr(origin, "echoes_own_messages", True):
            had = pending.delivered.get(key, 0)
            if had < len(pending.messages):
                # What the room said earlier in this turn comes before the sender's own copy,
                # for the sender as for everyone else.
                self._deliver_rest(origin, pending.messages, had)
            pending.messages.append(msg)
            pending.delivered[key] = len(pending.messages)
        else:
            # A sender that never sees its own messages waits for the end of the turn like
            # everyone else: one write, not one per message the room said before its own.
            pending.messages.append(msg)
            pending.delivered.setdefault(key, 0)
        self.stats["deliveries"] += 1
        protocol = getattr(origin, "protocol", "?")
        self.deliveries_by_protocol[protocol] = self.deliveries_by_protocol.get(protocol, 0) + 1
        try:
            origin.deliver(msg)
        except Exception:
            self._delivery_failed(msg, origin)

    def _flush_turn(self) -> None:
        self._flush_scheduled = False
        if self._batched:
            self._flush_batches()

    def _flush_batches(self) -> None:
        batched, self._batched = self._batched, {}
        by_protocol = self.deliveries_by_protocol
        for room, pending in batched.items():
            messages = pending.messages
            delivered = pending.delivered
            batch = MessageBatch(messages=tuple(messages))
            for client in room.clients():
                had = delivered.get(id(client))
                if had is not None:
                    # A sender: the rest, without its own.
                    self._deliver_rest(client, messages, had)
                    continue
                deliver_batch = getattr(client, "deliver_batch", None)
                try:
                    if deliver_batch is not None:
                        deliver_batch(batch)
                    else:
                        for msg in messages:
                            client.deliver(msg)
                except Exception:
                    self._delivery_failed(messages[0], client)
            # Every member gets every message once (its sender its own copy, counted when it
            # was delivered): the room's fan-out counts say how many by protocol.
            sent = 0
            for protocol, n in room.fanout():
                sent += n
                by_protocol[protocol] = by_protocol.get(protocol, 0) + n * len(messages)
            self.stats["deliveries"] += (sent - 1) * len(messages)
            for msg in messages:
                protocol = getattr(msg.origin, "protocol", "?")
                by_protocol[protocol] -= 1

    def _deliver_rest(self, client: Any, messages: list[Message], start: int) -> None:
        """The messages from ``start`` on that ``client`` did not send itself."""
        rest = tuple(m for m in messages[start:] if m.origin is not client)
        if not rest:
            return
        deliver_batch = getattr(client, "deliver_batch", None)
        try:
            if deliver_batch is not None:
                deliver_batch(MessageBatch(messages=rest))
            else:
                for msg in rest:
                    client.deliver(msg)
        except Exception:
            self._delivery_failed(rest[0], client)

    def _deliver_one(self, client: Any, event: Event) -> None:
        try:
            client.deliver(event)
        except Exception:
            self._delivery_failed(event, client)

    def _send(
        self,
        clients: Iterable[Any],
        event: Event,
        fanout: Sequence[tuple[str, int]] | None = None,
    ) -> None:
        """Deliver ``event`` to each client.  ``fanout``, when given, is how many of
        ``clients`` each protocol has (a room's cached counts); otherwise they are counted here."""
        if self._batched:
            # Anything else said or done keeps its place after the batched messages.
            self._flush_batches()
        count = 0
        by_protocol = self.deliveries_by_protocol
        if fanout is None:
            for client in clients:
                count += 1
                protocol = getattr(client, "protocol", "?")
                by_protocol[protocol] = by_protocol.get(protocol, 0) + 1
                try:
                    client.deliver(event)
                except Exception:
                    # One broken connection must not stop the others from getting the event.
                    self._delivery_failed(event, client)
        else:
            for client in clients:
                count += 1
                try:
                    client.deliver(event)
                except Exception:
                    self._delivery_failed(event, client)
            for protocol, n in fanout:
                by_protocol[protocol] = by_protocol.get(protocol, 0) + n
        self.stats["deliveries"] += count

    def _delivery_failed(self, event: Event, client: Any) -> None:
        self.log.failure(
            "delivering {event} to {client}", event=type(event).__name__, client=client
        )


class _PendingRoom:
    """A room's messages waiting for the end of the turn, and, for each sender's
    connection, how many of them it already has (what came before its own message, when it
    sees its own messages)."""

    __slots__ = ("delivered", "messages")

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.delivered: dict[int, int] = {}


def _unique(first: Iterable[Any], second: Iterable[Any]) -> list[Any]:
    out = list(first)
    seen = {id(c) for c in out}
    out.extend(c for c in second if id(c) not in seen)
    return out


# Quit reasons (lowercased) that protocols give when they close a connection for flooding or
# for not reading its output, counted in ChatService.drops.
DROP_REASONS: dict[str, str] = {
    "excess flood": "flood",
    "sendq exceeded": "slow_reader",
    "output backlog full": "slow_reader",
}


def _banned_text(ban: ServerBan) -> str:
    return "You are banned from this server" + (f": {ban.reason}" if ban.reason else "")
