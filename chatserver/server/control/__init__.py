"""The operator's control socket: ``chatserver admin …`` talks to the running server here.

A UNIX socket in the data directory (``control.sock``, mode 0600) carries JSON lines: one
request object per line in, one answer object per line out, in order.  The socket's file
permissions, and the data directory's, are the authentication; the server also refuses a
peer running as another user (root excepted).

- :mod:`chatserver.server.control.server`: the listener and the line protocol.
- :mod:`chatserver.server.control.commands`: the command table, one handler per command.
- :mod:`chatserver.server.control.client`: what the command line uses to ask.
"""

from __future__ import annotations

SOCKET_NAME = "control.sock"
# A request or an answer: far more than any command needs, little enough to hold.
MAX_LINE_BYTES = 64 * 1024
