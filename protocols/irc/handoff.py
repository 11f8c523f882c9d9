"""Cluster mode: an IRC client that proves, on this node, an account whose user has a live
connection on another node is handed off to that node (:mod:`protocols.transport.handoff`).

Only a login during registration is handed off: SASL before CAP END (a connection that has
registered has a user of its own here, which cannot move).  On the node where the socket is,
:func:`hand_off` captures the connection's state at the moment SASL proved the account and the
login was refused for the other node; that node rebuilds the connection with :func:`resume`,
logs it in itself (it sends 900 and 903, under the AUTHENTICATE's label), then runs the lines
the client sent after the AUTHENTICATE; registration ends there, with CAP END, as for a second
local client of the user: its nick, the join burst of its rooms.

The state's protocol part (``state["p"]``):

- ``caps`` (list of enabled capabilities), ``cap_version`` (302 after ``CAP LS 302``),
  ``cap_negotiating`` (CAP negotiation still open: registration waits for CAP END);
- ``nick``, ``refused_nick``, ``ident``, ``realname``: what NICK and USER gave (None when not
  given yet);
- ``password_ok``: PASS matched the server password;
- ``gateway_secure``: what WEBIRC said of the user's own connection (None without WEBIRC);
  the WEBIRC address is the state's ``address``;
- ``label``: the label of the AUTHENTICATE line that completed the login (None if none).

The state's ``ws`` changes nothing here: IRC over WebSocket is the same connection as over TCP,
the WebSocket framing stays with the socket.  Unlike the protocols that greet a new client,
IRC's resume goes through ``makeConnection``: what an IRC connection does first is this node's
bookkeeping only (the per-address limit, the flood budget, the registration deadline), and it
says nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred

from protocols.irc import sasl
from protocols.transport import handoff
from protocols.transport.handoff import HandoffState, RelayTransport

if TYPE_CHECKING:
    from protocols.irc.connection import IrcConnection
    from protocols.irc.factory import IrcFactory

KIND = handoff.IRC


def capture(conn: IrcConnection, account: str) -> HandoffState:
    """The handoff state of ``conn``, whose SASL exchange proved ``account``."""
    return {
        "kind": KIND,
        "account": account,
        "address": conn.address,
        # IRC resolves no host name: the host users see is the address's cloak.
        "host": None,
        "tls": conn.tls,
        "ws": handoff.is_websocket(conn.transport),
        "cert": None,
        "pending": conn.unprocessed_input(),
        "p": {
            "caps": sorted(conn.caps),
            "cap_version": conn.cap_version,
            "cap_negotiating": conn.cap_negotiating,
            "nick": conn.pending_nick,
            "refused_nick": conn.refused_nick,
            "ident": conn.ident,
            "realname": conn.realname,
            "password_ok": conn.server_password_ok,
            "gateway_secure": conn.gateway_secure,
            "label": conn.running_label(),
        },
    }


def hand_off(conn: IrcConnection, account: str, node: str) -> bool:
    """Hand ``conn`` off to ``node``, where the user of ``account`` is; False when it is not
    handed off (it has registered, it was itself handed to this node, or the cluster cannot
    relay it): the login is then refused as before."""
    if conn.registered or conn.closing or conn.relay is not None:
        return False
    # (One served here for another node is not handed on: hand_off refuses it.)
    return handoff.hand_off(conn, conn.service, node, capture(conn, account))


def resume(
    factory: IrcFactory, transport: RelayTransport, state: HandoffState
) -> IrcConnection | None:
    """The connection of a client handed off to this node, built as the listener builds it
    and attached to ``transport`` (the relay, which gives the client's address, after WEBIRC,
    and its TLS); it logs in to ``state["account"]`` here."""
    conn = factory.buildProtocol(transport.getPeer())
    # What a new IRC connection does first is only this node's bookkeeping, with no word to
    # the client (an IRC server speaks when spoken to): the per-address limit, bans, the
    # flood budget and the registration deadline apply as to any of its connections.
    conn.makeConnection(transport)
    if conn.core is None:
        # Refused here (ERROR sent, closing).
        return conn
    p = state["p"]
    conn.set_caps(frozenset(p["caps"]))
    conn.cap_version = p["cap_version"]
    conn.cap_negotiating = p["cap_negotiating"]
    conn.pending_nick = p["nick"]
    conn.refused_nick = p["refused_nick"]
    conn.ident = p["ident"]
    conn.realname = p["realname"]
    conn.server_password_ok = p["password_ok"]
    conn.gateway_secure = p["gateway_secure"]
    account = state["account"]

    def log_in() -> Deferred[None]:
        return sasl.complete_login(conn, account)

    # The AUTHENTICATE that proved the account ends here: 900 and 903 under its label.
    conn.run_as_command(p["label"], log_in)
    # The lines the client sent after it (``state["pending"]``, then what comes): they wait
    # in the flood queue until the login is done, as they did on the other node, so the
    # relay may feed them as soon as it has attached this connection.
    transport.resumeProducing()
    return conn


def register(factory: IrcFactory) -> None:
    """Let the cluster resume IRC connections handed off to this node with ``factory``."""

    def resumer(transport: RelayTransport, state: HandoffState) -> IrcConnection | None:
        return resume(factory, transport, state)

    handoff.register(factory.service, KIND, resumer)
