"""Nick and room grammar, casefolding, masks, mode letters and what counts as text: one
rule for every protocol.

Nicks use the IRC nick alphabet and ``ascii`` casemapping (advertised to IRC clients
in ISUPPORT); rooms are ``[a-z0-9._-]`` and case-insensitive.  Every protocol turns its
own spelling (``#room``, ``room@conference.example``, ``room``) into the bare room name
before calling the core.

Room modes are core data with names; :data:`ROOM_MODE_LETTERS` is the one letter each has
wherever a protocol writes modes as letters (IRC's letters, the wire standard).

Text (messages, topics, reasons, away messages, and every other string a client sends) must
be Unicode scalar values without NUL: see :func:`text_problem`.
"""

from __future__ import annotations

import re

from chatserver.core.errors import BadName, BadText

NICK_MAX = 30
ROOM_MAX = 50

_NICK_RE = re.compile(r"[A-Za-z\[\]\\`_^{|}][A-Za-z0-9\[\]\\`_^{|}-]{0,%d}\Z" % (NICK_MAX - 1))
_ROOM_RE = re.compile(r"[a-z0-9._-]{1,%d}\Z" % ROOM_MAX)
_ASCII_FOLD = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def casefold(name: str) -> str:
    """Fold a nick or room name with the ``ascii`` casemapping (only A-Z change)."""
    if name.isascii():
        # The same for ASCII text, where only A-Z have a lower case, at a tenth of the cost
        # of a translation (every nick lookup folds).
        return name.lower()
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


# -- room modes and masks ----------------------------------------------------------------------

# The letter of each room mode by core name: IRC's letters, which line chat accepts too.
ROOM_MODE_LETTERS: dict[str, str] = {
    "moderated": "m",
    "invite_only": "i",
    "topic_lock": "t",
    "no_external": "n",
    "secret": "s",
    "registered_only": "R",
    "no_ctcp": "C",
    "key": "k",
    "limit": "l",
    "ban": "b",
    "except": "e",
    "invite": "I",
    "op": "o",
    "voice": "v",
}
ROOM_MODES_BY_LETTER: dict[str, str] = {letter: mode for mode, letter in ROOM_MODE_LETTERS.items()}

ACCOUNT_MASK_PREFIX = "$a:"
# A ban whose mask starts so mutes instead: whoever the rest matches may join but not speak
# (``$m:nick!*@*``, ``$m:$a:account``); a ban exception so exempts from mutes only.
MUTE_MASK_PREFIX = "$m:"


def normalize_mask(mask: str) -> str:
    """Complete a ban or invite mask: ``nick`` -> ``nick!*@*``; ``$a:name`` stays as it is;
    ``$m:<mask>`` (a mute) completes its mask."""
    if mask.startswith(MUTE_MASK_PREFIX):
        return MUTE_MASK_PREFIX + normalize_mask(mask[len(MUTE_MASK_PREFIX) :])
    if mask.startswith(ACCOUNT_MASK_PREFIX):
        return ACCOUNT_MASK_PREFIX + casefold(mask[len(ACCOUNT_MASK_PREFIX) :])
    if "!" not in mask and "@" not in mask:
        return f"{mask}!*@*"
    if "!" not in mask:
        return f"*!{mask}"
    if "@" not in mask:
        return f"{mask}@*"
    return mask


# What no protocol can carry: surrogate code points (lone halves of UTF-16 pairs, which no
# UTF-8 encoder writes, so a message holding one reaches nobody on IRC or line chat) and NUL
# (IRC refuses it in a line, XML has no way to write it).  Other controls are text: IRC's
# formatting is made of them, line breaks separate the lines of a message, and each
# protocol's renderer drops or replaces what its own wire cannot show.
_BAD_TEXT = re.compile("[\x00\ud800-\udfff]")


def text_problem(text: str) -> str | None:
    """Why ``text`` is not text every protocol can carry, or None when it is.

    Each protocol applies this at its edge, once, as it decodes what a client sent: IRC and
    line chat's text mode decode UTF-8 and drop or refuse NUL, which this always passes;
    XMPP's XML parser refuses more than this; line chat's JSON can spell anything with
    ``\\u`` escapes, so every string of a JSON command is checked with it.
    """
    found = _BAD_TEXT.search(text)
    if found is None:
        return None
    char = found.group()
    if char == "\x00":
        return "text may not contain NUL (U+0000)"
    return f"text must be valid Unicode: U+{ord(char):04X} is half of a UTF-16 surrogate pair"


def check_text(text: str) -> str:
    """Return ``text`` unchanged if :func:`text_problem` finds nothing, else raise BadText."""
    problem = text_problem(text)
    if problem is not None:
        raise BadText(problem)
    return text


# Metadata keys: lower-case letters, digits and ``_ . / : -``; not starting with ``:`` (IRC
# would read it as a trailing parameter).  Compared case-insensitively, kept in lower case.
_METADATA_KEY = re.compile(r"[a-z0-9_./\-][a-z0-9_./:\-]{0,62}")


def metadata_key(key: str) -> str:
    """The key in its stored form; BadName if it is not a valid metadata key."""
    folded = key.lower()
    if not _METADATA_KEY.fullmatch(folded):
        raise BadName(f"invalid metadata key: {key}")
    return folded
