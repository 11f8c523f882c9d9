"""Noticing the server's own stalls, so that flood control does not blame clients for them.

When the process does not run for a while (a long reactor turn, swapping, a stopped
process, a slow disk under the database), what clients sent meanwhile waits in the kernel
and is read in one go when the server runs again.  To flood control that looks like a burst,
though each client may have sent well under its limit.  A heartbeat on the reactor records
when the server last ran; a heartbeat or a read that finds the last beat older than
``INTERVAL + THRESHOLD`` seconds records a stall, and a flood budget credits the time of the
stall to the client (see :class:`protocols.transport.flood.FloodBudget`).

Lateness is measured on the monotonic clock of the process, not the reactor's: a test clock
that jumps ahead is no stall, and a stall is a stall whatever the wall clock does.

A client relayed from another node (``protocols.transport.handoff``) meets stalls of its own:
its bytes cross the cluster's streams, and while Redis is unreachable they wait, then come in
one go.  Its transport keeps :class:`InputStalls`, the reactor's stalls and those delays
together, and its flood budget credits both (:func:`stalls_of`).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from twisted.internet.task import LoopingCall

# Seconds between heartbeats: a beat later than this and THRESHOLD is a stall.
INTERVAL = 0.25
THRESHOLD = 0.5
# Stalls remembered (older ones cannot matter: a budget is looked at on every input).
KEPT = 32


class StallWatch:
    """The heartbeat of one reactor, and the stalls it has seen (start, end), in the
    reactor's time."""

    __slots__ = ("_beat", "_last_end", "_loop", "_monotonic", "_noticed", "clock", "stalls")

    def __init__(self, clock: Any, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._monotonic = monotonic
        self._beat = monotonic()
        # The beat after which the last stall was recorded.
        self._noticed = float("nan")
        self._last_end = float("-inf")
        self.stalls: deque[tuple[float, float]] = deque(maxlen=KEPT)
        self._loop = LoopingCall(self._on_beat)
        self._loop.clock = clock
        self._loop.start(INTERVAL, now=False)

    def _on_beat(self) -> None:
        self.notice(self.clock.seconds())
        self._beat = self._monotonic()

    def notice(self, now: float) -> None:
        """Record a stall if the last beat is too old (``now``: the reactor's time)."""
        beat = self._beat
        if beat == self._noticed:
            # This stall is recorded already (a read saw it before the late beat did).
            return
        gap = self._monotonic() - beat
        if gap > INTERVAL + THRESHOLD:
            self._noticed = beat
            self.stalls.append((now - gap, now))
            self._last_end = now

    def stalled_between(self, start: float, end: float) -> float:
        """Seconds of recorded stalls within ``start``..``end`` (``end`` is now)."""
        self.notice(end)
        if self._last_end <= start:
            return 0.0
        return covered(self.stalls, start, end)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()


class Stalls(Protocol):
    """What a flood budget asks of the stalls its connection's input met."""

    def stalled_between(self, start: float, end: float) -> float:
        """Seconds of stalls within ``start``..``end`` (``end`` is now)."""
        ...


class InputStalls:
    """The stalls one connection's input met: the reactor's (``watch``), and the delays of
    its bytes on their way to this process, each the span just before they arrived (a
    client relayed from another node, whose bytes waited in the cluster)."""

    __slots__ = ("_delays", "watch")

    def __init__(self, watch: StallWatch) -> None:
        self.watch = watch
        # Spans in order, none overlapping the next: a delay that overlaps the last one
        # widens it (delays come in order, each ending at its arrival).
        self._delays: deque[tuple[float, float]] = deque(maxlen=KEPT)

    def delayed(self, seconds: float, now: float) -> None:
        """Input that arrives ``now`` was held up ``seconds`` on its way, by no fault of the
        client's; a delay within a stall's THRESHOLD is the usual jitter and not one."""
        if seconds <= THRESHOLD:
            return
        begin = now - seconds
        delays = self._delays
        if delays and begin <= delays[-1][1]:
            begin = min(begin, delays.pop()[0])
        delays.append((begin, now))

    def stalled_between(self, start: float, end: float) -> float:
        self.watch.notice(end)
        # The reactor may have stood still while the bytes waited: counted once.
        return covered([*self.watch.stalls, *self._delays], start, end)


def stalls_of(transport: Any, clock: Any) -> Stalls:
    """The stalls a connection's input met, for its flood budget: those its transport
    keeps (``input_stalls``: a relayed client's), else the reactor's."""
    stalls: Stalls | None = getattr(transport, "input_stalls", None)
    return stalls if stalls is not None else watch_for(clock)


def covered(spans: Iterable[tuple[float, float]], start: float, end: float) -> float:
    """Seconds of ``start``..``end`` inside at least one of ``spans`` (which may overlap)."""
    inside = sorted((max(b, start), min(f, end)) for b, f in spans if f > start and b < end)
    total = 0.0
    reached = start
    for begin, finish in inside:
        if finish > reached:
            total += finish - max(begin, reached)
            reached = finish
    return total


_WATCHES: dict[int, StallWatch] = {}


def watch_for(clock: Any) -> StallWatch:
    """The one watch of ``clock`` (started on first use)."""
    watch = _WATCHES.get(id(clock))
    if watch is None or watch.clock is not clock:
        watch = _WATCHES[id(clock)] = StallWatch(clock)
    return watch
