"""SASL mechanisms: PLAIN (RFC 4616), SCRAM-SHA-1 and SCRAM-SHA-256 (RFC 5802, RFC 7677).

One :class:`SaslServer` per exchange.  Each client message goes to :meth:`SaslServer.step`,
which fires with what to answer: a :class:`Challenge`, a :class:`Success` (the proven account)
or a :class:`Failure`.  It never errbacks: an unexpected error is logged here and answered as a
temporary failure, the same on every protocol.  Logging the connection in to the account, and
whether PLAIN may be offered on a connection, are the protocol's.

Every attempt is counted by the core's login throttle when it starts (the PLAIN check, or the
SCRAM client-first message), so that attempts running at the same time cannot overdraw it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from scramp import ScramException, ScramMechanism
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure as TwistedFailure

from chatserver.core.errors import AccountError, StorageUnavailable
from chatserver.core.names import casefold

if TYPE_CHECKING:
    from chatserver.core.accounts import LoginAttempt

log = Logger()

SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-1")
# Strongest first, as servers list them.
MECHANISMS = (*SCRAM_MECHANISMS, "PLAIN")
# Mechanisms that send the password itself: only where passwords may be sent.
PASSWORD_MECHANISMS = frozenset({"PLAIN"})

_SCRAM = {name: ScramMechanism(name) for name in SCRAM_MECHANISMS}


@dataclass(frozen=True, slots=True)
class Challenge:
    """Send ``data`` to the client and pass its response to the next step."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Success:
    """The client proved ``account``.  ``data``: the server's last message (SCRAM's
    server-final), for the client to check; None when there is none (PLAIN)."""

    account: str
    data: bytes | None = None


@dataclass(frozen=True, slots=True)
class Failure:
    """The exchange failed; ``reason`` is one of the constants below, ``text`` may be shown."""

    reason: str
    text: str = ""


Outcome = Challenge | Success | Failure

# Failure reasons; each protocol maps every one of them to its wire (a test checks).
MALFORMED = "malformed"  # not a message of the mechanism
INVALID_AUTHZID = "invalid-authzid"  # asks to act as another identity
NOT_AUTHORIZED = "not-authorized"  # wrong password or proof, or no such account
THROTTLED = "throttled"  # too many failed logins: try later
TEMPORARY = "temporary"  # the server failed; try later
REASONS = (MALFORMED, INVALID_AUTHZID, NOT_AUTHORIZED, THROTTLED, TEMPORARY)


def authzid_allowed(authzid: str, authcid: str, realm: str | None = None) -> bool:
    """Whether a client that proved ``authcid`` may act as ``authzid``: only as itself,
    named bare or (with ``realm``, XMPP's domain) as ``authcid@realm``; casefolded as the
    core folds names."""
    if not authzid:
        return True
    wanted = casefold(authzid)
    return wanted == casefold(authcid) or (
        realm is not None and wanted == casefold(f"{authcid}@{realm}")
    )


class SaslServer:
    """One SASL exchange for ``mechanism`` (one of :data:`MECHANISMS`)."""

    def __init__(
        self,
        service: Any,
        mechanism: str,
        *,
        address: str | None,
        protocol: str,
        realm: str | None = None,
    ) -> None:
        if mechanism not in MECHANISMS:
            raise ValueError(f"unknown SASL mechanism {mechanism}")
        self.mechanism = mechanism
        self.accounts = service.accounts
        self.address = address
        self.protocol = protocol
        self.realm = realm
        self.account: str | None = None  # the name the client claims, once known
        self.done = False
        # True while a password check or store lookup is under way: a message then is out
        # of turn.
        self.busy = False
        self._scram: Any = None
        self._attempt: LoginAttempt | None = None

    def step(self, data: bytes) -> Deferred[Outcome]:
        """The client's next message; fires with the answer (never errbacks)."""
        if self.done or self.busy:
            return succeed(self._end(Failure(MALFORMED, "no step of the exchange is expected")))
        if self.mechanism == "PLAIN":
            return self._plain(data)
        if self._scram is None:
            return self._scram_first(data)
        return succeed(self._scram_final(data))

    # -- endings ------------------------------------------------------------------------------

    def _end(self, outcome: Outcome) -> Outcome:
        if isinstance(outcome, Challenge):
            return outcome
        self.done = True
        if isinstance(outcome, Failure) and outcome.reason != MALFORMED:
            log.info(
                "{protocol} SASL {mechanism} login failed for {account} from {address}: {reason}",
                protocol=self.protocol,
                mechanism=self.mechanism,
                account=self.account or "-",
                address=self.address,
                reason=outcome.reason,
            )
        return outcome

    def _account_failure(self, failure: TwistedFailure) -> Outcome:
        """The answer for a refused (or broken) check."""
        self.busy = False
        if failure.check(StorageUnavailable) is not None:
            # The store has logged it; the client may try again later.
            return self._end(Failure(TEMPORARY, str(failure.value)))
        if failure.check(AccountError) is None:
            log.failure("checking a SASL login for {account}", failure, account=self.account)
            return self._end(Failure(TEMPORARY, "the server could not check the login"))
        err = failure.value
        assert isinstance(err, AccountError)
        if err.code == AccountError.THROTTLED:
            return self._end(Failure(THROTTLED, err.reason))
        return self._end(Failure(NOT_AUTHORIZED))

    def _guarded(self, d: Deferred[Any], ok: Any) -> Deferred[Outcome]:
        def done(result: Any) -> Outcome:
            self.busy = False
            return ok(result)

        self.busy = True
        d.addCallbacks(done, self._account_failure)
        # A bug in ``ok`` is answered too, not left hanging.
        d.addErrback(self._account_failure)
        return d

    # -- PLAIN ----------------------------------------------------------------------------------

    def _plain(self, data: bytes) -> Deferred[Outcome]:
        try:
            authzid, authcid, password = data.decode("utf-8").split("\x00")
        except (UnicodeDecodeError, ValueError):
            return succeed(self._end(Failure(MALFORMED, "not a PLAIN message")))
        if not authcid or not password:
            return succeed(self._end(Failure(MALFORMED, "no name or no password")))
        self.account = authcid
        if not authzid_allowed(authzid, authcid, self.realm):
            return succeed(self._end(Failure(INVALID_AUTHZID, "you can only log in as yourself")))
        d = self.accounts.verify_password(authcid, password, self.address, self.protocol)
        return self._guarded(d, lambda record: self._end(Success(record.name)))

    # -- SCRAM ----------------------------------------------------------------------------------

    def _scram_first(self, data: bytes) -> Deferred[Outcome]:
        try:
            client_first = data.decode("utf-8")
            authzid, name = scram_identities(client_first)
        except (UnicodeDecodeError, ValueError) as err:
            return succeed(self._end(Failure(MALFORMED, str(err))))
        self.account = name
        if not authzid_allowed(authzid, name, self.realm):
            return succeed(self._end(Failure(INVALID_AUTHZID, "you can only log in as yourself")))
        d = self.accounts.scram_credential(name, self.mechanism, self.address, self.protocol)

        def found(result: Any) -> Outcome:
            record, cred, attempt = result
            self._attempt = attempt
            self.account = record.name
            keys = (cred.salt, cred.stored_key, cred.server_key, cred.iterations)
            server = _SCRAM[self.mechanism].make_server(lambda _username: keys)
            try:
                server.set_client_first(client_first)
                server_first = server.get_server_first()
            except ScramException as err:
                attempt.failed()
                return self._end(Failure(MALFORMED, str(err)))
            self._scram = server
            return Challenge(server_first.encode("utf-8"))

        return self._guarded(d, found)

    def _scram_final(self, data: bytes) -> Outcome:
        attempt = self._attempt
        assert attempt is not None and self.account is not None
        try:
            self._scram.set_client_final(data.decode("utf-8"))
            server_final = self._scram.get_server_final()
        except (ScramException, UnicodeDecodeError):
            attempt.failed()
            return self._end(Failure(NOT_AUTHORIZED))
        attempt.succeeded(self.account)
        return self._end(Success(self.account, server_final.encode("utf-8")))


def _saslname(value: str) -> str:
    """A SCRAM ``saslname`` decoded (RFC 5802 §5.1: ``=2C`` is a comma, ``=3D`` an equals)."""
    return value.replace("=2C", ",").replace("=3D", "=")


def scram_identities(client_first: str) -> tuple[str, str]:
    """(authzid, username) of a SCRAM client-first message (``n,a=zid,n=user,r=nonce``).

    Raises ValueError for a message that is not one, or that asks for channel binding
    (``p=``), which mechanisms without ``-PLUS`` cannot give.
    """
    parts = client_first.split(",", 2)
    if len(parts) < 3:
        raise ValueError("not a SCRAM client-first message")
    cbind, authzid, bare = parts
    if cbind not in ("n", "y"):
        raise ValueError("channel binding is not offered")
    if authzid and not authzid.startswith("a="):
        raise ValueError("not a SCRAM client-first message")
    for attr in bare.split(","):
        if attr.startswith("n="):
            name = _saslname(attr[2:])
            if name:
                return _saslname(authzid[2:]), name
    raise ValueError("no username")
