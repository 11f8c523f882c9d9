"""Generated hostile input: random bytes, and valid protocol input mutated byte by byte.

The mutations are the ones that break parsers in practice: a flipped bit, a byte that
cannot start or continue UTF-8, NUL, a bare CR, a telnet IAC, a cut in the middle of a
multi-byte sequence, a piece repeated until it is long, two inputs spliced together.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

# Bytes worth inserting: the ones every framing layer has to think about.
NASTY_BYTES = [
    b"\x00",
    b"\r",
    b"\n",
    b"\r\n",
    b"\xff",
    b"\xff\xff",
    b"\xff\xfd\x01",
    b"\xff\xfa",
    b"\xff\xf0",
    b"\xc3",
    b"\xc3\x28",
    b"\xe2\x82",
    b"\xf0\x9f\x98",
    b"\xed\xa0\x80",  # a UTF-16 surrogate, encoded: not UTF-8
    b"\xc0\xaf",  # an overlong '/': not UTF-8
    b"\xf4\x90\x80\x80",  # past U+10FFFF
    b"\x1b[31m",
    b"\x03",
    b"\x7f",
    b"\xef\xbb\xbf",  # a byte order mark
    b"\xe2\x80\xae",  # right-to-left override
    b" ",
    b":",
    b"@",
    b"<",
    b">",
    b"&",
    b"'",
    b'"',
    b"]]>",
    b"%",
    b"\\",
]


def _flip(data: bytes, where: int, bit: int) -> bytes:
    if not data:
        return data
    i = where % len(data)
    return data[:i] + bytes([data[i] ^ (1 << bit)]) + data[i + 1 :]


def _insert(data: bytes, where: int, piece: bytes) -> bytes:
    i = where % (len(data) + 1)
    return data[:i] + piece + data[i:]


def _delete(data: bytes, where: int, length: int) -> bytes:
    if not data:
        return data
    i = where % len(data)
    return data[:i] + data[i + length :]


def _repeat(data: bytes, where: int, times: int) -> bytes:
    if not data:
        return data
    i = where % len(data)
    j = min(len(data), i + 1 + where % 16)
    return data[:i] + data[i:j] * times + data[j:]


def _cut(data: bytes, where: int) -> bytes:
    return data[: where % (len(data) + 1)]


@st.composite
def mutation(draw: Any, data: bytes) -> bytes:
    """``data`` with 1 to 4 random mutations applied."""
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.integers(0, 5))
        where = draw(st.integers(0, 1 << 16))
        if kind == 0:
            data = _flip(data, where, draw(st.integers(0, 7)))
        elif kind == 1:
            data = _insert(data, where, draw(st.sampled_from(NASTY_BYTES)))
        elif kind == 2:
            data = _insert(data, where, draw(st.binary(min_size=1, max_size=8)))
        elif kind == 3:
            data = _delete(data, where, draw(st.integers(1, 8)))
        elif kind == 4:
            data = _repeat(data, where, draw(st.integers(2, 64)))
        else:
            data = _cut(data, where)
    return data


def mutated(corpus: Sequence[bytes]) -> st.SearchStrategy[bytes]:
    """A corpus entry (or two spliced together), mutated."""
    one = st.sampled_from(list(corpus))
    spliced = st.tuples(one, one).map(lambda pair: pair[0] + pair[1])
    return st.one_of(one, spliced).flatmap(mutation)


def random_bytes(max_size: int = 600) -> st.SearchStrategy[bytes]:
    """Uniform random bytes, and random bytes biased to the nasty ones."""
    nasty = st.lists(
        st.one_of(st.sampled_from(NASTY_BYTES), st.binary(min_size=1, max_size=6)), max_size=40
    ).map(b"".join)
    return st.one_of(st.binary(max_size=max_size), nasty)


def batch_settings(batches: int) -> Callable[[Any], Any]:
    """Hypothesis settings for a test whose every example is a batch of cases."""
    return settings(
        max_examples=batches,
        deadline=None,
        database=None,
        derandomize=False,
        suppress_health_check=list(HealthCheck),
        # One failing batch is enough to report; shrinking a batch against a live server
        # takes long and finds the same thing.
        phases=[p for p in settings.default.phases if p.name != "shrink"],
    )
