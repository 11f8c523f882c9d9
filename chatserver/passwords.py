"""Operator password hashes for the configuration file.

Operators' passwords live in the config, so they are kept there as scrypt hashes, never as
text: ``scrypt$n$r$p$salt$hash`` with base64 salt and hash.  Account passwords are another
matter (SCRAM keys in the store, see :mod:`chatserver.core.accounts`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, DeferredSemaphore

SCHEME = "scrypt"
# scrypt cost: n=2**14, r=8 takes ~16 MiB and a few tens of milliseconds, the usual
# interactive-login setting; the parameters are stored in each hash so they can grow later.
DEFAULT_N = 1 << 14
DEFAULT_R = 8
DEFAULT_P = 1
SALT_BYTES = 16
HASH_BYTES = 32
# Refuse parameters that would make one check cost more than this much memory (a hash in a
# config file is trusted, but a typo must not make OPER eat the machine).
MAX_MEMORY = 256 * 1024 * 1024


class HashFormatError(ValueError):
    """The stored value is not a hash this module made."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as err:
        raise HashFormatError(f"not base64: {text!r}") from err


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, length: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"),
        salt=salt,
        n=n,
        r=r,
        p=p,
        maxmem=_memory(n, r, p) + 1024 * 1024,
        dklen=length,
    )


def hash_password(
    password: str, *, n: int = DEFAULT_N, r: int = DEFAULT_R, p: int = DEFAULT_P
) -> str:
    """A new salted hash of ``password`` in the form ``scrypt$n$r$p$salt$hash``."""
    _check_params(n, r, p)
    salt = os.urandom(SALT_BYTES)
    digest = _scrypt(password, salt, n, r, p, HASH_BYTES)
    return f"{SCHEME}${n}${r}${p}${_b64(salt)}${_b64(digest)}"


def parse_hash(stored: str) -> tuple[int, int, int, bytes, bytes]:
    """(n, r, p, salt, hash) of a stored hash; raises :class:`HashFormatError`."""
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != SCHEME:
        raise HashFormatError("expected scrypt$n$r$p$salt$hash")
    try:
        n, r, p = (int(x) for x in parts[1:4])
    except ValueError as err:
        raise HashFormatError("n, r and p must be integers") from err
    _check_params(n, r, p)
    salt, digest = _unb64(parts[4]), _unb64(parts[5])
    if not salt or not digest:
        raise HashFormatError("empty salt or hash")
    return n, r, p, salt, digest


def _check_params(n: int, r: int, p: int) -> None:
    if n < 2 or n & (n - 1) or r < 1 or p < 1:
        raise HashFormatError("n must be a power of two above 1; r and p at least 1")
    if _memory(n, r, p) > MAX_MEMORY:
        raise HashFormatError("scrypt parameters need too much memory")


def _memory(n: int, r: int, p: int) -> int:
    # What OpenSSL allocates for scrypt: the V array (N+2 blocks) and the p B blocks.
    return 128 * r * (n + p + 2)


def is_valid_hash(stored: str) -> bool:
    try:
        parse_hash(stored)
    except HashFormatError:
        return False
    return True


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches ``stored`` (a malformed hash matches nothing).

    The comparison is constant-time; scrypt itself costs the same for right and wrong passwords.
    """
    try:
        n, r, p, salt, digest = parse_hash(stored)
    except HashFormatError:
        return False
    candidate = _scrypt(password, salt, n, r, p, len(digest))
    return hmac.compare_digest(candidate, digest)


# One scrypt check at a time: each takes ~16 MiB, so concurrent OPER attempts (one per
# thread of the pool) would take the server's memory up by hundreds of MiB at once.
_CHECKS = DeferredSemaphore(1)


def verify_password_in_thread(
    run_in_thread: Callable[..., Deferred[Any]],
    check: Callable[..., bool],
    *args: Any,
) -> Deferred[Any]:
    """Run ``check(*args)`` (a password check built on :func:`verify_password`) with
    ``run_in_thread``, one such check at a time; fires with its result."""
    return _CHECKS.run(run_in_thread, check, *args)
