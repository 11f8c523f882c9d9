"""Cluster mode: a line-chat client handed to the node that holds its account's user.

On the client's node (``hand_off``): a ``/identify`` (or ``/login``), refused because the
account's user is on another node, hands the client to that node
(``protocols.transport.handoff``) with what it needs to go on: the mode (text or JSON), the
echo setting, the command and its JSON tag, and the partial line received after it.  After a
nick, also what ``ChatService.departure`` gives (the state's ``arrival``), the nick and the
room plain lines went to: its user here quits as on one server, where the connection would leave it for
the account's user.

On the account's node (``resume``): the connection is made as its listener would make it,
without the greeting, logs in to the account, and answers the command as a login there
would (before a nick: the welcome, the rooms of the account's user; after one: leaving its
rooms, its nick changing, the account's user's rooms), before it reads what the client sent
since.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred

from chatserver.core.errors import AccountError
from protocols.transport import handoff, peer

if TYPE_CHECKING:
    from protocols.line.connection import LineConnection
    from protocols.line.factory import LineFactory


def hand_off(c: LineConnection, err: AccountError, cmd: str, tag: Any) -> bool:
    """Hand ``c`` to ``err.node`` after its login ``cmd`` was refused for being there:
    whether it was (else the refusal stands)."""
    if (
        err.node is None
        or err.account is None
        or c.conn is None
        or isinstance(c.transport, handoff.RelayTransport)
    ):
        return False
    arrival = None
    if c.user is not None:
        arrival = c.service.departure(c.conn, err.account, err.node)
        if arrival is None:
            return False
    state: handoff.HandoffState = {
        "kind": handoff.LINE,
        "account": err.account,
        "address": c.address,
        "host": None,
        "tls": c.tls,
        "ws": handoff.is_websocket(c.transport),
        "cert": None,
        "pending": c.held_input(),
        "arrival": arrival,
        "p": {
            "mode": c.mode,
            "echo": c.echo,
            "cmd": cmd,
            "tag": tag,
            "nick": c.nick,
            "current": c.current_room if arrival is not None else None,
        },
    }
    return handoff.hand_off(c, c.service, err.node, state)


def resume(factory: LineFactory, transport: handoff.RelayTransport, state: Any) -> Any:
    """The connection of a client handed to this node, logging in to ``state["account"]``."""
    from protocols.line import commands
    from protocols.line.handlers.identity import logged_in_before_nick, logged_in_with_nick

    c = factory.buildProtocol(None)
    c.transport = transport
    c.connected = 1
    p = state.get("p") or {}
    # The transport gives the client's address, and TLS as the client's node saw it.
    c.address = peer.address_of(transport)
    c.tls = peer.is_tls(transport)
    c.secure = peer.is_secure(c.tls, c.address)
    c.mode = "json" if p.get("mode") == "json" else "text"
    c.echo = bool(p.get("echo"))
    # As a new connection here (limits, flood budget, idle timer), without the greeting.
    if not c.open_session():
        return c
    conn = c.session
    account = state["account"]
    cmd = commands.lookup(str(p.get("cmd") or "identify")) or commands.lookup("identify")
    assert cmd is not None
    arrival = state.get("arrival")
    d: Deferred = c.service.log_in(conn, account, arrival=arrival)
    if arrival is None:
        d.addCallback(lambda _: logged_in_before_nick(c, account))
    else:
        # What the client knew itself as: it is shown leaving that nick and its rooms.
        c.arrived(str(p.get("nick") or ""), p.get("current"))
        d.addCallback(lambda _: logged_in_with_nick(c, None, already=False))
    commands.answer_later(c, cmd, d, p.get("tag"))
    # Then what the client sent since the login, in order.
    d.addBoth(lambda _: transport.resumeProducing())
    return c
