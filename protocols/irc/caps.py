"""IRCv3 capabilities the server offers, and the bits that select a rendering variant.

A capability that depends on a command another module provides (``draft/chathistory`` on
CHATHISTORY, ``draft/account-registration`` on REGISTER) is advertised only when that command
is in the table, so the server never offers what it cannot do.

Capabilities that change how an event is written on the wire have a bit in :data:`BITS`; a
connection's ``cap_bits`` is the OR of its enabled ones, and a renderer keys its cached bytes
by ``cap_bits & <the bits it cares about>``.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import TYPE_CHECKING

from chatserver.auth.sasl import PASSWORD_MECHANISMS
from protocols.irc.commands import COMMANDS
from protocols.irc.security import may_send_passwords

if TYPE_CHECKING:
    from protocols.irc.connection import IrcConnection

# Of the shared mechanisms (chatserver.auth.sasl), the ones IRC offers; those that send the
# password itself (PASSWORD_MECHANISMS) only where passwords may travel.
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256")


@dataclass(frozen=True)
class Capability:
    """One capability: its LS value (3.2 clients only) and what must exist to offer it."""

    name: str
    value: str | Callable[[IrcConnection], str] | None = None
    requires_command: str | None = None

    def offered(self) -> bool:
        return self.requires_command is None or self.requires_command in COMMANDS

    def value_for(self, conn: IrcConnection) -> str | None:
        if callable(self.value):
            return self.value(conn)
        return self.value


CAPABILITIES: dict[str, Capability] = {}


def sasl_mechanisms(conn: IrcConnection) -> tuple[str, ...]:
    """The SASL mechanisms ``conn`` may use (PLAIN only where passwords may be sent)."""
    if may_send_passwords(conn):
        return SASL_MECHANISMS
    return tuple(m for m in SASL_MECHANISMS if m not in PASSWORD_MECHANISMS)


def add_capability(cap: Capability) -> Capability:
    """Add (or replace) a capability; modules that provide one call this at import."""
    CAPABILITIES[cap.name] = cap
    return cap


for _cap in (
    Capability("account-notify"),
    Capability("account-tag"),
    Capability("away-notify"),
    Capability("batch"),
    Capability("cap-notify"),
    Capability("chghost"),
    Capability("echo-message"),
    Capability("extended-join"),
    Capability("invite-notify"),
    Capability("labeled-response"),
    Capability("message-tags"),
    Capability("multi-prefix"),
    Capability("sasl", lambda conn: ",".join(sasl_mechanisms(conn))),
    Capability("server-time"),
    Capability("setname"),
    Capability("standard-replies"),
    Capability("userhost-in-names"),
    Capability("draft/chathistory", requires_command="CHATHISTORY"),
    Capability("draft/account-registration", "custom-account-name", requires_command="REGISTER"),
):
    add_capability(_cap)

# Capabilities that change rendered lines: one bit each.
MESSAGE_TAGS = 1 << 0
SERVER_TIME = 1 << 1
ACCOUNT_TAG = 1 << 2
EXTENDED_JOIN = 1 << 3
ECHO_MESSAGE = 1 << 4
AWAY_NOTIFY = 1 << 5
ACCOUNT_NOTIFY = 1 << 6
INVITE_NOTIFY = 1 << 7
SETNAME = 1 << 8
CHGHOST = 1 << 9
BATCH = 1 << 10
LABELED_RESPONSE = 1 << 11
MULTI_PREFIX = 1 << 12
USERHOST_IN_NAMES = 1 << 13
MULTILINE = 1 << 14

BITS: dict[str, int] = {
    "message-tags": MESSAGE_TAGS,
    "server-time": SERVER_TIME,
    "account-tag": ACCOUNT_TAG,
    "extended-join": EXTENDED_JOIN,
    "echo-message": ECHO_MESSAGE,
    "away-notify": AWAY_NOTIFY,
    "account-notify": ACCOUNT_NOTIFY,
    "invite-notify": INVITE_NOTIFY,
    "setname": SETNAME,
    "chghost": CHGHOST,
    "batch": BATCH,
    "labeled-response": LABELED_RESPONSE,
    "multi-prefix": MULTI_PREFIX,
    "userhost-in-names": USERHOST_IN_NAMES,
    "draft/multiline": MULTILINE,
}


def bits_of(caps: AbstractSet[str]) -> int:
    bits = 0
    for name in caps:
        bits |= BITS.get(name, 0)
    return bits


def offered() -> list[Capability]:
    """The capabilities to list now, sorted by name."""
    return [CAPABILITIES[name] for name in sorted(CAPABILITIES) if CAPABILITIES[name].offered()]


def ls_tokens(conn: IrcConnection, version: int) -> list[str]:
    """``CAP LS`` tokens: ``name`` or, for 3.2 clients, ``name=value``."""
    tokens = []
    for cap in offered():
        value = cap.value_for(conn) if version >= 302 else None
        tokens.append(f"{cap.name}={value}" if value else cap.name)
    return tokens


def is_offered(name: str) -> bool:
    cap = CAPABILITIES.get(name)
    return cap is not None and cap.offered()
