"""IRC messages: parsing client lines and serializing server lines, with IRCv3 message tags.

A line is ``[@tags SP] [:source SP] COMMAND *(SP param) [SP :trailing]``.  Limits follow the
IRCv3 message-tags specification: the part after the tags is at most 512 bytes with its CRLF
(510 without).  Of the 8191 bytes of tags a line may carry (with the leading ``@`` and the
trailing space), a client may send 4094 bytes of tag data; the rest is the server's, for the
tags it adds when it relays the message.
:func:`parse` raises :class:`ParseError` and nothing else, whatever the bytes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

# Without CRLF: the RFC 1459 512 bytes less the line ending.
MAX_BODY_BYTES = 510
# Byte values, not one-byte strings: ``NUL in line`` is one memchr, while ``b"\x00" in line``
# goes through the buffer protocol first and costs several times as much (on every line).
NUL, CR, LF = 0x00, 0x0D, 0x0A
# With the leading '@' and the trailing space (message-tags specification).
MAX_TAGS_BYTES = 8191
# What a client may send: 4094 bytes of tag data, with the '@' and the space.
MAX_CLIENT_TAGS_BYTES = 4094 + 2

_ESCAPES = {";": "\\:", " ": "\\s", "\\": "\\\\", "\r": "\\r", "\n": "\\n"}
_ESCAPE_RE = re.compile(r"[; \\\r\n]")
_UNESCAPES = {":": ";", "s": " ", "\\": "\\", "r": "\r", "n": "\n"}
_UNESCAPE_RE = re.compile(r"\\(.?)", re.DOTALL)
# client-only prefix '+', optional vendor 'host.name/', then the key name.
_TAG_KEY_RE = re.compile(r"\+?(?:[A-Za-z0-9.-]+/)?[A-Za-z0-9-]+\Z")


class ParseError(ValueError):
    """A line that is not a message; ``code`` says why and ``command`` names it when known.

    Codes: ``empty``, ``too_long`` (the part after the tags), ``tags_too_long``,
    ``invalid_utf8``, ``bad_char`` (NUL, CR or LF inside the line), ``no_command``.
    Tags with invalid keys are skipped rather than refused.
    """

    def __init__(self, code: str, message: str = "", command: str | None = None) -> None:
        super().__init__(message or code)
        self.code = code
        self.command = command


# Not frozen: every line a client sends becomes one, and a frozen dataclass's __init__ costs
# three times as much (each field set through object.__setattr__).  Nothing changes one after
# it is made.
@dataclass(slots=True)
class IrcMessage:
    """One IRC message.  ``command`` is upper case; ``tags`` maps keys to unescaped values
    (a tag sent without a value has the value ``""``)."""

    command: str
    params: tuple[str, ...] = ()
    source: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)

    def param(self, index: int, default: str = "") -> str:
        """The parameter at ``index``, or ``default`` when there are fewer."""
        return self.params[index] if index < len(self.params) else default


def escape_tag_value(value: str) -> str:
    """Escape a tag value for the wire (``;`` ``\\s`` ``\\\\`` ``\\r`` ``\\n``)."""
    if not _ESCAPE_RE.search(value):
        return value
    return _ESCAPE_RE.sub(lambda m: _ESCAPES[m.group()], value)


def unescape_tag_value(raw: str) -> str:
    """Undo :func:`escape_tag_value`; an unknown escape stands for the character itself and a
    lone trailing backslash is dropped, as the specification says."""
    if "\\" not in raw:
        return raw
    return _UNESCAPE_RE.sub(lambda m: _UNESCAPES.get(m.group(1), m.group(1)), raw)


def is_valid_tag_key(key: str) -> bool:
    return bool(_TAG_KEY_RE.match(key))


def parse_tags(raw: str) -> dict[str, str]:
    """The tags of ``raw`` (without the ``@``); invalid keys are skipped, the last duplicate wins."""
    tags: dict[str, str] = {}
    for item in raw.split(";"):
        if not item:
            continue
        key, _, value = item.partition("=")
        if not is_valid_tag_key(key):
            continue
        tags[key] = unescape_tag_value(value)
    return tags


def format_tags(tags: Mapping[str, str]) -> str:
    """``key=value;key2`` (no ``@``), escaping values; an empty value is written as the key alone."""
    return ";".join(f"{k}={escape_tag_value(v)}" if v else k for k, v in tags.items())


def _guess_command(body: bytes) -> str | None:
    """The command of a line that failed to decode, for the FAIL reply (best effort)."""
    words = body.split(b" ")
    for word in words:
        if not word or word.startswith(b":"):
            continue
        text = word.decode("ascii", "replace").upper()
        return text if text.isalnum() else None
    return None


def parse(
    line: bytes, *, max_body: int = MAX_BODY_BYTES, max_tags: int = MAX_CLIENT_TAGS_BYTES
) -> IrcMessage:
    """Parse one line from a client (without its line ending) into an :class:`IrcMessage`.

    Raises :class:`ParseError` for anything that is not a well-formed message.
    """
    if (
        type(line) is bytes
        and 0 < len(line) <= max_body
        and line[0] not in _NOT_PLAIN_START
        and NUL not in line
        and CR not in line
        and LF not in line
    ):
        # Nearly every line: no tags, no source, words one space apart and maybe a trailing
        # parameter.  It comes to what the general parse below makes of it.
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            pass  # the general parse says why
        else:
            head, colon, trailing = text.partition(" :")
            words = head.split(" ")
            if "" not in words:
                if colon:
                    words.append(trailing)
                return IrcMessage(words[0].upper(), tuple(words[1:]), None, {})
    return parse_general(line, max_body=max_body, max_tags=max_tags)


# A line starting with one of these has tags, a source or leading spaces: the general parse.
_NOT_PLAIN_START = frozenset(b"@: ")


def parse_general(
    line: bytes, *, max_body: int = MAX_BODY_BYTES, max_tags: int = MAX_CLIENT_TAGS_BYTES
) -> IrcMessage:
    """:func:`parse` for any line, without its shortcut for the common one."""
    if not isinstance(line, bytes | bytearray):
        raise ParseError("empty", "not bytes")
    line = bytes(line)
    tag_text = ""
    body = line
    if line.startswith(b"@"):
        space = line.find(b" ")
        if space < 0:
            raw_tags, body = line[1:], b""
        else:
            raw_tags, body = line[1:space], line[space + 1 :]
        # '@' + tags + ' '
        if len(raw_tags) + 2 > max_tags:
            raise ParseError("tags_too_long", "tags are too long", _guess_command(body))
        body = body.lstrip(b" ")
        if NUL in raw_tags or CR in raw_tags or LF in raw_tags:
            raise ParseError("bad_char", "NUL, CR or LF in the line", _guess_command(body))
        try:
            tag_text = raw_tags.decode("utf-8")
        except UnicodeDecodeError:
            raise ParseError("invalid_utf8", "tags are not UTF-8", _guess_command(body)) from None
    else:
        body = body.lstrip(b" ")
    if len(body) > max_body:
        raise ParseError("too_long", "line is too long", _guess_command(body))
    if NUL in body or CR in body or LF in body:
        raise ParseError("bad_char", "NUL, CR or LF in the line", _guess_command(body))
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ParseError("invalid_utf8", "line is not UTF-8", _guess_command(body)) from None
    tags = parse_tags(tag_text) if tag_text else {}

    source: str | None = None
    if text.startswith(":"):
        source, _, text = text[1:].partition(" ")
        text = text.lstrip(" ")
        if not source:
            source = None
    if not text.strip(" "):
        raise ParseError("empty" if source is None and not tags else "no_command", "no command")

    trailing: str | None = None
    colon = text.find(" :")
    if colon >= 0:
        trailing = text[colon + 2 :]
        text = text[:colon]
    words = [w for w in text.split(" ") if w]
    if not words:
        raise ParseError("no_command", "no command")
    command = words[0].upper()
    params = words[1:]
    if trailing is not None:
        params.append(trailing)
    return IrcMessage(command, tuple(params), source, tags)


def _check_middle(param: str) -> None:
    if not param or " " in param or param.startswith(":"):
        raise ValueError(f"parameter {param!r} can only be the last one")


def serialize(msg: IrcMessage, *, force_trailing: bool = False) -> bytes:
    """The wire form of ``msg`` with CRLF; the last parameter becomes a trailing one when it
    must (empty, with a space, starting with ``:``) or when ``force_trailing`` asks for it.

    Raises ValueError if a parameter other than the last cannot be written, or any part holds
    CR, LF or NUL (which would split the line).
    """
    parts: list[str] = []
    if msg.tags:
        parts.append("@" + format_tags(msg.tags))
    if msg.source:
        parts.append(":" + msg.source)
    parts.append(msg.command)
    params = msg.params
    if params:
        for param in params[:-1]:
            _check_middle(param)
            parts.append(param)
        last = params[-1]
        if force_trailing or not last or " " in last or last.startswith(":"):
            parts.append(":" + last)
        else:
            parts.append(last)
    text = " ".join(parts)
    if "\r" in text or "\n" in text or "\x00" in text:
        raise ValueError("CR, LF or NUL in a message")
    return text.encode("utf-8") + b"\r\n"


def _is_middle(param: str) -> bool:
    return bool(param) and " " not in param and not param.startswith(":")


def _as_middle(param: str) -> str:
    if _is_middle(param):
        return param
    word = param.lstrip(":").strip(" ").split(" ", 1)[0].lstrip(":")
    return word or "*"


def serialize_fitted(
    msg: IrcMessage, *, force_trailing: bool = False, limit: int = MAX_BODY_BYTES + 2
) -> bytes:
    """:func:`serialize`, shortening parameters when the line (tags aside) would pass
    ``limit`` bytes with its CRLF.

    Server replies echo what the client sent (a command name, a channel, a nick, up to a
    whole 510-byte input line), which can push a reply past 512 bytes; clients cut such
    lines anywhere.  The longest parameter after the first (the client's own nick) is cut,
    on a character boundary, until the line fits.  An echoed middle parameter that cannot
    be one (empty, with a space, starting with ':') is replaced by its first word.
    """
    params = list(msg.params)
    if any(not _is_middle(param) for param in params[:-1]):
        # An echoed parameter that came as a trailing one (empty, with spaces, starting
        # with ':') cannot be a middle one: its first word stands for it.
        params = [_as_middle(param) for param in params[:-1]] + params[-1:]
        msg = IrcMessage(msg.command, tuple(params), msg.source, msg.tags)
    data = serialize(msg, force_trailing=force_trailing)
    tags_len = len(data) - len(data.partition(b" ")[2]) if msg.tags else 0
    while len(data) - tags_len > limit and len(params) > 1:
        index = max(range(1, len(params)), key=lambda i: len(params[i].encode("utf-8")))
        raw = params[index].encode("utf-8")
        excess = len(data) - tags_len - limit
        if len(raw) <= 1:
            break
        cut = raw[: max(len(raw) - excess, 1)].decode("utf-8", "ignore")
        params[index] = cut or params[index][:1]
        data = serialize(
            IrcMessage(msg.command, tuple(params), msg.source, msg.tags),
            force_trailing=force_trailing,
        )
    return data
