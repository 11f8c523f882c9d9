"""Metadata (IRCv3 ``draft/metadata-2``, and ``draft/metadata-3`` which differs only in how a
change is told): ``METADATA <target> GET|LIST|SET|CLEAR|SUB|UNSUB|SUBS|SYNC``.

The values live in the core (:mod:`chatserver.core.metadata`), shared with XMPP (a nickname or
avatar published there is ``display-name`` / ``avatar`` here).  What a connection subscribed to
is its own (``conn.metadata_subs``): a change reaches it only for those keys, as
``METADATA <target> <key> * :<value>`` under metadata-2 and as ``761``/``766`` under
metadata-3.  GET, LIST, CLEAR and SYNC answer in a ``metadata`` batch for clients with batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from chatserver.core.errors import (
    BadName,
    BadText,
    ChatError,
    LimitExceeded,
    NoSuchNick,
    NoSuchRoom,
    NotPermitted,
)
from chatserver.core.events import MetadataChange
from chatserver.core.names import metadata_key as check_key
from protocols.irc import caps
from protocols.irc import numerics as n
from protocols.irc.caps import Capability, add_capability
from protocols.irc.channels import channel_name, is_channel, room_of
from protocols.irc.commands import command
from protocols.irc.render import line, renders

CAP2 = "draft/metadata-2"
CAP3 = "draft/metadata-3"
MAX_SUBS = 50


def _limits(conn: Any) -> str:
    service = conn.service
    return (
        f"max-subs={MAX_SUBS},max-keys={service.metadata_max_keys},"
        f"max-value-bytes={service.metadata_max_value_bytes}"
    )


add_capability(Capability(CAP2, _limits, requires_command="METADATA"))
add_capability(Capability(CAP3, _limits, requires_command="METADATA"))

VISIBLE = "*"  # every key is visible to everyone who may see its target
NOT_SET = "key not set"


def has_metadata(conn: Any) -> bool:
    return CAP2 in conn.caps or CAP3 in conn.caps


class _Target:
    """What ``METADATA <target>`` names: a room (``room`` key) or a user (``nick``)."""

    def __init__(self, shown: str, nick: str | None = None, room: str | None = None) -> None:
        self.shown = shown
        self.nick = nick
        self.room = room

    def where(self) -> dict[str, str]:
        return {"room": self.room} if self.room is not None else {"nick": self.nick or ""}


def _target(conn: Any, raw: str) -> _Target | None:
    if raw == "*":
        return _Target(conn.nick, nick=conn.nick)
    if is_channel(raw):
        key = room_of(raw)
        room = conn.service.get_room(key) if key is not None else None
        return None if room is None else _Target(channel_name(room.name), room=room.name)
    user = conn.service.find_user(raw)
    return None if user is None else _Target(user.nick, nick=user.nick)


def _invalid_target(conn: Any, raw: str) -> None:
    conn.fail("METADATA", "INVALID_TARGET", raw, description="Invalid metadata target")


def _values(conn: Any, target: _Target) -> dict[str, str]:
    if target.room is not None:
        return conn.service.room_metadata(conn.core, target.room)
    return conn.service.user_metadata(target.nick or "")


class _Batch:
    """The lines of one answer, in a ``metadata`` batch when the client has batch."""

    def __init__(self, conn: Any, target: str, *, batched: bool = True) -> None:
        self.conn = conn
        self.ref: str | None = None
        if batched and conn.cap_bits & caps.BATCH:
            self.ref = conn.new_batch_id()
            conn.send("BATCH", f"+{self.ref}", "metadata", target)

    def tags(self) -> dict[str, str] | None:
        return {"batch": self.ref} if self.ref is not None else None

    def numeric(self, numeric: str, *params: str) -> None:
        self.conn.send(numeric, self.conn.nick, *params, tags=self.tags(), force_trailing=True)

    def fail(self, code: str, *context: str, description: str) -> None:
        self.conn.send(
            "FAIL", "METADATA", code, *context, description, tags=self.tags(), force_trailing=True
        )

    def end(self) -> None:
        if self.ref is not None:
            self.conn.send("BATCH", f"-{self.ref}")


def _key_value(out: _Batch, target: str, key: str, value: str | None) -> None:
    if value is None:
        out.numeric(n.RPL_KEYNOTSET, target, key, NOT_SET)
    else:
        out.numeric(n.RPL_KEYVALUE, target, key, VISIBLE, value)


@command("METADATA", min_params=2)
def metadata(conn: Any, msg: Any) -> None:
    raw, sub = msg.params[0], msg.params[1].upper()
    args = list(msg.params[2:])
    own = _SUBSCRIPTIONS.get(sub)
    if own is not None:
        # Subscriptions are the connection's own, whatever the target says.
        own(conn, args)
        return
    handler = _SUBCOMMANDS.get(sub)
    if handler is None:
        conn.fail("METADATA", "SUBCOMMAND_INVALID", sub, description="Unknown subcommand")
        return
    target = _target(conn, raw)
    if target is None:
        _invalid_target(conn, raw)
        return
    try:
        handler(conn, target, args)
    except (NoSuchRoom, NoSuchNick):
        _invalid_target(conn, raw)


def _get(conn: Any, target: _Target, keys: list[str]) -> None:
    if not keys:
        conn.fail("METADATA", "INVALID_PARAMS", description="Which keys?")
        return
    values = _values(conn, target)
    out = _Batch(conn, target.shown)
    for key in keys:
        try:
            folded = check_key(key)
        except BadName:
            out.fail("KEY_INVALID", key, description="Invalid key")
            continue
        _key_value(out, target.shown, folded, values.get(folded))
    out.end()


def _list(conn: Any, target: _Target, _args: list[str]) -> None:
    values = _values(conn, target)
    out = _Batch(conn, target.shown)
    for key, value in sorted(values.items()):
        _key_value(out, target.shown, key, value)
    out.end()


def _set(conn: Any, target: _Target, args: list[str]) -> None:
    if not args:
        conn.fail("METADATA", "INVALID_PARAMS", description="Which key?")
        return
    key, value = args[0], (args[1] if len(args) > 1 else None)
    try:
        folded = check_key(key)
        conn.service.set_metadata(conn.core, folded, value, **target.where())
    except BadName:
        conn.fail("METADATA", "KEY_INVALID", key, description="Invalid key")
    except BadText as err:
        conn.fail("METADATA", "INVALID_VALUE", key, description=err.reason)
    except LimitExceeded as err:
        conn.fail("METADATA", "LIMIT_REACHED", target.shown, description=err.reason)
    except NotPermitted:
        conn.fail(
            "METADATA", "KEY_NO_PERMISSION", target.shown, key, description="Permission denied"
        )
    else:
        _key_value(_Batch(conn, target.shown, batched=False), target.shown, folded, value)


def _clear(conn: Any, target: _Target, _args: list[str]) -> None:
    try:
        cleared = conn.service.clear_metadata(conn.core, **target.where())
    except NotPermitted:
        conn.fail(
            "METADATA", "KEY_NO_PERMISSION", target.shown, "*", description="Permission denied"
        )
        return
    out = _Batch(conn, target.shown)
    for key in cleared:
        _key_value(out, target.shown, key, None)
    out.end()


def _valid_keys(conn: Any, keys: list[str]) -> Iterator[tuple[str, str]]:
    """Each key as given and folded; an invalid one is answered with KEY_INVALID and skipped."""
    for key in keys:
        try:
            yield key, check_key(key)
        except BadName:
            conn.fail("METADATA", "KEY_INVALID", key, description="Invalid key")


def _sub(conn: Any, keys: list[str]) -> None:
    subs = set(conn.metadata_subs)
    added: list[str] = []
    for key, folded in _valid_keys(conn, keys):
        if folded not in subs and len(subs) >= MAX_SUBS:
            conn.fail("METADATA", "TOO_MANY_SUBS", key, description="Too many subscriptions")
            break
        subs.add(folded)
        added.append(folded)
    conn.metadata_subs = frozenset(subs)
    if added:
        conn.reply(n.RPL_METADATASUBOK, *added)


def _unsub(conn: Any, keys: list[str]) -> None:
    removed = [folded for _key, folded in _valid_keys(conn, keys)]
    conn.metadata_subs = conn.metadata_subs.difference(removed)
    if removed:
        conn.reply(n.RPL_METADATAUNSUBOK, *removed)


def _subs(conn: Any, _args: list[str]) -> None:
    if conn.metadata_subs:
        conn.reply(n.RPL_METADATASUBS, *sorted(conn.metadata_subs))


def _sync(conn: Any, target: _Target, _args: list[str]) -> None:
    out = _Batch(conn, target.shown)
    for shown, values in _sync_targets(conn, target):
        for key, value in sorted(values.items()):
            if key in conn.metadata_subs:
                _key_value(out, shown, key, value)
    out.end()


def _sync_targets(conn: Any, target: _Target) -> Iterable[tuple[str, dict[str, str]]]:
    """The target's values, and for a room every member's."""
    yield target.shown, _values(conn, target)
    if target.room is not None:
        room = conn.service.get_room(target.room)
        for user in list(room.members) if room is not None else []:
            yield user.nick, conn.service.user_metadata(user.nick)


_SUBCOMMANDS = {
    "GET": _get,
    "LIST": _list,
    "SET": _set,
    "CLEAR": _clear,
    "SYNC": _sync,
}
_SUBSCRIPTIONS = {"SUB": _sub, "UNSUB": _unsub, "SUBS": _subs}


def after_join(conn: Any, room: str) -> None:
    """The room's and its members' values of the keys the client subscribed to."""
    if not conn.metadata_subs or not has_metadata(conn):
        return
    try:
        target = _Target(channel_name(room), room=room)
        found = list(_sync_targets(conn, target))
    except ChatError:
        return
    for shown, values in found:
        for key, value in sorted(values.items()):
            if key in conn.metadata_subs and shown != conn.nick:
                conn.queue_line(_notification(conn, shown, key, value))


def whois_lines(conn: Any, user: Any) -> None:
    """RPL_WHOISKEYVALUE for each key of ``user``, to clients with the capability."""
    if not has_metadata(conn):
        return
    for key, value in sorted(conn.service.user_metadata(user.nick).items()):
        conn.reply(n.RPL_WHOISKEYVALUE, user.nick, key, VISIBLE, value)


def _notification(conn: Any, target: str, key: str, value: str | None) -> bytes:
    if CAP3 in conn.caps:
        if value is None:
            return line(None, conn.server_name, n.RPL_KEYNOTSET, (conn.nick, target, key), NOT_SET)
        return line(
            None, conn.server_name, n.RPL_KEYVALUE, (conn.nick, target, key, VISIBLE), value
        )
    if value is None:
        return line(None, conn.server_name, "METADATA", (target, key, VISIBLE))
    return line(None, conn.server_name, "METADATA", (target, key, VISIBLE), value)


@renders(MetadataChange)
def render_change(conn: Any, event: MetadataChange) -> bytes | None:
    """A change told to the connections that subscribed to its key (the one that made it
    has its answer)."""
    if event.origin is conn or event.key not in conn.metadata_subs or not has_metadata(conn):
        return None
    shown = channel_name(event.room) if event.room is not None else event.target
    return _notification(conn, shown, event.key, event.value)
