"""Input framing for line chat: telnet commands stripped, lines split, overlong lines dropped.

The framer owns the limits so that the connection only ever sees whole lines of bounded size.
It keeps no more than ``max_line_bytes`` (plus one byte for a CR) of a partial line: past
that it discards until the next newline and reports the line as too long, once.
"""

from __future__ import annotations

from dataclasses import dataclass

IAC = 255
DONT = 254
DO = 253
WONT = 252
WILL = 251
SB = 250
SE = 240

_IAC_BYTE = b"\xff"

# Framer states.
_DATA = 0
_IAC = 1
_OPTION = 2
_SUB = 3
_SUB_IAC = 4


class TooLong:
    """Marker item: a line longer than the limit was dropped."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "TOO_LONG"


TOO_LONG = TooLong()


@dataclass(frozen=True, slots=True)
class Negotiation:
    """A telnet option request from the peer: ``command`` is DO, DONT, WILL or WONT."""

    command: int
    option: int


Item = bytes | TooLong | Negotiation


class LineFramer:
    """Turns a byte stream into lines (``bytes`` without the line ending) and other items.

    Lines end with LF; CR and NUL bytes are dropped (a CRLF line ending, and telnet's CR NUL
    for a bare carriage return).  Telnet commands (``IAC`` sequences, including
    subnegotiation) never reach a line; ``IAC IAC`` stands for a literal 0xFF byte.  State
    carries over between calls, so a sequence split across reads is handled the same.
    """

    __slots__ = ("_buf", "_command", "_discarding", "_state", "_sub_len", "max_line_bytes")

    def __init__(self, max_line_bytes: int) -> None:
        self.max_line_bytes = max_line_bytes
        self._buf = bytearray()
        self._state = _DATA
        self._command = 0
        self._discarding = False
        self._sub_len = 0

    def feed(self, data: bytes) -> list[Item]:
        out: list[Item] = []
        i = 0
        n = len(data)
        while i < n:
            state = self._state
            if state == _DATA:
                j = data.find(_IAC_BYTE, i)
                if j < 0:
                    self._data(data[i:] if i else data, out)
                    break
                if j > i:
                    self._data(data[i:j], out)
                self._state = _IAC
                i = j + 1
            elif state == _IAC:
                byte = data[i]
                i += 1
                if byte == IAC:
                    self._data(_IAC_BYTE, out)
                    self._state = _DATA
                elif DONT >= byte >= WILL:
                    self._command = byte
                    self._state = _OPTION
                elif byte == SB:
                    self._sub_len = 0
                    self._state = _SUB
                else:
                    # NOP, GA, AYT, a stray SE…: one-byte commands with nothing to show.
                    self._state = _DATA
            elif state == _OPTION:
                out.append(Negotiation(self._command, data[i]))
                i += 1
                self._state = _DATA
            elif state == _SUB:
                j = data.find(_IAC_BYTE, i)
                end = n if j < 0 else j
                room = self.max_line_bytes - self._sub_len
                if end - i > room:
                    # An unterminated subnegotiation would otherwise swallow the stream: past
                    # the limit, bytes are data again.
                    i += room
                    self._state = _DATA
                    continue
                self._sub_len += end - i
                if j < 0:
                    break
                i = j + 1
                self._state = _SUB_IAC
            else:  # _SUB_IAC
                byte = data[i]
                i += 1
                self._state = _DATA if byte == SE else _SUB
        return out

    def _data(self, chunk: bytes, out: list[Item]) -> None:
        start = 0
        while True:
            k = chunk.find(b"\n", start)
            if k < 0:
                if start < len(chunk):
                    self._append(chunk[start:] if start else chunk, out)
                return
            if k > start:
                self._append(chunk[start:k], out)
            self._end_line(out)
            start = k + 1

    def _append(self, piece: bytes, out: list[Item]) -> None:
        if self._discarding:
            return
        # One byte of slack for the CR of a CRLF line ending.
        if len(self._buf) + len(piece) > self.max_line_bytes + 1:
            self._buf.clear()
            self._discarding = True
            out.append(TOO_LONG)
            return
        self._buf += piece

    def _end_line(self, out: list[Item]) -> None:
        if self._discarding:
            self._discarding = False
            return
        line = bytes(self._buf)
        self._buf.clear()
        if line.endswith(b"\r"):
            line = line[:-1]
        if len(line) > self.max_line_bytes:
            out.append(TOO_LONG)
            return
        if b"\x00" in line or b"\r" in line:
            line = line.replace(b"\x00", b"").replace(b"\r", b"")
        out.append(line)

    @property
    def pending(self) -> int:
        """Bytes held for the current partial line."""
        return len(self._buf)
