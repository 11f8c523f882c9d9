"""This process as one node of a cluster: nick claims, publishing, and the other nodes' users.

Redis holds (``prefix`` before each key):

- ``node:<name>``: this node is alive, for ``lease`` seconds from the last heartbeat.
- ``nodes``: the names of the nodes in the cluster.
- ``nick:<casefolded nick>``: the node that owns the nick.  A claim succeeds when the key is
  free, already this node's, or names a node whose ``node:`` key has expired: a dead node's
  nicks free themselves within one lease, and one Lua script does the check and the claim
  together, so no nick is ever owned by two nodes.
- ``events:<name>``: a stream per node of what the other nodes' users do
  (``chatserver.cluster.ops``), each entry with its node, the node's incarnation and a
  sequence number, holding a reactor turn's ops as one array (``ops.pack``): a run of messages gives
  each node it goes to one entry with its share of them, in order, and other ops going to
  the same nodes share an entry.  Presence and membership go to every node, so each core holds every user
  (the other nodes' through stand-in connections) and NAMES, WHO and occupant lists are
  whole; a room message goes only to the nodes with members in the room, a private message
  to its recipient's node.  Each node delivers only to its own connections; a sender's
  messages to one room in a row go as one op with the lines this node rendered of them
  (``ops.encode_run``), which the other nodes' members of the same rendering get as they
  are.

A local action is applied to the local core at once, then published; each node applies its
stream in order, so one sender's events keep their order everywhere, and a room's order is
the same on every node but the sender's own, which showed its user's messages at once.  The
publisher keeps each entry until Redis has answered: entries sent on a connection that is
lost are sent again, in order, once Redis is back (readers drop repeats by sequence number),
so nothing a user was answered for is lost; a reader that comes back reads on from the last
entry it applied.  A local sender is answered only once Redis has taken the entry carrying its
message: its connection's output is held until then (``IChatClient.hold_output``), so what it
saw acknowledged is in another node's hands even if this one dies the next instant.
"""

from __future__ import annotations

import functools
import itertools
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import txredisapi
from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from chatserver.cluster import ops
from chatserver.cluster.accounts import AccountLeases
from chatserver.cluster.link import RedisLink
from chatserver.cluster.relay import Relays
from chatserver.cluster.remote import RemoteClient
from chatserver.cluster.shared import Sharing
from chatserver.core.backlog import Backlog
from chatserver.core.errors import ChatError, NickInUse
from chatserver.core.events import (
    AccountChange,
    Event,
    Join,
    Message,
    MessageRun,
    MetadataChange,
    NickChange,
    Presence,
    Quit,
    Redaction,
    Said,
    TagMessage,
    UserModeChange,
)
from chatserver.core.names import casefold, room_key
from chatserver.core.users import Connection

log = Logger()

# Add a turn's entries in one call.  ARGV: this node, the node key prefix, the streams'
# length, the entries' common head ("node incarnation "), the stream key prefix, the key of
# the set of nodes, then five per entry: its sequence number, a nick key to claim ('' for
# none), one to release (''), the nodes it goes to ('*': every other node; else names
# separated by spaces), its ops (``ops.pack``).  A claim succeeds unless a live node (its node key exists)
# owns the nick; an entry whose claim is refused goes nowhere.  Returns the sequence numbers
# refused.
PUBLISH_SCRIPT = """
local refused = {}
local everyone = nil
for i = 7, #ARGV, 5 do
  local ok = true
  local claim = ARGV[i + 1]
  if claim ~= '' then
    local cur = redis.call('GET', claim)
    if cur and cur ~= ARGV[1] and redis.call('EXISTS', ARGV[2] .. cur) == 1 then
      ok = false
      table.insert(refused, ARGV[i])
    else
      redis.call('SET', claim, ARGV[1])
    end
  end
  if ok then
    local release = ARGV[i + 2]
    if release ~= '' and redis.call('GET', release) == ARGV[1] then
      redis.call('DEL', release)
    end
    local names = {}
    if ARGV[i + 3] == '*' then
      if everyone == nil then
        everyone = redis.call('SMEMBERS', ARGV[6])
      end
      names = everyone
    else
      for name in string.gmatch(ARGV[i + 3], '%S+') do
        table.insert(names, name)
      end
    end
    local entry = ARGV[4] .. ARGV[i] .. ' ' .. ARGV[i + 4]
    for _, name in ipairs(names) do
      if name ~= ARGV[1] then
        redis.call('XADD', ARGV[5] .. name, 'MAXLEN', '~', ARGV[3], '*', 'e', entry)
      end
    end
  end
end
return refused
"""
# Claim every key in KEYS for ARGV[1] as above; returns the (1-based) indexes refused.
RECLAIM_SCRIPT = """
local lost = {}
for i, key in ipairs(KEYS) do
  local cur = redis.call('GET', key)
  if cur and cur ~= ARGV[1] and redis.call('EXISTS', ARGV[2] .. cur) == 1 then
    table.insert(lost, i)
  else
    redis.call('SET', key, ARGV[1])
  end
end
return lost
"""
# Entries kept in a node's stream, at most (about): what a node that lost Redis for a while
# can catch up on by id; one that missed more asks every node for its state instead.
STREAM_LENGTH = 200_000
# Bytes of entries kept in a node's stream, about ([cluster] stream_bytes): a turn's entry of
# a busy node holds hundreds of messages (tens of kB), and 200,000 of them would be gigabytes
# of Redis's memory.  Each XADD trims the stream to as many entries of its own size as fit.
STREAM_BYTES = 128 << 20
# Entries kept however big they are: a reader a few entries behind (a busy node) still
# finds what it has not read.
STREAM_MIN_ENTRIES = 4
# Seconds between a node's checks, between two reads of its stream, that nothing was
# trimmed from it unread: a node stalled (paused, swapping) while the others wrote more
# than the stream keeps would read on past the gap, and what it missed (joins, quits,
# renames) would leave its picture of the others wrong for good.
TRIM_CHECK_INTERVAL = 1.0
READ_COUNT = 1000
# Entries per script call: a long script holds up every other Redis client meanwhile.
PUBLISH_BATCH = 500
# Ops per entry, at most: what one reader decodes in one go.
ENTRY_OPS = 500
READ_BLOCK_MS = 1000
# Seconds between a node's publishes, at least ([cluster] publish_interval).  At a moderate
# load a reactor turn holds a few messages, and each publish (its XADDs and their replies,
# each reader's XREAD reply and the runs it makes: a sender's messages split over two
# entries are two runs) costs as much as they do; waiting gathers several turns' messages
# into one.  After a quieter spell the first goes at once.
PUBLISH_INTERVAL = 0.002
# Room messages kept per other node, newest last: nothing arrives from a node after it dies,
# so these are its last ones, which cover what it had not written yet (one write interval,
# a second by default) up to this many messages a second.
RECENT_MESSAGES = 10_000

# Seconds after a node's key is due to lapse that it is checked.
CHECK_MARGIN = 0.01
# How long a starting node waits, in leases, for the live nodes' state before it takes
# clients anyway (a node that does not answer in that time is busy or dying; its state
# comes when it does).
STATE_WAIT_LEASES = 2
# The cluster's cloak fingerprint key lives this many leases past the last node's heartbeat:
# once every node has stopped, the cluster may start again with another secret.
CLOAK_KEY_LEASES = 3

UNAVAILABLE_NICK = (
    "the cluster cannot confirm new nicks now (Redis is unreachable); try again shortly"
)
UNAVAILABLE_JOIN = "rooms cannot be joined now (Redis is unreachable); try again shortly"


@dataclass(slots=True)
class _Outgoing:
    """One stream entry to publish: ops in order, all going to the same nodes."""

    items: list[ops.Item]
    claim: str | None = None
    release: str | None = None
    # The nodes it goes to: "*" for every other node, else names separated by spaces.
    targets: str = "*"
    # Given when it is first sent, kept when it is sent again (readers drop repeats by it).
    seq: int | None = None
    # A run of messages instead: each node's share, in order; one entry per node is made of
    # it when it is sent.
    by_node: dict[str, list[ops.Item]] | None = None
    # Senders whose output waits for Redis to take this entry and those before it.
    holds: list[Any] | None = None


class ClusterNode(Sharing, AccountLeases, Relays):
    """Implements the core's IClusterLink (``service.cluster``) for one process."""

    def __init__(
        self,
        service: Any,
        *,
        url: str,
        node: str,
        lease: float,
        prefix: str,
        reactor: Any,
        cloak_check: str,
        share_rendered: bool = True,
        publish_interval: float = PUBLISH_INTERVAL,
        stream_bytes: int = STREAM_BYTES,
    ) -> None:
        self.service = service
        # A fingerprint of this node's cloak secret (ChatService.cloak_fingerprint): every
        # node of a cluster must have the same, or one address has a cloak per node.
        self.cloak_check = cloak_check
        self.cloak_key = f"{prefix}:cloak"
        # Why this node may not join the cluster (a cloak secret unlike the others').
        self._refusal: str | None = None
        # Whether room messages go with the lines rendered of them here, and come with
        # those rendered on their node (see ops.encode_run, MessageRun).
        self.share_rendered = share_rendered
        self.publish_interval = publish_interval
        self.stream_bytes = stream_bytes
        self.name = node
        # A restarted node is a new incarnation: the others forget what the old one had.
        self.incarnation = os.urandom(6).hex()
        self.lease = lease
        self.clock = reactor
        self.stream_prefix = f"{prefix}:events:"
        self.stream = self.stream_prefix + node
        self.nodes_key = f"{prefix}:nodes"
        self.node_prefix = f"{prefix}:node:"
        self.nick_prefix = f"{prefix}:nick:"
        self._seq = itertools.count(1)
        self._pending: deque[_Outgoing] = deque()
        self._inflight: dict[int, _Outgoing] = {}
        # Local users' room messages said since the last entry was made, in order, and the
        # nodes each goes to (see publish_message and _seal).
        self._unsealed: list[ops.Item] = []
        self._unsealed_to: list[tuple[str, ...]] = []
        self._flush_scheduled = False
        # When the last publish went (see _schedule).
        self._last_pump = 0.0
        # CPU seconds spent making entries and sending them (see cpu_seconds).
        self._publish_cpu = 0.0
        # The local senders of this turn's messages (id -> client), their output held until
        # Redis has taken the turn's entries: what a sender is answered for is then in
        # another node's hands (the stream), even if this node dies the next instant.
        self._holding: dict[int, Any] = {}
        # The sender held last this turn (publish_message).
        self._held_last: Any = None
        # Entries start with this, then the sequence number and the op (see PUBLISH_SCRIPT).
        self._head = f"{node} {self.incarnation} "
        # A nick whose claim was refused -> the nick the user had before (None: it had none
        # the other nodes know), while the user is being renamed away from it.
        self._unconfirmed: dict[str, str | None] = {}
        self._sha: dict[str, str] = {}
        # Set once this node's claims are confirmed after a (re)connection; None while not.
        self._up_since: float | None = None
        self._last_id: str | None = None
        # When the stream was last checked for entries trimmed unread (see _read), and how
        # many entries it had been given up to the last one read here (None: not known).
        self._trim_checked = 0.0
        self._read_count: int | None = None
        # Whether entries were read since the last check: a read that found nothing new
        # means nothing was added after the last entry read (a trim keeps the newest
        # entries), so nothing can have been trimmed unread, and an idle node does not
        # check (a round trip a second, and Redis's reply, for nothing).
        self._read_since_check = False
        # node -> {nick key -> stand-in connection}
        self._remote: dict[str, dict[str, Connection]] = {}
        # node -> (incarnation, last sequence number applied)
        self._seen: dict[str, tuple[str, int]] = {}
        # node -> its last room messages applied here, for storing if it dies unwritten (its
        # runs kept as they came: made only then)
        self._recent: dict[str, Backlog] = {}
        # node -> when an entry of it was last applied: a node that is heard from is alive,
        # even if it was too busy to renew its key in time.
        self._heard: dict[str, float] = {}
        # node -> the check of it due when its key lapses before the next heartbeat.
        self._checks: dict[str, Any] = {}
        self._stopping = False
        self._ready_waiters: list[defer.Deferred[None]] = []
        # At start: the live nodes whose state has not come yet (None: not asked yet).  A
        # node takes no clients before it knows the others' users and rooms, or a room's
        # first message here would miss their members (the room's nodes unknown).
        self._awaiting: set[str] | None = None
        self._state_wait: Any = None
        self._commands = RedisLink(
            url, reactor, on_up=self._commands_up, on_down=self._commands_down, name="commands"
        )
        self._reader = RedisLink(
            url, reactor, on_up=self._reader_up, on_down=lambda: None, name="stream", binary=True
        )
        self._heartbeat = LoopingCall(self._beat)
        self._heartbeat.clock = reactor
        self._handlers: dict[str, Callable[[str, Any], None]] = {
            "user": self._on_user,
            "nick": self._on_nick,
            "quit": self._on_quit,
            "join": self._on_join,
            "part": self._on_part,
            "kick": self._on_kick,
            "away": self._on_away,
            "msg": self._on_msg,
            "state": self._on_state,
            "sync": self._on_sync,
            "bye": self._on_bye,
            "kill": self._on_kill,
            "room": self._on_room,
            "invite": self._on_invite,
            "account": self._on_account,
            "tag": self._on_tag,
            "login": self._on_login,
            "kline": self._on_kline,
            "rename": self._on_rename,
            "meta": self._on_meta,
            "notice": self._on_notice,
            "redact": self._on_redact,
            "umode": self._on_umode,
            "wallops": self._on_wallops,
        }
        self._init_sharing()
        self._init_accounts(prefix)
        self._handlers.update(self.account_handlers)
        self._init_relays()
        self._handlers.update(self.relay_handlers)

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def up(self) -> bool:
        return self._up_since is not None

    def start(self) -> None:
        self.service.cluster = self
        self._commands.start()
        self._reader.start()
        self._heartbeat.start(self.lease / 3, now=False)

    def when_ready(self) -> defer.Deferred[None]:
        """Fires once Redis has answered and every live node's state has come (or a node
        has been waited for STATE_WAIT_LEASES leases); errbacks ClusterRefused when this
        node's cloak secret differs from the cluster's."""
        if self._refusal is not None:
            return defer.fail(ClusterRefused(self._refusal))
        if self._ready():
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self._ready_waiters.append(d)
        return d

    def _ready(self) -> bool:
        return self.up and self._awaiting is not None and not self._awaiting

    def _check_ready(self) -> None:
        if not self._ready():
            return
        if self._state_wait is not None and self._state_wait.active():
            self._state_wait.cancel()
        waiters, self._ready_waiters = self._ready_waiters, []
        for d in waiters:
            d.callback(None)

    async def _await_states(self, proto: Any) -> None:
        """Note the live nodes (listed, heartbeat key present) whose state to wait for."""
        listed = await proto.execute_command("SMEMBERS", self.nodes_key)
        awaiting = set()
        for raw in listed or ():
            name = raw.decode() if isinstance(raw, bytes) else str(raw)
            if name != self.name and await proto.execute_command("EXISTS", self.node_prefix + name):
                awaiting.add(name)
        self._awaiting = awaiting
        if awaiting:
            self._state_wait = self.clock.callLater(
                STATE_WAIT_LEASES * self.lease, self._stop_awaiting
            )
        self._check_ready()

    def _not_awaiting(self, node: str) -> None:
        """``node`` sent its state, or is lost: a starting node waits for it no more."""
        if self._awaiting:
            self._awaiting.discard(node)
            self._check_ready()

    def _stop_awaiting(self) -> None:
        if self._awaiting:
            log.warn(
                "cluster: no state yet from node(s) {nodes}; taking clients without it",
                nodes=" ".join(sorted(self._awaiting)),
            )
            self._awaiting = set()
        self._check_ready()

    async def stop(self) -> None:
        """Tell the others this node's users are gone, give up the heartbeat, disconnect."""
        if self._heartbeat.running:
            self._heartbeat.stop()
        if self._state_wait is not None and self._state_wait.active():
            self._state_wait.cancel()
        for check in self._checks.values():
            if check.active():
                check.cancel()
        self._checks.clear()
        if self.up:
            self._publish({"k": "bye"})
            # Now, not at the end of the turn: the links close before that.
            self._pump()
            proto = self._commands.proto
            if proto is not None:
                try:
                    await proto.execute_command("SREM", self.nodes_key, self.name)
                    await proto.execute_command("DEL", self.node_prefix + self.name)
                except Exception:
                    log.failure("redis: giving up the heartbeat")
        self._stopping = True
        # Relayed clients' sockets here are told, as the service tells its own; the others
        # learn from "bye" that this node's relays are gone.
        self._end_relays(None, "Server shutting down")
        await self._commands.stop()
        await self._reader.stop()

    # -- what the core asks (IClusterLink) ---------------------------------------------------

    def check_claim(self, nick: str) -> None:
        if not self.up:
            raise ChatError(UNAVAILABLE_NICK)

    def check_join(self, room: str) -> None:
        if not self.up:
            raise ChatError(UNAVAILABLE_JOIN)

    def local_event(self, event: Event) -> None:
        if self._stopping:
            return
        if type(event) is Message:
            # No other kind to test, no claim (a room's message comes by publish_message).
            nodes = self._message_nodes(event)
            if nodes:
                self.publish_message(event, nodes)
            return
        secure = False
        modes: frozenset[str] = frozenset()
        if isinstance(event, (Presence, UserModeChange)):
            user = self.service.find_user(event.who.nick)
            if user is not None:
                secure, modes = user.secure, user.modes
        elif isinstance(event, (Quit, AccountChange)):
            self._account_event(event)
        op = ops.encode(event, secure, modes)
        if op is None:
            return
        if isinstance(event, MetadataChange):
            assert isinstance(op, dict)
            self._stamp_metadata(op)
        targets = "*"
        if isinstance(event, Message):
            nodes = self._message_nodes(event)
            if nodes:
                self.publish_message(event, nodes)
            return
        if isinstance(event, Join) and event.created:
            self._founded_here(event)
        if isinstance(event, (TagMessage, Redaction)):
            targets = " ".join(self._message_nodes(event))
            if not targets:
                return
        claim = release = None
        if isinstance(event, NickChange) and event.who.key in self._unconfirmed:
            # Renamed away from a nick the others never saw it take.
            before = self._unconfirmed[event.who.key]
            user = self.service.find_user(event.new_nick)
            if user is None:
                return
            if before is None:
                online = Presence(ts=event.ts, who=user.who(), online=True)
                first = ops.encode(online, user.secure, user.modes)
                assert first is not None
                op = first
            else:
                op = {"k": "nick", "nick": before, "new": event.new_nick}
            self._publish(op, self._nick_key(event.new_nick))
            return
        if isinstance(event, Presence):
            claim = self._nick_key(event.who.nick)
        elif isinstance(event, NickChange):
            if casefold(event.new_nick) != event.who.key:
                claim = self._nick_key(event.new_nick)
                release = self._nick_key(event.who.nick)
        elif isinstance(event, Quit):
            release = self._nick_key(event.who.nick)
        self._publish(op, claim, release, targets)

    def _message_nodes(self, msg: Message | TagMessage | Redaction) -> tuple[str, ...]:
        """The nodes with someone to deliver ``msg`` to: a room's, or the recipient's."""
        if msg.room is not None:
            room = self.service.rooms.get(msg.room)
            return room.nodes() if room is not None else ()
        target = self.service.find_user(msg.target) if msg.target is not None else None
        return () if target is None or target.node is None else (target.node,)

    # -- publishing ------------------------------------------------------------------------

    def _nick_key(self, nick: str) -> str:
        return self.nick_prefix + casefold(nick)

    def _publish(
        self,
        op: ops.Op,
        claim: str | None = None,
        release: str | None = None,
        targets: str = "*",
    ) -> None:
        # After the messages said before it.
        self._seal()
        pending = self._pending
        last = pending[-1] if pending else None
        if (
            last is not None
            and last.by_node is None
            and claim is None
            and release is None
            and last.seq is None
            and last.claim is None
            and last.release is None
            and last.targets == targets
            and len(last.items) < ENTRY_OPS
        ):
            # Joins the entry before it, which goes to the same nodes: order is kept, and
            # Redis and the readers handle one entry for the turn.  An entry with a claim
            # stays alone: a refused claim drops only its own op.
            last.items.append(op)
        else:
            pending.append(_Outgoing([op], claim, release, targets))
        self._schedule()

    def publish_message(self, msg: Message, nodes: tuple[str, ...]) -> None:
        """A local user's message, for ``nodes``: kept as it is with the turn's others until
        they are made into entries (``_seal``).  It runs once per message said, so it only
        appends."""
        if self._stopping:
            return
        self._unsealed.append(msg)
        self._unsealed_to.append(nodes)
        if not self._flush_scheduled:
            self._schedule()
        # Its sender is answered once Redis has taken it (see _pump).  A turn's messages
        # come sender by sender: its last one's sender is held already.
        origin = msg.origin
        if origin is not self._held_last and self._up_since is not None:
            self._held_last = origin
            holding = self._holding
            if id(origin) not in holding:
                holding[id(origin)] = origin
                origin.hold_output()

    def _seal(self) -> None:
        """The messages said since the last entry (publish_message) as entries, after what
        was published before them: messages in a row are gathered by the node they go to
        (whichever rooms, and so sets of nodes, they are for), each node getting one entry
        per ``ENTRY_OPS`` of them, in the order they were said (encoded when the entry is
        packed: see ops.pack)."""
        waiting = self._unsealed
        if not waiting:
            return
        to = self._unsealed_to
        self._unsealed = []
        self._unsealed_to = []
        pending = self._pending
        for start in range(0, len(waiting), ENTRY_OPS):
            if len(waiting) > ENTRY_OPS:
                msgs = waiting[start : start + ENTRY_OPS]
                nodes = to[start : start + ENTRY_OPS]
            else:
                msgs, nodes = waiting, to
            first = nodes[0]
            by_node: dict[str, list[ops.Item]]
            if nodes.count(first) == len(nodes):
                # Every message to the same nodes (with two nodes, always): one list for all
                # of them (entries only read it).
                by_node = dict.fromkeys(first, msgs)
            else:
                by_node = {}
                for msg, targets in zip(msgs, nodes, strict=True):
                    for node in targets:
                        share = by_node.get(node)
                        if share is None:
                            by_node[node] = [msg]
                        else:
                            share.append(msg)
            pending.append(_Outgoing([], by_node=by_node))

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds of this node's own cluster work since it started, by part: making
        the entries of what it publishes and sending them (``publish``), the replies on its
        commands connection and what they run (``commands``: the answers to its publishes,
        claims, heartbeats), and reading the other nodes' entries and applying them here
        (``stream``).  What one process does as well (rendering and delivering messages)
        and the socket writes the reactor makes are not in it."""
        return {
            "publish": self._publish_cpu,
            "commands": self._commands.cpu_seconds,
            "stream": self._reader.cpu_seconds,
        }

    def _schedule(self) -> None:
        if not self._flush_scheduled:
            # Everything of this reactor turn goes in one call: one round trip, one reply;
            # and what later turns add, until publish_interval has passed since the last.
            self._flush_scheduled = True
            wait = self._last_pump + self.publish_interval - self.clock.seconds()
            # The reactor's clock is the wall clock: after it steps back, the last publish
            # seems to lie ahead, and the wait is never more than the interval.
            self.clock.callLater(min(max(wait, 0), self.publish_interval), self._pump)

    def _pump(self) -> None:
        self._flush_scheduled = False
        self._last_pump = self.clock.seconds()
        holds = list(self._holding.values())
        self._held_last = None
        if holds:
            self._holding = {}
        start = time.thread_time()
        self._seal()
        proto = self._commands.proto
        if proto is None or not self.up or not self._pending:
            # Redis is away: what is said meanwhile reaches the others once it is back, and
            # its senders are answered now (nothing acknowledged is lost while the node lives).
            _let_go(holds)
            self._publish_cpu += time.thread_time() - start
            return
        if self.share_rendered:
            # The turn's messages reach this node's members first: their rendered bytes go
            # with them (ops.encode_run).  Delivering them is not the cluster's own work (one
            # process does it too), so it is left out of the publishing's CPU.
            self._publish_cpu += time.thread_time() - start
            self.service.deliver_turn()
            start = time.thread_time()
        self._send_pending(proto, holds)
        self._publish_cpu += time.thread_time() - start

    def _send_pending(self, proto: Any, holds: list[Any]) -> None:
        """What waits to be published, in batches of entries sent on ``proto``; ``holds``:
        the senders answered once Redis has taken the last of them."""
        # The ops sent now take no more bytes of a relay (see relay.py).
        self._unsent_ops.clear()
        pending = self._pending
        batch: list[_Outgoing] = []
        while pending:
            batch = []
            while pending and len(batch) < PUBLISH_BATCH:
                out = pending.popleft()
                if out.by_node is None:
                    batch.append(out)
                else:
                    batch.extend(_Outgoing(share, targets=n) for n, share in out.by_node.items())
            if not pending and holds:
                # Redis answers in order: once the last entry is taken, all of them are.
                batch[-1].holds = holds
            self._send_batch(proto, batch)

    def _send_batch(self, proto: Any, batch: list[_Outgoing]) -> None:
        """Send ``batch``'s entries in order on one connection (Redis runs a connection's
        commands in order, so every stream gets them in order).  An entry with a claim, a
        release or every node as its target goes through the publish script; one for named
        nodes (a turn's room messages, nearly all the bytes) is a plain XADD per node: the
        script copies its arguments into Lua strings and joins them again, which cost Redis
        five to ten times the XADD's CPU for a turn's entry (250-325 against 25-50 µs for
        65 kB: bench/redis_publish.py)."""
        head = self._head.encode()
        answers: list[defer.Deferred[Any]] = []
        scripted: list[Any] = []
        # The biggest of the script call's entries, which sets how far its XADDs trim.
        scripted_bytes = 0
        for out in batch:
            if out.seq is None:
                out.seq = next(self._seq)
            self._inflight[out.seq] = out
            packed = ops.pack(out.items, rendered=self.share_rendered)
            if out.claim is None and out.release is None and out.targets != "*":
                if scripted:
                    answers.append(self._run_publish(proto, scripted, scripted_bytes))
                    scripted = []
                    scripted_bytes = 0
                entry = b"%s%d %s" % (head, out.seq, packed)
                maxlen = self._stream_length(len(entry))
                for name in out.targets.split():
                    if name != self.name:
                        answers.append(
                            proto.execute_command(
                                "XADD",
                                self.stream_prefix + name,
                                "MAXLEN",
                                "~",
                                maxlen,
                                "*",
                                "e",
                                entry,
                                apply_timeout=False,
                            )
                        )
            else:
                scripted += [out.seq, out.claim or "", out.release or "", out.targets, packed]
                # The entry the script makes of it (see PUBLISH_SCRIPT).
                size = len(head) + len(b"%d " % out.seq) + len(packed)
                scripted_bytes = max(scripted_bytes, size)
        if scripted:
            answers.append(self._run_publish(proto, scripted, scripted_bytes))
        d = defer.DeferredList(answers, consumeErrors=True)
        d.addCallback(self._batch_answered, batch)

    def _stream_length(self, entry_bytes: int) -> int:
        """How many entries the stream an entry of ``entry_bytes`` goes to keeps after it: as
        many of its size as ``stream_bytes`` holds (the stream's entries are of one node's
        turns, alike in size under a steady load), between STREAM_MIN_ENTRIES and
        STREAM_LENGTH."""
        fit = self.stream_bytes // max(entry_bytes, 1)
        return min(STREAM_LENGTH, max(STREAM_MIN_ENTRIES, fit))

    def _run_publish(self, proto: Any, entries: list[Any], biggest: int) -> defer.Deferred[Any]:
        # No reply timeout here: a big turn may take Redis a while on a busy machine, and the
        # heartbeat (which has one) tells whether Redis is there at all.
        d: defer.Deferred[Any] = proto.execute_command(
            "EVALSHA",
            self._sha["publish"],
            0,
            self.name,
            self.node_prefix,
            self._stream_length(biggest),
            self._head,
            self.stream_prefix,
            self.nodes_key,
            *entries,
            apply_timeout=False,
        )
        # The script answers with the sequence numbers whose claim was refused; an XADD
        # with its entry's id, which is not needed.
        d.addCallback(lambda refused: list(refused or ()))
        return d

    def _batch_answered(self, answers: list[tuple[bool, Any]], batch: list[_Outgoing]) -> None:
        refused: list[Any] = []
        for ok, answer in answers:
            if not ok:
                self._not_published(answer, batch)
                return
            if type(answer) is list:
                refused += answer
        self._published(refused, batch)

    def _published(self, refused: list[Any], batch: list[_Outgoing]) -> None:
        for out in batch:
            self._inflight.pop(_seq_of(out), None)
            if out.holds is not None:
                _let_go(out.holds)
                out.holds = None
        lost = {int(seq) for seq in refused}
        for out in batch:
            if out.seq in lost:
                self._claim_refused(out)

    def _claim_refused(self, out: _Outgoing) -> None:
        """Another node's claim of the nick came first: the user here takes a guest nick,
        which the others learn of as its first appearance (it never had the nick there) or
        as a rename from the nick it had before."""
        op = out.items[0]
        assert isinstance(op, dict)
        if op["k"] == "user":
            nick, before = op["who"]["n"], None
        else:
            nick, before = op["new"], op["nick"]
        self._unconfirmed[casefold(nick)] = before
        log.info("nick={nick} is owned by another node: renaming its user here", nick=nick)
        self.service.collide(nick, f"{nick} was taken on another server at the same time")
        self._unconfirmed.pop(casefold(nick), None)

    def _not_published(self, failure: Any, batch: list[_Outgoing]) -> None:
        if failure.check(txredisapi.ConnectionError):
            # Lost, or no answer in time (the connection is then dropped): sent again once
            # the link is back (see _commands_down).
            return
        if batch[0].seq in self._inflight:
            # Redis answered with an error (not a lost connection, which sends it again).
            for out in batch:
                self._inflight.pop(_seq_of(out), None)
                if out.holds is not None:
                    _let_go(out.holds)
                    out.holds = None
            log.failure("redis: publishing {count} entries", failure, count=len(batch))

    def _commands_up(self, proto: Any) -> None:
        d = defer.ensureDeferred(self._confirm(proto))
        d.addErrback(lambda f: log.failure("redis: after connecting", f))

    async def _confirm(self, proto: Any) -> None:
        """Load the scripts, renew the heartbeat, claim again every local nick, then send
        what waited, and this node's whole state for anyone who lost track."""
        self._sha["publish"] = await proto.execute_command("SCRIPT", "LOAD", PUBLISH_SCRIPT)
        self._sha["reclaim"] = await proto.execute_command("SCRIPT", "LOAD", RECLAIM_SCRIPT)
        await self._load_account_scripts(proto)
        if not await self._check_cloak(proto):
            waiters, self._ready_waiters = self._ready_waiters, []
            for d in waiters:
                d.errback(ClusterRefused(self._refusal or ""))
            return
        await self._renew(proto)
        await proto.execute_command("SADD", self.nodes_key, self.name)
        await self._reclaim(proto)
        await self._reclaim_accounts(proto)
        if self._commands.proto is not proto:
            return
        self._up_since = self.clock.seconds()
        # Sent again, first: what was sent on the lost connection, in order.
        self._pending.extendleft(reversed(sorted(self._inflight.values(), key=_seq_of)))
        self._inflight.clear()
        self._publish(self._state())
        log.info("cluster node={node} up", node=self.name)
        self._check_ready()

    async def _check_cloak(self, proto: Any) -> bool:
        """Whether this node's cloak secret is the cluster's: the first node's fingerprint
        is kept in Redis (renewed by the heartbeats), and a node with another is refused,
        as IRC networks refuse a server whose cloak keys differ."""
        held = await proto.execute_command(
            "SET",
            self.cloak_key,
            self.cloak_check,
            "NX",
            "GET",
            "PX",
            int(CLOAK_KEY_LEASES * self.lease * 1000),
        )
        if held is None or held == self.cloak_check:
            return True
        self._refusal = (
            "this node's [chat] cloak_secret differs from the other nodes' (it must be the"
            " same on every node)"
        )
        log.error("cluster node={node}: {why}", node=self.name, why=self._refusal)
        return False

    async def _reclaim(self, proto: Any) -> None:
        """Claim every local user's nick again; a user whose nick another node took
        meanwhile gets a guest nick."""
        local = [user for user in self.service.users if user.node is None]
        if not local:
            return
        lost = await proto.execute_command(
            "EVALSHA",
            self._sha["reclaim"],
            len(local),
            *[self._nick_key(user.nick) for user in local],
            self.name,
            self.node_prefix,
        )
        let_go = False
        for index in lost or ():
            user = local[int(index) - 1]
            if user.account is not None and self.service.let_go(user.account):
                # An always-on user another node holds (both restored it at start).
                let_go = True
            else:
                self.service.collide(
                    user.nick, f"{user.nick} was taken on another server meanwhile"
                )
        if let_go:
            # That node's state may have come while this one held the user: again.
            self._publish({"k": "sync"})

    def _commands_down(self) -> None:
        self._up_since = None
        # Unanswered entries go first once Redis is back (their errbacks change nothing).
        unanswered = sorted(self._inflight.values(), key=_seq_of)
        self._pending.extendleft(reversed(unanswered))
        self._inflight.clear()
        # Their senders are answered now, as while Redis is away (see _pump).
        for out in unanswered:
            if out.holds is not None:
                _let_go(out.holds)
                out.holds = None

    def _state(self) -> dict[str, Any]:
        users = [
            {
                "who": ops.who_fields(user.who()),
                "s": user.secure,
                "m": sorted(user.modes),
                "rooms": list(user.rooms),
                "meta": self.service.user_metadata(user.nick),
            }
            for user in self.service.users
            if user.node is None
        ]
        return {"k": "state", "users": users, "rooms": self._room_states()}

    # -- heartbeat -------------------------------------------------------------------------

    def _renew(self, proto: Any) -> defer.Deferred[Any]:
        """Renew this node's key; fires with its value before (None: it had expired)."""
        return proto.execute_command(
            "SET",
            self.node_prefix + self.name,
            self.incarnation,
            "PX",
            int(self.lease * 1000),
            "GET",
        )

    def _beat(self) -> None:
        self._prune_stamps()
        proto = self._commands.proto
        if proto is None or not self.up:
            return
        self._renew(proto).addCallbacks(self._renewed, lambda f: None, (proto,))
        ttl = int(CLOAK_KEY_LEASES * self.lease * 1000)
        proto.execute_command("PEXPIRE", self.cloak_key, ttl).addErrback(lambda f: None)
        assert self._up_since is not None
        # Just after Redis came back the others may not have renewed yet: wait one lease.
        if self.clock.seconds() - self._up_since < self.lease:
            return
        # The nodes this one holds users of, and those in the set (a dead one without users
        # would still be sent entries).
        d = proto.execute_command("SMEMBERS", self.nodes_key)
        d.addCallbacks(self._check_nodes, lambda f: None, (proto,))

    def _renewed(self, before: Any, proto: Any) -> None:
        if before is None and self.up and self._commands.proto is proto:
            # This node's key had expired (this process or Redis was too busy to renew it):
            # the others may have dropped its users and freed its nicks.  Claim them again and
            # tell everyone what this node holds.
            log.warn("cluster: this node's heartbeat had lapsed; announcing its state again")
            # If Redis lost its data, every node's key went with this one's: the others are
            # given a lease to renew theirs before any is counted lost.
            self._up_since = self.clock.seconds()
            d = defer.ensureDeferred(self._reannounce(proto))
            d.addErrback(lambda f: log.failure("redis: announcing again", f))

    async def _reannounce(self, proto: Any) -> None:
        # Redis may have lost the fingerprint with the rest: set again (a mismatch is
        # logged; this node's users stay).
        await self._check_cloak(proto)
        await proto.execute_command("SADD", self.nodes_key, self.name)
        await self._reclaim(proto)
        await self._reclaim_accounts(proto)
        self._publish(self._state())

    def _check_nodes(self, listed: Any, proto: Any) -> None:
        # And those this node relays clients with: another node may have removed a dead
        # one from the set first.
        known = {n for n, users in self._remote.items() if users} | self._relay_nodes()
        for node in known.union(listed or ()) - {self.name}:
            self._check_node(proto, node)

    def _check_node(self, proto: Any, node: str) -> None:
        d = proto.execute_command("PTTL", self.node_prefix + node)
        d.addCallbacks(self._checked, lambda f: None, (node,))

    def _checked(self, left_ms: Any, node: str) -> None:
        """``node``'s key has ``left_ms`` to live (-2: none).  A node whose key is gone and
        that was not heard from in the last lease is lost.  One whose key lapses, or whose
        last entry grows a lease old, before the next heartbeat is checked again then: a
        dead node is counted lost within a lease of its death (its last renewal and its
        last entry came before it), not a heartbeat later."""
        now = self.clock.seconds()
        left = int(left_ms)
        if left == -1:
            # A key without expiry is no node's heartbeat.
            return
        if left >= 0:
            again = left / 1000
        else:
            heard_until = self._heard.get(node, 0.0) + self.lease
            settled_at = now + self.lease if self._up_since is None else self._up_since + self.lease
            again = max(heard_until, settled_at) - now
            if again <= 0:
                self._lost(node)
                return
        if again < self.lease / 3:
            self._check_later(node, again)

    def _check_later(self, node: str, delay: float) -> None:
        # A little after the moment itself: Redis expires keys to the millisecond.
        at = self.clock.seconds() + delay + CHECK_MARGIN
        pending = self._checks.get(node)
        if pending is not None and pending.active():
            if pending.getTime() <= at:
                return
            pending.cancel()
        self._checks[node] = self.clock.callLater(delay + CHECK_MARGIN, self._check_again, node)

    def _check_again(self, node: str) -> None:
        self._checks.pop(node, None)
        proto = self._commands.proto
        if proto is not None and self.up:
            # This node's key first, as at a heartbeat: if Redis lost every key, this node
            # finds its own gone (and waits a lease) before it counts another lost.
            self._renew(proto).addCallbacks(self._renewed, lambda f: None, (proto,))
            self._check_node(proto, node)

    def _lost(self, node: str) -> None:
        log.warn("cluster node={node} lost: its users leave", node=node)
        self._not_awaiting(node)
        self._drop_node(node, f"{node} lost", died=True)
        # Logins waiting for its answer claim again now: its key has lapsed.
        self._node_gone(node)
        proto = self._commands.proto
        if proto is not None:
            # Nothing is sent to it any more; back, it finds its stream gone and asks
            # every node for its state.
            proto.execute_command("SREM", self.nodes_key, node).addErrback(lambda f: None)
            proto.execute_command("DEL", self.stream_prefix + node).addErrback(lambda f: None)

    # -- reading what the others do ----------------------------------------------------------

    def _reader_up(self, proto: Any) -> None:
        d = defer.ensureDeferred(self._catch_up(proto))
        d.addErrback(lambda f: log.failure("redis: reading the stream", f))

    async def _catch_up(self, proto: Any) -> None:
        # Counted again once a check finds this node at the stream's end (Redis may have
        # restarted, and its count with it).
        self._read_count = None
        if self._last_id is None:
            # A new node reads from here on, and asks the others for what they hold (asked
            # once the place is known, so that no answer comes before it).  Where it starts
            # and how many entries came before it, in one reply (see _check_trim).
            try:
                fields = _fields(await proto.execute_command("XINFO", "STREAM", self.stream))
            except txredisapi.ResponseError:
                # No stream yet: nothing has come before.
                fields = {b"last-generated-id": b"0-0", b"entries-added": 0}
            self._last_id = fields.get(b"last-generated-id") or "0-0"
            added = fields.get(b"entries-added")
            self._read_count = added if type(added) is int else None
            # Before the question, so that every answer counts.
            await self._await_states(proto)
            self._publish({"k": "sync"})
        else:
            first = await proto.execute_command("XRANGE", self.stream, "-", "+", "COUNT", "1")
            if not first or _id(first[0][0]) > _id(self._last_id):
                # Trimmed past where this node was, or Redis lost its data.
                self._missed()
        self._read(proto)

    def _missed(self) -> None:
        """Entries of this node's stream are gone unread: read what there is (repeats are
        dropped by sequence number) and ask every node's state."""
        log.warn("cluster: entries were missed; asking every node for its state")
        # What a relayed client said may be among them: its relay cannot go on.
        self._end_relays(None, "this server lost track of the cluster")
        self._last_id = "0-0"
        # Counted again once a check finds this node at the stream's end: a node that
        # stays far behind asks for every node's state once, not at every check.
        self._read_count = None
        self._publish({"k": "sync"})

    def _read(self, proto: Any) -> None:
        live: Any = self._reader.proto
        if live is not proto or self._stopping or self._last_id is None:
            return
        now = self.clock.seconds()
        if (
            self._read_since_check or self._read_count is None
        ) and now - self._trim_checked >= TRIM_CHECK_INTERVAL:
            # On the reader's own connection, between two reads: what this node has read is
            # exactly what it has applied.  Until it counts, a check is what starts the count.
            self._trim_checked = now
            self._read_since_check = False
            check = live.execute_command("XINFO", "STREAM", self.stream)
            check.addCallbacks(self._check_trim, self._read_on, (proto,), None, (proto,))
            return
        d = live.execute_command(
            "XREAD",
            "COUNT",
            READ_COUNT,
            "BLOCK",
            READ_BLOCK_MS,
            "STREAMS",
            self.stream,
            self._last_id,
        )
        d.addCallbacks(self._got, lambda f: None, (proto,))

    def _check_trim(self, info: Any, proto: Any) -> None:
        """Entries are trimmed oldest first, so the stream's first entry is the one given
        to it after all that were trimmed (``entries-added`` less ``length``).  If that is
        more than this node has read, some it had not read are gone.  What it has read is
        counted from where a new node started (_catch_up), or from a check that found it at
        the stream's last entry.  (Redis before 7 does not count: there only a
        reconnection finds a gap.)"""
        fields = _fields(info)
        added = fields.get(b"entries-added")
        length = fields.get(b"length")
        last = fields.get(b"last-generated-id")
        if type(added) is int and type(length) is int and last and self._last_id is not None:
            if self._read_count is None:
                if _id(last) == _id(self._last_id):
                    self._read_count = added
            elif added - length > self._read_count:
                self._missed()
        self._read(proto)

    def _read_on(self, failure: Any, proto: Any) -> None:
        # No stream yet (nothing was written to this node), or the connection went: read on
        # (a lost connection's reader starts again once it is back).
        self._read(proto)

    def _got(self, reply: Any, proto: Any) -> None:
        if reply:
            self._read_since_check = True
            with self.service.batch():
                for _stream, entries in reply:
                    if self._read_count is not None:
                        self._read_count += len(entries)
                    for entry_id, fields in entries:
                        self._last_id = entry_id
                        try:
                            self._apply(fields)
                        except Exception:
                            log.failure("cluster: applying entry {id}", id=entry_id)
        self._read(proto)

    def _apply(self, fields: list[bytes]) -> None:
        entry = fields[1] if len(fields) == 2 and fields[0] == b"e" else b""
        head = [*entry.split(b" ", 3), b"", b"", b""][:4]
        node, incarnation, seq_text = (part.decode("utf-8", "replace") for part in head[:3])
        raw = head[3]
        if node == self.name:
            if incarnation != self.incarnation:
                log.warn("cluster: another process uses node={node}", node=node)
            return
        if not (seq_text.isascii() and seq_text.isdigit()):
            log.warn("cluster: an entry of no node: {entry}", entry=entry[:200])
            return
        seq = int(seq_text)
        seen = self._seen.get(node)
        if seen is None or seen[0] != incarnation:
            if seen is not None:
                self._drop_node(node, f"{node} restarted", died=True)
            seen = (incarnation, 0)
        if seq <= seen[1]:
            return
        self._seen[node] = (incarnation, seq)
        self._heard[node] = self.clock.seconds()
        try:
            entry_ops = ops.unpack(raw)
        except ops.BadOp as err:
            log.warn("cluster: bad entry from node={node}: {err}", node=node, err=str(err))
            return
        handlers = self._handlers
        check = ops.check
        # The messages in a row, applied together (see _on_msgs) before any other op.
        run: list[list[Any]] = []
        for op in entry_ops:
            # Messages first: most ops are runs of them or messages, and an array is always
            # one.
            if type(op) is list:
                try:
                    check(op)
                except ops.BadOp as err:
                    log.warn("cluster: bad op from node={node}: {err}", node=node, err=str(err))
                    continue
                if op[0] == "run":
                    if run:
                        self._on_msgs(node, run)
                        run = []
                    self._on_run(node, op)
                else:
                    run.append(op)
                continue
            if run:
                self._on_msgs(node, run)
                run = []
            try:
                op = check(op)
            except ops.BadOp as err:
                log.warn("cluster: bad op from node={node}: {err}", node=node, err=str(err))
                continue
            handlers[ops.kind_of(op)](node, op)
        if run:
            self._on_msgs(node, run)

    # -- the other nodes' users -------------------------------------------------------------

    def _conn(self, node: str, nick: str) -> Connection | None:
        return self._remote.get(node, {}).get(casefold(nick))

    def _make_room_for(self, nick: str, node: str) -> None:
        """Redis gave ``nick`` to ``node``: whoever holds it here lost it."""
        holder = self.service.find_user(nick)
        if holder is None or holder.node == node:
            return
        if holder.node is None:
            if holder.account is None or not self.service.let_go(holder.account):
                self.service.collide(nick, f"{nick} was taken on another server at the same time")
        else:
            conn = self._conn(holder.node, nick)
            if conn is not None:
                self._remove(holder.node, conn, "nick taken over")

    def _on_user(self, node: str, op: dict[str, Any]) -> None:
        conn = self._attach(node, ops.who_from(op["who"]), op["s"], take=True)
        if conn is not None and op["m"]:
            self.service.user_modes_elsewhere(conn, op["m"])

    def _attach(self, node: str, who: Any, secure: bool, *, take: bool) -> Connection | None:
        """The stand-in of ``who``; ``take``: its node has just claimed the nick, so a
        holder here lost it.  Without ``take`` (a state, maybe old) a holder here stays."""
        existing = self._conn(node, who.nick)
        if existing is not None:
            return existing
        if take:
            self._make_room_for(who.nick, node)
        elif self.service.find_user(who.nick) is not None:
            return None
        client = RemoteClient(node, secure, self._ended_here)
        conn = self.service.attach_remote(client, who, node)
        client.conn = conn
        self._remote.setdefault(node, {})[who.key] = conn
        return conn

    def _remove(self, node: str, conn: Connection, reason: str) -> None:
        users = self._remote.get(node, {})
        if conn.user is not None:
            users.pop(conn.user.key, None)
        self.service.quit(conn, reason)

    def _drop_node(self, node: str, reason: str, *, died: bool = False) -> None:
        """Remove ``node``'s users; ``died``: it ended without writing what it held, so its
        last room messages received here are stored here (see ``store_messages``): what it
        acknowledged and published is not lost."""
        backlog = self._recent.pop(node, None)
        recent = backlog.take() if died and backlog else []
        if recent:
            # What it said since its last write could start: one write interval before it
            # was last heard from, and the lease for clocks that differ between machines.
            since = (
                self._heard.get(node, self.clock.seconds())
                - self.service.settings.history_flush_interval
                - self.lease
            )
            unsure = [msg for msg in recent if msg.ts >= since]
            self.service.store_messages(unsure)
            log.info(
                "cluster: storing the last {count} messages of node={node}",
                count=len(unsure),
                node=node,
            )
        for conn in list(self._remote.get(node, {}).values()):
            self._remove(node, conn, reason)
        self._remote.pop(node, None)
        self._end_relays(node, reason)

    def _ended_here(self, client: RemoteClient, reason: str) -> None:
        """An operator here disconnected a user of another node: that node ends it."""
        conn = getattr(client, "conn", None)
        if self._stopping or conn is None or conn.user is None:
            return
        self._publish({"k": "kill", "nick": conn.user.nick, "reason": reason}, targets=client.node)
        self._remote.get(client.node, {}).pop(conn.user.key, None)

    def _on_nick(self, node: str, op: dict[str, Any]) -> None:
        conn = self._conn(node, op["nick"])
        if conn is None or conn.user is None:
            return
        old_key = conn.user.key
        if casefold(op["new"]) != old_key:
            self._make_room_for(op["new"], node)
        try:
            self.service.rename(conn, op["new"])
        except NickInUse:
            log.warn("cluster: cannot rename {old} to {new}", old=op["nick"], new=op["new"])
            return
        users = self._remote[node]
        users.pop(old_key, None)
        users[conn.user.key] = conn

    def _on_quit(self, node: str, op: dict[str, Any]) -> None:
        conn = self._conn(node, op["nick"])
        if conn is not None:
            self._remove(node, conn, op["reason"])

    def _call(self, node: str, sender: str, method: str, /, *args: Any, **kwargs: Any) -> Any:
        """The service's ``method`` for ``node``'s user ``sender``: its result, or None when
        the user is unknown here or the call was refused."""
        conn = self._conn(node, sender)
        if conn is None:
            return None
        try:
            return getattr(self.service, method)(conn, *args, **kwargs)
        except ChatError as err:
            _refused(method, sender, node, err)

    def _on_part(self, node: str, op: dict[str, Any]) -> None:
        self._call(node, op["nick"], "part", op["room"], op["reason"])

    def _on_kick(self, node: str, op: dict[str, Any]) -> None:
        if op["nick"]:
            self._call(node, op["nick"], "kick", op["room"], op["target"], op["reason"])
        else:
            self._by_server(op)

    def _on_away(self, node: str, op: dict[str, Any]) -> None:
        self._call(node, op["nick"], "set_away", op["message"])

    def _on_msgs(self, node: str, run: list[list[Any]]) -> None:
        """Checked messages of ``node``, in order: a sender's messages to one room in a row
        reach the core in one call (``ChatService.relay``), the rest one by one."""
        group: list[list[Any]] = []
        for op in run:
            if op[ops.MSG_STATUS] is not None or op[ops.MSG_ROOM] is None:
                if group:
                    self._relay(node, group)
                    group = []
                self._on_msg(node, op)
            elif group and (
                op[ops.MSG_NICK] != group[0][ops.MSG_NICK]
                or op[ops.MSG_ROOM] != group[0][ops.MSG_ROOM]
            ):
                self._relay(node, group)
                group = [op]
            else:
                group.append(op)
        if group:
            self._relay(node, group)

    def _relay(self, node: str, group: list[list[Any]]) -> None:
        """One sender's messages to one room, in order."""
        users = self._remote.get(node)
        if users is None:
            return
        first = group[0]
        nick = first[ops.MSG_NICK]
        conn = users.get(nick) or users.get(casefold(nick))
        if conn is None:
            return
        native_of = ops.native_of
        # Made as the core reads them: no tuple of the run outlives its message.
        said = (
            (
                op[ops.MSG_TEXT],
                op[ops.MSG_KIND],
                tuple([(name, value) for name, value in op[ops.MSG_TAGS]])
                if op[ops.MSG_TAGS]
                else (),
                op[ops.MSG_ID],
                float(op[ops.MSG_TS]),
                None if op[ops.MSG_NATIVE] is None else native_of(op[ops.MSG_NATIVE]),
            )
            for op in group
        )
        try:
            msgs = self.service.relay(conn, first[ops.MSG_ROOM], said)
        except ChatError as err:
            _refused(f"{len(group)} messages", nick, node, err)
            return
        self._remember(node, msgs)

    def _remember(self, node: str, msgs: list[Message] | MessageRun) -> None:
        """The node's last room messages: if it dies before writing them, this node writes
        them (see _drop_node)."""
        recent = self._recent.get(node)
        if recent is None:
            recent = self._recent[node] = Backlog(RECENT_MESSAGES)
        if isinstance(msgs, MessageRun):
            recent.add(msgs)
        else:
            for msg in msgs:
                recent.add(msg)

    def _on_run(self, node: str, op: list[Any]) -> None:
        """A checked run of one sender's messages to one room (``ops.encode_run``): it
        reaches the core whole (``ChatService.relay_run``), with the bytes its node made of
        it; its messages are made here only if something needs them."""
        users = self._remote.get(node)
        if users is None:
            return
        nick = op[ops.RUN_NICK]
        conn = users.get(nick) or users.get(casefold(nick))
        if conn is None or conn.user is None:
            return
        count = op[ops.RUN_COUNT]
        run = MessageRun(
            ts=float(op[ops.RUN_LAST]),
            origin=conn.client,
            shipped=(
                {tuple(key): data for key, data in op[ops.RUN_BLOCKS]}
                if self.share_rendered
                else {}
            ),
            room=op[ops.RUN_ROOM],
            source=conn.user.who(),
            count=count,
            active=None if op[ops.RUN_ACTIVE] is None else float(op[ops.RUN_ACTIVE]),
            said=functools.partial(self._said, node, op[ops.RUN_SAID], count),
        )
        try:
            kept = self.service.relay_run(conn, run)
        except ChatError as err:
            _refused(f"{count} messages", nick, node, err)
            return
        self._remember(node, kept)

    @staticmethod
    def _said(node: str, said: bytes, count: int) -> list[Said]:
        """A run's messages' fields; none when they are malformed (its node's bytes reached
        this node's members, but nothing here keeps what cannot be read)."""
        try:
            return ops.run_said(said, count)
        except ops.BadOp as err:
            log.warn("cluster: bad run from node={node}: {err}", node=node, err=str(err))
            return []

    def _on_msg(self, node: str, op: list[Any]) -> None:
        users = self._remote.get(node)
        if users is None:
            return
        nick = op[ops.MSG_NICK]
        # Most nicks are their own casefolded key: casefold only when that misses.
        conn = users.get(nick) or users.get(casefold(nick))
        if conn is None:
            return
        tags = op[ops.MSG_TAGS]
        try:
            msg = self.service.say(
                conn,
                text=op[ops.MSG_TEXT],
                room=op[ops.MSG_ROOM],
                nick=op[ops.MSG_TARGET],
                kind=op[ops.MSG_KIND],
                tags=tuple((name, value) for name, value in tags) if tags else (),
                status=op[ops.MSG_STATUS],
                msgid=op[ops.MSG_ID],
                ts=float(op[ops.MSG_TS]),
                native=ops.native_of(op[ops.MSG_NATIVE]),
            )
        except ChatError as err:
            _refused("message", nick, node, err)
            return
        if msg.room is not None and msg.status is None:
            self._remember(node, [msg])

    def _on_state(self, node: str, op: dict[str, Any]) -> None:
        """Make this node's picture of ``node`` what it says it holds."""
        wanted = {}
        for entry in op["users"]:
            who = ops.who_from(entry["who"])
            wanted[who.key] = (who, entry)
        for key, gone in list(self._remote.get(node, {}).items()):
            if key not in wanted:
                self._remove(node, gone, "")
        for who, entry in wanted.values():
            conn = self._attach(node, who, entry["s"], take=False)
            user = None if conn is None else conn.user
            if user is None:
                continue
            if user.away != who.away:
                self._call(node, who.nick, "set_away", who.away)
            if user.modes != frozenset(entry["m"]):
                self.service.user_modes_elsewhere(conn, entry["m"])
            rooms = {room_key(name) for name in entry["rooms"]}
            for name in rooms - set(user.rooms):
                self._call(node, who.nick, "join", name)
            for name in set(user.rooms) - rooms:
                self._call(node, who.nick, "part", name, "")
            self._take_metadata(node, who.nick, entry["meta"])
        own = frozenset(wanted)
        for entry in op["rooms"]:
            self._on_room(node, entry, own)
        self._not_awaiting(node)

    def _on_sync(self, node: str, op: dict[str, Any]) -> None:
        self._publish(self._state(), targets=node)

    def _on_bye(self, node: str, op: dict[str, Any]) -> None:
        self._drop_node(node, f"{node} stopped")

    def _on_kill(self, node: str, op: dict[str, Any]) -> None:
        user = self.service.find_user(op["nick"])
        if user is not None and user.node is None:
            self.service.kill_user(op["nick"], op["reason"])


class ClusterRefused(Exception):
    """This node cannot join the cluster as configured (the reason is the message)."""


def _refused(what: str, nick: str, node: str, err: ChatError) -> None:
    # The rooms here disagree with the node's (a mode not shared): it decided.
    log.info(
        "cluster: {what} of {nick} from node={node} refused here: {reason}",
        what=what,
        nick=nick,
        node=node,
        reason=err.reason,
    )


def _let_go(clients: list[Any]) -> None:
    for client in clients:
        try:
            client.let_output_go()
        except Exception:
            log.failure("cluster: letting {client}'s output go", client=client)


def _seq_of(out: _Outgoing) -> int:
    assert out.seq is not None
    return out.seq


def _fields(info: Any) -> dict[Any, Any]:
    """XINFO STREAM's reply (names and values in turn) as a dict."""
    return dict(zip(info[::2], info[1::2], strict=False)) if type(info) is list else {}


def _id(entry_id: str | bytes) -> tuple[int, int]:
    if isinstance(entry_id, bytes):
        entry_id = entry_id.decode()
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)
