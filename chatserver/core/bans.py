"""Server-wide bans (K-lines): by address mask or by account, applied on every protocol.

A ban's mask is ``nick!ident@host`` with ``*`` and ``?`` globs, or ``$a:account``.  Unlike a
room ban, the host part is matched against the client's *real* address (and its cloak), and may
be a CIDR network (``*!*@203.0.113.0/24``): server bans are written by operators, who see
addresses, about addresses.  A mask whose nick and ident parts are only ``*`` is checked when
the connection opens, before anything else; the others when a nick is claimed or an account
logs in.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from chatserver.core.errors import BadName
from chatserver.core.names import casefold, glob_match

ACCOUNT_PREFIX = "$a:"


@dataclass(frozen=True, slots=True)
class ServerBan:
    mask: str  # normalized by normalize_ban_mask
    reason: str = ""
    # The operator's nick for bans set at run time; "config" for [[bans]] entries.
    set_by: str = ""
    set_at: float = 0.0

    @property
    def from_config(self) -> bool:
        return self.set_by == "config"


def normalize_ban_mask(text: str) -> str:
    """A complete mask: ``$a:name``, ``nick!ident@host``; a bare word is a nick, and a bare
    address or network (it has ``.``, ``:`` or ``/``) is a host.

    Raises BadName for an empty mask, one with spaces, and one that matches everyone (which
    would lock the operators out too).
    """
    text = text.strip()
    if not text or any(ch.isspace() for ch in text):
        raise BadName(text, "a ban mask is one word, such as *!*@203.0.113.7 or $a:name")
    if text[:3].lower() == ACCOUNT_PREFIX:
        account = casefold(text[3:])
        if not account or set(account) <= {"*", "?"}:
            raise BadName(text, "an account ban names an account: $a:name")
        return ACCOUNT_PREFIX + account
    if "!" in text:
        mask = text if "@" in text.split("!", 1)[1] else text + "@*"
    elif "@" in text:
        mask = "*!" + text
    elif any(ch in text for ch in ".:/"):
        mask = "*!*@" + text
    else:
        mask = text + "!*@*"
    if set(mask) <= {"*", "?", "!", "@"}:
        raise BadName(text, "refusing a ban that matches everyone")
    return mask


def _host_matches(pattern: str, address: str, cloak: str) -> bool:
    if "/" in pattern:
        try:
            network = ipaddress.ip_network(pattern, strict=False)
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return ip.version == network.version and ip in network
    return glob_match(pattern, address) or (bool(cloak) and glob_match(pattern, cloak))


def ban_matches(
    ban: ServerBan,
    *,
    address: str,
    cloak: str = "",
    nick: str | None = None,
    ident: str | None = None,
    account: str | None = None,
) -> bool:
    """Whether ``ban`` applies.  ``nick`` None means no nick yet: only host bans can match."""
    mask = ban.mask
    if mask.startswith(ACCOUNT_PREFIX):
        return account is not None and glob_match(mask[len(ACCOUNT_PREFIX) :], account)
    nick_pattern, _, rest = mask.partition("!")
    ident_pattern, _, host_pattern = rest.rpartition("@")
    if nick is None:
        if set(nick_pattern) != {"*"} or set(ident_pattern) != {"*"}:
            return False
    elif not (glob_match(nick_pattern, nick) and glob_match(ident_pattern, ident or nick)):
        return False
    return _host_matches(host_pattern, address, cloak)
