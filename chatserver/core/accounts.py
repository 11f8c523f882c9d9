"""Accounts (registered nicks): registration, password checks and SCRAM credentials.

Passwords are never stored: each account keeps SCRAM-SHA-256 and SCRAM-SHA-1 salted keys
(RFC 5802), which serve both SCRAM logins and plain-password checks.  Key derivation is
deliberately slow, so it runs through ``run_in_thread``, never on the reactor thread.
The store is the source of truth: nothing here caches accounts, so an account created by
another process (the ``chatserver account`` command) can log in at once.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any

from scramp import ScramMechanism
from twisted.internet.defer import Deferred, fail, inlineCallbacks

from chatserver.core.errors import AccountError, BadName
from chatserver.core.limits import KeyedBuckets
from chatserver.core.names import casefold, check_nick
from chatserver.core.records import AccountRecord, Credential
from chatserver.core.settings import CoreSettings

MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-1")
_SCRAM = {name: ScramMechanism(name) for name in MECHANISMS}

RunInThread = Callable[..., Deferred]


def make_credentials(password: str, iterations: int) -> tuple[Credential, ...]:
    """Derive the salted keys for every supported mechanism (slow: call in a thread)."""
    creds = []
    for name in MECHANISMS:
        salt, stored_key, server_key, count = _SCRAM[name].make_auth_info(
            password, iteration_count=iterations
        )
        creds.append(Credential(name, salt, stored_key, server_key, count))
    return tuple(creds)


def check_password(cred: Credential, password: str) -> bool:
    """Whether ``password`` matches ``cred`` (slow: call in a thread); constant-time compare."""
    try:
        _salt, stored_key, _server_key, _count = _SCRAM[cred.mechanism].make_auth_info(
            password, iteration_count=cred.iterations, salt=cred.salt
        )
    except Exception:
        # saslprep refuses some strings (prohibited characters): such a password can't match.
        return False
    return hmac.compare_digest(stored_key, cred.stored_key)


class AccountManager:
    """Registration, verification and throttling of failed logins, over an IAccountStore."""

    def __init__(
        self,
        store: Any,
        settings: CoreSettings,
        *,
        clock: Any,
        run_in_thread: RunInThread,
    ) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock
        self.run_in_thread = run_in_thread
        period = max(settings.login_failure_period, 0.001)
        self._failures_by_account = KeyedBuckets(settings.login_failure_burst, 1.0 / period)
        self._failures_by_address = KeyedBuckets(settings.login_failure_burst * 4, 4.0 / period)
        # Every failed password or operator check, for the metrics endpoint.
        self.failures = 0

    def apply_settings(self, settings: CoreSettings) -> None:
        """New settings (a config reload); new throttling buckets use the new limits."""
        self.settings = settings
        period = max(settings.login_failure_period, 0.001)
        self._failures_by_account.capacity = settings.login_failure_burst
        self._failures_by_account.rate = 1.0 / period
        self._failures_by_address.capacity = settings.login_failure_burst * 4
        self._failures_by_address.rate = 4.0 / period

    # -- reading ----------------------------------------------------------------------------

    def get(self, name: str) -> Deferred:
        return self.store.get_account(name)

    def list(self) -> Deferred:
        return self.store.list_accounts()

    # -- changing ---------------------------------------------------------------------------

    def check_password_rules(self, password: str) -> None:
        if len(password) < self.settings.min_password_length:
            raise AccountError(
                AccountError.WEAK_PASSWORD,
                f"passwords must be at least {self.settings.min_password_length} characters",
            )
        if any(ch in password for ch in "\r\n\x00"):
            raise AccountError(AccountError.WEAK_PASSWORD, "passwords may not contain line breaks")

    @inlineCallbacks
    def create(self, name: str, password: str, email: str | None = None):  # -> AccountRecord
        check_nick(name)
        self.check_password_rules(password)
        existing = yield self.store.get_account(name)
        if existing is not None:
            raise AccountError(AccountError.EXISTS, f"{name} is already registered")
        creds = yield self.run_in_thread(make_credentials, password, self.settings.scram_iterations)
        record = AccountRecord(
            name=name, credentials=creds, created_at=self.clock.seconds(), email=email
        )
        yield self.store.create_account(record)
        return record

    @inlineCallbacks
    def set_password(self, name: str, password: str):
        self.check_password_rules(password)
        creds = yield self.run_in_thread(make_credentials, password, self.settings.scram_iterations)
        changed = yield self.store.update_credentials(name, creds)
        if not changed:
            raise AccountError(AccountError.NO_ACCOUNT, f"{name} is not registered")

    def delete(self, name: str) -> Deferred:
        return self.store.delete_account(name)

    # -- verifying --------------------------------------------------------------------------

    def throttled(self, name: str | None, address: str | None) -> bool:
        now = self.clock.seconds()
        if name is not None and not self._failures_by_account.allowed(casefold(name), now):
            return True
        return address is not None and not self._failures_by_address.allowed(address, now)

    def record_failure(self, name: str | None, address: str | None) -> None:
        self.failures += 1
        now = self.clock.seconds()
        if name is not None:
            self._failures_by_account.take(casefold(name), now)
        if address is not None:
            self._failures_by_address.take(address, now)

    def _throttle_error(self) -> AccountError:
        return AccountError(
            AccountError.THROTTLED, "too many failed logins; wait a while before trying again"
        )

    @inlineCallbacks
    def verify_password(self, name: str, password: str, address: str | None = None):
        """Fire with the AccountRecord if ``password`` is right; else errback AccountError."""
        if self.throttled(name, address):
            raise self._throttle_error()
        try:
            check_nick(name)
        except BadName:
            self.record_failure(None, address)
            raise AccountError(AccountError.NO_ACCOUNT, f"{name} is not registered") from None
        record = yield self.store.get_account(name)
        if record is None:
            self.record_failure(None, address)
            raise AccountError(AccountError.NO_ACCOUNT, f"{name} is not registered")
        cred = record.credential("SCRAM-SHA-256") or (
            record.credentials[0] if record.credentials else None
        )
        ok = False
        if cred is not None:
            ok = yield self.run_in_thread(check_password, cred, password)
        if not ok:
            self.record_failure(name, address)
            raise AccountError(AccountError.BAD_PASSWORD, "invalid password")
        return record

    def scram_credential(self, name: str, mechanism: str, address: str | None = None) -> Deferred:
        """Fire with (AccountRecord, Credential) for a SCRAM exchange, or errback AccountError."""
        if self.throttled(name, address):
            return fail(self._throttle_error())

        def found(record: AccountRecord | None) -> tuple[AccountRecord, Credential]:
            cred = record.credential(mechanism) if record is not None else None
            if record is None or cred is None:
                self.record_failure(None, address)
                raise AccountError(AccountError.NO_ACCOUNT, f"{name} is not registered")
            return record, cred

        return self.store.get_account(name).addCallback(found)
