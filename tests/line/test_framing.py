"""Input framing: telnet stripping, line splitting and limits, whatever the chunking."""

from __future__ import annotations

import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatserver.config import LineConfig
from protocols.line.framing import DO, TOO_LONG, WILL, Item, LineFramer, Negotiations, as_input
from tests.line.harness import World


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def feed_all(framer: LineFramer, pieces: list[bytes]) -> list[Item]:
    items: list[Item] = []
    for piece in pieces:
        items.extend(framer.feed(piece))
    return items


def test_framer_basics() -> None:
    framer = LineFramer(10)
    assert framer.feed(b"a\r\nb\nc") == [b"a", b"b"]
    assert framer.feed(b"\r") == []
    assert framer.feed(b"\n") == [b"c"]
    assert framer.feed(b"\xff\xfd\x18x\xff\xffy\n") == [Negotiations(b"\xff\xfd\x18"), b"x\xffy"]
    assert framer.feed(b"0123456789\r\n") == [b"0123456789"]
    assert framer.feed(b"0123456789ab") == [TOO_LONG]
    assert framer.feed(b"cdef\nok\n") == [b"ok"]
    assert framer.feed(b"0123456789a\n") == [TOO_LONG]
    assert framer.feed(b"cr\r\x00nul\n") == [b"crnul"]


def test_unterminated_subnegotiation_is_bounded() -> None:
    framer = LineFramer(8)
    items = framer.feed(b"\xff\xfa" + b"s" * 8 + b"data\n")
    assert items == [b"data"]


# Telnet sequences a client may send anywhere in the stream.
telnet = st.one_of(
    st.just(b"\xff\xf1"),  # NOP
    st.builds(
        lambda c, o: bytes((255, c, o)), st.sampled_from([WILL, 252, DO, 254]), st.integers(0, 254)
    ),
    st.builds(
        lambda body: b"\xff\xfa" + body + b"\xff\xf0",
        st.binary(max_size=20).map(lambda b: b.replace(b"\xff", b"")),
    ),
)

# What a person types: no control characters or line separators, not a /command.
typed = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")),
    min_size=1,
    max_size=60,
).filter(lambda t: t.strip() != "" and not t.lstrip().startswith("/"))


# Byte streams dense in the bytes that matter to framing, so that telnet sequences, CRs and
# line ends often fall on chunk boundaries.
streams = st.one_of(
    st.binary(max_size=600),
    st.lists(
        st.sampled_from([b"\xff", b"\xfa", b"\xf0", b"\xfb", b"\xfd", b"\n", b"\r", b"\x00", b"ab"])
        | st.binary(max_size=8),
        max_size=120,
    ).map(b"".join),
)


@settings(max_examples=400, deadline=None)
@given(streams, st.lists(st.integers(0, 600), max_size=30), st.integers(1, 40))
def test_framing_does_not_depend_on_chunking(data: bytes, cuts: list[int], limit: int) -> None:
    whole = LineFramer(limit).feed(data)
    pieces = feed_all(LineFramer(limit), chunked(data, cuts))
    assert pieces == whole
    for item in whole:
        if isinstance(item, bytes):
            assert len(item) <= limit
            assert b"\n" not in item and b"\r" not in item and b"\x00" not in item


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(streams, st.lists(st.integers(0, 400), max_size=20))
def test_any_bytes_never_raise_and_no_iac_reaches_others(data: bytes, cuts: list[int]) -> None:
    world = World(LineConfig(flood_burst=10_000, max_line_bytes=64))
    sender = world.user("alice", "dev")
    reader = world.user("bob", "dev")
    for piece in chunked(data, cuts):
        sender.raw(piece)
    seen = reader.take()
    assert b"\xff" not in seen
    seen.decode("utf-8")  # what others see is always valid UTF-8
    assert world.service.find_user("bob") is not None


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.tuples(typed, st.sampled_from([b"\n", b"\r\n"])), min_size=1, max_size=8),
    st.lists(st.tuples(st.integers(0, 10_000), telnet), max_size=8),
    st.lists(st.integers(0, 10_000), max_size=20),
)
def test_text_lines_arrive_intact(
    lines: list[tuple[str, bytes]], noise: list[tuple[int, bytes]], cuts: list[int]
) -> None:
    world = World(LineConfig(flood_burst=10_000))
    sender = world.user("alice", "dev")
    reader = world.user("bob", "dev")
    stream = b"".join(text.encode() + end for text, end in lines)
    # Telnet commands may come between any two bytes, even inside a UTF-8 character.
    size = len(stream)
    places = sorted(((p % (size + 1), seq) for p, seq in noise), key=lambda x: x[0], reverse=True)
    for at, sequence in places:
        stream = stream[:at] + sequence + stream[at:]
    for piece in chunked(stream, cuts):
        sender.raw(piece)
    assert reader.lines() == [f"[#dev] <alice> {text}" for text, _end in lines]


# Lines as a framer makes them: no LF ends them early, and CR and NUL were dropped.
made_lines = st.lists(
    st.binary(max_size=60).map(
        lambda b: b.replace(b"\n", b"").replace(b"\r", b"").replace(b"\x00", b"")
    ),
    max_size=8,
)


@given(made_lines)
def test_lines_passed_on_as_input_are_read_back_the_same(lines: list[bytes]) -> None:
    # A line with 0xFF bytes (IAC for telnet) must not turn into telnet commands.
    assert LineFramer(1024).feed(as_input(lines)) == lines
