"""Writing a client's output, bounded: straight to its socket when nothing is queued, and
never more than a limit left unread.

Twisted's ``transport.write`` always queues the bytes and asks the reactor to watch the
socket until it is writable, then to stop watching it: two ``epoll_ctl`` calls and a trip
through the reactor for every burst of output.  A client that reads keeps its socket buffer
nearly empty, so the kernel takes the bytes at once: sending them straight away costs one
system call and is no later.  Whatever the kernel does not take is queued the usual way,
behind which every later write waits, so the order of the output never changes.

A client that reads too slowly would make the server hold its output without bound: past
the limit a write is refused, and the protocol closes the connection.

Output can be held back (:meth:`BoundedOutput.hold`): in cluster mode a sender is answered
(its echo, its label's acknowledgement) only once Redis has taken the message, so that what
a sender was told was accepted is in another node's hands if this one dies.  Holds are let
go in the order they were taken, each letting out what was written before the next one.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import tcp
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer


def unsent_bytes(transport: Any) -> int | None:
    """Bytes a TCP (or TLS-over-TCP) transport holds and has not sent; None if it can't say."""
    try:
        return len(transport.dataBuffer) - transport.offset + transport._tempDataLen
    except (AttributeError, TypeError):
        return None


@implementer(IPushProducer)
class BoundedOutput:
    """One connection's output limit, and the producer its transport tells of a slow reader.

    Register it with ``transport.registerProducer(output, True)``; :func:`close` unregisters
    it.  What the socket really still holds is the measure where the transport tells it
    (TCP, and TLS over TCP).  Other transports only say "paused" (and say it again on every
    write while full), so for them what was written since the first pause is counted.
    """

    __slots__ = ("counted", "held", "held_bytes", "limit", "marks", "paused")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.paused = False
        self.counted = 0
        # While held: what was written meanwhile, and for each hold after the first, in the
        # order they were taken, how many of those pieces came before it.
        self.held: list[bytes] | None = None
        self.held_bytes = 0
        self.marks: list[int] = []

    def hold(self) -> None:
        """Keep what is written from now on until this hold is let go (:meth:`let_go`)."""
        if self.held is None:
            self.held = []
        else:
            self.marks.append(len(self.held))

    def let_go(self, transport: Any) -> None:
        """Let the oldest hold go: write what came before the next one (everything, when it
        was the last).  Never refused: the limit was checked as it was held."""
        held = self.held
        if held is None:
            return
        if self.marks:
            upto = self.marks.pop(0)
            out = held[:upto]
            self.held = held[upto:]
            self.marks = [mark - upto for mark in self.marks]
        else:
            out = held
            self.held = None
        if out:
            data = b"".join(out)
            self.held_bytes -= len(data)
            self._put(transport, data)

    def let_all_go(self, transport: Any) -> None:
        """Write everything held and forget the holds (a connection about to close)."""
        self.marks = []
        held, self.held = self.held, None
        self.held_bytes = 0
        if held:
            self._put(transport, b"".join(held))

    def write(self, transport: Any, data: bytes) -> bool:
        """Write ``data`` unless that would leave more than the limit unread: then write
        nothing and return False.

        One method for the check and the write because it runs once per recipient of every
        room message: the transport is looked at once.
        """
        held = self.held
        if held is not None:
            # What the socket holds does not change meanwhile: nothing else is written.
            size = self.held_bytes + len(data)
            if (unsent_bytes(transport) or 0) + size > self.limit:
                return False
            held.append(data)
            self.held_bytes = size
            return True
        # Only a plain TCP connection: a TLS wrapper passes unknown attributes through to the
        # TCP connection under it, whose socket would then get the bytes unencrypted.
        if not isinstance(transport, tcp.Connection) or transport.TLS:
            unsent = unsent_bytes(transport)
            if unsent is not None:
                if unsent + len(data) > self.limit:
                    return False
            elif self.paused:
                self.counted += len(data)
                if self.counted > self.limit:
                    return False
            transport.write(data)
            return True
        unsent = len(transport.dataBuffer) - transport.offset + transport._tempDataLen
        if unsent + len(data) > self.limit:
            return False
        if unsent or not transport.connected or transport.disconnecting:
            transport.write(data)
            return True
        # Inline rather than _send: this runs once per recipient of every room message.
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

    @staticmethod
    def _put(transport: Any, data: bytes) -> None:
        """Write ``data`` without a check: straight to a plain TCP socket when nothing is
        queued, else the transport's way (none: the connection is gone)."""
        if transport is None:
            return
        if (
            isinstance(transport, tcp.Connection)
            and not transport.TLS
            and transport.connected
            and not transport.disconnecting
            and not unsent_bytes(transport)
        ):
            BoundedOutput._send(transport, data)
        else:
            transport.write(data)

    @staticmethod
    def _send(transport: Any, data: bytes) -> None:
        try:
            sent = transport.socket.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            transport.write(data)
            return
        if sent < len(data):
            transport.write(data[sent:])

    # IPushProducer: the transport tells us when the peer stops reading.

    def pauseProducing(self) -> None:
        # Twisted calls this again on every write while its buffer is full: only the first
        # call starts the count, or it would never add up to the limit.
        if not self.paused:
            self.paused = True
            self.counted = 0

    def resumeProducing(self) -> None:
        self.paused = False
        self.counted = 0

    def stopProducing(self) -> None:
        self.paused = False
