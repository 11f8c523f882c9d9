"""The one text rule, and each protocol's edge against it: whatever a client sends, what gets
past the edge is text every protocol can carry (property tests over generated input)."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from chatserver.core.errors import BadText
from chatserver.core.names import check_text, text_problem
from protocols.irc.message import ParseError, parse
from protocols.line.framing import LineFramer
from protocols.line.jsonin import MAX_TAG_DEPTH, JsonRefused, decode_command

# Any code point, surrogates and NUL included: what JSON's \u escapes can spell.
ANY_CHAR = st.characters(codec=None, categories=None)
ANY_TEXT = st.text(alphabet=ANY_CHAR, max_size=20)


def test_the_rule() -> None:
    assert text_problem("plain, \x02bold\x02, \x03colour, tab\t, lines\r\n, \U0001f600") is None
    assert "U+D800" in (text_problem("a\ud800") or "")
    assert "U+DFFF" in (text_problem("\udfff") or "")
    assert "NUL" in (text_problem("\x00") or "")
    with pytest.raises(BadText):
        check_text("x\udc80")


@given(ANY_TEXT)
def test_the_rule_is_exactly_what_utf8_and_irc_can_carry(text: str) -> None:
    try:
        text.encode("utf-8")
        encodes = True
    except UnicodeEncodeError:
        encodes = False
    assert (text_problem(text) is None) == (encodes and "\x00" not in text)


def json_values(max_leaves: int = 20) -> st.SearchStrategy[Any]:
    scalars = st.none() | st.booleans() | st.integers() | st.floats() | ANY_TEXT
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ANY_TEXT, inner, max_size=4),
        max_leaves=max_leaves,
    )


def texts_of(value: Any) -> list[str]:
    out: list[str] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            out.extend(item)
            stack.extend(item.values())
    return out


@given(st.dictionaries(ANY_TEXT, json_values(), max_size=5), json_values())
@settings(max_examples=300)
@example({"cmd": "say", "text": "\ud800"}, None)
@example({"cmd": "ping"}, float("nan"))
@example({"cmd": "ping"}, [[[[[[[[[[]]]]]]]]]])
def test_what_passes_the_json_edge_can_be_written_back(obj: dict[str, Any], tag: Any) -> None:
    line = json.dumps({**obj, "tag": tag})  # escapes surrogates and writes NaN as NaN
    try:
        decoded = decode_command(line)
    except JsonRefused as err:
        assert err.code in ("bad_json", "bad_text")
        if err.tag is not None:
            json.dumps(err.tag, allow_nan=False, ensure_ascii=False).encode("utf-8")
        return
    for text in texts_of(decoded):
        assert text_problem(text) is None
    # The tag echoes as strict JSON, in UTF-8.
    json.dumps(decoded.get("tag"), allow_nan=False, ensure_ascii=False).encode("utf-8")


@pytest.mark.parametrize("depth", [MAX_TAG_DEPTH, MAX_TAG_DEPTH + 1, 990, 5000])
def test_tag_depth(depth: int) -> None:
    line = '{"cmd": "ping", "tag": ' + "[" * depth + "]" * depth + "}"
    if depth <= MAX_TAG_DEPTH:
        assert decode_command(line)["tag"] is not None
    else:
        with pytest.raises(JsonRefused) as err:
            decode_command(line)
        assert err.value.code == "bad_json" and err.value.tag is None


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e999", "-1e400"])
def test_numbers_that_are_not_json(number: str) -> None:
    with pytest.raises(JsonRefused) as err:
        decode_command('{"cmd": "ping", "tag": ' + number + "}")
    assert err.value.code == "bad_json"
    assert math.isfinite(decode_command('{"cmd": "ping", "tag": 1e300}')["tag"])


@given(st.binary(max_size=80))
@example(b"PRIVMSG #a :\xed\xa0\x80")  # a surrogate encoded as UTF-8 bytes (CESU style)
@example(b"@a=\\0 PRIVMSG #a :x")
def test_irc_edge_passes_only_text(line: bytes) -> None:
    try:
        msg = parse(line)
    except ParseError:
        return
    for text in (*msg.params, *msg.tags.keys(), *msg.tags.values(), msg.source or ""):
        assert text_problem(text) is None


@given(st.binary(max_size=80))
@example(b"\xed\xa0\x80\x00hi\n")
def test_line_text_edge_passes_only_text(data: bytes) -> None:
    for item in LineFramer(1000).feed(data + b"\n"):
        if isinstance(item, bytes):
            assert text_problem(item.decode("utf-8", "replace")) is None
