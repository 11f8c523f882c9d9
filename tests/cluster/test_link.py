"""Commands to Redis as the nodes write them: RESP arrays a RESP reader reads back as the
values given, byte for byte what txredisapi's own encoder makes.  (Every other test of the
cluster sends its commands to a real Redis this way.)"""

from __future__ import annotations

from typing import Any

import hiredis
import pytest
import txredisapi
from hypothesis import given
from hypothesis import strategies as st

from chatserver.cluster.link import encode_command

values = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=100),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False, width=64),
)


def read_back(data: bytes) -> Any:
    reader = hiredis.Reader()
    reader.feed(data)
    reply = reader.gets()
    # Exactly one command, nothing left over.
    assert reader.gets() is False
    return reply


@given(st.lists(values, min_size=1, max_size=12), st.sampled_from(["utf-8", None]))
def test_a_command_reads_back_as_its_values_and_as_txredisapi_makes_it(
    args: list[Any], charset: str | None
) -> None:
    data = encode_command(tuple(args), charset)
    reference = txredisapi.RedisProtocol(charset=charset)
    assert data == reference._build_command(*args)
    expected = [
        arg
        if isinstance(arg, bytes)
        else arg.encode()
        if isinstance(arg, str)
        else format(arg, "f").encode()
        if isinstance(arg, float)
        else str(arg).encode()
        for arg in args
    ]
    assert read_back(data) == expected


class Text(str):
    pass


class Data(bytes):
    pass


def test_subclasses_and_booleans_encode_as_txredisapi_encodes_them() -> None:
    args = ("SET", Text("key"), Data(b"value"), True, 3, bytearray(b"raw"))
    data = encode_command(args, "utf-8")
    assert data == txredisapi.RedisProtocol(charset="utf-8")._build_command(*args)
    assert read_back(data) == [b"SET", b"key", b"value", b"True", b"3", b"raw"]


def test_big_values_go_whole() -> None:
    entry = bytes(range(256)) * 400
    data = encode_command(("XADD", "s", "MAXLEN", "~", 4, "*", "e", entry), None)
    assert read_back(data) == [b"XADD", b"s", b"MAXLEN", b"~", b"4", b"*", b"e", entry]


def test_text_that_cannot_be_encoded_is_refused() -> None:
    with pytest.raises(txredisapi.InvalidData):
        encode_command(("SET", "k", "\udcff"), "utf-8")
