"""MONITOR (IRCv3): tell a client when the nicks it watches come online or go offline, and
with extended-monitor, when they go away, change their real name or log in or out.

The core reports every nick going online or offline to ``ChatService.observe`` callbacks (a nick
change is the old nick going offline and the new one coming online).  One index per chat
service, shared by every IRC listener, maps watched nicks to the connections watching them;
it holds connections weakly, and drops a closed one when it next has news for it.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from typing import Any

from chatserver.core.events import AccountChange, Away, Event, Presence, RealnameChange
from chatserver.core.names import casefold, is_valid_nick
from protocols.irc import numerics as n
from protocols.irc.caps import Capability, add_capability
from protocols.irc.commands import command
from protocols.irc.handlers.registration import EXTRA_ISUPPORT
from protocols.irc.handlers.services import PSEUDO_USERS

# Nicks one connection may watch (ISUPPORT MONITOR).
MONITOR_LIMIT = 100
EXTRA_ISUPPORT["MONITOR"] = str(MONITOR_LIMIT)
add_capability(Capability("extended-monitor", requires_command="MONITOR"))
# What extended-monitor passes on about a watched user, as if a room were shared with it
# (each still needs its own capability: away-notify, setname, account-notify).
_FOLLOWED = (Away, RealnameChange, AccountChange)
# Bytes of targets per numeric line: the line stays under 512 with the longest prefix.
TARGETS_BUDGET = 400


class MonitorIndex:
    """Watched nicks -> watching connections, and each connection's list."""

    def __init__(self) -> None:
        self.watchers: dict[str, weakref.WeakSet[Any]] = {}
        self.lists: weakref.WeakKeyDictionary[Any, dict[str, str]] = weakref.WeakKeyDictionary()

    def targets(self, conn: Any) -> dict[str, str]:
        """Folded nick -> nick as the client wrote it."""
        return self.lists.get(conn, {})

    def add(self, conn: Any, nick: str) -> None:
        key = casefold(nick)
        self.lists.setdefault(conn, {})[key] = nick
        self.watchers.setdefault(key, weakref.WeakSet()).add(conn)

    def remove(self, conn: Any, nick: str) -> None:
        key = casefold(nick)
        self.targets(conn).pop(key, None)
        watching = self.watchers.get(key)
        if watching is not None:
            watching.discard(conn)
            if not watching:
                del self.watchers[key]

    def clear(self, conn: Any) -> None:
        for key in list(self.targets(conn)):
            self.remove(conn, key)
        self.lists.pop(conn, None)

    def observe(self, event: Event) -> None:
        if isinstance(event, _FOLLOWED):
            self._changed(event)
            return
        if not isinstance(event, Presence):
            return
        key = casefold(event.who.nick)
        watching = self.watchers.get(key)
        if watching is None:
            return
        for conn in list(watching):
            if conn.closing:
                # Gone: forget it now rather than when it is garbage-collected.
                watching.discard(conn)
                self.lists.pop(conn, None)
                continue
            if event.online:
                conn.reply(n.RPL_MONONLINE, event.who.mask)
            else:
                conn.reply(n.RPL_MONOFFLINE, event.who.nick)
        if not watching:
            del self.watchers[key]

    def _changed(self, event: Any) -> None:
        """extended-monitor: a watched user changed; watchers who share a room with it have
        heard already (the core tells a user's rooms)."""
        key = casefold(event.who.nick)
        watching = self.watchers.get(key)
        if not watching:
            return
        watched = None
        for conn in list(watching):
            viewer = conn.user
            if conn.closing or viewer is None or "extended-monitor" not in conn.caps:
                continue
            if viewer.key == key:
                continue
            if watched is None:
                watched = conn.service.find_user(event.who.nick)
                if watched is None:
                    return
            if any(room in viewer.rooms for room in watched.rooms):
                continue
            conn.deliver(event)


_INDEXES: weakref.WeakKeyDictionary[Any, MonitorIndex] = weakref.WeakKeyDictionary()


def index_for(service: Any) -> MonitorIndex:
    """The index of ``service``, made (and subscribed to its observers) on first use."""
    index = _INDEXES.get(service)
    if index is None:
        index = _INDEXES[service] = MonitorIndex()
        service.observe(index.observe)
    return index


def _chunks(items: Iterable[str], budget: int = TARGETS_BUDGET) -> list[str]:
    """Comma-joined groups of ``items`` that each fit in ``budget`` bytes."""
    groups: list[str] = []
    current: list[str] = []
    used = 0
    for item in items:
        size = len(item.encode()) + (1 if current else 0)
        if current and used + size > budget:
            groups.append(",".join(current))
            current, used = [], 0
            size -= 1
        current.append(item)
        used += size
    if current:
        groups.append(",".join(current))
    return groups


def _status(conn: Any, nicks: Iterable[str]) -> None:
    """730 for those online (with their masks), 731 for the others."""
    online: list[str] = []
    offline: list[str] = []
    for nick in nicks:
        user = conn.service.find_user(nick)
        pseudo = PSEUDO_USERS.get(casefold(nick))
        if user is not None:
            online.append(user.who().mask)
        elif pseudo is not None:
            online.append(pseudo.source(conn))
        else:
            offline.append(nick)
    for group in _chunks(online):
        conn.reply(n.RPL_MONONLINE, group)
    for group in _chunks(offline):
        conn.reply(n.RPL_MONOFFLINE, group)


def _split_targets(params: tuple[str, ...]) -> list[str]:
    return [t for t in ",".join(params).split(",") if t]


@command("MONITOR", min_params=1)
def monitor(conn: Any, msg: Any) -> None:
    index = index_for(conn.service)
    action = msg.params[0]
    if action == "+":
        if len(msg.params) < 2:
            conn.reply(n.ERR_NEEDMOREPARAMS, "MONITOR", "Not enough parameters")
            return
        targets = _split_targets(msg.params[1:])
        watched = index.targets(conn)
        added: list[str] = []
        for position, nick in enumerate(targets):
            if not is_valid_nick(nick) or casefold(nick) in watched:
                continue
            if len(index.targets(conn)) >= MONITOR_LIMIT:
                rest = ",".join(targets[position:])
                conn.reply(n.ERR_MONLISTFULL, str(MONITOR_LIMIT), rest, "Monitor list is full.")
                break
            index.add(conn, nick)
            watched = index.targets(conn)
            added.append(nick)
        _status(conn, added)
    elif action == "-":
        if len(msg.params) < 2:
            conn.reply(n.ERR_NEEDMOREPARAMS, "MONITOR", "Not enough parameters")
            return
        for nick in _split_targets(msg.params[1:]):
            index.remove(conn, nick)
    elif action.upper() == "C":
        index.clear(conn)
    elif action.upper() == "L":
        for group in _chunks(index.targets(conn).values()):
            conn.reply(n.RPL_MONLIST, group)
        conn.reply(n.RPL_ENDOFMONLIST, "End of MONITOR list")
    elif action.upper() == "S":
        _status(conn, index.targets(conn).values())
    else:
        conn.fail("MONITOR", "INVALID_PARAMS", action, description="Unknown MONITOR action")
