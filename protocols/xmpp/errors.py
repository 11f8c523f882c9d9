"""Core errors as XMPP stanza errors: one table from each core error to its RFC 6120 §8.3.3
condition.

Keyed by :data:`chatserver.core.errors.CORE_ERRORS` (a test checks that every one is here);
MUC joins answer their refusals with XEP-0045's conditions instead (``muc.join``).
"""

from __future__ import annotations

from chatserver.core import errors as core

# Core error -> RFC 6120 §8.3.3 condition, for every class of errors.CORE_ERRORS (a test
# checks); JoinRefused and AccountError look their kind up in the tables after this one.
CONDITIONS: dict[type[core.ChatError], str] = {
    core.ChatError: "not-allowed",
    core.BadName: "jid-malformed",
    core.BadText: "bad-request",
    core.NickInUse: "conflict",
    core.NickReserved: "conflict",
    core.NoSuchNick: "item-not-found",
    core.NoSuchRoom: "item-not-found",
    core.NotOnRoom: "not-acceptable",
    core.AlreadyOnRoom: "not-allowed",
    core.NotPermitted: "forbidden",
    core.CannotSend: "forbidden",
    core.NoSuchMessage: "item-not-found",
    core.JoinRefused: "not-allowed",
    core.UnknownMode: "not-allowed",
    core.AccountError: "not-allowed",
    core.LimitExceeded: "resource-constraint",
    core.Banned: "resource-constraint",
    # Type "wait": the same request may succeed once the database is back.
    core.StorageUnavailable: "resource-constraint",
}

# JoinRefused.why -> condition, for every JoinRefused.WHYS.
JOIN_CONDITIONS = {
    core.JoinRefused.BANNED: "forbidden",
    core.JoinRefused.INVITE_ONLY: "registration-required",
    core.JoinRefused.BAD_KEY: "not-authorized",
    core.JoinRefused.FULL: "service-unavailable",
    core.JoinRefused.REGISTERED_ONLY: "registration-required",
    core.JoinRefused.TOO_MANY_ROOMS: "resource-constraint",
}

# AccountError.code -> condition, for every AccountError.CODES.
ACCOUNT_CONDITIONS = {
    core.AccountError.EXISTS: "conflict",
    core.AccountError.BAD_PASSWORD: "not-authorized",
    core.AccountError.NO_ACCOUNT: "item-not-found",
    core.AccountError.THROTTLED: "resource-constraint",
    core.AccountError.NOT_LOGGED_IN: "not-authorized",
    core.AccountError.ALREADY_LOGGED_IN: "not-allowed",
    core.AccountError.WEAK_PASSWORD: "not-acceptable",
    core.AccountError.CLOSED: "not-allowed",
    core.AccountError.EMAIL_REQUIRED: "not-acceptable",
    core.AccountError.UNAVAILABLE: "service-unavailable",
}


def chat_error_condition(err: core.ChatError) -> str:
    """The RFC 6120 stanza error condition for a core refusal."""
    if isinstance(err, core.JoinRefused):
        return JOIN_CONDITIONS.get(err.why, "not-allowed")
    if isinstance(err, core.AccountError):
        return ACCOUNT_CONDITIONS.get(err.code, "not-allowed")
    return core.entry_for(CONDITIONS, err)
