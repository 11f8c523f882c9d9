"""XMPP addresses (RFC 7622), in the subset this server needs.

An address belongs to an account: a user logged in to an account is ``account@domain``
(whatever nick it uses), and only that user is reached there.  A user not logged in (a guest
on IRC or line chat) is ``~nick@domain``: ``~`` is no nick character, so a guest's address
can never be an account's, even while it holds a registered nick.  Localparts are casefolded
(the core's ``ascii`` casemapping), so every client compares the same bare JID whatever case
a name is shown in.  Domains are compared in lower case.  Resources are kept exactly as given.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Any

from chatserver.core.events import Who
from chatserver.core.names import casefold

PART_MAX = 1023
# RFC 7622 §3.3.1: characters a localpart may never contain.
_LOCAL_FORBIDDEN = frozenset("\"&'/:<>@ ")


class InvalidJid(ValueError):
    """The text is not a valid JID (an XMPP stanza error ``jid-malformed``)."""


@dataclass(frozen=True, slots=True)
class JID:
    local: str | None
    domain: str
    resource: str | None = None

    @property
    def bare(self) -> str:
        return f"{self.local}@{self.domain}" if self.local else self.domain

    @property
    def is_bare(self) -> bool:
        return self.resource is None

    def with_resource(self, resource: str | None) -> JID:
        return JID(self.local, self.domain, resource)

    def __str__(self) -> str:
        return self.bare + (f"/{self.resource}" if self.resource is not None else "")


def _check_part(part: str, what: str) -> None:
    if not part or len(part.encode("utf-8")) > PART_MAX:
        raise InvalidJid(f"the {what} must be 1-{PART_MAX} bytes")
    for ch in part:
        category = unicodedata.category(ch)
        # Control, unassigned, surrogate and private-use characters are never allowed.
        if category in ("Cc", "Cn", "Cs", "Co"):
            raise InvalidJid(f"the {what} contains a forbidden character")


def parse_jid(text: str) -> JID:
    """Parse ``[local@]domain[/resource]``; raises :class:`InvalidJid`."""
    if not text:
        raise InvalidJid("empty address")
    rest, slash, resource = text.partition("/")
    local: str | None = None
    if "@" in rest:
        local, _, domain = rest.partition("@")
        _check_part(local, "localpart")
        if any(ch in _LOCAL_FORBIDDEN for ch in local):
            raise InvalidJid("the localpart contains a forbidden character")
        local = casefold(local)
    else:
        domain = rest
    domain = domain.lower().rstrip(".")
    _check_part(domain, "domain")
    if any(ch in "@/ " for ch in domain):
        raise InvalidJid("the domain contains a forbidden character")
    if slash:
        _check_part(resource, "resource")
        return JID(local, domain, resource)
    return JID(local, domain, None)


def try_parse(text: str | None) -> JID | None:
    """:func:`parse_jid`, or None for a missing or invalid address."""
    if not text:
        return None
    try:
        return parse_jid(text)
    except InvalidJid:
        return None


def user_jid(account: str, domain: str, resource: str | None = None) -> str:
    """The JID of an account on this server (``account@domain``, casefolded)."""
    base = f"{casefold(account)}@{domain}"
    return base if resource is None else f"{base}/{resource}"


GUEST_MARK = "~"


def guest_jid(nick: str, domain: str) -> str:
    """The JID of a user not logged in to any account (``~nick@domain``)."""
    return f"{GUEST_MARK}{casefold(nick)}@{domain}"


def address_of(who: Who, domain: str) -> str:
    """The bare JID others see for a user: its account's, or its guest address."""
    if who.account is not None:
        return user_jid(who.account, domain)
    return guest_jid(who.nick, domain)


def local_user(service: Any, local: str) -> Any:
    """The online user a localpart of this server names, or None: the user logged in to the
    account ``local``, or for ``~nick`` the guest on that nick (never a logged-in user)."""
    if local.startswith(GUEST_MARK):
        user = service.find_user(local[len(GUEST_MARK) :])
        return user if user is not None and user.account is None else None
    return service.find_account_user(local)
