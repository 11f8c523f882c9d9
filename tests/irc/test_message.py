"""The IRC line parser and serializer: examples and properties (hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from protocols.irc.message import (
    IrcMessage,
    ParseError,
    escape_tag_value,
    parse,
    parse_general,
    parse_tags,
    serialize,
    unescape_tag_value,
)

# -- examples ----------------------------------------------------------------------------------


def test_parse_full_line() -> None:
    msg = parse(b"@time=2020-01-01T00:00:00.000Z;+x=a\\sb :nick!u@h PRIVMSG #room :hello there")
    assert msg == IrcMessage(
        "PRIVMSG",
        ("#room", "hello there"),
        "nick!u@h",
        {"time": "2020-01-01T00:00:00.000Z", "+x": "a b"},
    )


def test_parse_forms() -> None:
    assert parse(b"ping token") == IrcMessage("PING", ("token",))
    assert parse(b"CMD a b :") == IrcMessage("CMD", ("a", "b", ""))
    assert parse(b"CMD a  b   :c  d ") == IrcMessage("CMD", ("a", "b", "c  d "))
    assert parse(b"CMD :") == IrcMessage("CMD", ("",))
    assert parse(b"CMD a:b") == IrcMessage("CMD", ("a:b",))
    assert parse(b"  CMD") == IrcMessage("CMD")
    assert parse(b"@a;b=;c=1 CMD").tags == {"a": "", "b": "", "c": "1"}
    assert parse(b"@a=1;a=2 CMD").tags == {"a": "2"}
    assert parse(b"001 x :y").command == "001"


@pytest.mark.parametrize(
    ("line", "code"),
    [
        (b"", "empty"),
        (b"   ", "empty"),
        (b":src", "no_command"),
        (b"@a=b", "no_command"),
        (b"PRIVMSG #a :\xff\xfe", "invalid_utf8"),
        (b"@a=\xff PRIVMSG #a :x", "invalid_utf8"),
        (b"PRIVMSG #a :x\x00y", "bad_char"),
        (b"PRIVMSG #a :x\ry", "bad_char"),
        (b"PRIVMSG #a :" + b"x" * 600, "too_long"),
        (b"@" + b"a" * 9000 + b" PING x", "tags_too_long"),
    ],
)
def test_parse_errors(line: bytes, code: str) -> None:
    with pytest.raises(ParseError) as info:
        parse(line)
    assert info.value.code == code


def test_parse_error_names_the_command() -> None:
    with pytest.raises(ParseError) as info:
        parse(b"privmsg #a :\xff")
    assert info.value.command == "PRIVMSG"


def test_body_limit_is_510_without_crlf() -> None:
    body = b"PRIVMSG #a :" + b"x" * (510 - 12)
    assert len(body) == 510
    assert parse(body).params[1] == "x" * 498
    with pytest.raises(ParseError):
        parse(body + b"x")
    # Tags do not count against the 510: a client has 4094 bytes of its own for them.
    assert parse(b"@" + b"k" * 4094 + b" " + body).command == "PRIVMSG"
    with pytest.raises(ParseError) as info:
        parse(b"@" + b"k" * 4095 + b" " + body)
    assert info.value.code == "tags_too_long"


def test_serialize_uses_trailing_only_when_needed() -> None:
    assert serialize(IrcMessage("PING", ("x",))) == b"PING x\r\n"
    assert serialize(IrcMessage("PRIVMSG", ("#a", "hi there"), "n!u@h")) == (
        b":n!u@h PRIVMSG #a :hi there\r\n"
    )
    assert serialize(IrcMessage("X", ("",))) == b"X :\r\n"
    assert serialize(IrcMessage("X", (":a",))) == b"X ::a\r\n"
    assert serialize(IrcMessage("X", ("a",)), force_trailing=True) == b"X :a\r\n"
    assert serialize(IrcMessage("X", (), tags={"a": "", "b": "x;y"})) == b"@a;b=x\\:y X\r\n"


def test_serialize_refuses_what_would_split_the_line() -> None:
    with pytest.raises(ValueError):
        serialize(IrcMessage("X", ("a b", "c")))
    with pytest.raises(ValueError):
        serialize(IrcMessage("X", ("a\r\nQUIT",)))


def test_tag_escapes() -> None:
    assert escape_tag_value("a; b\\c\r\n") == "a\\:\\sb\\\\c\\r\\n"
    assert unescape_tag_value("a\\:\\sb\\\\c\\r\\n") == "a; b\\c\r\n"
    # Unknown escapes stand for the character; a trailing lone backslash is dropped.
    assert unescape_tag_value("\\b\\") == "b"
    assert parse_tags("+draft/react=\\s;bad key=1;=x;vendor.example/k=v") == {
        "+draft/react": " ",
        "vendor.example/k": "v",
    }


# -- properties --------------------------------------------------------------------------------


@settings(max_examples=500)
@given(st.binary(max_size=700))
@example(b"@")
@example(b"@ ")
@example(b": ")
@example(b"@a :b")
@example(b"\xc3")
def test_any_bytes_parse_or_raise_parse_error(data: bytes) -> None:
    try:
        msg = parse(data)
    except ParseError:
        return
    assert msg.command
    assert all(isinstance(p, str) for p in msg.params)


@settings(max_examples=300)
@given(
    st.lists(
        st.sampled_from(
            [b"@", b":", b" ", b";", b"=", b"\\", b"a", b"PRIVMSG", b"\xff", b"\x00", b"\r", b"#"]
        ),
        max_size=40,
    )
)
def test_irc_looking_bytes_parse_or_raise_parse_error(parts: list[bytes]) -> None:
    try:
        parse(b"".join(parts))
    except ParseError:
        pass


_word_chars = st.characters(
    blacklist_categories=("Cs",), blacklist_characters="\x00\r\n :", min_codepoint=1
)
_middle = st.text(_word_chars, min_size=1, max_size=12).flatmap(
    lambda first: st.text(
        st.characters(
            blacklist_categories=("Cs",), blacklist_characters="\x00\r\n ", min_codepoint=1
        ),
        max_size=8,
    ).map(lambda rest: first + rest)
)
_trailing = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\r\n", min_codepoint=1),
    max_size=40,
)
_command = st.one_of(
    st.text(st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZ"), min_size=1, max_size=10),
    st.integers(0, 999).map(lambda i: f"{i:03d}"),
)
_key_chars = st.sampled_from("abcXYZ019-")
_tag_key = st.builds(
    lambda plus, vendor, name: plus + (vendor + "/" if vendor else "") + name,
    st.sampled_from(["", "+"]),
    st.text(st.sampled_from("abc.-9"), max_size=6),
    st.text(_key_chars, min_size=1, max_size=10),
)
_tag_value = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00", min_codepoint=1),
    max_size=20,
)
_source = st.text(_word_chars, min_size=1, max_size=20)


@st.composite
def messages(draw: st.DrawFn) -> IrcMessage:
    middles = draw(st.lists(_middle, max_size=5))
    params = tuple(middles)
    if draw(st.booleans()):
        params += (draw(_trailing),)
    return IrcMessage(
        draw(_command),
        params,
        draw(st.one_of(st.none(), _source)),
        draw(st.dictionaries(_tag_key, _tag_value, max_size=4)),
    )


@settings(max_examples=300)
@given(messages())
def test_parse_serialize_round_trip(msg: IrcMessage) -> None:
    wire = serialize(msg)
    assert wire.endswith(b"\r\n")
    assert parse(wire[:-2], max_body=1 << 16) == msg


@given(_tag_value)
def test_tag_value_escape_round_trip(value: str) -> None:
    escaped = escape_tag_value(value)
    assert not any(ch in escaped for ch in "; \r\n")
    assert unescape_tag_value(escaped) == value


def _outcome(line: bytes, max_body: int) -> IrcMessage | tuple[str, str | None]:
    try:
        return parse_general(line, max_body=max_body)
    except ParseError as err:
        return err.code, err.command


@settings(max_examples=500)
@given(
    st.lists(
        st.sampled_from(
            [
                b"PRIVMSG",
                b"privmsg",
                b"#room",
                b" ",
                b" :",
                b":",
                b"@",
                b"a",
                b"\xc3\xa9",
                b"\xff",
                b"\x00",
            ]
        ),
        max_size=30,
    ),
    st.sampled_from([8, 30, 510]),
)
@example([b"PRIVMSG", b" ", b"#room", b" :", b"a"], 510)
@example([b"PRIVMSG", b" ", b"#room", b" ", b" :", b"a"], 510)
@example([b"PRIVMSG", b" ", b"#room", b" "], 510)
@example([b"PRIVMSG", b" ", b"#room", b" :", b"a"], 8)
def test_the_common_line_shortcut_parses_as_the_general_parse(
    parts: list[bytes], max_body: int
) -> None:
    # parse() takes a shortcut for lines without tags or source: whatever the bytes, it must
    # come to the general parse's message or error.
    line = b"".join(parts)
    try:
        got: IrcMessage | tuple[str, str | None] = parse(line, max_body=max_body)
    except ParseError as err:
        got = err.code, err.command
    assert got == _outcome(line, max_body)
