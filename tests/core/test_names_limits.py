from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatserver.core.errors import BadName
from chatserver.core.limits import AddressCounter, KeyedBuckets, TokenBucket, canonical_address
from chatserver.core.names import casefold, check_nick, glob_match, is_valid_nick, room_key


@pytest.mark.parametrize("nick", ["alice", "A", "x" * 30, "[away]", "a-b", "n1ck", "^_^", "{x}|y`"])
def test_valid_nicks(nick: str) -> None:
    assert check_nick(nick) == nick


@pytest.mark.parametrize(
    "nick", ["", "1abc", "-abc", "x" * 31, "a b", "a!b", "a@b", "#room", "é", "a,b", "a:b"]
)
def test_invalid_nicks(nick: str) -> None:
    with pytest.raises(BadName):
        check_nick(nick)


def test_ascii_casemapping_folds_only_a_to_z() -> None:
    assert casefold("ALICE[]") == "alice[]"
    assert casefold("Ä{") == "Ä{"
    assert casefold("ÄLICE") == "Älice"


@given(st.text(max_size=40))
def test_casefold_changes_a_to_z_and_nothing_else(text: str) -> None:
    folded = casefold(text)
    assert len(folded) == len(text)
    for before, after in zip(text, folded, strict=True):
        assert after == (before.lower() if "A" <= before <= "Z" else before)


@pytest.mark.parametrize(
    ("raw", "key"), [("Dev", "dev"), ("a.b_c-1", "a.b_c-1"), ("x" * 50, "x" * 50)]
)
def test_room_keys(raw: str, key: str) -> None:
    assert room_key(raw) == key


@pytest.mark.parametrize("raw", ["", "#dev", "a b", "x" * 51, "ü", "a/b"])
def test_bad_room_names(raw: str) -> None:
    with pytest.raises(BadName):
        room_key(raw)


@given(st.text(max_size=40))
def test_nick_check_never_raises_anything_else(text: str) -> None:
    try:
        check_nick(text)
    except BadName:
        assert not is_valid_nick(text)
    else:
        assert is_valid_nick(text)


@pytest.mark.parametrize(
    ("pattern", "text", "match"),
    [
        ("*!*@*", "a!b@c", True),
        ("bob!*@*", "BOB!x@y", True),
        ("bob!*@*", "bobby!x@y", False),
        ("b?b!*@*", "bab!x@y", True),
        ("*.cloak", "line-abc.cloak", True),
        ("a.b", "axb", False),
    ],
)
def test_glob(pattern: str, text: str, match: bool) -> None:
    assert glob_match(pattern, text) is match


def test_token_bucket_refills_over_time() -> None:
    bucket = TokenBucket(capacity=3, rate=1.0, now=0.0)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.wait_time(0.0) == pytest.approx(1.0)
    assert bucket.take(1.0)
    assert not bucket.take(1.0)
    bucket.force(1.0, 2)
    assert bucket.level(1.0) == pytest.approx(-2)
    assert bucket.level(10.0) == pytest.approx(3)


def test_keyed_buckets_are_independent_and_pruned() -> None:
    buckets = KeyedBuckets(capacity=1, rate=0.5)
    assert buckets.take("a", 0.0)
    assert not buckets.allowed("a", 0.0)
    assert buckets.allowed("b", 0.0)
    buckets.prune(10.0)
    assert len(buckets) == 0


def test_address_counter() -> None:
    counter = AddressCounter(2)
    assert counter.acquire("x") and counter.acquire("x")
    assert not counter.acquire("x")
    counter.release("x")
    assert counter.acquire("x")
    assert counter.count("y") == 0


def _parsed_canonical(address: str) -> str:
    """canonical_address as the full parse gives it (what the fast path must agree with)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


_OCTET = st.one_of(st.integers(0, 300).map(str), st.text("0123456789", min_size=1, max_size=4))


@given(
    st.one_of(
        st.ip_addresses().map(str),
        st.ip_addresses(v=4).map(lambda ip: f"::ffff:{ip}"),
        st.lists(_OCTET, min_size=3, max_size=5).map(".".join),
        st.text(max_size=20),
    )
)
def test_canonical_address_agrees_with_the_full_parse(address: str) -> None:
    # Leading zeros, octets past 255, too few or too many parts, mapped and plain IPv6, text.
    assert canonical_address(address) == _parsed_canonical(address)


def test_canonical_address_folds_mapped_and_long_ipv6() -> None:
    assert canonical_address("::ffff:127.0.0.1") == "127.0.0.1"
    assert canonical_address("2001:0db8:0000:0000:0000:0000:0000:0001") == "2001:db8::1"
    assert canonical_address("127.0.0.1") == "127.0.0.1"
    assert canonical_address("unix") == "unix"
