"""The operator login check (``[[operators]]`` in the config), for every protocol.

One answer for every failure: an unknown name and a wrong password look the same and cost the
same (a scrypt check against a dummy hash), so that nobody can find out which operator names
exist.  Attempts count against the login throttle of the client's address when they start.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred, fail

from chatserver.core.errors import AccountError
from chatserver.passwords import hash_password, verify_password, verify_password_in_thread


class OperatorRefused(Exception):
    """The operator name or password is wrong (never which)."""

    def __init__(self) -> None:
        super().__init__("wrong operator name or password")


@functools.cache
def _dummy_hash() -> str:
    # Made on first use, not at import: a hash costs as much as a check.
    return hash_password("not an operator password")


def _check(password: str, stored: str | None) -> bool:
    """Slow (scrypt): run in a thread.  ``stored`` None: an unknown name, which never matches."""
    ok = verify_password(password, stored if stored is not None else _dummy_hash())
    return ok and stored is not None


def check_operator(
    service: Any,
    operators: Sequence[Any],
    name: str,
    password: str,
    *,
    address: str | None,
    protocol: str,
) -> Deferred[Any]:
    """Fire with the ``operators`` entry (name, password hash) that ``name`` and ``password``
    match; errback :class:`OperatorRefused` if none does, or AccountError(THROTTLED) when the
    address has failed too often (then nothing is checked)."""
    accounts = service.accounts
    try:
        attempt = accounts.begin_login(None, address, protocol)
    except AccountError:
        return fail(
            AccountError(
                AccountError.THROTTLED, "too many failed attempts; wait a while before trying again"
            )
        )
    entry = next((op for op in operators if op.name == name), None)
    stored = entry.password if entry is not None else None
    d: Deferred[Any] = verify_password_in_thread(accounts.run_in_thread, _check, password, stored)

    def checked(ok: bool) -> Any:
        if entry is None or not ok:
            attempt.failed()
            raise OperatorRefused()
        attempt.succeeded(None)
        return entry

    return d.addCallback(checked)
