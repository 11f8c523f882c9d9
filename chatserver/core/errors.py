"""Errors the core raises; each protocol maps them to its own numeric, stanza error or text.

:data:`CORE_ERRORS` lists them all, with :data:`JoinRefused.WHYS` and
:data:`AccountError.CODES` for the kinds inside two of them.  Each protocol keeps one table
keyed by these classes (looked up with :func:`entry_for`), and a test checks that every protocol's
table has every one, so that a new error cannot be forgotten by one protocol.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

_T = TypeVar("_T")


class ChatError(Exception):
    """Base of every refusal the core makes.  ``str(err)`` is a human-readable reason."""

    def __init__(self, reason: str = "") -> None:
        super().__init__(reason or self.__class__.__doc__ or self.__class__.__name__)

    @property
    def reason(self) -> str:
        return str(self)


class BadName(ChatError):
    """The name is not a valid nick or room name."""

    def __init__(self, name: str, reason: str = "") -> None:
        self.name = name
        super().__init__(reason or f"{name!r} is not a valid name")


class BadText(ChatError):
    """The text holds what no protocol can carry (see ``names.text_problem``)."""


class NickInUse(ChatError):
    """The nick is in use by someone else."""

    def __init__(self, nick: str) -> None:
        self.nick = nick
        super().__init__(f"{nick} is already in use")


class NickReserved(NickInUse):
    """The nick is a registered account's, and the session has not logged in to it."""

    def __init__(self, nick: str) -> None:
        self.nick = nick
        ChatError.__init__(self, f"{nick} is a registered nick: log in to its account to use it")


class NoSuchNick(ChatError):
    """No user has that nick."""

    def __init__(self, nick: str) -> None:
        self.nick = nick
        super().__init__(f"no such nick: {nick}")


class NoSuchRoom(ChatError):
    """The room does not exist."""

    def __init__(self, room: str) -> None:
        self.room = room
        super().__init__(f"no such room: {room}")


class NotOnRoom(ChatError):
    """The acting user (or the target) is not in the room."""

    def __init__(self, room: str, nick: str | None = None) -> None:
        self.room = room
        self.nick = nick
        who = f"{nick} is" if nick else "you are"
        super().__init__(f"{who} not in {room}")


class AlreadyOnRoom(ChatError):
    """The target is already in the room."""

    def __init__(self, room: str, nick: str) -> None:
        self.room = room
        self.nick = nick
        super().__init__(f"{nick} is already in {room}")


class NotPermitted(ChatError):
    """The acting user lacks the status this needs (usually room operator)."""

    def __init__(self, reason: str = "", room: str | None = None) -> None:
        self.room = room
        super().__init__(reason or "you are not permitted to do that")


class CannotSend(ChatError):
    """The message may not be sent to that room (moderated, no outside messages, banned)."""

    def __init__(self, room: str, reason: str) -> None:
        self.room = room
        super().__init__(reason)


class NoSuchMessage(ChatError):
    """No message with that id where it was looked for (or it is too old to be kept)."""

    def __init__(self, msgid: str, where: str = "") -> None:
        self.msgid = msgid
        self.where = where
        super().__init__(f"no message {msgid} here")


class JoinRefused(ChatError):
    """The room refused the join; ``why`` says which rule refused it."""

    BANNED = "banned"
    INVITE_ONLY = "invite_only"
    BAD_KEY = "bad_key"
    FULL = "full"
    REGISTERED_ONLY = "registered_only"
    TOO_MANY_ROOMS = "too_many_rooms"
    WHYS = (BANNED, INVITE_ONLY, BAD_KEY, FULL, REGISTERED_ONLY, TOO_MANY_ROOMS)

    def __init__(self, room: str, why: str, reason: str) -> None:
        self.room = room
        self.why = why
        super().__init__(reason)


class UnknownMode(ChatError):
    """The mode is not one the core knows."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        super().__init__(f"unknown mode: {mode}")


class AccountError(ChatError):
    """An account operation failed (see ``code``)."""

    EXISTS = "exists"
    NO_ACCOUNT = "no_account"
    BAD_PASSWORD = "bad_password"
    THROTTLED = "throttled"
    NOT_LOGGED_IN = "not_logged_in"
    ALREADY_LOGGED_IN = "already_logged_in"
    WEAK_PASSWORD = "weak_password"
    CLOSED = "closed"
    EMAIL_REQUIRED = "email_required"
    # The login cannot be confirmed now (cluster mode: the shared state is unreachable).
    UNAVAILABLE = "unavailable"
    CODES = (
        EXISTS,
        NO_ACCOUNT,
        BAD_PASSWORD,
        THROTTLED,
        NOT_LOGGED_IN,
        ALREADY_LOGGED_IN,
        WEAK_PASSWORD,
        CLOSED,
        EMAIL_REQUIRED,
        UNAVAILABLE,
    )

    def __init__(
        self, code: str, reason: str, *, node: str | None = None, account: str | None = None
    ) -> None:
        self.code = code
        # Cluster mode: the account's user is held, with a live connection, on this node
        # (a login before registration is then handed off there, see
        # protocols.transport.handoff); ``account`` is the account as stored.
        self.node = node
        self.account = account
        super().__init__(reason)


class LimitExceeded(ChatError):
    """A rate or resource limit was hit (flood, too many connections)."""


class Banned(LimitExceeded):
    """A server-wide ban (K-line) matches the connection, its nick or its account.

    A LimitExceeded, so that a protocol which refuses a connection over a limit refuses a
    banned one the same way; the core has already told the connection and closed it when
    this is raised from ``claim_nick`` or ``login``.
    """

    def __init__(self, reason: str, mask: str = "") -> None:
        self.mask = mask
        super().__init__(reason)


class StorageUnavailable(ChatError):
    """The server's database cannot be read or written just now (it is unreachable, read-only
    or full); nothing was changed, and the same request may succeed later.

    ``str(err)`` is for users and says no more than that; ``error`` is the database's own
    error, for logs and the health check.
    """

    def __init__(self, reason: str = "", error: BaseException | None = None) -> None:
        self.error = error
        super().__init__(
            reason or "the server's database is unavailable just now; try again in a moment"
        )


# Every error the core raises, ChatError itself (a refusal of no more specific kind) included.
CORE_ERRORS: tuple[type[ChatError], ...] = (
    ChatError,
    BadName,
    BadText,
    NickInUse,
    NickReserved,
    NoSuchNick,
    NoSuchRoom,
    NotOnRoom,
    AlreadyOnRoom,
    NotPermitted,
    CannotSend,
    NoSuchMessage,
    JoinRefused,
    UnknownMode,
    AccountError,
    LimitExceeded,
    Banned,
    StorageUnavailable,
)


def entry_for(table: Mapping[type[ChatError], _T], err: ChatError) -> _T:
    """The entry of a protocol's error table for ``err``: that of its own class, else of the
    nearest class it derives from (ChatError's entry serves errors of no listed class)."""
    for cls in type(err).__mro__:
        entry = table.get(cls)
        if entry is not None:
            return entry
    raise KeyError(type(err).__name__)
