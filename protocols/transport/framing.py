"""Cutting a byte stream into lines, under every line-based protocol (IRC, line chat).

A line ends with LF; a CR before the LF is dropped with it.  The framer holds no more than
``max_bytes`` (plus one byte for a CR) of a partial line: past that it reports the line as
too long, once (as soon as it is known, or with ``report_at_end`` where the line ends), and
drops the rest of it as it arrives, so a client cannot make the server hold an endless line.
A whole line longer than ``max_bytes`` is reported the same way.
"""

from __future__ import annotations


class TooLong:
    """Marker item: a line longer than the limit was dropped."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "TOO_LONG"


TOO_LONG = TooLong()


class LineSplitter:
    """Turns a byte stream into lines (``bytes`` without the line ending) and TOO_LONG.

    State carries over between calls: a line split across reads comes out the same.
    """

    __slots__ = ("_buf", "_discarding", "max_bytes", "report_at_end")

    def __init__(self, max_bytes: int, *, report_at_end: bool = False) -> None:
        self.max_bytes = max_bytes
        self.report_at_end = report_at_end
        self._buf = b""
        self._discarding = False

    def feed(self, data: bytes) -> list[bytes | TooLong]:
        buf = self._buf + data if self._buf else data
        lines: list[bytes | TooLong] = buf.split(b"\n")  # type: ignore[assignment]
        rest = lines.pop()
        assert isinstance(rest, bytes)
        limit = self.max_bytes
        if self._discarding:
            if not lines:
                # Still inside the line already reported: nothing of it is kept.
                return lines
            # The end of the line being dropped.
            if self.report_at_end:
                lines[0] = TOO_LONG
            else:
                del lines[0]
            self._discarding = False
        for i, line in enumerate(lines):
            if line is TOO_LONG:
                continue
            assert isinstance(line, bytes)
            if line.endswith(b"\r"):
                line = lines[i] = line[:-1]
            if len(line) > limit:
                lines[i] = TOO_LONG
        # One byte of slack for the CR of a CRLF line ending.
        if len(rest) > limit + 1:
            rest = b""
            self._discarding = True
            if not self.report_at_end:
                lines.append(TOO_LONG)
        self._buf = rest
        return lines

    @property
    def pending(self) -> int:
        """Bytes held for the current partial line."""
        return len(self._buf)

    def held(self) -> bytes:
        """The current partial line, as received (nothing while one too long is dropped)."""
        return self._buf
