"""Cluster mode: an IRC client that proves, on this node, an account whose user has a live
connection on another node is handed off to that node (:mod:`protocols.transport.handoff`).

A login during registration (SASL before CAP END): on the node where the socket is,
:func:`hand_off` captures the connection's state at the moment SASL proved the account and the
login was refused for the other node; that node rebuilds the connection with :func:`resume`,
logs it in itself (it sends 900 and 903, under the AUTHENTICATE's label), then runs the lines
the client sent after the AUTHENTICATE; registration ends there, with CAP END, as for a second
local client of the user: its nick, the join burst of its rooms.

A login after registration (SASL, or NickServ IDENTIFY): the connection's user here quits as
on one server, where the connection would leave it for the account's user
(``ChatService.handed_off``); the other node rebuilds the connection registered, and its login
shows the client what one server shows it (leaving its rooms, its nick changing, the rooms of
the account's user) before the reply of the command that logged in: 900 and 903 for SASL,
NickServ's notice for IDENTIFY.

The state's protocol part (``state["p"]``):

- ``caps`` (list of enabled capabilities), ``cap_version`` (302 after ``CAP LS 302``),
  ``cap_negotiating`` (CAP negotiation still open: registration waits for CAP END);
- ``nick``, ``refused_nick``, ``ident``, ``realname``: what NICK and USER gave (None when not
  given yet);
- ``password_ok``: PASS matched the server password;
- ``gateway_secure``: what WEBIRC said of the user's own connection (None without WEBIRC);
  the WEBIRC address is the state's ``address``;
- ``label``: the label of the command that completed the login (None if none);
- ``then``: that command, SASL (``AUTHENTICATE``) or NICKSERV (an IDENTIFY);
- ``monitor`` (the nicks it watches, as it wrote them) and ``metadata_subs`` (its METADATA
  subscriptions): the connection's own state that registration gave it.

After registration the state's ``arrival`` is what ``ChatService.departure`` gave.

The state's ``ws`` changes nothing here: IRC over WebSocket is the same connection as over TCP,
the WebSocket framing stays with the socket.  Unlike the protocols that greet a new client,
IRC's resume goes through ``makeConnection``: what an IRC connection does first is this node's
bookkeeping only (the per-address limit, the flood budget, the registration deadline), and it
says nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred

from protocols.irc import sasl
from protocols.transport import handoff
from protocols.transport.handoff import HandoffState, RelayTransport

if TYPE_CHECKING:
    from protocols.irc.connection import IrcConnection
    from protocols.irc.factory import IrcFactory

KIND = handoff.IRC
# The command whose login is handed off (``then``).
SASL = "sasl"
NICKSERV = "nickserv"


def capture(
    conn: IrcConnection, account: str, then: str, arrival: dict[str, Any] | None
) -> HandoffState:
    """The handoff state of ``conn``, whose command ``then`` proved ``account``."""
    from protocols.irc.handlers.monitor import index_for

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
        "arrival": arrival,
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
            "then": then,
            "monitor": list(index_for(conn.service).targets(conn).values()),
            "metadata_subs": sorted(conn.metadata_subs),
        },
    }


def hand_off(conn: IrcConnection, account: str, node: str, then: str = SASL) -> bool:
    """Hand ``conn`` off to ``node``, where the user of ``account`` is, after its command
    ``then`` proved the account; False when it is not handed off (it was itself handed to
    this node, the cluster cannot relay it, or, registered, ``ChatService.departure`` says
    it cannot go): the login is then refused as before."""
    if conn.closing or conn.relay is not None or conn.core is None:
        return False
    arrival = None
    if conn.registered:
        arrival = conn.service.departure(conn.core, account, node)
        if arrival is None:
            return False
    # (One served here for another node is not handed on: hand_off refuses it.)
    return handoff.hand_off(conn, conn.service, node, capture(conn, account, then, arrival))


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
    arrival = state.get("arrival")
    if arrival is not None:
        _registered(conn, p)

    def log_in() -> Deferred[None]:
        if p.get("then") == NICKSERV:
            from protocols.irc.handlers.services import identified_elsewhere

            d = identified_elsewhere(conn, account, arrival)
        else:
            d = sasl.complete_login(conn, account, arrival)
        if arrival is not None:
            d.addBoth(_left_meanwhile, conn)
        return d

    # The command that proved the account ends here: its reply, under its label.
    conn.run_as_command(p["label"], log_in)
    # The lines the client sent after it (``state["pending"]``, then what comes): they wait
    # in the flood queue until the login is done, as they did on the other node, so the
    # relay may feed them as soon as it has attached this connection.
    transport.resumeProducing()
    return conn


def _registered(conn: IrcConnection, p: dict[str, Any]) -> None:
    """``conn`` takes over a client that registered on another node: registered here, with
    what registration gave that connection of its own, and no welcome (it had that)."""
    from protocols.irc.handlers.monitor import index_for

    conn.registered = True
    conn.factory.connection_registered(conn)
    conn.registration_done()
    conn.metadata_subs = frozenset(p.get("metadata_subs") or ())
    index = index_for(conn.service)
    for nick in p.get("monitor") or ():
        index.add(conn, nick)


def _left_meanwhile(result: object, conn: IrcConnection) -> object:
    """A registered client whose login failed here (the account's user left meanwhile) has
    no user on either node any more: it is closed, told why."""
    if not conn.closing and conn.user is None:
        conn.disconnect("your user left this server while you were logging in; connect again")
    return result


def register(factory: IrcFactory) -> None:
    """Let the cluster resume IRC connections handed off to this node with ``factory``."""

    def resumer(transport: RelayTransport, state: HandoffState) -> IrcConnection | None:
        return resume(factory, transport, state)

    handoff.register(factory.service, KIND, resumer)
