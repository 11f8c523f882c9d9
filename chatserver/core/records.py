"""Plain records that cross the storage seam (what is persisted), distinct from live state."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from chatserver.core.events import Who


@dataclass(frozen=True, slots=True)
class Credential:
    """SCRAM salted keys for one mechanism (``SCRAM-SHA-256`` or ``SCRAM-SHA-1``).

    Enough to verify a SCRAM exchange or a plain password; the password itself is never kept.
    """

    mechanism: str
    salt: bytes
    stored_key: bytes
    server_key: bytes
    iterations: int


@dataclass(frozen=True, slots=True)
class AccountRecord:
    name: str  # as registered (display form); the key is casefold(name)
    credentials: tuple[Credential, ...]
    created_at: float
    email: str | None = None

    def credential(self, mechanism: str) -> Credential | None:
        for cred in self.credentials:
            if cred.mechanism == mechanism:
                return cred
        return None


@dataclass(frozen=True, slots=True)
class BanRecord:
    mask: str
    set_by: str
    set_at: float


@dataclass(frozen=True, slots=True)
class RoomRecord:
    """A registered room: what survives a restart."""

    name: str  # the room key (already canonical)
    owner: str  # account name
    created_at: float
    topic: str = ""
    topic_by: str = ""
    topic_at: float = 0.0
    # (mode name, argument or None) for flags, key and limit.
    modes: tuple[tuple[str, str | None], ...] = ()
    ops: tuple[str, ...] = ()  # account names
    voices: tuple[str, ...] = ()
    bans: tuple[BanRecord, ...] = ()
    invites: tuple[str, ...] = ()  # invite-exception masks
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RosterItem:
    """One contact in an account's XMPP roster (RFC 6121), as stored.

    ``subscription`` is ``none``, ``to``, ``from`` or ``both``; ``ask`` is ``subscribe`` while
    our request to the contact is pending.  ``pending_in`` marks the contact's request to us
    awaiting an answer; ``in_roster`` is False for a contact known only by such a request
    (not shown in the roster until the user adds or approves it).
    """

    jid: str  # bare JID, casefolded
    name: str | None = None
    groups: tuple[str, ...] = ()
    subscription: str = "none"
    ask: str | None = None
    pending_in: bool = False
    in_roster: bool = True


@dataclass(frozen=True, slots=True)
class PepItem:
    """One item of a personal data node (XMPP PEP, private storage, vCard), as stored.

    ``payload`` is the item's one child element serialized as XML text.
    """

    id: str
    payload: str
    published_at: float = 0.0


@dataclass(frozen=True, slots=True)
class PepNode:
    """One node of an account's personal data, with its configuration and items (oldest
    first).

    ``kind`` keeps apart what clients publish (``pep``) from what only the owner reads back
    (``private``: private XML storage; ``vcard``).  ``access_model`` is ``open``, ``presence``
    or ``whitelist``; ``max_items`` 0 means as many as the account's limit allows.
    """

    node: str
    kind: str = "pep"
    access_model: str = "presence"
    persist_items: bool = True
    max_items: int = 1
    items: tuple[PepItem, ...] = ()


@dataclass(frozen=True, slots=True)
class ArchiveEntry:
    """A private message as kept in one account's archive.

    ``owner`` is the folded account whose archive it is in, ``peer`` the folded nick of the
    other side; ``offline`` marks a message to the owner that no connection of theirs received.
    """

    owner: str
    peer: str
    message: Any
    offline: bool = False


@dataclass(frozen=True, slots=True)
class ArchiveQuery:
    """One page of an account's private archive.

    ``after``/``before`` are exclusive (ts, id) anchors (an id of "" or "\\uffff" makes a
    timestamp-only bound); ``newest`` takes the ``limit`` messages nearest ``before`` rather
    than those nearest ``after``.  ``peer`` None means every conversation.
    """

    owner: str
    peer: str | None
    limit: int
    after: tuple[float, str] | None = None
    before: tuple[float, str] | None = None
    newest: bool = True


# What a room event in history is (RoomEventRecord.kind).
EVENT_KINDS = ("join", "part", "quit", "kick", "nick", "topic")


@dataclass(frozen=True, slots=True)
class RoomEventRecord:
    """A room event kept in history for replay (IRC draft/event-playback): a join, part,
    quit, kick, nick change or topic in ``room``.

    ``text`` is the reason, the topic, or the new nick; ``object`` the nick kicked.
    """

    id: str
    room: str
    ts: float
    kind: str
    who: Who
    text: str = ""
    object: str = ""


@dataclass(frozen=True, slots=True)
class AlwaysOnRecord:
    """An always-on account as kept across restarts: ``account`` is the folded key, ``name``
    the account as registered; the user's nick, ident, host and realname; ``rooms`` the room
    keys it is a member of; ``last_seen`` when its last connection closed (None while one is
    open)."""

    account: str
    nick: str
    ident: str
    host: str
    realname: str
    rooms: tuple[str, ...] = ()
    last_seen: float | None = None
    name: str = ""


@dataclass(frozen=True, slots=True)
class ArchivePrefs:
    """Which private messages an account keeps (XEP-0313 preferences): ``default`` is
    ``always``, ``never`` or ``roster``; ``always`` and ``never`` name peers (a folded account,
    or ``~`` and a folded nick for a guest) that override it."""

    default: str = "always"
    always: tuple[str, ...] = ()
    never: tuple[str, ...] = ()
