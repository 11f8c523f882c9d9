"""Accounts (registered nicks): registration, password checks and SCRAM credentials.

Passwords are never stored: each account keeps SCRAM-SHA-256 and SCRAM-SHA-1 salted keys
(RFC 5802), which serve both SCRAM logins and plain-password checks.  Key derivation is
deliberately slow, so it runs through ``run_in_thread``, never on the reactor thread.
The store is the source of truth: nothing here caches accounts, so an account created by
another process (the ``chatserver account`` command) can log in at once.

Users register as ``[chat] registration`` (or a protocol's own setting) allows: "open",
"closed", or "invite", where only a name that an operator has invited may be registered,
once, by whoever asks first, before the invitation expires.  Invitations live in the store,
so that ``chatserver account invite`` works while the server runs, and the transaction that
creates the account uses up the invitation: it can neither be used twice nor be used up by
a registration that fails.
"""

from __future__ import annotations

import hmac
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from scramp import ScramMechanism
from twisted.internet.defer import Deferred, fail, inlineCallbacks
from twisted.logger import Logger

from chatserver.core.errors import AccountError, BadName, ChatError
from chatserver.core.limits import KeyedBuckets
from chatserver.core.names import casefold, check_nick, reserved_reason
from chatserver.core.records import AccountRecord, Credential
from chatserver.core.settings import CoreSettings

log = Logger()

MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-1")
_SCRAM = {name: ScramMechanism(name) for name in MECHANISMS}

RunInThread = Callable[..., Deferred]

INVITE_DAYS = 7.0
# Longer than anyone plans ahead, short enough that the expiry stays a sane timestamp.
MAX_INVITE_DAYS = 3650.0
DAY = 86400.0


@dataclass(frozen=True, slots=True)
class RegistrationInvite:
    """An operator's leave to register the account ``name`` once, until ``expires_at``."""

    name: str  # as invited (display form); the key is casefold(name)
    invited_by: str  # the operator's nick; empty when made with the command line
    created_at: float
    expires_at: float


def not_invited() -> AccountError:
    """The refusal of a registration by invitation for a name that has no invitation.

    The code is CLOSED, so that every protocol refuses it as it refuses closed registration.
    """
    return AccountError(
        AccountError.CLOSED, "registration on this server is by invitation; ask an operator"
    )


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
        # Every failed password, SASL or operator check, for the metrics endpoint: in all,
        # and by the protocol it came through.
        self.failures = 0
        self.failures_by_protocol: dict[str, int] = {}
        # The folded names of the accounts, so that a registered nick can be refused at once
        # when a nick is claimed.  Loaded at start and kept by what changes accounts here;
        # an account made or deleted by another process is learnt when the store is next
        # asked about it (ChatService checks every nick taken against the store).
        self._names: set[str] = set()

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

    def registered_keys(self, keys: Sequence[str]) -> Deferred:
        """Fire with the set of the folded names in ``keys`` that are accounts (and remember
        what the store said about each)."""

        def learn(found: set[str]) -> set[str]:
            for key in keys:
                (self._names.add if key in found else self._names.discard)(key)
            return found

        return self.store.registered_keys(keys).addCallback(learn)

    def load_names(self) -> Deferred:
        """Learn every account's name from the store (at start)."""

        def loaded(keys: Sequence[str]) -> None:
            self._names = set(keys)

        return self.store.account_keys().addCallback(loaded)

    def is_registered(self, name: str) -> bool:
        """Whether ``name`` is an account, as far as this process knows (no store trip)."""
        return casefold(name) in self._names

    def note_registered(self, name: str) -> None:
        """``name`` was just proven to be an account (a login)."""
        self._names.add(casefold(name))

    def check_name(self, name: str) -> None:
        """Raise BadName unless ``name`` may be an account: a nick, not reserved."""
        check_nick(name)
        reason = reserved_reason(name, self.settings.guest_prefix)
        if reason is not None:
            raise BadName(name, reason)

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
    def create(
        self, name: str, password: str, email: str | None = None, *, invited: bool = False
    ):  # -> AccountRecord
        """Create the account whatever the registration mode (the operator's way).

        With ``invited``, only if ``name`` has an unexpired invitation, which the same store
        transaction uses up; else errback with :func:`not_invited`'s error.
        """
        self.check_name(name)
        self.check_password_rules(password)
        existing = yield self.store.get_account(name)
        if existing is not None:
            raise AccountError(AccountError.EXISTS, f"{name} is already registered")
        creds = yield self.run_in_thread(make_credentials, password, self.settings.scram_iterations)
        now = self.clock.seconds()
        record = AccountRecord(name=name, credentials=creds, created_at=now, email=email)
        if invited:
            yield self.store.create_invited_account(record, now)
        else:
            yield self.store.create_account(record)
        self._names.add(casefold(name))
        return record

    @inlineCallbacks
    def register(
        self,
        name: str,
        password: str,
        email: str | None = None,
        *,
        mode: str,
        admit: Callable[[], bool] | None = None,
        address: str | None = None,
        protocol: str | None = None,
    ):  # -> AccountRecord
        """Create the account a user asks for, as registration ``mode`` allows.

        ``mode`` is "open", "invite" or "closed" (``[chat] registration``, or a protocol's
        own setting).  ``admit`` (the per-address throttle) is asked only once every cheap
        refusal has passed, so that a mistyped password or an uninvited name costs no try.
        ``address`` and ``protocol`` say where the request came from, for the log line that
        every registration gets here, whatever its protocol.
        """
        if mode not in ("open", "invite"):
            raise AccountError(AccountError.CLOSED, "registration is closed on this server")
        self.check_name(name)
        self.check_password_rules(password)
        invited = mode == "invite"
        if invited:
            # Only a quick refusal: the invitation that counts is the one the store finds
            # (and deletes) when it creates the account.
            invite = yield self.store.get_invite(name, self.clock.seconds())
            if invite is None:
                existing = yield self.store.get_account(name)
                if existing is not None:
                    # The truer reason: no invitation could help.
                    raise AccountError(AccountError.EXISTS, f"{name} is already registered")
                raise not_invited()
        if admit is not None and not admit():
            raise AccountError(
                AccountError.THROTTLED, "too many new accounts from your address; try again later"
            )
        record = yield self.create(name, password, email, invited=invited)
        log.info(
            "account {account} registered from {address} ({protocol})",
            account=record.name,
            address=address or "-",
            protocol=protocol or "-",
        )
        return record

    @inlineCallbacks
    def set_password(self, name: str, password: str):
        self.check_password_rules(password)
        creds = yield self.run_in_thread(make_credentials, password, self.settings.scram_iterations)
        changed = yield self.store.update_credentials(name, creds)
        if not changed:
            raise AccountError(AccountError.NO_ACCOUNT, f"{name} is not registered")

    def delete(self, name: str) -> Deferred:
        def deleted(existed: bool) -> bool:
            self._names.discard(casefold(name))
            return existed

        return self.store.delete_account(name).addCallback(deleted)

    # -- invitations ------------------------------------------------------------------------

    @inlineCallbacks
    def invite(
        self, name: str, days: float = INVITE_DAYS, invited_by: str = ""
    ):  # -> RegistrationInvite
        """Let ``name`` be registered once, by whoever asks first, within ``days``.

        Inviting a name again replaces its invitation (a new expiry).  Errbacks BadName for a
        name that is not a nick, AccountError(EXISTS) for a registered one.
        """
        self.check_name(name)
        if not (math.isfinite(days) and 0 < days <= MAX_INVITE_DAYS):
            raise ChatError(f"an invitation lasts more than 0 and at most {MAX_INVITE_DAYS:g} days")
        existing = yield self.store.get_account(name)
        if existing is not None:
            raise AccountError(AccountError.EXISTS, f"{existing.name} is already registered")
        now = self.clock.seconds()
        invite = RegistrationInvite(
            name=name, invited_by=invited_by, created_at=now, expires_at=now + days * DAY
        )
        yield self.store.save_invite(invite)
        return invite

    def uninvite(self, name: str) -> Deferred:
        """Withdraw the invitation of ``name``; fires True if there was one."""
        return self.store.delete_invite(name)

    def invites(self) -> Deferred:
        """Fire with the unexpired invitations, sorted by name (the store drops expired ones)."""
        return self.store.list_invites(self.clock.seconds())

    # -- verifying --------------------------------------------------------------------------

    def throttled(self, name: str | None, address: str | None) -> bool:
        now = self.clock.seconds()
        if name is not None and not self._failures_by_account.allowed(casefold(name), now):
            return True
        return address is not None and not self._failures_by_address.allowed(address, now)

    def record_failure(
        self, name: str | None, address: str | None, protocol: str | None = None
    ) -> None:
        """Count a failed password, SASL or operator check against ``name`` and ``address``.

        ``protocol`` is the protocol it came through (``conn.protocol``), for the metrics.
        """
        self.failures += 1
        label = protocol or "unknown"
        self.failures_by_protocol[label] = self.failures_by_protocol.get(label, 0) + 1
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
    def verify_password(
        self,
        name: str,
        password: str,
        address: str | None = None,
        protocol: str | None = None,
    ):
        """Fire with the AccountRecord if ``password`` is right; else errback AccountError."""
        if self.throttled(name, address):
            raise self._throttle_error()
        try:
            check_nick(name)
        except BadName:
            self.record_failure(None, address, protocol)
            raise AccountError(AccountError.NO_ACCOUNT, f"{name} is not registered") from None
        record = yield self.store.get_account(name)
        if record is None:
            self.record_failure(None, address, protocol)
            raise AccountError(AccountError.NO_ACCOUNT, f"{name} is not registered")
        cred = record.credential("SCRAM-SHA-256") or (
            record.credentials[0] if record.credentials else None
        )
        ok = False
        if cred is not None:
            ok = yield self.run_in_thread(check_password, cred, password)
        if not ok:
            self.record_failure(name, address, protocol)
            raise AccountError(AccountError.BAD_PASSWORD, "invalid password")
        return record

    def scram_credential(
        self,
        name: str,
        mechanism: str,
        address: str | None = None,
        protocol: str | None = None,
    ) -> Deferred:
        """Fire with (AccountRecord, Credential) for a SCRAM exchange, or errback AccountError."""
        if self.throttled(name, address):
            return fail(self._throttle_error())

        def found(record: AccountRecord | None) -> tuple[AccountRecord, Credential]:
            cred = record.credential(mechanism) if record is not None else None
            if record is None or cred is None:
                self.record_failure(None, address, protocol)
                raise AccountError(AccountError.NO_ACCOUNT, f"{name} is not registered")
            return record, cred

        return self.store.get_account(name).addCallback(found)
