"""Cluster mode: a stream whose account lives on another node goes on there.

A client connects to node B and SASL proves its account, but the account's user is held on
node A (the login fails with an AccountError naming A).  The stream is handed off
(:mod:`protocols.transport.handoff`): B keeps the socket (TCP, TLS or WebSocket, whose
framing stays B's) and relays its bytes, and A builds the connection its listener builds,
in the state B's was in, logs it in and sends the ``<success/>`` B did not.  From the
client's stream restart on, A serves the stream as any of its own: binding (a resource
unique among the account's connections, all of which are A's), roster, presence, rooms,
carbons, archive, stream management (a session detached on A resumes over the relay).

What the stream needs on A (``state["p"]``), SASL being its last step on B:

* ``domain``: the domain the client's header addressed (the one B serves);
* ``lang``: the ``xml:lang`` of the client's header, given to stanzas that carry none;
* ``stream_id``: the id of B's stream header (a restart gets a new one);
* ``success``: the mechanism's final data (SCRAM's server signature), sent in ``<success/>``;
* ``mechanism``: the SASL mechanism that proved the account.

Stream management and client state indication come after binding, so there is none of
them to carry.  What the client sent after its last SASL element, while the login was
pending, is the state's ``pending``.  A login after SASL is the only one XMPP has, so every
XMPP login can be handed off.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from protocols.transport import handoff as relay

# The connection module calls this one: imported as a module, read when called.
from protocols.xmpp import connection

if TYPE_CHECKING:
    from protocols.xmpp.connection import XmppConnection
    from protocols.xmpp.factory import XmppFactory

# The key, in a connection's ``extra``, that marks one handed to this node (on A).
ARRIVED = "handoff.arrived"


def hand_off(conn: XmppConnection, node: str, account: str, success: bytes | None) -> bool:
    """On B: hand ``conn`` off to ``node``, where ``account``'s user is.  False when it
    cannot be (no cluster, the node is gone, or the stream came from another node itself:
    it is never passed on twice)."""
    if ARRIVED in conn.extra:
        return False
    sasl = conn.sasl
    state: relay.HandoffState = {
        "kind": relay.XMPP,
        "account": account,
        "address": conn.address,
        "host": None,
        "tls": conn.tls,
        "ws": relay.is_websocket(conn.transport),
        "cert": None,
        # From now on the relay gets what the client sends (not handed off: the login is
        # refused, the stream closed, and what was held matters no more).
        "pending": conn.take_held_input(),
        # An XMPP login comes before the stream has a user.
        "arrival": None,
        "p": {
            "domain": conn.domain,
            "lang": conn.lang,
            "stream_id": conn.stream_id,
            "success": success,
            "mechanism": sasl.mechanism if sasl is not None else None,
        },
    }
    return relay.hand_off(conn, conn.service, node, state)


def register(factory: XmppFactory) -> None:
    """On every node: streams handed off to this one are resumed by ``factory``."""
    relay.register(
        factory.service, relay.XMPP, lambda transport, state: resume(factory, transport, state)
    )


def resume(
    factory: XmppFactory, transport: relay.RelayTransport, state: relay.HandoffState
) -> XmppConnection:
    """On A: the connection ``factory`` builds for a client, over the relay ``transport``,
    logging in to ``state["account"]`` as after its credentials were checked here."""
    p = state["p"]
    conn = factory.buildProtocol(None)
    # What makeConnection does, less connectionMade's own start: the stream has begun.
    conn.transport = transport
    transport.protocol = conn
    conn.connected = 1
    conn.stream_id = str(p["stream_id"])
    conn.header_sent = True
    conn.extra[ARRIVED] = True
    if conn.opened(str(state["address"]), bool(state["tls"])):
        if str(p["domain"]).lower() != conn.domain:
            conn.stream_error("host-unknown", f"this server serves {conn.domain}")
        else:
            conn.state = connection.NEGOTIATING
            conn.lang = str(p["lang"])
            success = p["success"]
            # What the client sends meanwhile waits in the connection for the login's
            # outcome, after the success (or failure) it answers.
            conn.authenticated(state["account"], None if success is None else bytes(success))
    # The client's pending input and what it sends from now on: read in order (after a
    # refusal, the stream is closed and reads nothing).
    transport.resumeProducing()
    return conn
