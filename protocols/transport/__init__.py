"""What every protocol's connection stands on, below the protocol itself.

* :mod:`~protocols.transport.peer`: who the peer is (the one "secure or loopback" rule);
* :mod:`~protocols.transport.framing`: bytes to lines, with the line-length limit;
* :mod:`~protocols.transport.flood`: the flood budget and the queue of input waiting for it;
* :mod:`~protocols.transport.idle`: the one timer for deadlines, idle probes and their answers;
* :mod:`~protocols.transport.timers`: every connection's timers on one reactor call;
* :mod:`~protocols.transport.output`: bounded writes (backpressure from a slow reader);
* :mod:`~protocols.transport.close`: closing so that the close completes, TLS included;
* :mod:`~protocols.transport.handoff`: a client served by another cluster node, its socket
  staying here (the pipe on one node, the relay transport on the other).

Nothing here knows a protocol's syntax: IRC, line chat and XMPP (and later WebSocket) decide
what a line or a stanza means, this package how bytes come and go.
"""
