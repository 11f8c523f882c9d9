"""Nick and room grammar and casefolding: one rule for every protocol.

Nicks use the IRC nick alphabet and ``ascii`` casemapping (advertised to IRC clients
in ISUPPORT); rooms are ``[a-z0-9._-]`` and case-insensitive.  Every protocol turns its
own spelling (``#room``, ``room@conference.example``, ``room``) into the bare room name
before calling the core.
"""

from __future__ import annotations

import re

from chatserver.core.errors import BadName

NICK_MAX = 30
ROOM_MAX = 50

_NICK_RE = re.compile(r"[A-Za-z\[\]\\`_^{|}][A-Za-z0-9\[\]\\`_^{|}-]{0,%d}\Z" % (NICK_MAX - 1))
_ROOM_RE = re.compile(r"[a-z0-9._-]{1,%d}\Z" % ROOM_MAX)
_ASCII_FOLD = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def casefold(name: str) -> str:
    """Fold a nick or room name with the ``ascii`` casemapping (only A-Z change)."""
    return name.translate(_ASCII_FOLD)


def is_valid_nick(nick: str) -> bool:
    return bool(_NICK_RE.match(nick))


def check_nick(nick: str) -> str:
    """Return ``nick`` unchanged if it is a valid nick, else raise :class:`BadName`."""
    if not is_valid_nick(nick):
        raise BadName(
            nick,
            f"nicks are 1-{NICK_MAX} characters of letters, digits and []\\`_^{{|}}-,"
            " not starting with a digit or '-'",
        )
    return nick


# Names of the server's own pseudo-users (IRC services, and the usual names of the ones other
# servers have): no one may take them as a nick or register them, on any protocol, so that no
# user can pose as a service and be told passwords.
SERVICE_NICKS = frozenset(
    {"nickserv", "chanserv", "memoserv", "operserv", "hostserv", "botserv", "saslserv"}
)


def is_guest_nick(nick: str, guest_prefix: str) -> bool:
    """Whether ``nick`` has the form of the nicks the server gives guests (prefix, digits)."""
    prefix = casefold(guest_prefix)
    rest = casefold(nick)[len(prefix) :]
    return casefold(nick).startswith(prefix) and rest.isascii() and rest.isdigit()


def reserved_reason(nick: str, guest_prefix: str) -> str | None:
    """Why ``nick`` may not be taken or registered by anyone, or None if it may."""
    if casefold(nick) in SERVICE_NICKS:
        return f"{nick} is reserved for services"
    if is_guest_nick(nick, guest_prefix):
        return f"{nick} is reserved for guests: nicks of the form {guest_prefix}<digits>"
    return None


def room_key(name: str) -> str:
    """Return the canonical (folded) room name, or raise :class:`BadName`."""
    folded = casefold(name)
    if not _ROOM_RE.match(folded):
        raise BadName(name, f"room names are 1-{ROOM_MAX} characters of a-z, 0-9, '.', '_' and '-'")
    return folded


def is_valid_room(name: str) -> bool:
    return bool(_ROOM_RE.match(casefold(name)))


def glob_match(pattern: str, text: str) -> bool:
    """Case-insensitive IRC-style glob: ``*`` any run, ``?`` one character."""
    regex = _glob_cache.get(pattern)
    if regex is None:
        parts = []
        for ch in casefold(pattern):
            if ch == "*":
                parts.append(".*")
            elif ch == "?":
                parts.append(".")
            else:
                parts.append(re.escape(ch))
        regex = re.compile("".join(parts) + r"\Z", re.DOTALL)
        if len(_glob_cache) > 4096:
            _glob_cache.clear()
        _glob_cache[pattern] = regex
    return bool(regex.match(casefold(text)))


_glob_cache: dict[str, re.Pattern[str]] = {}
