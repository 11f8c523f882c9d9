"""The server password check (``[irc] password``): a private server's shared password.

The hash is checked like an operator's (scrypt, in a thread, one check at a time), and each
attempt counts against the login throttle of the client's address, so that the password
cannot be guessed quickly from one address.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail

from chatserver.core.errors import AccountError
from chatserver.passwords import verify_password, verify_password_in_thread


class ServerPasswordRefused(Exception):
    """The server password sent is wrong."""

    def __init__(self) -> None:
        super().__init__("wrong server password")


def check_server_password(
    service: Any, stored: str, password: str, *, address: str | None, protocol: str
) -> Deferred[None]:
    """Fire when ``password`` matches the hash ``stored``; errback :class:`ServerPasswordRefused`
    if it does not, or AccountError(THROTTLED) when the address has failed too often (then
    nothing is checked)."""
    accounts = service.accounts
    try:
        attempt = accounts.begin_login(None, address, protocol)
    except AccountError:
        return fail(
            AccountError(
                AccountError.THROTTLED, "too many failed attempts; wait a while before trying again"
            )
        )
    d: Deferred[bool] = verify_password_in_thread(
        accounts.run_in_thread, verify_password, password, stored
    )

    def checked(ok: bool) -> None:
        if not ok:
            attempt.failed()
            raise ServerPasswordRefused()
        attempt.succeeded(None)

    return d.addCallback(checked)
