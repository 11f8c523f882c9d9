"""A client connection's life in the log, in the same words on every protocol.

    debug  <protocol> connection <id> from <address>[ (TLS)]        it opened
    info   <protocol> connection <id> from <address> is <nick>      it registered (has a nick)
    info   <protocol> connection <id> (<nick>) closed (<reason>)     a registered one ended
    debug  <protocol> connection <id> from <address> closed (<reason>)  one that never registered

So each user costs two info lines, and a connection that never registers (a health probe
every few seconds, a port scanner, a refused TLS handshake) costs none at info.  Refusals
(limits, bans) are logged where they happen, at info.
"""

from __future__ import annotations

import time
from typing import Any

from twisted.logger import Logger, LogLevel


class _ConnectionLogger(Logger):
    """Twisted's Logger, less the check that the level is a LogLevel: ``Logger.emit`` makes
    it by sorting every level on each call, a sixth of what a line costs, and a burst of
    connections logs two lines each.  The functions below pass only LogLevel constants."""

    def emit(self, level: LogLevel, format: str | None = None, **kwargs: object) -> None:
        kwargs.update(
            log_logger=self,
            log_level=level,
            log_namespace=self.namespace,
            log_source=self.source,
            log_format=format,
            log_time=time.time(),
        )
        self.observer(kwargs)


_LOGS = {
    protocol: _ConnectionLogger(namespace=f"protocols.{protocol}.connection")
    for protocol in ("irc", "line", "xmpp")
}


# Whether the debug lines are wanted at all: the wiring says so when it sets up the log
# output.  A debug line that is then filtered out still costs an event built and passed to
# every observer, for every connection of a burst.
debug_lines = True


def _log(protocol: str) -> Logger:
    log = _LOGS.get(protocol)
    if log is None:
        log = _LOGS[protocol] = _ConnectionLogger(namespace=f"protocols.{protocol}.connection")
    return log


def opened(protocol: str, id: int, address: str, tls: bool) -> None:
    if not debug_lines:
        return
    _log(protocol).debug(
        "{protocol} connection {id} from {address}{tls_note}",
        protocol=protocol,
        id=id,
        address=address,
        tls=tls,
        tls_note=" (TLS)" if tls else "",
    )


def registered(protocol: str, id: int, address: str, nick: str, **fields: Any) -> None:
    """The connection has a nick now (IRC registration, line chat's nick, XMPP's bind)."""
    _log(protocol).info(
        "{protocol} connection {id} from {address} is {nick}",
        protocol=protocol,
        id=id,
        address=address,
        nick=nick,
        **fields,
    )


def closed(protocol: str, id: int, address: str, nick: str | None, reason: str) -> None:
    """``nick`` is None if the connection never registered: then the line is debug."""
    if nick is None:
        if not debug_lines:
            return
        _log(protocol).debug(
            "{protocol} connection {id} from {address} closed ({reason})",
            protocol=protocol,
            id=id,
            address=address,
            reason=reason,
        )
        return
    _log(protocol).info(
        "{protocol} connection {id} ({nick}) closed ({reason})",
        protocol=protocol,
        id=id,
        address=address,
        nick=nick,
        reason=reason,
    )
