"""Cluster mode: a client handed to this node by another, or from this node to another.

A client that proves an account on a node other than the one holding the account's user is
*handed off* (``protocols.transport.handoff``): its socket stays where it is, and its
protocol runs on the account's node, the two joined by a relay over the cluster's streams.
The core only passes the requests between the protocols and the cluster: the protocols
register how they resume a client of their kind (``register_resumer``), the cluster opens
relays and asks for a client to be resumed here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Relaying:
    """The part of ChatService through which protocols and the cluster hand clients off."""

    cluster: Any

    def _init_relaying(self) -> None:
        # kind -> resume(link, state) -> the relay's end here, or None.
        self._resumers: dict[str, Callable[[Any, dict[str, Any]], Any]] = {}

    def register_resumer(self, kind: str, resumer: Callable[[Any, dict[str, Any]], Any]) -> None:
        """A protocol's factory: ``kind``'s clients handed to this node are resumed by
        ``resumer(link, state)`` (``protocols.transport.handoff.register``)."""
        self._resumers[kind] = resumer

    def open_relay(self, node: str, state: dict[str, Any], end: Any) -> Any:
        """Ask ``node`` to serve the client whose socket is here (``end`` gets what its
        protocol there writes): the link to it, or None when it cannot (no cluster, Redis
        unreachable, ``node`` not known alive)."""
        cluster = self.cluster
        if cluster is None:
            return None
        return cluster.open_relay(node, state, end)

    def resume_relay(self, link: Any, state: dict[str, Any]) -> Any:
        """The cluster: another node hands a client of ``state["kind"]`` to this one; the
        end of the relay here (which the cluster tells what the client sends), or None when
        no protocol here serves it."""
        resumer = self._resumers.get(state.get("kind", ""))
        if resumer is None:
            return None
        return resumer(link, state)
