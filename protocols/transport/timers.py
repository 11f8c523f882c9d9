"""Every connection's timers on one reactor timer per clock.

Each connection keeps a timer (its registration deadline or idle probe), and a connection the
server closes keeps two more for a while (the linger and the forced close).  Twisted keeps
delayed calls in one heap ordered by a Python ``__lt__``, and a cancelled call stays in it
until it comes due: a burst of short connections pays for a comparison chain at every push
and pop and for the cancelled entries, a tenth of what accepting, registering and closing a
client costs.  Here the timers wait in a heap of plain tuples (compared in C), a cancelled
one is only marked, and the reactor holds a single call, at the earliest time due.

Timers due close together run together: after running what was due, the next reactor call
is at least :data:`MIN_GAP` seconds later, so a timer may run up to that much late (never
early), and a burst of closes costs a few reactor calls, not one each.  Many timers due at
once (the idle pings of thousands of clients that connected in the same second, XMPP streams
that went quiet together) run in slices of :data:`RUN_BUDGET` seconds, with the reactor's
input and output served between: a burst of them would otherwise hold every message back.
"""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Callable
from heapq import heapify, heappop, heappush
from time import perf_counter
from typing import Any

from twisted.logger import Logger

log = Logger()

# Seconds between two runs of one clock's timers at the least: how late a timer may be.
MIN_GAP = 0.05
# Seconds of timers run in one go: what is still due after that waits for the next turn of
# the reactor (input and output are served in between).
RUN_BUDGET = 0.002
# Cancelled timers the heap may hold before it is rebuilt without them (and never more than
# the live ones).
_DEAD_MAX = 256


class Timer:
    """One scheduled call; :meth:`cancel` it, or read ``when`` (seconds on the clock)."""

    __slots__ = ("args", "fn", "timers", "when")

    def __init__(
        self, timers: Timers, when: float, fn: Callable[..., object], args: tuple[Any, ...]
    ) -> None:
        # None once out of the heap (running, or run).
        self.timers: Timers | None = timers
        self.when = when
        # None once it has run or been cancelled.
        self.fn: Callable[..., object] | None = fn
        self.args = args

    def active(self) -> bool:
        return self.fn is not None

    def cancel(self) -> None:
        if self.fn is not None:
            self.fn = None
            self.args = ()
            if self.timers is not None:
                self.timers._cancelled()


class Timers:
    """The timers of one clock (the reactor, or a test's ``task.Clock``): see
    :func:`timers_for`."""

    __slots__ = ("__weakref__", "_at", "_call", "_dead", "_heap", "_seq", "clock")

    def __init__(self, clock: Any) -> None:
        self.clock = clock
        self._heap: list[tuple[float, int, Timer]] = []
        # The reactor call that runs what is due, and when it is set for.
        self._call: Any = None
        self._at = float("inf")
        self._dead = 0
        # Ties in time keep the order of scheduling (and never compare two Timers).
        self._seq = itertools.count()

    def call_later(self, delay: float, fn: Callable[..., object], *args: Any) -> Timer:
        """Call ``fn(*args)`` in ``delay`` seconds (up to :data:`MIN_GAP` later)."""
        when = self.clock.seconds() + max(0.0, delay)
        timer = Timer(self, when, fn, args)
        heappush(self._heap, (when, next(self._seq), timer))
        if when < self._at:
            self._arm(when)
        return timer

    def pending(self) -> int:
        """Timers waiting (cancelled ones not counted)."""
        return len(self._heap) - self._dead

    def _cancelled(self) -> None:
        self._dead += 1
        heap = self._heap
        if self._dead > _DEAD_MAX and self._dead * 2 > len(heap):
            self._heap = [entry for entry in heap if entry[2].fn is not None]
            heapify(self._heap)
            self._dead = 0

    def _arm(self, when: float) -> None:
        call = self._call
        delay = max(0.0, when - self.clock.seconds())
        if call is not None and call.active():
            call.reset(delay)
        else:
            self._call = self.clock.callLater(delay, self._run)
        self._at = when

    def _run(self) -> None:
        self._call = None
        self._at = float("inf")
        now = self.clock.seconds()
        heap = self._heap
        due: list[Timer] = []
        while heap and (heap[0][0] <= now or heap[0][2].fn is None):
            timer = heappop(heap)[2]
            if timer.fn is None:
                self._dead -= 1
            else:
                timer.timers = None
                due.append(timer)
        if heap:
            self._arm(max(heap[0][0], now + MIN_GAP))
        # Run after taking them all: a timer set by one of these (even for now) waits for
        # the next call.
        until = perf_counter() + RUN_BUDGET
        for index, timer in enumerate(due):
            fn, args = timer.fn, timer.args
            if fn is None:
                continue  # cancelled by one that ran before it
            timer.fn = None
            timer.args = ()
            try:
                fn(*args)
            except Exception:
                log.failure("timer {fn}", fn=fn)
            if perf_counter() > until and index + 1 < len(due):
                self._put_back(due[index + 1 :], now)
                return

    def _put_back(self, timers: list[Timer], now: float) -> None:
        """Due timers not run yet: in the heap again, to run in the reactor's next turn."""
        heap = self._heap
        for timer in timers:
            if timer.fn is not None:
                timer.timers = self
                heappush(heap, (timer.when, next(self._seq), timer))
        self._arm(now)


_BY_CLOCK: weakref.WeakKeyDictionary[Any, Timers] = weakref.WeakKeyDictionary()
# The last clock asked for and its timers: a server has one clock, and a weak dictionary's
# lookup is Python code, paid by every connection.
_last: tuple[Any, Timers | None] = (None, None)


def timers_for(clock: Any) -> Timers:
    """The one :class:`Timers` of ``clock``."""
    global _last
    last_clock, timers = _last
    if last_clock is clock and timers is not None:
        return timers
    timers = _BY_CLOCK.get(clock)
    if timers is None:
        timers = _BY_CLOCK[clock] = Timers(clock)
    _last = (clock, timers)
    return timers
