"""Closing a connection the server has decided to end, so that the close always completes.

Three things stand in the way, and each is handled here once for every protocol:

* Twisted's TLS layer sends its close alert (close_notify) only once no producer is
  registered, and every connection registers itself as one to hear of a slow reader: the
  producer is unregistered first, or a TLS connection would never be closed.
* Closing a socket that still has unread input makes the kernel answer with a reset, and a
  reset makes the client's kernel throw away what it received but its program has not read:
  often the very error that says why.  A plain TCP connection therefore stops writing once
  its queue is sent (a FIN after the last byte), keeps reading and dropping what still comes
  (the protocols ignore input once closing), and closes when the client does or after
  ``linger`` seconds.  TLS cannot half-close that way (Twisted's TLS half-close fails when the
  peer's close_notify arrives): it sends close_notify after the queued output and waits for
  the peer's answer.
* A peer may answer neither (it never reads, or never sends its close_notify): after
  ``timeout`` seconds the connection is aborted, whatever is still queued.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import tcp

from protocols.transport.output import unsent_bytes
from protocols.transport.timers import timers_for

# Seconds a closed plain TCP connection keeps reading (and dropping) what its client sends.
LINGER_SECONDS = 2.0
# Seconds after which a close the peer has not completed is forced (a reset).
CLOSE_TIMEOUT = 5.0


def close(
    transport: Any,
    clock: Any,
    *,
    linger: float = LINGER_SECONDS,
    timeout: float = CLOSE_TIMEOUT,
) -> None:
    """Close ``transport`` after what was written, within ``timeout`` seconds at the most."""
    if not transport.connected or transport.disconnecting:
        return
    try:
        transport.unregisterProducer()
    except RuntimeError:
        # A test transport that had no producer registered.
        pass
    timers = timers_for(clock)
    if isinstance(transport, tcp.Connection) and not transport.TLS:
        _half_close(transport)
        timers.call_later(linger, transport.loseConnection)
    else:
        transport.loseConnection()
    timers.call_later(timeout, _force, transport)


def _half_close(transport: tcp.Connection) -> None:
    """Stop writing once the queue is sent (a FIN after the last byte)."""
    if unsent_bytes(transport):
        transport.loseWriteConnection()
        return
    # Nothing queued (the usual case: output goes straight to the socket): what Twisted would
    # do on the next writable event, done now, without watching the socket for it (two
    # epoll_ctl calls and a turn of the reactor for every closing connection).
    transport._writeDisconnecting = True
    transport._writeDisconnected = True
    transport._closeWriteConnection()


def _force(transport: Any) -> None:
    if transport.connected:
        transport.abortConnection()
