"""What a command costs the server, in flood tokens: the numbers every protocol's command
table uses, and the measure of a command's fan-out.

A command takes its own cost from the client's flood budget before it runs.  One that
changes what a whole room sees (a join, a part, a nick change, a topic, a kick, a mode)
costs the server one delivery for each member who hears of it, so it also takes
``per_delivery`` tokens for each event the core delivered while it ran: joining a room of
2,000 members costs twenty tokens more, joining a room of two almost nothing.  The client
pays in waiting (its next commands wait until its budget is back), as InspIRCd's penalties
and Ergo's fake lag make it, never in lost input.  Messages are what the server is for:
they cost their token whatever the size of the room.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

# Tokens per event delivered to others, for commands that fan out (see above).
FANOUT = 0.01


def charged(service: Any, per_delivery: float, flood: Any, call: Callable[[], T]) -> T:
    """Run ``call()``, then charge the connection's ``flood`` (a transport FloodQueue or
    FloodBudget; None: no flood control) what the deliveries it caused cost, also when it
    raises.  Deliveries batched for the end of the turn are counted when they are caused."""
    before = service.fanout_caused
    try:
        return call()
    finally:
        caused = service.fanout_caused - before
        if caused > 0 and flood is not None:
            flood.charge(caused * per_delivery)
