"""Pseudo-users (NickServ, ChanServ, …) that answer PRIVMSG inside the server.

A services module registers a handler under the pseudo-user's nick with :func:`service`;
PRIVMSG and NOTICE to that nick go to the handler, not to the core.  The nick must be one the
core reserves (``names.SERVICE_NICKS``), so that no user of any protocol can take it or
register it.  Keys are casefolded nicks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from chatserver.core.names import SERVICE_NICKS, casefold

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred

    from protocols.irc.connection import IrcConnection

ServiceHandler = Callable[["IrcConnection", str], "Deferred[Any] | None"]

SERVICES: dict[str, ServiceHandler] = {}


def service(nick: str) -> Callable[[ServiceHandler], ServiceHandler]:
    """Decorator: ``handler(conn, text)`` answers PRIVMSG to ``nick``."""

    if casefold(nick) not in SERVICE_NICKS:
        raise ValueError(f"{nick} is not a service nick the core reserves (names.SERVICE_NICKS)")

    def register(handler: ServiceHandler) -> ServiceHandler:
        SERVICES[casefold(nick)] = handler
        return handler

    return register


def is_service_nick(nick: str) -> bool:
    return casefold(nick) in SERVICES
