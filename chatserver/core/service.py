"""ChatService: the one API that protocols call.

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
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, fail, inlineCallbacks
from twisted.logger import Logger

from chatserver.core.accounts import AccountManager
from chatserver.core.always_on import AlwaysOn
from chatserver.core.archive import Archive
from chatserver.core.blocking import Blocking
from chatserver.core.delivery import Delivery, unique_clients
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
)
from chatserver.core.events import (
    Away,
    DropKind,
    Invite,
    Join,
    Kick,
    Message,
    MessageKind,
    MessageRun,
    NickChange,
    Part,
    Presence,
    Quit,
    RealnameChange,
    ServerNotice,
    Topic,
    Wallops,
    Who,
)
from chatserver.core.handover import Handover
from chatserver.core.history import HistoryLog
from chatserver.core.identity import Identity
from chatserver.core.interfaces import (
    IBlockStore,
    IChatClient,
    IClusterLink,
    IHistoryStore,
    IRoomStore,
    IServerBanStore,
)
from chatserver.core.limits import AddressSet, canonical_address
from chatserver.core.metadata import Metadata
from chatserver.core.modes import RoomModes
from chatserver.core.names import casefold, check_nick, is_valid_room, room_key
from chatserver.core.redaction import Redactions
from chatserver.core.relaying import Relaying
from chatserver.core.renaming import RoomRenaming
from chatserver.core.replica import Replica
from chatserver.core.rooms import Member, Room
from chatserver.core.server_bans import ServerBans, banned_text
from chatserver.core.settings import CoreSettings
from chatserver.core.tagging import Tagging
from chatserver.core.users import Connection, NickTable, User
from chatserver.core.views import JoinResult, Views

# Cloaks remembered (by address) before the memory of them starts again.
_CLOAKS_KEPT = 4096


class ChatService(
    Identity,
    RoomModes,
    ServerBans,
    HistoryLog,
    Archive,
    AlwaysOn,
    Delivery,
    Views,
    Blocking,
    RoomRenaming,
    Redactions,
    Tagging,
    Metadata,
    Replica,
    Handover,
    Relaying,
):
    """The core's one entry point.

    Its parts live in modules of their own, each with its own state: fan-out and delivery
    (:mod:`~chatserver.core.delivery`), history write-behind (:mod:`~chatserver.core.history`),
    modes (:mod:`~chatserver.core.modes`), server bans (:mod:`~chatserver.core.server_bans`),
    accounts and nick enforcement (:mod:`~chatserver.core.identity`), block lists
    (:mod:`~chatserver.core.blocking`), redaction (:mod:`~chatserver.core.redaction`), tags
    without text (:mod:`~chatserver.core.tagging`), metadata (:mod:`~chatserver.core.metadata`),
    always-on accounts (:mod:`~chatserver.core.always_on`), what other nodes of a cluster
    changed (:mod:`~chatserver.core.replica`), an account's user handed between nodes
    (:mod:`~chatserver.core.handover`), clients handed between nodes
    (:mod:`~chatserver.core.relaying`).
    This module keeps the
    tables they share (connections, users, rooms) and what changes them: connections and
    nicks, rooms, messages, presence.
    """

    log = Logger()

    def __init__(
        self,
        settings: CoreSettings,
        *,
        clock: Any,
        accounts: AccountManager,
        room_store: IRoomStore,
        history_store: IHistoryStore,
        ban_store: IServerBanStore | None = None,
        block_store: IBlockStore | None = None,
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
        self._init_views()
        self.connections: dict[int, Connection] = {}
        self.by_account: dict[str, User] = {}
        self.whowas_log: deque[tuple[Who, float]] = deque(maxlen=2000)
        self.server_who = Who(nick=settings.server_name, ident="", host=settings.server_name)
        self.started_at = clock.seconds()
        self.max_users_seen = 0
        self.logins_by_protocol: dict[str, int] = {}
        # (protocol, drop kind) -> connections the server closed for flooding or for not
        # reading their output, as the protocols say when they quit (``quit(dropped=...)``).
        self.drops: dict[tuple[str, str], int] = {}
        self._conn_ids = itertools.count(1)
        # Message ids: this run's random prefix and a hex count, made by one C-level
        # iterator (one per message, so no Python formatting call for each).
        self._msg_ids: Iterator[str] = map(
            (os.urandom(5).hex() + "{:x}").format, itertools.count(1)
        )
        secret = settings.cloak_secret.encode() or os.urandom(16)
        self._cloak_key = hashlib.sha256(b"cloak:" + secret).digest()
        # Cloaks made lately, by address: a burst of connections from few addresses (a
        # gateway, a bouncer, a reconnecting network) would make each one's HMAC again.
        self._cloaks: dict[str, str] = {}
        self._per_address: dict[str, int] = {}
        self._limit_exempt = AddressSet(settings.address_limit_exempt)
        self._stopping = False
        # Cluster mode (chatserver.cluster): told of what this process's users do.
        self.cluster: IClusterLink | None = None
        self._init_delivery(end_of_turn)
        self._init_history()
        self._init_archive()
        self._init_always_on()
        self._init_server_bans(ban_store)
        self._init_blocking(block_store)
        self._init_identity()
        self._init_metadata()
        self._init_relaying()

    # -- lifecycle -------------------------------------------------------------------------

    @inlineCallbacks
    def start(self):
        """Load registered rooms (with their recent history), server bans, the accounts'
        names and block lists from the store."""
        yield self._load_server_bans()
        yield self.accounts.load_names()
        yield self._load_blocks()
        records = yield self.room_store.load_rooms()
        for record in records:
            room = Room.from_record(record, self.settings.history_in_memory)
            self.rooms[room.name] = room
        yield DeferredList(
            [self._load_recent(room) for room in self.rooms.values()], consumeErrors=True
        )
        yield self._load_always_on()
        yield self._load_archive_prefs()
        self._start_expiry()
        self.log.info("core started: {rooms} registered rooms loaded", rooms=len(records))

    @inlineCallbacks
    def shutdown(self, reason: str = "Server shutting down"):
        """Tell every connection, close them all, and write pending history."""
        self._stopping = True
        always_on = self._stop_always_on()
        for conn in list(self.connections.values()):
            try:
                conn.client.disconnect(reason)
            except Exception:
                self.log.failure("disconnecting {conn}", conn=conn)
        for user in self.users:
            if user.enforce_timer is not None and user.enforce_timer.active():
                user.enforce_timer.cancel()
        if self._expiry_call is not None and self._expiry_call.active():
            self._expiry_call.cancel()
        yield always_on
        yield self.flush_history()

    # -- connections and nicks -------------------------------------------------------------

    def connect(self, client: IChatClient) -> Connection:
        """Attach a new connection (no nick yet); raises LimitExceeded past the per-address cap."""
        conn = Connection(client, next(self._conn_ids), self.clock.seconds())
        if self.config_bans or self.runtime_bans:
            # A host ban names the address or its cloak: both are known before anything else.
            ban = self.server_ban_for(conn.address, cloak=self.cloak(conn.address))
            if ban is not None:
                raise Banned(banned_text(ban), ban.mask)
        limit = self.settings.max_connections_per_address
        count = self._per_address.get(conn.address, 0)
        if limit > 0 and count >= limit and conn.address not in self._limit_exempt:
            raise LimitExceeded(f"too many connections from your address (limit {limit})")
        self._per_address[conn.address] = count + 1
        self.connections[conn.id] = conn
        return conn

    def readdress(self, conn: Connection, address: str) -> None:
        """A trusted gateway (IRC WEBIRC) says whom ``conn`` really serves: from now on it
        counts as connected from ``address`` (server bans and the per-address limit apply
        there).  Raises Banned or LimitExceeded, and then changes nothing."""
        if address == conn.address:
            return
        if self.config_bans or self.runtime_bans:
            ban = self.server_ban_for(address, cloak=self.cloak(address))
            if ban is not None:
                raise Banned(banned_text(ban), ban.mask)
        limit = self.settings.max_connections_per_address
        count = self._per_address.get(address, 0)
        if limit > 0 and count >= limit and address not in self._limit_exempt:
            raise LimitExceeded(f"too many connections from your address (limit {limit})")
        old = self._per_address.get(conn.address, 1) - 1
        if old > 0:
            self._per_address[conn.address] = old
        else:
            self._per_address.pop(conn.address, None)
        self._per_address[address] = count + 1
        conn.address = address

    def cloak(self, address: str) -> str:
        """A stable host that stands for ``address`` without revealing it: the same on every
        protocol, so that a ban on a cloak keeps its address out whatever protocol it uses."""
        cloak = self._cloaks.get(address)
        if cloak is None:
            if len(self._cloaks) >= _CLOAKS_KEPT:
                self._cloaks.clear()
            digest = hmac.new(
                self._cloak_key, canonical_address(address).encode(), hashlib.sha256
            ).hexdigest()
            cloak = self._cloaks[address] = f"{digest[:10]}.cloak"
        return cloak

    def cloak_fingerprint(self) -> str:
        """Stands for the cloak secret without revealing it: processes that must make the
        same cloaks (a cluster's nodes) compare these."""
        return hmac.new(self._cloak_key, b"cloak fingerprint", hashlib.sha256).hexdigest()[:32]

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
            self._refuse_if_elsewhere(existing, None)
            if existing is not None:
                self._attach(conn, existing)
                return existing
        check_nick(nick)
        holder = self.users.get(nick)
        if holder is not None:
            raise NickInUse(holder.nick)
        self._check_claim(nick, conn.account)
        if self.cluster is not None:
            self.cluster.check_claim(nick)
        now = self.clock.seconds()
        user = User(
            nick,
            ident=(ident or nick)[:16],
            host=self.cloak(conn.address),
            realname=realname[: self.settings.realname_max],
            now=now,
        )
        self.users.add(user)
        self.max_users_seen = max(self.max_users_seen, len(self.users))
        self._attach(conn, user)
        if conn.account is not None:
            user.account = conn.account
            self.by_account[casefold(conn.account)] = user
        online = Presence(ts=now, who=user.who(), online=True)
        if self.cluster is not None:
            self.cluster.local_event(online)
        self._observe(online)
        self._check_enforcement(user)
        self._deliver_offline(conn)
        return user

    def _attach(self, conn: Connection, user: User) -> None:
        conn.user = user
        user.connections.append(conn)
        for room in user.rooms.values():
            room.members_changed()
        self._resume(conn, user)

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
        if casefold(new_nick) != user.key and user.node is None:
            self._check_claim(new_nick, user.account)
            if self.cluster is not None:
                self.cluster.check_claim(new_nick)
        self._rename_user(user, new_nick, origin=conn.client)

    def _rename_user(self, user: User, new_nick: str, origin: IChatClient | None = None) -> None:
        old = user.who()
        audience = self._audience(user)
        self.whowas_log.append((old, self.clock.seconds()))
        self.users.rename(user, new_nick)
        self._always_on_changed(user)
        now = self.clock.seconds()
        change = NickChange(ts=now, who=old, new_nick=new_nick, origin=origin)
        if self.cluster is not None and user.node is None:
            self.cluster.local_event(change)
        self._send(audience, change)
        # A user of another node (cluster mode): its node records what it does.
        if user.node is None:
            for key in user.rooms:
                self._record_event(key, "nick", old, now, new_nick)
        if casefold(old.nick) != casefold(new_nick):
            # A change of case only is the same nick: nobody went offline or came online.
            self._observe(Presence(ts=now, who=old, online=False))
            self._observe(Presence(ts=now, who=user.who(), online=True))
        self._check_enforcement(user)

    def quit(self, conn: Connection, reason: str = "", *, dropped: DropKind | None = None) -> None:
        """A connection has closed (or asked to quit).  Safe to call more than once.

        ``dropped`` says that the server closed it for flooding or for not reading its output
        (counted in ``drops``); ``reason`` is only the text others are shown.
        """
        if self.connections.pop(conn.id, None) is None:
            return
        if dropped is not None:
            key = (conn.protocol, dropped)
            self.drops[key] = self.drops.get(key, 0) + 1
        count = self._per_address.get(conn.address, 1) - 1
        if count > 0:
            self._per_address[conn.address] = count
        else:
            self._per_address.pop(conn.address, None)
        user = self._detach(conn)
        if (
            user is not None
            and not user.connections
            and not self._kept_for_arrival(user, reason)
            and not self._keep_detached(user)
        ):
            self._user_gone(user, reason)

    def _user_gone(self, user: User, reason: str) -> None:
        who = user.who()
        now = self.clock.seconds()
        if self.cluster is not None and user.node is None:
            self.cluster.local_event(Quit(ts=now, who=who, reason=reason))
        if not self._stopping:
            # At shutdown everyone is told once; a QUIT per user to everyone left would be N².
            self._send_quit(user, Quit(ts=now, who=who, reason=reason))
        for room in list(user.rooms.values()):
            if user.node is None:
                self._record_event(room.name, "quit", who, now, reason)
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
        self.kill_user(nick, f"Killed by {actor.nick}: {reason}")

    def kill_user(self, nick: str, reason: str) -> str:
        """Disconnect every connection of ``nick``, telling them (and others) ``reason``;
        returns the nick as it was.  Raises NoSuchNick."""
        target = self._find(nick)
        self._end_connections(list(target.connections), reason)
        if target.account is not None:
            # An always-on user is killed too, not kept without connections.
            self._drop_detached(casefold(target.account), reason)
        return target.nick

    def _end_connections(self, conns: Iterable[Connection], reason: str) -> list[str]:
        """Disconnect each of ``conns`` still open with ``reason``; returns their nicks."""
        gone: list[str] = []
        for conn in conns:
            if conn.id not in self.connections:
                continue
            user = conn.user
            if user is not None and user.nick not in gone:
                gone.append(user.nick)
            try:
                conn.client.disconnect(reason)
            except Exception:
                self.log.failure("disconnecting {conn}", conn=conn)
            # The client's disconnect usually quits too; this makes sure, and is a no-op then.
            self.quit(conn, reason)
        return gone

    # -- rooms -----------------------------------------------------------------------------

    def join(self, conn: Connection, name: str, key: str | None = None) -> JoinResult:
        """Join (creating the room if needed: the creator becomes operator)."""
        user = self._user(conn)
        rk = room_key(name)
        room = self.rooms.get(rk)
        if room is not None and user in room.members:
            return JoinResult(room, already_member=True)
        if len(user.rooms) >= self.settings.max_rooms_per_user:
            raise JoinRefused(rk, JoinRefused.TOO_MANY_ROOMS, "you have joined too many rooms")
        if self.cluster is not None and user.node is None:
            self.cluster.check_join(rk)
        now = self.clock.seconds()
        created = room is None
        if room is None:
            room = Room(rk, now, self.settings.history_in_memory)
            self.rooms[rk] = room
            self._load_recent(room)
        elif user.node is None:
            # A user of another node was checked there (with the key given there): each
            # node takes the join as it was decided, so that every node has the same members.
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
        self._always_on_changed(user)
        join = Join(ts=now, room=rk, who=user.who(), origin=conn.client, created=created)
        if self.cluster is not None and user.node is None:
            self.cluster.local_event(join)
        self._send_membership(room, user, join, was_member=False)
        if user.node is None:
            self._record_event(rk, "join", join.who, now)
        return JoinResult(room, created=created)

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
        part = Part(
            ts=self.clock.seconds(),
            room=room.name,
            who=user.who(),
            reason=reason,
            origin=conn.client,
        )
        if self.cluster is not None and user.node is None:
            self.cluster.local_event(part)
        self._send_membership(room, user, part, was_member=True)
        if user.node is None:
            self._record_event(room.name, "part", part.who, part.ts, reason)
        self._remove_member(room, user)

    def _remove_member(self, room: Room, user: User) -> None:
        room.members.pop(user, None)
        room.members_changed()
        user.rooms.pop(room.name, None)
        self._always_on_changed(user)
        if not room.members and not room.registered:
            self.rooms.pop(room.name, None)
            self._forget_room_metadata(room.name)

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
        topic = Topic(
            ts=now,
            room=room.name,
            who=user.who(),
            text=room.topic,
            origin=conn.client,
            id=self._new_id(),
        )
        room.topic_id = topic.id
        if self.cluster is not None and user.node is None:
            self.cluster.room_changed(room.name, topic.who)
        self._send(room.clients(), topic)
        self._record_event(room.name, "topic", topic.who, now, topic.text, msgid=topic.id)
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
            origin=conn.client,
        )
        if self.cluster is not None and user.node is None:
            self.cluster.local_event(event)
        self._send(room.clients(), event)
        if user.node is None:
            self._record_event(
                room.name, "kick", event.who, event.ts, event.reason, event.target.nick
            )
        self._remove_member(room, target)

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
        if self._blocks_sender(target, user):
            # Dropped without a word, as a blocked private message is.
            return target
        room.invited.add(target.key)
        event = Invite(
            ts=self.clock.seconds(),
            room=room.name,
            who=user.who(),
            target=target.nick,
            origin=conn.client,
        )
        if self.cluster is not None and user.node is None:
            # Its node lets the user join, and tells its connections.
            self.cluster.local_event(event)
        self._send(unique_clients(room.clients(), target.clients()), event)
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
        if self.cluster is not None:
            self.cluster.room_changed(room.name, user.who())
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
        if self.cluster is not None:
            self.cluster.room_changed(room.name, user.who())
        if not room.members:
            self.rooms.pop(room.name, None)
            self._forget_room_metadata(room.name)
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
        account: str | None = None,
        native: Any = None,
        msgid: str | None = None,
        ts: float | None = None,
    ) -> Message:
        """Send a message to a room, to a nick, or to the user logged in to ``account`` (an
        address that belongs to an account reaches no one else); returns the Message that
        was delivered.

        ``native`` is the message in the sender's protocol, carried on the Message untouched
        for recipients on that protocol (see ``Message.native``).  ``msgid`` and ``ts`` are
        those a user of another node's message was given there (cluster mode): its node
        stores it, so it is not stored again here.
        """
        user = self._user(conn)
        if not text:
            raise ChatError("no text to send")
        now = self.clock.seconds() if ts is None else ts
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
            if self.store_failing and status is None and user.node is None:
                # Another node's user's message was accepted there: its node stores it.
                self._check_unstored()
            if "no_ctcp" in r.flags and kind != "action" and text.startswith("\x01"):
                # CTCP (other than an action) is IRC's; a room may refuse it for everyone.
                raise CannotSend(r.name, "CTCP is not allowed in this room")
            msg = Message(
                ts=now,
                id=msgid or self._new_id(),
                source=who,
                text=text,
                kind=kind,
                room=r.name,
                tags=tags,
                status=status,
                origin=conn.client,
                native=native,
            )
            if user.node is None:
                # Stored, then published, before anyone is shown it: in cluster mode the
                # sender's answer waits for Redis to take it (see IChatClient.hold_output).
                if status is None:
                    self._record(r, msg)
                if self.cluster is not None:
                    nodes = r.nodes()
                    if nodes:
                        self.cluster.publish_message(msg, nodes)
            elif status is None:
                # Its own node stores it; here it joins the room's recent history only.
                r.remember(msg)
            if status is None and member is not None:
                # The hot path: a member's message to the whole room.
                if self._batch_depth:
                    self._batch_message(r, msg)
                else:
                    # The room's cached fan-out counts feed the per-protocol delivery
                    # counters without a lookup per recipient.
                    self._send(r.clients(), msg, r.fanout())
            else:
                if status is not None:
                    clients: Iterable[IChatClient] = [
                        c
                        for u, m in r.members.items()
                        if m.has(status) or u is user
                        for c in u.clients()
                    ]
                else:
                    clients = r.clients()
                if member is None:
                    clients = unique_clients(clients, user.clients())
                self._send(clients, msg)
            return msg
        if account is not None:
            found = self.by_account.get(casefold(account))
            if found is None:
                raise NoSuchNick(account)
            target = found
        elif nick is None:
            raise ChatError("a message needs a room or a nick")
        else:
            target = self._find(nick)
        if (
            self.store_failing
            and user.node is None
            and (user.account is not None or target.account is not None)
        ):
            self._check_unstored()
        msg = Message(
            ts=now,
            id=msgid or self._new_id(),
            source=who,
            text=text,
            kind=kind,
            target=target.nick,
            target_account=target.account,
            tags=tags,
            origin=conn.client,
            native=native,
        )
        if user.node is None and self.cluster is not None:
            # Before anyone is shown it (see the room case above).
            self.cluster.local_event(msg)
        clients = [] if self._blocks_sender(target, user) else list(target.clients())
        if target is not user:
            clients.extend(user.clients())
        self._send(clients, msg)
        if user.node is None:
            self._archive_private(user, target, msg)
        elif target.node is None:
            # From another node's user: this node keeps it in its own user's archive.
            self._archive_private(user, target, msg)
        return msg

    def relay(
        self,
        conn: Connection,
        room: str,
        said: Iterable[tuple[str, MessageKind, tuple[tuple[str, str], ...], str, float, Any]],
    ) -> list[Message]:
        """Messages to ``room`` that a user of another node (``conn``, its stand-in here)
        said there, in order, each as (text, kind, tags, msgid, ts, native): its node checked,
        stored and acknowledged them, so here they reach this node's members and join the
        room's recent history.  What ``say`` does once per message (the user, the room,
        whether it may speak there) is done once for the run, and the run joins the turn's
        batch at once.  Raises as ``say`` does, for the whole run; a CTCP the room refuses
        is left out.  Returns the Messages delivered."""
        user = self._user(conn)
        r = self._room(room)
        member = r.members.get(user)
        self._check_send(r, user, member)
        if member is None or not self._batch_depth or user.node is None:
            # Not a member here (the rooms disagree), outside a read, or a user of this node
            # (stored and published here): one by one.
            said_here = [
                self.say(
                    conn,
                    text=text,
                    room=r.name,
                    kind=kind,
                    tags=tags,
                    msgid=msgid,
                    ts=ts,
                    native=native,
                )
                for text, kind, tags, msgid, ts, native in said
            ]
            if user.node is not None:
                self._count_relayed(r, len(said_here))
            return said_here
        who = user.who()
        name = r.name
        client = conn.client
        no_ctcp = "no_ctcp" in r.flags
        msgs = [
            Message(
                ts=ts,
                id=msgid,
                source=who,
                text=text,
                kind=kind,
                room=name,
                tags=tags,
                origin=client,
                native=native,
            )
            for text, kind, tags, msgid, ts, native in said
            if text and not (no_ctcp and kind != "action" and text.startswith("\x01"))
        ]
        if not msgs:
            return msgs
        last = msgs[-1]
        conn.last_active = last.ts
        for msg in reversed(msgs):
            if msg.kind != "notice":
                user.last_active = msg.ts
                break
        protocol = conn.protocol
        self.messages_by_protocol[protocol] = self.messages_by_protocol.get(protocol, 0) + len(msgs)
        self._count_relayed(r, len(msgs))
        self._batch_relayed(r, msgs)
        for msg in msgs:
            r.remember(msg)
        return msgs

    def relay_run(self, conn: Connection, run: MessageRun) -> MessageRun | list[Message]:
        """A run of messages a user of another node (``conn``, its stand-in here) said to
        ``run.room`` there, as its node sent them (see MessageRun): its node checked,
        stored and acknowledged them.  Here the user must still be allowed to speak in the
        room (checked once); then the run joins the turn's batch of the room and its recent
        history as it is, its messages made only if something here needs them.  Where the
        room here refuses CTCP, or the user is not a member here, outside a read, or of this
        node, the messages are made and go as ``relay`` takes them.  Raises as ``say`` does,
        for the whole run.  Returns the run, or the Messages delivered."""
        user = self._user(conn)
        r = self._room(run.room)
        member = r.members.get(user)
        self._check_send(r, user, member)
        if member is None or not self._batch_depth or user.node is None or "no_ctcp" in r.flags:
            return self.relay(conn, r.name, run.said())
        conn.last_active = run.ts
        if run.active is not None:
            user.last_active = run.active
        protocol = conn.protocol
        self.messages_by_protocol[protocol] = self.messages_by_protocol.get(protocol, 0) + run.count
        self._batch_run(r, run)
        r.remember(run)
        return run

    def _check_send(self, room: Room, user: User, member: Member | None) -> None:
        if member is None and "no_external" in room.flags:
            raise CannotSend(room.name, "you must join the room to send to it")
        voiced = member is not None and member.has("voice")
        if "moderated" in room.flags and not voiced:
            raise CannotSend(room.name, "the room is moderated: only voiced members may speak")
        if not voiced and room.bans:
            who = user.who()
            if room.is_banned(who):
                raise CannotSend(room.name, "you are banned from this room")
            if room.is_muted(who):
                raise CannotSend(room.name, "you are muted in this room")

    def _new_id(self) -> str:
        return next(self._msg_ids)

    # -- presence --------------------------------------------------------------------------

    def set_away(self, conn: Connection, message: str | None) -> None:
        user = self._user(conn)
        if message is not None:
            message = message[: self.settings.away_max] or None
        user.away = message
        user.changed()
        event = Away(ts=self.clock.seconds(), who=user.who(), message=message, origin=conn.client)
        if self.cluster is not None and user.node is None:
            self.cluster.local_event(event)
        self._send(self._audience(user), event)
        # Contact lists (XMPP rosters) follow away states of users they share no room with.
        self._observe(event)

    def set_realname(self, conn: Connection, realname: str) -> None:
        user = self._user(conn)
        user.realname = realname[: self.settings.realname_max]
        user.changed()
        event = RealnameChange(
            ts=self.clock.seconds(), who=user.who(), realname=user.realname, origin=conn.client
        )
        self._send(self._audience(user), event)
        # Notify lists (IRC extended-monitor) follow users they share no room with.
        self._observe(event)

    def wallops(self, conn: Connection, text: str) -> None:
        user = self._user(conn)
        if "oper" not in user.modes:
            raise NotPermitted("only server operators may do that")
        event = Wallops(ts=self.clock.seconds(), who=user.who(), text=text, origin=conn.client)
        if self.cluster is not None and user.node is None:
            self.cluster.local_event(event)
        self._send([c for u in self.users if "wallops" in u.modes for c in u.clients()], event)

    def notice_user(self, user: User, text: str) -> None:
        self._send(user.clients(), ServerNotice(ts=self.clock.seconds(), text=text))

    # -- live settings ---------------------------------------------------------------------

    def apply_settings(self, settings: CoreSettings) -> None:
        """Use new settings from here on (a config reload).  The caller keeps the settings in
        RESTART_ONLY_SETTINGS unchanged: they shaped state that exists already."""
        self.settings = settings
        self.accounts.apply_settings(settings)
        self._limit_exempt = AddressSet(settings.address_limit_exempt)
        self._registrations.capacity = settings.registration_burst
        self._registrations.rate = 1.0 / settings.registration_period

    # -- the operator's console (no connection of its own) --------------------------------

    def kick_by_server(self, name: str, nick: str, reason: str, *, elsewhere: bool = False) -> str:
        """Remove ``nick`` from the room ``name``, shown as done by the server; returns the nick.
        Raises NoSuchRoom, NoSuchNick, NotOnRoom.  ``elsewhere``: another node of a cluster
        did it (and recorded it)."""
        room = self._room(name)
        target = room.find_member(nick)
        if target is None:
            self._find(nick)
            raise NotOnRoom(room.name, nick)
        event = Kick(
            ts=self.clock.seconds(),
            room=room.name,
            who=self.server_who,
            target=target.who(),
            reason=reason[: self.settings.kick_reason_max],
        )
        self._send(room.clients(), event)
        if not elsewhere:
            if self.cluster is not None:
                self.cluster.local_event(event)
            self._record_event(
                room.name, "kick", event.who, event.ts, event.reason, event.target.nick
            )
        self._remove_member(room, target)
        return target.nick

    def notice_everyone(self, text: str, *, elsewhere: bool = False) -> int:
        """A server notice to every connection of every user; returns how many of this
        process's got it (in a cluster every node tells its own, unless ``elsewhere``: another
        node's operator sent it)."""
        clients = [client for user in self.users for client in user.clients()]
        event = ServerNotice(ts=self.clock.seconds(), text=text)
        self._send(clients, event)
        if self.cluster is not None and not elsewhere:
            self.cluster.local_event(event)
        return len(clients)

    # -- users of other nodes (cluster mode) -----------------------------------------------

    def attach_remote(self, client: IChatClient, who: Who, node: str) -> Connection:
        """Make ``who``, a user whose connections are on ``node``, present here through
        ``client`` (a stand-in whose ``deliver`` does nothing: its node delivers to it).
        Rooms, NAMES, WHO and rosters then show it; what it does comes through the usual
        API on the returned connection, and ``quit`` removes it.

        Its node has checked the nick (bans, accounts, the cluster-wide claim), so nothing
        is checked again but that no user here holds it (NickInUse).
        """
        holder = self.users.get(who.nick)
        if holder is not None:
            raise NickInUse(holder.nick)
        now = self.clock.seconds()
        conn = Connection(client, next(self._conn_ids), now)
        self.connections[conn.id] = conn
        user = User(who.nick, ident=who.ident, host=who.host, realname=who.realname, now=now)
        user.node = node
        user.away = who.away
        self.users.add(user)
        self._attach(conn, user)
        if who.account is not None:
            user.account = conn.account = who.account
            self.by_account.setdefault(casefold(who.account), user)
        self._observe(Presence(ts=now, who=user.who(), online=True))
        return conn

    # -- lookups for protocols -------------------------------------------------------------

    def find_user(self, nick: str) -> User | None:
        return self.users.get(nick)

    def find_account_user(self, account: str) -> User | None:
        """The user online logged in to ``account``, or None."""
        return self.by_account.get(casefold(account))

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

    # -- internals -------------------------------------------------------------------------

    def _user(self, conn: Connection) -> User:
        if conn.user is None:
            raise ChatError("choose a nick first")
        return conn.user

    def _room(self, name: str) -> Room:
        # Protocols mostly pass the key itself (IRC and line chat fold the name first): a
        # key of the table is canonical already, so only other names are folded and checked.
        room = self.rooms.get(name)
        if room is not None:
            return room
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
