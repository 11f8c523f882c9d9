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
import ipaddress
import math
from collections import OrderedDict
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
# An address that logged in to an account this recently is the owner's: the per-account login
# budget does not bind it (the per-address one still does).
KNOWN_ADDRESS_DAYS = 30.0
# (account, address) pairs remembered for that; the oldest are forgotten first.
MAX_KNOWN_ADDRESSES = 100_000


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
        self._by_account = KeyedBuckets(1, 1)
        self._by_address = KeyedBuckets(1, 1)
        self._apply_throttle(settings)
        # (folded account, address key) -> when that address last logged in to the account:
        # such an address is the owner's, and the per-account budget does not bind it.
        self._known: OrderedDict[tuple[str, str], float] = OrderedDict()
        # Every failed password, SASL or operator check, for the metrics endpoint: in all,
        # and by the protocol it came through.
        self.failures = 0
        self.failures_by_protocol: dict[str, int] = {}
        # The folded names of the accounts, so that a registered nick can be refused at once
        # when a nick is claimed.  Loaded at start and kept by what changes accounts here;
        # an account made or deleted by another process (another node of a cluster) is learnt
        # when the store is next asked about it (in cluster mode ChatService checks every
        # nick taken against the store).
        self._names: set[str] = set()

    def apply_settings(self, settings: CoreSettings) -> None:
        """New settings (a config reload); the throttling buckets take the new limits."""
        self.settings = settings
        self._apply_throttle(settings)

    def _apply_throttle(self, settings: CoreSettings) -> None:
        period = max(settings.login_failure_period, 0.001)
        self._by_account.capacity = settings.login_failure_burst
        self._by_account.rate = 1.0 / period
        self._by_address.capacity = settings.login_failure_burst * 4
        self._by_address.rate = 4.0 / period

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
        """``name`` was just proven to be an account (a login, or another node made it)."""
        self._names.add(casefold(name))

    def forget_name(self, name: str) -> None:
        """``name`` is no longer an account (another node deleted it)."""
        self._names.discard(casefold(name))

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
        ``address`` also counts as the owner's for the login throttle.
        """
        if mode not in ("open", "invite"):
            raise AccountError(AccountError.CLOSED, "registration is closed on this server")
        if self.settings.registration_email_required and not email:
            raise AccountError(
                AccountError.EMAIL_REQUIRED, "an email address is needed to register here"
            )
        self.check_name(name)
        try:
            self.check_password_rules(password)
        except AccountError:
            # A taken name is the truer reason: no other password could help.
            existing = yield self.store.get_account(name)
            if existing is not None:
                raise AccountError(AccountError.EXISTS, f"{name} is already registered") from None
            raise
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
        if address is not None:
            self.remember_address(record.name, address)
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
        """Whether a login attempt for ``name`` from ``address`` would be refused now."""
        return self._refusal(name, address, self.clock.seconds()) is not None

    def _applies_to_account(self, name: str | None, address: str | None, now: float) -> bool:
        """Whether the per-account budget binds ``address``: not for one that logged in to
        the account within KNOWN_ADDRESS_DAYS (the owner's), or guessers would lock it out."""
        if name is None:
            return False
        if address is None:
            return True
        seen = self._known.get((casefold(name), address_key(address)))
        return seen is None or now - seen > KNOWN_ADDRESS_DAYS * DAY

    def _refusal(self, name: str | None, address: str | None, now: float) -> AccountError | None:
        if address is not None and not self._by_address.allowed(address_key(address), now):
            return self._throttle_error()
        if self._applies_to_account(name, address, now) and not self._by_account.allowed(
            casefold(name or ""), now
        ):
            return self._throttle_error()
        return None

    def begin_login(
        self, name: str | None, address: str | None, protocol: str | None = None
    ) -> LoginAttempt:
        """Count a password, SASL or operator attempt for ``name`` from ``address`` now,
        before anything is checked; raise AccountError(THROTTLED) if its budget is spent.

        Counting at the start is what bounds attempts that run at the same time: each one
        takes its token before the slow check begins, so the budget cannot be overdrawn by
        many checks in flight.  A success gives the tokens back (see :class:`LoginAttempt`).
        ``name`` None: an attempt that names no account (an operator login), counted per
        address only.
        """
        now = self.clock.seconds()
        refusal = self._refusal(name, address, now)
        if refusal is not None:
            raise refusal
        attempt = LoginAttempt(self, name, address, protocol)
        if address is not None:
            self._by_address.take(address_key(address), now)
        if self._applies_to_account(name, address, now):
            self._by_account.take(casefold(name or ""), now)
            attempt.charged_account = True
        return attempt

    def _count_failure(self, protocol: str | None) -> None:
        self.failures += 1
        label = protocol or "unknown"
        self.failures_by_protocol[label] = self.failures_by_protocol.get(label, 0) + 1

    def _succeeded(self, attempt: LoginAttempt, account: str | None) -> None:
        now = self.clock.seconds()
        # A right password is not a guess: it costs nothing.
        if attempt.address is not None:
            self._by_address.give(address_key(attempt.address), now)
        if attempt.address is not None and account is not None:
            self.remember_address(account, attempt.address)
        if attempt.charged_account:
            self._by_account.give(casefold(attempt.name or ""), now)

    def remember_address(self, account: str, address: str) -> None:
        """``address`` logged in to ``account`` (or registered it): it is the owner's, for
        KNOWN_ADDRESS_DAYS."""
        key = (casefold(account), address_key(address))
        self._known.pop(key, None)
        self._known[key] = self.clock.seconds()
        while len(self._known) > MAX_KNOWN_ADDRESSES:
            self._known.popitem(last=False)

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
        attempt = self.begin_login(name, address, protocol)
        try:
            check_nick(name)
        except BadName:
            attempt.failed()
            raise AccountError(AccountError.NO_ACCOUNT, f"{name} is not registered") from None
        # A store that fails leaves the attempt counted but is no failed password.
        record = yield self.store.get_account(name)
        cred = None
        if record is not None:
            cred = record.credential("SCRAM-SHA-256") or (
                record.credentials[0] if record.credentials else None
            )
        ok = False
        if cred is not None:
            ok = yield self.run_in_thread(check_password, cred, password)
        if record is None:
            attempt.failed()
            raise AccountError(AccountError.NO_ACCOUNT, f"{name} is not registered")
        if not ok:
            attempt.failed()
            raise AccountError(AccountError.BAD_PASSWORD, "invalid password")
        attempt.succeeded(record.name)
        return record

    def scram_credential(
        self,
        name: str,
        mechanism: str,
        address: str | None = None,
        protocol: str | None = None,
    ) -> Deferred:
        """Begin a SCRAM login: fire with (AccountRecord, Credential, LoginAttempt), or errback
        AccountError.  The caller ends the attempt (``succeeded`` or ``failed``) once the
        client's proof is checked."""
        try:
            attempt = self.begin_login(name, address, protocol)
        except AccountError as err:
            return fail(err)

        def found(record: AccountRecord | None) -> tuple[AccountRecord, Credential, LoginAttempt]:
            cred = record.credential(mechanism) if record is not None else None
            if record is None or cred is None:
                attempt.failed()
                raise AccountError(AccountError.NO_ACCOUNT, f"{name} is not registered")
            return record, cred, attempt

        return self.store.get_account(name).addCallback(found)


class LoginAttempt:
    """One login attempt, already counted against its address and account.

    End it once: ``failed()`` leaves the tokens taken and counts a failure in the metrics;
    ``succeeded(account)`` gives them back and remembers the address as the account's own.
    An attempt never ended (the client went away mid-exchange) stays counted.
    """

    __slots__ = ("_manager", "address", "charged_account", "done", "name", "protocol")

    def __init__(
        self,
        manager: AccountManager,
        name: str | None,
        address: str | None,
        protocol: str | None,
    ) -> None:
        self._manager = manager
        self.name = name
        self.address = address
        self.protocol = protocol
        self.charged_account = False
        self.done = False

    def failed(self) -> None:
        if not self.done:
            self.done = True
            self._manager._count_failure(self.protocol)

    def succeeded(self, account: str | None) -> None:
        """``account``: the account logged in to (None for an operator login)."""
        if not self.done:
            self.done = True
            self._manager._succeeded(self, account)


def address_key(address: str) -> str:
    """What the login throttle counts by: an IPv4 address, or an IPv6 address's /64 (one
    host usually holds a whole /64, so counting single IPv6 addresses would count nothing)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return address
