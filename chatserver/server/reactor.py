"""The reactor ``chatserver run`` uses: Twisted's epoll reactor, less one wrapper per event.

Twisted's epoll reactor hands every ready socket to ``log.callWithLogger``, which sets up a
legacy logging context (the connection's log prefix) around the read or write: four Python
calls and a context dictionary for every socket event, about 3% of the server's CPU when many
small rooms talk.  Nothing here reads that context (the server logs through
``twisted.logger``, whose events name their own namespace), and the reactor's own
``_doReadOrWrite`` already catches, logs and disconnects on whatever a read or write raises.
So this reactor calls it directly, and logs (rather than leaves to the main loop) anything
that still escapes, so one socket's failure never skips the others' events of the same poll.

Where epoll is missing, the default reactor is left as it is.
"""

from __future__ import annotations

import errno
import sys

from twisted.logger import Logger

log = Logger()

try:
    from twisted.internet.epollreactor import EPollReactor
except ImportError:  # not Linux
    EPollReactor = None  # type: ignore[assignment,misc]


if EPollReactor is not None:

    class LeanEPollReactor(EPollReactor):
        """:class:`EPollReactor`, each ready socket handled without a logging context."""

        def doPoll(self, timeout: float | None) -> None:
            if timeout is None:
                timeout = -1  # wait until something happens
            try:
                events = self._poller.poll(timeout, len(self._selectables))
            except OSError as err:
                if err.errno == errno.EINTR:
                    return
                raise
            selectables = self._selectables
            handle = self._doReadOrWrite
            for fd, event in events:
                selectable = selectables.get(fd)
                if selectable is None:
                    continue  # removed by an earlier event of this poll
                try:
                    handle(selectable, fd, event)
                except Exception:
                    log.failure("handling an event on {selectable}", selectable=selectable)

        doIteration = doPoll


def install() -> None:
    """Install the lean epoll reactor, unless a reactor is installed already (tests, twistd)
    or epoll is missing."""
    if "twisted.internet.reactor" in sys.modules or EPollReactor is None:
        return
    from twisted.internet.main import installReactor

    installReactor(LeanEPollReactor())
