"""Input framing for line chat: telnet commands taken out in bulk, then lines.

Telnet commands (``IAC`` sequences) never reach a line, and each one is counted
(:attr:`LineFramer.commands`) so that flood control sees them like lines.  The stream is cut
into tokens by one regular expression: a run of text (with ``IAC IAC`` standing for a
literal 0xFF byte), a run of one-byte commands (NOP, GA, AYT…), a run of option
negotiations, the start of a subnegotiation.  Runs are handled whole, so a flood of telnet
commands costs a few operations per read rather than some per byte.  A subnegotiation
(``IAC SB … IAC SE``) is skipped with one search; one longer than ``max_line_bytes`` ends
there, and what follows is text again, so it cannot swallow the stream.  The lines
themselves are cut by :class:`protocols.transport.framing.LineSplitter`; CR and NUL bytes
are dropped from them (telnet's CR NUL for a bare carriage return).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from protocols.transport.framing import TOO_LONG, LineSplitter, TooLong

IAC = 255
DONT = 254
DO = 253
WILL = 251
WONT = 252
SB = 250
SE = 240

__all__ = [
    "DO",
    "DONT",
    "IAC",
    "TOO_LONG",
    "WILL",
    "WONT",
    "Item",
    "LineFramer",
    "Negotiation",
    "Negotiations",
    "as_input",
]

# One token at the start of what is left.  Every byte sequence starts with one of these (a
# lone IAC, or IAC and a negotiation verb, at the very end waits for the next read).
_TOKEN = re.compile(
    rb"(?P<text>(?:[^\xff]+|\xff\xff)+)"
    rb"|(?P<simple>(?:\xff[\x00-\xf9])+)"
    rb"|(?P<negotiate>(?:\xff[\xfb-\xfe][\x00-\xff])+)"
    rb"|(?P<sub>\xff\xfa)",
    re.DOTALL,
)
_END_OF_SUB = b"\xff\xf0"


@dataclass(frozen=True, slots=True)
class Negotiation:
    """A telnet option request from the peer: ``command`` is DO, DONT, WILL or WONT."""

    command: int
    option: int


class Negotiations:
    """Item: option requests that came one after the other, kept as their bytes (three per
    request) until someone asks: a flood of them is counted, never taken apart."""

    __slots__ = ("run",)

    def __init__(self, run: bytes) -> None:
        self.run = run

    def __len__(self) -> int:
        return len(self.run) // 3

    def requests(self) -> list[Negotiation]:
        run = self.run
        return [Negotiation(c, o) for c, o in zip(run[1::3], run[2::3], strict=True)]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Negotiations) and other.run == self.run

    def __hash__(self) -> int:
        return hash(self.run)

    def __repr__(self) -> str:
        return f"Negotiations({self.requests()!r})"


Item = bytes | TooLong | Negotiations


class LineFramer:
    """Turns a byte stream into lines (``bytes`` without the line ending) and other items.

    State carries over between calls, so a sequence split across reads is handled the same.
    After each :meth:`feed`, :attr:`commands` is the number of telnet commands it held.
    """

    __slots__ = ("_in_sub", "_lines", "_sub_iac", "_sub_len", "_tail", "commands", "max_line_bytes")

    def __init__(self, max_line_bytes: int) -> None:
        self.max_line_bytes = max_line_bytes
        self._lines = LineSplitter(max_line_bytes)
        # The start of a command cut by the end of the last read.
        self._tail = b""
        self._in_sub = False
        self._sub_len = 0
        # Inside a subnegotiation, the last byte read was IAC.
        self._sub_iac = False
        self.commands = 0

    def feed(self, data: bytes) -> list[Item]:
        if self._tail:
            data = self._tail + data
            self._tail = b""
        self.commands = 0
        if not self._in_sub and IAC not in data:
            # Plain text: the common case.
            return self._text(data, [])
        out: list[Item] = []
        text: list[bytes] = []
        pos = 0
        n = len(data)
        while pos < n:
            if self._in_sub:
                pos = self._skip_sub(data, pos)
                continue
            match = _TOKEN.match(data, pos)
            if match is None:
                # IAC, or IAC and a verb, at the end: the rest of it comes with the next read.
                self._tail = data[pos:]
                break
            pos = match.end()
            kind = match.lastgroup
            token = match.group()
            if kind == "text":
                text.append(token)
            elif kind == "simple":
                self.commands += len(token) // 2
            elif kind == "negotiate":
                self.commands += len(token) // 3
                if text:
                    self._text(b"".join(text), out)
                    text.clear()
                out.append(Negotiations(token))
            else:
                self.commands += 1
                self._in_sub = True
                self._sub_len = 0
                self._sub_iac = False
        if text:
            self._text(b"".join(text), out)
        return out

    def _skip_sub(self, data: bytes, pos: int) -> int:
        """Skip subnegotiation bytes from ``pos``; where text starts again (or the end)."""
        if self._sub_iac and data[pos] == SE:
            self._in_sub = False
            return pos + 1
        room = self.max_line_bytes - self._sub_len
        # The end mark must start within the room left (its SE may be just past it).
        end = data.find(_END_OF_SUB, pos, pos + room + 1)
        if end >= 0:
            self._in_sub = False
            return end + 2
        if len(data) - pos > room:
            # Too long to be a subnegotiation: from here on the bytes are text again.
            self._in_sub = False
            return pos + room
        self._sub_len += len(data) - pos
        self._sub_iac = data[-1] == IAC
        return len(data)

    def _text(self, chunk: bytes, out: list[Item]) -> list[Item]:
        if b"\xff\xff" in chunk:
            chunk = chunk.replace(b"\xff\xff", b"\xff")
        for line in self._lines.feed(chunk):
            # Byte values (not one-byte strings): a memchr each, on every line.
            if isinstance(line, bytes) and (0x00 in line or 0x0D in line):
                line = line.replace(b"\x00", b"").replace(b"\r", b"")
            out.append(line)
        return out

    @property
    def pending(self) -> int:
        """Bytes held for the current partial line."""
        return self._lines.pending

    def held(self) -> bytes:
        """What was received and not made an item yet: the partial line, then the start of
        a telnet command cut by the end of the last read."""
        return self._lines.held() + self._tail


def as_input(lines: Iterable[bytes]) -> bytes:
    """The input that a framer reads back as ``lines`` (lines it made: no CR, LF or NUL),
    with a 0xFF byte doubled as telnet has it: lines read and not yet handled, passed to
    another node's framer with the client (see LineConnection.held_input)."""
    return b"".join(line.replace(b"\xff", b"\xff\xff") + b"\n" for line in lines)
