"""Writing a client's output: straight to its socket when nothing is queued, and measuring
what it has left unread.

Twisted's ``transport.write`` always queues the bytes and asks the reactor to watch the
socket until it is writable, then to stop watching it: two ``epoll_ctl`` calls and a trip
through the reactor for every burst of output.  A client that reads keeps its socket buffer
nearly empty, so the kernel takes the bytes at once: sending them straight away costs one
system call and is no later.  Whatever the kernel does not take is queued the usual way,
behind which every later write waits, so the order of the output never changes.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import tcp


def unsent_bytes(transport: Any) -> int | None:
    """Bytes a TCP (or TLS-over-TCP) transport holds and has not sent; None if it can't say."""
    try:
        return len(transport.dataBuffer) - transport.offset + transport._tempDataLen
    except (AttributeError, TypeError):
        return None


def write_within(transport: Any, data: bytes, limit: int, counted_while_paused: int | None) -> bool:
    """Write ``data`` unless that would leave more than ``limit`` unread (see
    :func:`over_limit`): then write nothing and return False.

    On a plain TCP connection with nothing queued the bytes go straight to the socket, and
    only what the kernel leaves is queued.  One function for the check and the write
    because it runs once per recipient of every room message: the transport is looked at
    once.
    """
    # Only a plain TCP connection: a TLS wrapper passes unknown attributes through to the TCP
    # connection under it, whose socket would then get the bytes unencrypted.
    if not isinstance(transport, tcp.Connection) or transport.TLS:
        if over_limit(transport, len(data), limit, counted_while_paused):
            return False
        transport.write(data)
        return True
    unsent = len(transport.dataBuffer) - transport.offset + transport._tempDataLen
    if unsent + len(data) > limit:
        return False
    if unsent or not transport.connected or transport.disconnecting:
        transport.write(data)
        return True
    try:
        sent = transport.socket.send(data)
    except BlockingIOError:
        sent = 0
    except OSError:
        # The connection is failing: the transport's own write path notices and reports it.
        transport.write(data)
        return True
    if sent < len(data):
        transport.write(data[sent:])
    return True


def over_limit(transport: Any, size: int, limit: int, counted_while_paused: int | None) -> bool:
    """Whether writing ``size`` more bytes would leave more than ``limit`` unread.

    What the socket really still holds is the measure where the transport tells it.  Other
    transports only say "paused" (and say it again on every write while full), so for them
    the caller counts what it wrote since the first pause: ``counted_while_paused`` (None
    while not paused).
    """
    unsent = unsent_bytes(transport)
    if unsent is not None:
        return unsent + size > limit
    return counted_while_paused is not None and counted_while_paused > limit
