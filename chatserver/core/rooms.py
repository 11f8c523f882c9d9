"""Rooms: members and their status, topic, modes, bans and invites, recent history.

Modes are core data with names, not letters; each protocol maps them to its own form
(IRC letters, XEP-0045 room configuration, line-chat words).
"""

from __future__ import annotations

import json
from collections import deque
from typing import Any

from chatserver.core.backlog import Backlog
from chatserver.core.events import Message, MessageRun, Who
from chatserver.core.names import ACCOUNT_MASK_PREFIX, MUTE_MASK_PREFIX, casefold, glob_match
from chatserver.core.names import normalize_mask as normalize_mask  # kept importable from here
from chatserver.core.records import BanRecord, RoomRecord
from chatserver.core.users import User

# Mode names the core knows, by kind.
FLAG_MODES = frozenset(
    {
        "moderated",
        "invite_only",
        "topic_lock",
        "no_external",
        "secret",
        "registered_only",
        "no_ctcp",
    }
)
PARAM_MODES = frozenset({"key", "limit"})
LIST_MODES = frozenset({"ban", "except", "invite"})
STATUS_MODES = frozenset({"op", "voice"})
ALL_MODES = FLAG_MODES | PARAM_MODES | LIST_MODES | STATUS_MODES
# Modes a new room starts with: only members may speak, only operators set the topic.
DEFAULT_MODES = frozenset({"no_external", "topic_lock"})


# Where a registered room keeps its ban exceptions in RoomRecord.extra (a JSON list).
EXCEPTS_KEY = "excepts"
# ... and the days its history is kept, when its operators chose fewer than the server.
RETENTION_KEY = "retention"


def mask_matches(mask: str, who: Who) -> bool:
    """Whether ``mask`` (a host mask or ``$a:account``, not a mute) matches ``who``."""
    if mask.startswith(ACCOUNT_MASK_PREFIX):
        pattern = mask[len(ACCOUNT_MASK_PREFIX) :]
        return who.account is not None and glob_match(pattern, who.account)
    return glob_match(mask, who.mask)


class Member:
    """A user's status in one room."""

    __slots__ = ("op", "voice")

    def __init__(self, op: bool = False, voice: bool = False) -> None:
        self.op = op
        self.voice = voice

    def has(self, status: str | None) -> bool:
        """Whether this member ranks at least ``status`` ('op', 'voice' or None)."""
        if status is None:
            return True
        if status == "voice":
            return self.op or self.voice
        return self.op

    def statuses(self) -> tuple[str, ...]:
        return (("op",) if self.op else ()) + (("voice",) if self.voice else ())


class Room:
    __slots__ = (
        "_clients",
        "_fanout",
        "_history",
        "_local",
        "_nodes",
        "_unmade",
        "bans",
        "created_at",
        "excepts",
        "flags",
        "invited",
        "invites",
        "key",
        "limit",
        "members",
        "name",
        "owner",
        "reg_ops",
        "reg_voices",
        "registered",
        "retention",
        "topic",
        "topic_at",
        "topic_by",
        "topic_id",
    )

    def __init__(self, name: str, now: float, history_size: int) -> None:
        self.name = name  # canonical room key
        self.created_at = now
        self.members: dict[User, Member] = {}
        self.topic = ""
        self.topic_by = ""
        self.topic_at = 0.0
        # The id of the Topic event that set it ("" when not set here since the start).
        self.topic_id = ""
        self.flags: set[str] = set(DEFAULT_MODES)
        self.key: str | None = None
        self.limit: int | None = None
        self.bans: list[BanRecord] = []
        self.invites: list[str] = []  # invite-exception masks (may join past invite_only)
        # Ban exceptions: a plain mask exempts from bans, a $m: one from mutes.
        self.excepts: list[str] = []
        self.invited: set[str] = set()  # folded nicks invited since (one-shot)
        self.registered = False
        self.owner: str | None = None
        # For registered rooms: accounts that get op or voice whenever they join.
        self.reg_ops: set[str] = set()
        self.reg_voices: set[str] = set()
        # Days its history is kept, when its operators chose less than the server's retention.
        self.retention: float | None = None
        self._history: deque[Message] = deque(maxlen=max(history_size, 0))
        # What was added to the history since it was last read, while it holds runs of
        # another node's user not made yet (see remember): None when empty.
        self._unmade: Backlog | None = None
        self._clients: tuple[Any, ...] | None = None
        self._fanout: tuple[tuple[str, int], ...] | None = None
        self._nodes: tuple[str, ...] | None = None
        self._local: frozenset[str] | None = None

    # -- recent history --------------------------------------------------------------------

    @property
    def history(self) -> deque[Message]:
        """The room's recent messages, oldest first (runs relayed from other nodes made
        now, if any are waiting)."""
        unmade = self._unmade
        if unmade is not None:
            self._unmade = None
            self._history.extend(unmade.take())
        return self._history

    @history.setter
    def history(self, messages: deque[Message]) -> None:
        self._unmade = None
        self._history = messages

    def remember(self, item: Message | MessageRun) -> None:
        """Add a message, or a run of another node's user, to the recent history: a run
        stays one until the history is read, and so does whatever comes after it."""
        unmade = self._unmade
        if unmade is None:
            if type(item) is Message:
                self._history.append(item)
                return
            limit = self._history.maxlen
            if not limit:
                return
            unmade = self._unmade = Backlog(limit)
        unmade.add(item)

    # -- membership ------------------------------------------------------------------------

    def clients(self) -> tuple[Any, ...]:
        """Every connection of every member: the fan-out list, cached until membership changes."""
        clients = self._clients
        if clients is None:
            clients = self._clients = tuple(
                conn.client for user in self.members for conn in user.connections
            )
        return clients

    def fanout(self) -> tuple[tuple[str, int], ...]:
        """How many of :meth:`clients` each protocol has, as (protocol, count); cached with them."""
        fanout = self._fanout
        if fanout is None:
            counts: dict[str, int] = {}
            for client in self.clients():
                protocol = client.protocol
                counts[protocol] = counts.get(protocol, 0) + 1
            fanout = self._fanout = tuple(counts.items())
        return fanout

    def nodes(self) -> tuple[str, ...]:
        """The other cluster nodes that have members here (cluster mode: where its messages
        must go); cached with :meth:`clients`."""
        nodes = self._nodes
        if nodes is None:
            nodes = self._nodes = tuple({u.node for u in self.members if u.node is not None})
        return nodes

    def local_protocols(self) -> frozenset[str]:
        """The protocols of this node's members' connections (cluster mode: not the
        stand-ins of other nodes' users); cached with :meth:`clients`."""
        local = self._local
        if local is None:
            local = self._local = frozenset(
                [
                    conn.client.protocol
                    for u in self.members
                    if u.node is None
                    for conn in u.connections
                ]
            )
        return local

    def members_changed(self) -> None:
        self._clients = None
        self._fanout = None
        self._nodes = None
        self._local = None

    def member(self, user: User) -> Member | None:
        return self.members.get(user)

    def find_member(self, nick: str) -> User | None:
        key = casefold(nick)
        for user in self.members:
            if user.key == key:
                return user
        return None

    def ops(self) -> list[User]:
        return [u for u, m in self.members.items() if m.op]

    # -- rules -----------------------------------------------------------------------------

    def is_banned(self, who: Who) -> bool:
        """Whether a ban (not a mute) matches ``who`` and no ban exception does."""
        for ban in self.bans:
            mask = ban.mask
            if not mask.startswith(MUTE_MASK_PREFIX) and mask_matches(mask, who):
                return not self._excepted(who, mute=False)
        return False

    def is_muted(self, who: Who) -> bool:
        """Whether a mute (``$m:`` ban) matches ``who`` and no mute exception does."""
        skip = len(MUTE_MASK_PREFIX)
        for ban in self.bans:
            mask = ban.mask
            if mask.startswith(MUTE_MASK_PREFIX) and mask_matches(mask[skip:], who):
                return not self._excepted(who, mute=True)
        return False

    def _excepted(self, who: Who, *, mute: bool) -> bool:
        skip = len(MUTE_MASK_PREFIX)
        for mask in self.excepts:
            if mask.startswith(MUTE_MASK_PREFIX) == mute and mask_matches(
                mask[skip:] if mute else mask, who
            ):
                return True
        return False

    def is_invite_excepted(self, who: Who) -> bool:
        return any(mask_matches(mask, who) for mask in self.invites)

    def mode_state(self) -> list[tuple[str, str | None]]:
        """Flags and parameter modes currently set, as (name, argument) in a stable order."""
        state: list[tuple[str, str | None]] = [(f, None) for f in sorted(self.flags)]
        if self.key is not None:
            state.append(("key", self.key))
        if self.limit is not None:
            state.append(("limit", str(self.limit)))
        return state

    # -- persistence -----------------------------------------------------------------------

    def _extra(self) -> dict[str, str]:
        extra: dict[str, str] = {}
        if self.excepts:
            extra[EXCEPTS_KEY] = json.dumps(self.excepts)
        if self.retention is not None:
            extra[RETENTION_KEY] = f"{self.retention:g}"
        return extra

    def to_record(self) -> RoomRecord:
        return RoomRecord(
            name=self.name,
            owner=self.owner or "",
            created_at=self.created_at,
            topic=self.topic,
            topic_by=self.topic_by,
            topic_at=self.topic_at,
            modes=tuple(self.mode_state()),
            ops=tuple(sorted(self.reg_ops)),
            voices=tuple(sorted(self.reg_voices)),
            bans=tuple(self.bans),
            invites=tuple(self.invites),
            extra=self._extra(),
        )

    @classmethod
    def from_record(cls, record: RoomRecord, history_size: int) -> Room:
        room = cls(record.name, record.created_at, history_size)
        room.registered = True
        room.owner = record.owner or None
        room.topic = record.topic
        room.topic_by = record.topic_by
        room.topic_at = record.topic_at
        room.flags = set()
        for mode, arg in record.modes:
            if mode in FLAG_MODES:
                room.flags.add(mode)
            elif mode == "key":
                room.key = arg
            elif mode == "limit" and arg is not None and arg.isascii() and arg.isdigit():
                room.limit = int(arg)
        room.reg_ops = {casefold(a) for a in record.ops}
        room.reg_voices = {casefold(a) for a in record.voices}
        room.bans = list(record.bans)
        room.invites = list(record.invites)
        retention = record.extra.get(RETENTION_KEY)
        try:
            room.retention = float(retention) if retention is not None else None
        except ValueError:
            room.retention = None
        excepts = record.extra.get(EXCEPTS_KEY)
        if excepts:
            room.excepts = [str(mask) for mask in json.loads(excepts)]
        return room

    def __repr__(self) -> str:
        return f"<Room {self.name} ({len(self.members)})>"
