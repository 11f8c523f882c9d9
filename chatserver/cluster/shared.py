"""What a node shares besides users and messages: rooms' state, invitations, accounts,
tags without text, redactions, room renames, users' metadata, logins, users' modes (a
server operator is one on every node), wallops, server bans and what an operator's console
does to everyone.

A room's state (modes, lists, invitations, topic, members' status, registration, metadata)
goes to every node whole after each change, stamped with the time and the node that made
it.  A node takes a state whose stamp is later than the one it holds for the room (time
first, then node name), and ignores an earlier one: two changes made in the same moment on
two nodes end the same on every node (the later wins; the other's users are told what was
undone).  A node's own change is stamped later than any state it has taken, so a change
made after seeing another always wins over it.  The stamps of the rooms a node has changed
or taken go in its "state" entry, so a node that starts, or missed entries, gets them.

A room made on two nodes in the same moment (each node's joining user its first operator
there) has one first operator everywhere: a join that made the room carries the time it
did, and the earliest making wins on every node (see ``_on_join``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from chatserver.cluster import ops
from chatserver.core.bans import ServerBan
from chatserver.core.errors import ChatError
from chatserver.core.events import Join, Redaction, Who
from chatserver.core.names import casefold, room_key

if TYPE_CHECKING:
    from chatserver.core.replica import RoomState
    from chatserver.core.users import Connection

# A stamp later than ``previous`` by this much when the clock has not moved past it.
_TICK = 1e-6


class Sharing:
    """The part of ClusterNode that shares rooms' state, invitations, accounts, tags and
    redactions."""

    name: str
    service: Any
    clock: Any
    _stopping: bool

    if TYPE_CHECKING:

        def _publish(
            self,
            op: dict[str, Any],
            claim: str | None = None,
            release: str | None = None,
            targets: str = "*",
        ) -> None: ...
        def _conn(self, node: str, nick: str) -> Connection | None: ...
        def _call(self, node: str, sender: str, method: str, /, *args: Any, **kw: Any) -> None: ...

    def _init_sharing(self) -> None:
        # room key -> the stamp of the state this node holds: (time, node).
        self._stamps: dict[str, tuple[float, str]] = {}
        # room key -> who made the room, as this node knows: (time, node, folded nick).
        self._founded: dict[str, tuple[float, str, str]] = {}
        # (folded nick, key) -> the stamp of the user's metadata key as this node holds it,
        # kept while the user is here: (time, node), as a room's.
        self._meta_stamps: dict[tuple[str, str], tuple[float, str]] = {}

    # -- what the core tells -----------------------------------------------------------------

    def room_changed(self, room: str, by: Who | None) -> None:
        if self._stopping:
            return
        state = self.service.room_state(room)
        if state is None:
            return
        previous = self._stamps.get(room, (0.0, ""))
        stamp = (max(self.clock.seconds(), previous[0] + _TICK), self.name)
        self._stamps[room] = stamp
        self._publish(ops.room_op(state, by, stamp))

    def account_changed(self, name: str, revoked: str | None) -> None:
        if not self._stopping:
            self._publish({"k": "account", "name": name, "revoked": revoked})

    def server_ban_changed(self, ban: ServerBan, lifted: bool) -> None:
        if not self._stopping:
            self._publish(
                {
                    "k": "kline",
                    "mask": ban.mask,
                    "reason": ban.reason,
                    "by": ban.set_by,
                    "at": ban.set_at,
                    "lifted": lifted,
                }
            )

    def _prune_stamps(self) -> None:
        """Forget the stamps of rooms that are gone here (a new room of the name starts
        afresh, and takes any state later than nothing)."""
        rooms = self.service.rooms
        for room in [room for room in self._stamps if room not in rooms]:
            del self._stamps[room]
        for room in [room for room in self._founded if room not in rooms]:
            del self._founded[room]
        find = self.service.find_user
        for held in [held for held in self._meta_stamps if find(held[0]) is None]:
            del self._meta_stamps[held]

    def _stamp_metadata(self, op: dict[str, Any]) -> None:
        """Stamp a "meta" op of a change made here: later than any stamp this node holds
        for the key, so a change made after seeing another wins over it everywhere."""
        held = (casefold(op["target"]), op["key"])
        previous = self._meta_stamps.get(held, (0.0, ""))
        stamp = (max(float(op["stamp"][0]), previous[0] + _TICK), self.name)
        self._meta_stamps[held] = stamp
        op["stamp"] = list(stamp)

    def _room_states(self) -> list[dict[str, Any]]:
        """The state of each room this node holds a stamp for or has users of its own in
        (entries of a "state" op).  A room never changed has the earliest stamp: a node
        that starts takes it, so its members' status does not hang on which node's users
        it happened to see join first."""
        entries = []
        rooms = set(self._stamps)
        for user in self.service.users:
            if user.node is None:
                rooms.update(user.rooms)
        for room in rooms:
            state = self.service.room_state(room)
            if state is None:
                # The room is gone here: its stamp with it.
                self._stamps.pop(room, None)
                continue
            op = ops.room_op(state, None, self._stamps.get(room, (0.0, "")))
            del op["k"]
            entries.append(op)
        return entries

    # -- what the others tell ----------------------------------------------------------------

    def _on_room(self, node: str, op: dict[str, Any], own: frozenset[str] = frozenset()) -> None:
        """Take a room's state unless this node holds a later one.  ``own``: the users of
        ``node`` (in its "state" op), whose status there is taken even then: the state
        this node holds was taken before they joined here, so it left them as they came."""
        state, by, stamp = ops.room_from(op)
        held = self._stamps.get(state.name)
        if held is not None and stamp <= held:
            # This node holds a later state: it went (or goes) to every node and wins there.
            if own:
                self._take_statuses(state, own)
            return
        if self.service.apply_room_state(state, by):
            # Not kept for a room unknown here (its members' joins are yet to come): the
            # state of the node that has them, with the same stamp, must still be taken.
            self._stamps[state.name] = stamp

    def _take_statuses(self, state: RoomState, own: frozenset[str]) -> None:
        here = self.service.room_state(state.name)
        members = tuple((key, status) for key, status in state.members if key in own)
        if here is not None and members:
            self.service.apply_room_state(replace(here, members=members), None)

    def _founded_here(self, join: Join) -> None:
        self._founded[join.room] = (join.ts, self.name, join.who.key)

    def _on_join(self, node: str, op: dict[str, Any]) -> None:
        """A user of ``node`` joined.  When its join made the room there while this node had
        made it too (each node's first member its operator), the earlier making wins (time,
        then node name): its user is the first operator on every node, and the other's is
        not; this node's members are told, and the outcome goes to every node as the room's
        state, so that a change the other made meanwhile as its operator does not undo it."""
        room = room_key(op["room"])
        existed = room in self.service.rooms
        self._call(node, op["nick"], "join", room)
        if op["c"] is None or room not in self.service.rooms:
            return
        founded = (float(op["c"]), node, casefold(op["nick"]))
        if not existed:
            # Made here by this join too: its user is the operator here as there.
            self._founded[room] = founded
            return
        held = self._founded.get(room)
        if held is None or founded[:2] >= held[:2]:
            # It was here before that user made it there, or was made here first.
            return
        self._founded[room] = founded
        state = self.service.room_state(room)
        assert state is not None
        statuses = dict(state.members)
        winner, loser = founded[2], held[2]
        members = [(winner, "o" + statuses.get(winner, "").replace("o", ""))]
        if loser in statuses and loser != winner:
            members.append((loser, statuses[loser].replace("o", "")))
        self.service.apply_room_state(replace(state, members=tuple(members)), None)
        self.room_changed(room, None)

    def _on_invite(self, node: str, op: dict[str, Any]) -> None:
        self._call(node, op["nick"], "invite", op["target"], op["room"])

    def _on_umode(self, node: str, op: dict[str, Any]) -> None:
        conn = self._conn(node, op["nick"])
        if conn is not None:
            self.service.user_modes_elsewhere(conn, op["modes"])

    def _on_wallops(self, node: str, op: dict[str, Any]) -> None:
        self._call(node, op["nick"], "wallops", op["text"])

    def _on_login(self, node: str, op: dict[str, Any]) -> None:
        conn = self._conn(node, op["nick"])
        if conn is not None:
            self.service.account_login_elsewhere(conn, op["account"])

    def _on_kline(self, node: str, op: dict[str, Any]) -> None:
        if op["lifted"]:
            self.service.unban_elsewhere(op["mask"])
        else:
            ban = ServerBan(op["mask"], op["reason"], op["by"], float(op["at"]))
            self.service.ban_elsewhere(ban)

    def _on_rename(self, node: str, op: dict[str, Any]) -> None:
        conn = self._conn(node, op["nick"])
        if conn is not None:
            self.service.rename_room_elsewhere(conn, op["old"], op["new"], op["reason"])

    def _on_meta(self, node: str, op: dict[str, Any]) -> None:
        """A user's metadata changed on ``node``: taken unless this node holds a later change
        of the key (made here at the same moment: it went to ``node`` too, and wins there)."""
        held = (casefold(op["target"]), op["key"])
        stamp = (float(op["stamp"][0]), op["stamp"][1] or node)
        mine = self._meta_stamps.get(held)
        if mine is not None and stamp <= mine:
            return
        self._meta_stamps[held] = stamp
        own = casefold(op["target"]) == casefold(op["nick"])
        self._call(
            node,
            op["nick"],
            "set_metadata",
            op["key"],
            op["value"],
            nick=None if own else op["target"],
        )

    def _by_server(self, op: dict[str, Any]) -> None:
        """An operator's console on another node kicked (its "kick" with no nick)."""
        try:
            self.service.kick_by_server(op["room"], op["target"], op["reason"], elsewhere=True)
        except ChatError:
            # Gone here already (a part crossed it): nothing to undo.
            pass

    def _on_notice(self, node: str, op: dict[str, Any]) -> None:
        self.service.notice_everyone(op["text"], elsewhere=True)

    def _take_metadata(self, node: str, nick: str, meta: dict[str, str]) -> None:
        """Make the metadata of ``node``'s user ``nick`` here what its node says it is (a
        node that starts, or missed entries, learns what was set before)."""
        held = self.service.user_metadata(nick)
        for key in held.keys() - meta.keys():
            self._call(node, nick, "set_metadata", key, None)
        for key, value in meta.items():
            if held.get(key) != value:
                self._call(node, nick, "set_metadata", key, value)

    def _on_account(self, node: str, op: dict[str, Any]) -> None:
        if op["revoked"] is None:
            self.service.account_registered_elsewhere(op["name"])
        else:
            self.service.account_revoked_elsewhere(op["name"], op["revoked"])

    def _on_tag(self, node: str, op: dict[str, Any]) -> None:
        self._call(
            node,
            op["nick"],
            "send_tags",
            tuple((name, value) for name, value in op["tags"]),
            room=op["room"],
            nick=op["target"],
            status=op["status"],
            native=ops.native_from(op),
            msgid=op["id"],
        )

    def _on_redact(self, node: str, op: dict[str, Any]) -> None:
        conn = self._conn(node, op["nick"])
        if conn is None or conn.user is None:
            return
        self.service.apply_redaction(
            Redaction(
                ts=float(op["ts"]),
                id=op["id"],
                who=conn.user.who(),
                msgid=op["msgid"],
                sender=ops.who_from(op["sender"]),
                reason=op["reason"],
                room=op["room"],
                target=op["target"],
                origin=conn.client,
                native=ops.native_from(op),
            )
        )
