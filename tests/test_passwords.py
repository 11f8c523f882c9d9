"""Operator password hashes (scrypt) and the ``chatserver hash-password`` command."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatserver.passwords import (
    HashFormatError,
    hash_password,
    is_valid_hash,
    parse_hash,
    verify_password,
)

# Cheap parameters keep the property tests fast; the defaults are tested once.
FAST = {"n": 16, "r": 1, "p": 1}


def test_default_hash_round_trip() -> None:
    stored = hash_password("correct horse")
    scheme, n, r, p, _salt, _digest = stored.split("$")
    assert (scheme, n, r, p) == ("scrypt", "16384", "8", "1")
    assert verify_password("correct horse", stored)
    assert not verify_password("correct horsf", stored)
    assert not verify_password("", stored)


def test_salted_hashes_differ() -> None:
    assert hash_password("same", **FAST) != hash_password("same", **FAST)


@settings(max_examples=50, deadline=None)
@given(st.text(), st.text())
def test_only_the_right_password_verifies(password: str, other: str) -> None:
    stored = hash_password(password, **FAST)
    assert verify_password(password, stored)
    assert verify_password(other, stored) == (other == password)


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "plaintext",
        "scrypt$16$1$1$c2FsdA==",  # one field short
        "bcrypt$16$1$1$c2FsdA==$aGFzaA==",
        "scrypt$15$1$1$c2FsdA==$aGFzaA==",  # n not a power of two
        "scrypt$x$1$1$c2FsdA==$aGFzaA==",
        "scrypt$16$0$1$c2FsdA==$aGFzaA==",
        "scrypt$16$1$1$not base64!$aGFzaA==",
        "scrypt$16$1$1$$aGFzaA==",
        "scrypt$1073741824$8$1$c2FsdA==$aGFzaA==",  # would need far too much memory
    ],
)
def test_malformed_hashes_match_nothing(stored: str) -> None:
    assert not is_valid_hash(stored)
    assert not verify_password("anything", stored)
    with pytest.raises(HashFormatError):
        parse_hash(stored)


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_any_stored_text_is_refused_or_parsed(stored: str) -> None:
    try:
        parse_hash(stored)
    except HashFormatError:
        pass


def test_cli_hash_password_reads_stdin() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "chatserver", "hash-password", "--password-stdin"],
        input="op-secret\n",
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    stored = out.stdout.strip()
    assert verify_password("op-secret", stored)
    assert "op-secret" not in out.stdout
