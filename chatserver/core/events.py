"""Immutable event records that the core emits to connections through ``IChatClient.deliver``.

An event carries data only; each protocol renders it.  ``rendered`` is a per-event cache
that protocols fill with bytes keyed by their own variant (for IRC, the set of capabilities
that change the line), so a message fanned out to many members is rendered once per variant.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from chatserver.core.names import casefold

_T = TypeVar("_T")


def quick_init(cls: type[_T]) -> type[_T]:
    """Give a frozen, slotted dataclass a faster ``__init__`` that does what the generated one
    does: the same parameters, defaults and default factories, then ``__post_init__``.

    The generated one stores each field through ``object.__setattr__`` (a global lookup, an
    attribute lookup and a call per field), which is most of the cost of making a record
    that every message makes; this one calls each slot's own setter, bound once here.  The
    record stays immutable: assigning to a field still raises ``FrozenInstanceError``.
    """
    params: list[str] = []
    keyword: list[str] = []
    body: list[str] = []
    names: dict[str, Any] = {"_MISSING": dataclasses.MISSING}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if not f.init:
            continue
        if f.default is not dataclasses.MISSING:
            names[f"_default_{f.name}"] = f.default
            param = f"{f.name}=_default_{f.name}"
        elif f.default_factory is not dataclasses.MISSING:
            names[f"_factory_{f.name}"] = f.default_factory
            param = f"{f.name}=_MISSING"
            body.append(f"    if {f.name} is _MISSING: {f.name} = _factory_{f.name}()")
        else:
            param = f.name
        (keyword if f.kw_only else params).append(param)
        slot = next(k.__dict__[f.name] for k in cls.__mro__ if f.name in k.__dict__)
        names[f"_set_{f.name}"] = slot.__set__
        body.append(f"    _set_{f.name}(self, {f.name})")
    if hasattr(cls, "__post_init__"):
        body.append("    self.__post_init__()")
    signature = ", ".join(["self", *params, *(["*", *keyword] if keyword else [])])
    source = (
        f"def _make({', '.join(names)}):\n"
        f"  def __init__({signature}) -> None:\n" + "\n".join(body or ["    pass"]) + "\n"
        "  return __init__\n"
    )
    scope: dict[str, Any] = {}
    exec(source, {}, scope)
    init = scope["_make"](**names)
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__doc__ = cls.__init__.__doc__
    cls.__init__ = init  # type: ignore[method-assign]
    return cls


MessageKind = Literal["privmsg", "notice", "action"]
# Why the server closed a connection it did not want to keep, when it was the client's doing:
# it flooded, or it did not read its output.  Protocols pass it to ``ChatService.quit``.
DropKind = Literal["flood", "slow_reader"]


@dataclass(frozen=True, slots=True)
class Who:
    """A snapshot of a user as others see it at the moment of an event.

    ``host`` is always a cloak, never the client's address.
    """

    nick: str
    ident: str
    host: str
    account: str | None = None
    realname: str = ""
    bot: bool = False
    away: str | None = None
    # The nick casefolded, made once per snapshot: protocols compare it with their own user's
    # for every member an event reaches ("is this about me?").
    key: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", casefold(self.nick))

    @property
    def mask(self) -> str:
        if not self.ident:
            # The server itself (a kick from the operator's console): IRC names a server
            # source by its name alone.
            return self.nick
        return f"{self.nick}!{self.ident}@{self.host}"


def who_fields(who: Who) -> dict[str, Any]:
    """``who`` as a compact map of plain values (what the cluster's nodes pass each other)."""
    return {
        "n": who.nick,
        "i": who.ident,
        "h": who.host,
        "a": who.account,
        "r": who.realname,
        "w": who.away,
    }


def who_of(fields: dict[str, Any]) -> Who:
    """The Who that :func:`who_fields` made ``fields`` of (checked by whoever received it)."""
    return Who(
        nick=fields["n"],
        ident=fields["i"],
        host=fields["h"],
        account=fields["a"],
        realname=fields["r"],
        away=fields["w"],
    )


@dataclass(frozen=True, slots=True)
class ModeItem:
    """One mode change: ``adding`` or removing ``mode`` (a core mode name), with its argument."""

    adding: bool
    mode: str
    arg: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    ts: float
    # The connection (an IChatClient) whose command caused the event, None when the server did
    # (a login elsewhere, an operator's console, a timer): a protocol tells its own command's
    # outcome, which the command's handler answers, from the same change made elsewhere.
    origin: Any = field(default=None, compare=False, repr=False)
    rendered: dict[Any, bytes] = field(default_factory=dict, compare=False, repr=False, hash=False)


@quick_init
@dataclass(frozen=True, slots=True, kw_only=True)
class Message(Event):
    """A message to a room (``room`` set) or to a user (``target`` set)."""

    id: str
    source: Who
    text: str
    kind: MessageKind = "privmsg"
    room: str | None = None
    target: str | None = None
    # The account of the user ``target`` names, if it is logged in to one: protocols that
    # address users by account (XMPP JIDs) say whom the message was for with it.
    target_account: str | None = None
    tags: tuple[tuple[str, str], ...] = ()
    # Minimum member status ('op' or 'voice') that receives it, for IRC STATUSMSG (@#room).
    status: str | None = None
    # The message as the sender's protocol wrote it (opaque to the core), so that a recipient
    # on the same protocol can get it whole: XMPP relays the sender's stanza with its id and
    # extensions.  Other protocols ignore it.
    native: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class StoredNative:
    """A message's ``native`` form as the archive gives it back: the bytes its sender's
    protocol wrote (for XMPP, the sender's stanza with its extensions), to be replayed whole
    to a client of that protocol."""

    data: bytes


# A protocol's own form of a message as plain fields, so that it can cross to another
# process of a cluster and reach that process's clients of the protocol whole (an XMPP
# stanza with its extensions).  A native type has ``wire() -> (kind, fields)``, fields being
# JSON values, and its protocol registers ``kind`` with the function that makes it again.
# A native without ``wire``, or of a kind the other process does not know, crosses as
# nothing: its recipients there get what other protocols get.
_NATIVE_DECODERS: dict[str, Callable[[dict[str, Any]], Any]] = {}


def register_native(kind: str, decode: Callable[[dict[str, Any]], Any]) -> None:
    _NATIVE_DECODERS[kind] = decode


def native_to_wire(native: Any) -> tuple[str, dict[str, Any]] | None:
    if isinstance(native, str):
        # A protocol's marker (such as "shown already"): crosses as itself.
        return "text", {"v": native}
    wire = getattr(native, "wire", None)
    return None if wire is None else wire()


def _text_native(fields: dict[str, Any]) -> str:
    value = fields["v"]
    if not isinstance(value, str):
        raise TypeError("a text native is a string")
    return value


def native_from_wire(kind: str, fields: dict[str, Any]) -> Any:
    """The native again, or None when ``kind`` is unknown here or ``fields`` are not its."""
    decode = _NATIVE_DECODERS.get(kind)
    if decode is None:
        return None
    try:
        return decode(fields)
    except (KeyError, TypeError, ValueError):
        return None


register_native("text", _text_native)


# What a message's fields are as a run carries them: (text, kind, tags, msgid, ts, native).
Said = tuple[str, MessageKind, tuple[tuple[str, str], ...], str, float, Any]

# The first part of the ``rendered`` keys whose bytes depend on nothing but the event (and
# code and configuration every node of a cluster shares): a node may ship them with a message
# to another, whose recipients of the same key get them as they are.
_SHARED_RENDERINGS: set[str] = set()


def share_rendering(name: str) -> None:
    """Declare that protocol ``name``'s ``rendered`` keys ``(name, ...)`` of a room message
    hold bytes made from the message alone, the same on every node (see MessageRun): its
    connections (whose ``protocol`` is ``name``) get another node's run as such bytes, not
    as Message events."""
    _SHARED_RENDERINGS.add(name)


def shared_renderings(rendered: dict[Any, Any]) -> list[Any]:
    """The keys of ``rendered`` that other nodes may use as they are."""
    return [key for key in rendered if type(key) is tuple and key[0] in _SHARED_RENDERINGS]


def shared_blocks(rendered: dict[Any, Any]) -> list[list[Any]]:
    """``rendered``'s bytes under the keys of ``shared_renderings``, as [key, bytes] pairs:
    one pass over the dict, for a message that goes to other nodes alone."""
    return [
        [key, data]
        for key, data in rendered.items()
        if type(key) is tuple and key[0] in _SHARED_RENDERINGS
    ]


def renders_shared(protocol: str) -> bool:
    """Whether connections of ``protocol`` render room messages under shared keys (see
    ``share_rendering``); those of any other protocol take another node's run as the
    Message events made of it."""
    return protocol in _SHARED_RENDERINGS


@quick_init
@dataclass(frozen=True, slots=True, kw_only=True)
class MessageRun(Event):
    """Messages a user of another cluster node said to ``room`` in a row, as that node sent
    them: ``count`` of them, ``ts`` the last one's time.  ``shipped`` holds the bytes its
    node made of them for its own members (all of them joined, per key of
    ``share_rendering``): a recipient of one of those keys gets them without the messages
    being made or rendered here.  ``rendered`` holds, per key, the bytes this node's members
    of that key got (shipped or made here), so once the run is delivered its keys say which
    renderings were used and ``shipped`` which of them came ready.  ``messages()`` makes the
    Message events, once, for everything else (other keys, other protocols, history);
    ``said`` gives their fields."""

    room: str
    source: Who
    count: int
    # The time of the last of them that is not a notice (None: all are).
    active: float | None
    said: Callable[[], list[Said]] = field(compare=False, repr=False)
    shipped: dict[Any, bytes] = field(default_factory=dict, compare=False, repr=False)
    # The events once made (a list, so that a frozen run can keep them).
    made: list[tuple[Message, ...]] = field(default_factory=list, compare=False, repr=False)

    def messages(self) -> tuple[Message, ...]:
        made = self.made
        if not made:
            source, room, origin = self.source, self.room, self.origin
            made.append(
                tuple(
                    [
                        Message(
                            ts=ts,
                            id=msgid,
                            source=source,
                            text=text,
                            kind=kind,
                            room=room,
                            tags=tags,
                            origin=origin,
                            native=native,
                        )
                        for text, kind, tags, msgid, ts, native in self.said()
                        if text
                    ]
                )
            )
        return made[0]


def each_message(events: Iterable[Event]) -> Iterator[Event]:
    """``events`` with each MessageRun as its messages: for a protocol that renders events
    one by one."""
    for event in events:
        if type(event) is MessageRun:
            yield from event.messages()
        else:
            yield event


@quick_init
@dataclass(frozen=True, slots=True, kw_only=True)
class MessageBatch:
    """A room's messages of one reactor turn (and, in a big room, its joins and parts),
    delivered to a member at once, in order.

    ``rendered`` caches the joined bytes per protocol variant, as ``Event.rendered`` does for
    one event, so each member of a variant gets the same bytes object in one write.  A batch
    never holds an event about its recipient (a member hears of its own join or part at
    once), nor, unless the recipient is ``echo_at_turn_end``, its own messages: what a batch
    renders to is the same for every member of a variant.
    """

    # A MessageRun among them stands for its messages (``each_message`` gives them).
    messages: tuple[Event, ...]
    # The joined bytes per variant, and whatever else a protocol makes once per variant to
    # build its members' batches from (IRC: each message's bytes).
    rendered: dict[Any, Any] = field(default_factory=dict, compare=False, repr=False, hash=False)
    # A member that said some of the turn's messages gets the rest of them: ``messages`` are
    # then the runs ``spans`` ((start, stop), ...) of the whole turn's batch ``base``, which
    # holds only messages.  A protocol may build such a batch from what it made of ``base``
    # (each message's bytes are the same for every member of a variant) without a pass over
    # every message for every sender; one that does not just reads ``messages``.
    base: MessageBatch | None = field(default=None, compare=False, repr=False)
    spans: tuple[tuple[int, int], ...] = field(default=(), compare=False, repr=False)

    def join_spans(self, parts: list[bytes]) -> bytes:
        """This batch's bytes from ``parts``, the bytes of each of ``base``'s messages."""
        pieces: list[bytes] = []
        for start, stop in self.spans:
            pieces += parts[start:stop]
        return b"".join(pieces)


@dataclass(frozen=True, slots=True, kw_only=True)
class Join(Event):
    room: str
    who: Who
    # The join made the room (its user is the room's first operator).
    created: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Part(Event):
    room: str
    who: Who
    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Quit(Event):
    who: Who
    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class NickChange(Event):
    who: Who
    new_nick: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Topic(Event):
    room: str
    who: Who
    text: str
    # Its id in history (draft/event-playback); "" for a topic only shown (on join).
    id: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Kick(Event):
    room: str
    who: Who
    target: Who
    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class RoomRenamed(Event):
    """The room ``old`` is now ``new`` (both room keys), renamed by ``who``: its members,
    modes, registration and history are the new room's."""

    old: str
    new: str
    who: Who
    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ModeChange(Event):
    """Room mode changes (flags, key, limit, bans, invites, member status) by ``who``."""

    room: str
    who: Who
    changes: tuple[ModeItem, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class UserModeChange(Event):
    """A user's own modes changed (delivered to that user's connections only)."""

    who: Who
    changes: tuple[ModeItem, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Away(Event):
    """``message`` None means back."""

    who: Who
    message: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Invite(Event):
    room: str
    who: Who
    target: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RealnameChange(Event):
    who: Who
    realname: str


@dataclass(frozen=True, slots=True, kw_only=True)
class HostChange(Event):
    who: Who
    ident: str
    host: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountChange(Event):
    """``account`` None means logged out; ``previous`` is the account it was logged in to."""

    who: Who
    account: str | None
    previous: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerNotice(Event):
    """A notice from the server to one user (nick enforcement, shutdown warnings, …)."""

    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Wallops(Event):
    """An operator broadcast to users who asked for them."""

    who: Who
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Presence(Event):
    """A nick came online (``online``) or went offline; for ``ChatService.observers`` only.

    A nick change is the old nick going offline and the new one coming online.  Clients never
    get this event: it serves notify lists (IRC MONITOR) that follow nicks nobody shares a
    room with.
    """

    who: Who
    online: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class KeptRooms(Event):
    """The rooms an always-on account is kept in changed (``joined``, ``left``: room keys),
    or always-on was turned on (``joined``: every room it is in); for
    ``ChatService.observers`` only, so that a protocol can keep the account's own list of
    rooms to rejoin (XMPP bookmarks) in step."""

    account: str
    nick: str
    joined: tuple[str, ...] = ()
    left: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class OfflineMessages(Event):
    """Private messages kept for an account while it had no connection, given to the first
    connection that logs in to it (oldest first, with their original times and ids)."""

    messages: tuple[Message, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class MissedMessages(Event):
    """What was said in ``room`` since ``since``, while an always-on account had no
    connection: given to the connection that comes back (oldest first, with their original
    times and ids)."""

    room: str
    since: float
    messages: tuple[Message, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadMarker(Event):
    """The account's read position moved to ``read_ts`` in ``target``: ``#`` and a room key
    for a room, a folded nick for a private conversation.  Sent to every connection of the
    account so that reading on one clears the others."""

    target: str
    read_ts: float


@dataclass(frozen=True, slots=True, kw_only=True)
class TagMessage(Event):
    """Client-only tags without text (a typing notice, a reaction) to a room (``room``) or a
    user (``target``).  Relayed live only: never kept in history, never batched.  Protocols
    that cannot show a tag ignore it; ``native`` is the sender's own form, as for Message."""

    id: str
    source: Who
    tags: tuple[tuple[str, str], ...]
    room: str | None = None
    target: str | None = None
    target_account: str | None = None
    status: str | None = None
    native: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class Redaction(Event):
    """``who`` removed the message ``msgid`` (sent by ``sender``) from a room (``room``) or
    from a private conversation (``target``: the nick the redactor addressed, the other
    end).  ``id`` names the redaction itself; ``native`` is the redactor's own form."""

    id: str
    who: Who
    msgid: str
    sender: Who
    reason: str = ""
    room: str | None = None
    target: str | None = None
    native: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class MetadataChange(Event):
    """``who`` set ``key`` of ``target`` (a nick, or with ``room`` set, that room's key) to
    ``value``; None means removed."""

    who: Who
    target: str
    key: str
    value: str | None
    room: str | None = None


ROOM_EVENTS = (Message, Join, Part, Topic, Kick, ModeChange, Invite)


# Why the core ends an account's sessions (the quit reason everyone sees): its account was
# deleted or its password changed.  XMPP says these with <not-authorized/>.
ACCOUNT_DELETED = "Account deleted"
PASSWORD_CHANGED = "Password changed"
REVOKED_REASONS = frozenset({ACCOUNT_DELETED, PASSWORD_CHANGED})
