"""XMPP addresses (RFC 7622), in the subset this server needs.

Local users are ``nick@domain``: the localpart is the casefolded nick (the core's ``ascii``
casemapping), so every client compares the same bare JID whatever case a nick is shown in.
Domains are compared in lower case.  Resources are kept exactly as given.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

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


def user_jid(nick: str, domain: str, resource: str | None = None) -> str:
    """The JID that stands for a nick on this server (``nick@domain``, casefolded)."""
    base = f"{casefold(nick)}@{domain}"
    return base if resource is None else f"{base}/{resource}"
