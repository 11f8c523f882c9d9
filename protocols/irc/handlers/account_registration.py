"""REGISTER and VERIFY (IRCv3 draft/account-registration) on the shared accounts.

An account is a registered nick, so the account name must be the client's current nick
(``*`` stands for it): the capability never advertises ``custom-account-name``.  Before the
connection is complete, REGISTER is refused unless ``[irc] registration_before_connect``
allows it (``before-connect``); then the nick sent with NICK is the account, and a nick that
someone is using cannot be registered that way.
Accounts never wait for verification, so VERIFY has nothing to complete.  Where passwords
may not be sent (plaintext from another machine), REGISTER fails with UNACCEPTABLE_PASSWORD
before anything else is looked at.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred

from chatserver.core.errors import AccountError, BadName, Banned, ChatError
from chatserver.core.names import casefold
from protocols.irc.caps import Capability, add_capability
from protocols.irc.commands import command
from protocols.irc.sasl import refused_by_ban
from protocols.irc.security import PLAINTEXT_REFUSAL, may_send_passwords, tls_advice


def _cap_value(conn: Any) -> str:
    # The factory's section, not the connection's copy: a reload may change the key.
    flags = []
    if conn.factory.config.registration_before_connect:
        flags.append("before-connect")
    if conn.service.settings.registration_email_required:
        flags.append("email-required")
    return ",".join(flags)


add_capability(Capability("draft/account-registration", _cap_value, requires_command="REGISTER"))

# Passwords can be typed into NickServ messages too, which must fit in one IRC line.
MAX_PASSWORD_BYTES = 300

_CODES = {
    AccountError.EXISTS: "ACCOUNT_EXISTS",
    AccountError.WEAK_PASSWORD: "WEAK_PASSWORD",
    AccountError.ALREADY_LOGGED_IN: "ALREADY_AUTHENTICATED",
    AccountError.CLOSED: "TEMPORARILY_UNAVAILABLE",
    AccountError.EMAIL_REQUIRED: "INVALID_EMAIL",
    AccountError.UNAVAILABLE: "TEMPORARILY_UNAVAILABLE",
}


def _looks_like_email(text: str) -> bool:
    local, at, domain = text.rpartition("@")
    return bool(at and local and "." in domain and " " not in text and len(text) <= 254)


@command("REGISTER", min_params=3, pre_registration=True)
def register(conn: Any, msg: Any) -> Deferred[Any] | None:
    account, email, password = msg.params[0], msg.params[1], msg.params[2]
    if not may_send_passwords(conn):
        # Refused before anything else is checked: the password is never looked at.
        conn.fail(
            "REGISTER",
            "UNACCEPTABLE_PASSWORD",
            account,
            description=tls_advice(conn, PLAINTEXT_REFUSAL.capitalize()),
        )
        return None
    early = not conn.registered or conn.user is None
    if early and not conn.factory.config.registration_before_connect:
        conn.fail(
            "REGISTER",
            "COMPLETE_CONNECTION_REQUIRED",
            account,
            description="Finish connecting (NICK, USER, CAP END) before registering",
        )
        return None
    # Before connecting, the nick is the one sent with NICK, even if it was refused as in
    # use: registering it then fails as it should (ACCOUNT_EXISTS), rather than NEED_NICK.
    nick = (conn.pending_nick or conn.refused_nick) if early else conn.user.nick
    if nick is None:
        conn.fail("REGISTER", "NEED_NICK", account, description="Send NICK first")
        return None
    name = nick if account == "*" else account
    if casefold(name) != casefold(nick):
        conn.fail(
            "REGISTER",
            "ACCOUNT_NAME_MUST_BE_NICK",
            account,
            description="The account name must be your current nick",
        )
        return None
    logged_in = conn.core.account if early else conn.user.account
    if logged_in is not None:
        conn.fail(
            "REGISTER",
            "ALREADY_AUTHENTICATED",
            logged_in,
            description="You are already logged in",
        )
        return None
    if email != "*" and not _looks_like_email(email):
        conn.fail("REGISTER", "INVALID_EMAIL", name, description="That is not an email address")
        return None
    if email == "*" and conn.service.settings.registration_email_required:
        conn.fail("REGISTER", "INVALID_EMAIL", name, description="An email address is needed here")
        return None
    if len(password.encode()) > MAX_PASSWORD_BYTES:
        conn.fail(
            "REGISTER",
            "UNACCEPTABLE_PASSWORD",
            name,
            description=f"Passwords may be at most {MAX_PASSWORD_BYTES} bytes",
        )
        return None
    d = conn.service.register(
        conn.core, password, None if email == "*" else email, name=name if early else ""
    )

    def done(record: Any) -> None:
        conn.send("REGISTER", "SUCCESS", record.name, "Account created")

    def failed(failure: Any) -> None:
        err = failure.value
        if failure.check(Banned):
            # The core has told the client why and closed the connection: nothing to add.
            refused_by_ban(conn, err)
        elif failure.check(AccountError):
            code = _CODES.get(err.code, "TEMPORARILY_UNAVAILABLE")
            conn.fail("REGISTER", code, name, description=err.reason)
        elif failure.check(BadName):
            conn.fail("REGISTER", "BAD_ACCOUNT_NAME", name, description=err.reason)
        elif failure.check(ChatError):
            conn.fail("REGISTER", "TEMPORARILY_UNAVAILABLE", name, description=err.reason)
        else:
            return failure
        return None

    return d.addCallbacks(done, failed)


@command("VERIFY", min_params=2, pre_registration=True)
def verify(conn: Any, msg: Any) -> None:
    account = msg.params[0]
    if conn.user is not None and conn.user.account is not None:
        conn.fail(
            "VERIFY", "ALREADY_AUTHENTICATED", account, description="You are already logged in"
        )
        return
    conn.fail(
        "VERIFY",
        "INVALID_CODE",
        account,
        description="No registration is waiting for verification: accounts are ready at once",
    )
