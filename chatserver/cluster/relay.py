"""Relays: a client's bytes between the node that has its socket and the node that serves it.

A client handed off (``protocols.transport.handoff``) has its socket on one node (the
*client's node*) and its protocol on the node that holds its account's user (the *serving
node*).  The bytes between them travel in the nodes' streams, as ops among the others:

- ``hoff`` (client's node to serving node): open relay ``id`` for a client in ``state``;
- ``rin`` (client's node to serving node): bytes the client sent, and when the first of
  them came (``t``, that node's monotonic clock); ``end`` set when its socket closed (the
  reason);
- ``rout`` (serving node to client's node): bytes the protocol wrote; ``end`` set when it
  closed its connection (``abort``: aborted it);
- ``rflow`` (client's node to serving node): the socket stopped taking output (``paused``)
  or takes it again: the protocol's output is paused and counted against its limit as for
  a socket of the serving node.

A relay's ops of one reactor turn are one op (its bytes joined), and a turn's ops to one
node one stream entry, as every op is published; each stream is applied in order, so the
bytes keep theirs.  While Redis is unreachable they wait with every other entry and go once
it is back; the serving node tells the protocol how long a client's bytes were held up (how
much longer than the relay's quickest crossing they took), and its flood control credits
that wait as it credits a stall of the process: what the client sent meanwhile arrives in
one go, but it was sent as it came.  A relay ends when either side closes, and when the
other node is gone (it stopped, restarted, or its heartbeat lapsed): its clients' sockets
are closed, or its relayed clients' protocols here see their connection lost; and when this
node missed entries of its stream (then it cannot know what a relay's client said), every
relay ends.

Relay ids are made by the client's node; the serving node knows a relay by that node and id.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

from twisted.logger import Logger

from chatserver.cluster.part import NodePart
from chatserver.core.interfaces import RELAY_ABORTED as ABORTED
from chatserver.core.interfaces import RELAY_CLOSED as CLOSED
from chatserver.core.interfaces import RELAY_LOST as LOST

log = Logger()

# How fast a relay's quickest crossing is let rise, in seconds per second: the two nodes'
# clocks may drift apart (a tenth of a millisecond a second at worst, without time
# synchronisation), and a drift must not pass for a wait; a wait worth crediting is seconds.
CREEP = 0.001


class Crossing:
    """How long one relay's bytes take from the other node to this one, and how much longer
    than usual the latest took.  The two nodes' monotonic clocks differ by an unknown
    offset: each crossing is measured with it, and a difference of two cancels it."""

    __slots__ = ("checked", "quickest")

    def __init__(self) -> None:
        # The quickest crossing seen (risen by CREEP since), and when that was looked at.
        self.quickest: float | None = None
        self.checked = 0.0

    def late(self, sent: float, now: float) -> float:
        """Bytes whose first came at ``sent`` on the other node (its clock) arrive ``now``
        (this node's): the seconds they took beyond the quickest crossing."""
        crossing = now - sent
        quickest = self.quickest
        if quickest is not None:
            quickest += CREEP * (now - self.checked)
        if quickest is None or crossing < quickest:
            quickest = crossing
        self.quickest = quickest
        self.checked = now
        return crossing - quickest


class _Relay:
    """One relay's end on this node: sends its ops, and is told what the other end sent."""

    __slots__ = ("crossing", "end", "id", "kind", "node", "owner")

    def __init__(self, owner: Relays, node: str, relay_id: str, kind: str) -> None:
        self.owner = owner
        # The node at the other end.
        self.node = node
        self.id = relay_id
        # "rin" on the client's node, "rout" on the serving node.
        self.kind = kind
        self.end: Any = None
        # On the serving node: how long the client's bytes take to get here.
        self.crossing = Crossing()

    def _op(self) -> dict[str, Any]:
        """The op that this turn's bytes join (made, and published, by the first)."""
        unsent = self.owner._unsent_ops
        op = unsent.get(self)
        if op is None:
            op = unsent[self] = {
                "k": self.kind,
                "id": self.id,
                "data": bytearray(),
                "end": None,
                "abort": False,
            }
            if self.kind == "rin":
                op["t"] = time.monotonic()
            self.owner._publish(op, targets=self.node)
        return op

    # RelayLink (protocols.transport.handoff)

    def send(self, data: bytes) -> None:
        if data and self.owner._relay_open(self):
            self._op()["data"] += data

    def flow(self, paused: bool) -> None:
        if self.kind == "rin" and self.owner._relay_open(self):
            self.owner._publish({"k": "rflow", "id": self.id, "paused": paused}, targets=self.node)

    def close(self, reason: str, *, abort: bool = False) -> None:
        if not self.owner._relay_open(self, forget=True):
            return
        op = self._op()
        op["end"] = reason or "closed"
        op["abort"] = abort
        self.end = None


class Relays(NodePart):
    """The part of ClusterNode that carries handed-off clients' bytes."""

    # Provided by ClusterNode: node -> what was last applied of it.
    _seen: dict[str, Any]

    def _init_relays(self) -> None:
        # Each relay's op of bytes not sent yet: once sent, an op takes no more (it would be
        # sent again as it is then, if Redis is lost before it answers).
        self._unsent_ops: dict[_Relay, dict[str, Any]] = {}
        self._relay_ids = itertools.count(1)
        # Relays of clients whose socket is here, by id.
        self._clients: dict[str, _Relay] = {}
        # Relays of clients served here, by (their node, id).
        self._served: dict[tuple[str, str], _Relay] = {}
        self.relay_handlers = {
            "hoff": self._on_hoff,
            "rin": self._on_rin,
            "rout": self._on_rout,
            "rflow": self._on_rflow,
        }

    def relay_counts(self) -> dict[tuple[str, str], int]:
        """(side, other node) -> relays: "served" (the protocol here, the socket there) or
        "piped" (the socket here, the protocol there)."""
        counts: dict[tuple[str, str], int] = {}
        for side, relays in (("piped", self._clients.values()), ("served", self._served.values())):
            for relay in relays:
                key = (side, relay.node)
                counts[key] = counts.get(key, 0) + 1
        return counts

    def _relay_nodes(self) -> set[str]:
        """The nodes at the other end of a relay here."""
        return {relay.node for relay in (*self._clients.values(), *self._served.values())}

    # -- the client's node --------------------------------------------------------------------

    def open_relay(self, node: str, state: dict[str, Any], end: Any) -> _Relay | None:
        if not self.up or node == self.name or node not in self._seen:
            return None
        relay = _Relay(self, node, f"{next(self._relay_ids)}", "rin")
        relay.end = end
        self._clients[relay.id] = relay
        self._publish({"k": "hoff", "id": relay.id, "state": state}, targets=node)
        return relay

    def _on_rout(self, node: str, op: dict[str, Any]) -> None:
        relay = self._clients.get(op["id"])
        if relay is None or relay.node != node:
            return
        self._received(relay, op, self._clients, relay.id)

    # -- the serving node ---------------------------------------------------------------------

    def _on_hoff(self, node: str, op: dict[str, Any]) -> None:
        key = (node, op["id"])
        if key in self._served:
            return
        relay = _Relay(self, node, op["id"], "rout")
        self._served[key] = relay
        try:
            end = self.service.resume_relay(relay, op["state"])
        except Exception:
            log.failure("cluster: resuming a client of node={node}", node=node)
            end = None
        if end is None:
            log.info("cluster: a client handed off by node={node} cannot be served", node=node)
            relay.close("not served here")
            return
        # (If its protocol closed it already, nothing more comes for it.)
        relay.end = end

    def _on_rin(self, node: str, op: dict[str, Any]) -> None:
        key = (node, op["id"])
        relay = self._served.get(key)
        if relay is None:
            return
        waited = relay.crossing.late(op["t"], time.monotonic())
        self._received(relay, op, self._served, key, waited)

    def _on_rflow(self, node: str, op: dict[str, Any]) -> None:
        relay = self._served.get((node, op["id"]))
        if relay is not None and relay.end is not None:
            relay.end.flow(op["paused"])

    # -- both -------------------------------------------------------------------------------

    def _received(
        self,
        relay: _Relay,
        op: dict[str, Any],
        table: dict[Any, _Relay],
        key: Any,
        waited: float = 0.0,
    ) -> None:
        end = relay.end
        if op["data"] and end is not None:
            end.received(bytes(op["data"]), waited)
        if op["end"] is not None:
            table.pop(key, None)
            relay.end = None
            if end is not None:
                end.ended(ABORTED if op["abort"] else CLOSED, op["end"])

    def _relay_open(self, relay: _Relay, *, forget: bool = False) -> bool:
        """Whether ``relay`` is open; with ``forget``, it is forgotten too (it ends)."""
        if relay.kind == "rin":
            table: dict[Any, _Relay] = self._clients
            key: Any = relay.id
        else:
            table = self._served
            key = (relay.node, relay.id)
        if table.get(key) is not relay:
            return False
        if forget:
            del table[key]
        return True

    def _end_relays(self, node: str | None, reason: str) -> None:
        """``node`` is gone (None: every node's relays): end its relays here."""
        tables: tuple[dict[Any, _Relay], ...] = (self._clients, self._served)
        for table in tables:
            for key, relay in list(table.items()):
                if node is not None and relay.node != node:
                    continue
                del table[key]
                end, relay.end = relay.end, None
                if end is not None:
                    try:
                        end.ended(LOST, reason)
                    except Exception:
                        log.failure("cluster: ending a relay with node={node}", node=relay.node)
