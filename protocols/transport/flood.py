"""Flood control under every protocol: a budget of tokens per connection, and the queue of
input waiting for it.

A :class:`FloodBudget` is a token bucket (``burst`` tokens, refilled at ``rate`` per second)
that does not count the server's own stalls against the client: for the time the server did
not run, or a relayed client's bytes waited in the cluster (see
:mod:`protocols.transport.stall`), the client is credited what it could have sent meanwhile,
so a backlog read in one go after a stall is admitted as if it had been read as it came.  A
command that costs the server more than its turn takes more with :meth:`FloodBudget.charge`
(into debt: the client's next commands wait).

A :class:`FloodQueue` runs input items in order while the budget allows; the excess waits
its turn, and a client that keeps more than ``max_queue`` items waiting is a flood (the
protocol decides what to say and closes).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from chatserver.core.limits import TokenBucket
from protocols.transport.stall import Stalls, stalls_of, watch_for

T = TypeVar("T")


class FloodBudget:
    """A connection's flood budget."""

    __slots__ = ("_watch", "bucket", "clock")

    def __init__(self, burst: float, rate: float, clock: Any, watch: Stalls | None = None) -> None:
        self.clock = clock
        self.bucket = TokenBucket(burst, rate, clock.seconds())
        self._watch = watch if watch is not None else watch_for(clock)

    def _now(self) -> float:
        now: float = self.clock.seconds()
        bucket = self.bucket
        stalled = self._watch.stalled_between(bucket.stamp, now)
        if stalled:
            # Refill to now as usual, then add what the client could send while the server
            # stood still, past the burst: the backlog of the stall is not a burst.
            bucket.level(now)
            bucket.tokens += stalled * bucket.rate
        return now

    def level(self) -> float:
        """Tokens available now (negative while in debt)."""
        return self.bucket.level(self._now())

    def take(self, cost: float = 1.0) -> bool:
        """Take ``cost`` tokens if there are that many; whether they were."""
        return self.bucket.take(self._now(), cost)

    def charge(self, cost: float) -> None:
        """Take ``cost`` tokens even into debt: what a costly command adds to its turn."""
        self.bucket.force(self._now(), cost)

    def wait_time(self, cost: float = 1.0) -> float:
        """Seconds until ``cost`` tokens are available (0 if they are now)."""
        return self.bucket.wait_time(self._now(), cost)

    def full(self) -> bool:
        return self.bucket.full(self._now())

    def configure(self, burst: float, rate: float) -> None:
        """Follow reloaded limits from now on (what is in the bucket stays, up to the burst)."""
        bucket = self.bucket
        if bucket.rate != rate or bucket.capacity != burst:
            bucket.rate = float(rate)
            bucket.capacity = float(burst)
            bucket.tokens = min(bucket.tokens, bucket.capacity)


def budget_for(transport: Any, burst: float, rate: float, clock: Any) -> FloodBudget:
    """The flood budget of the connection on ``transport``: it credits the stalls that
    connection's input met (:func:`protocols.transport.stall.stalls_of`)."""
    return FloodBudget(burst, rate, clock, stalls_of(transport, clock))


class FloodQueue(Generic[T]):
    """Input items run in order while the budget allows; the rest waits its turn.

    ``run(item)`` handles one item; ``cost(item)`` is what it takes from the budget (run
    once at least one token is there, so a costly command puts the client in debt rather
    than waiting for a full bucket).  Without a budget (flood control off) items run at
    once.  :meth:`hold` keeps items waiting (a command waiting on the database) until
    :meth:`release`.
    """

    __slots__ = ("_call", "_held", "_items", "budget", "clock", "cost", "max_queue", "run")

    def __init__(
        self,
        clock: Any,
        budget: FloodBudget | None,
        max_queue: int,
        run: Callable[[T], Any],
        cost: Callable[[T], float] | None = None,
    ) -> None:
        self.clock = clock
        self.budget = budget
        self.max_queue = max_queue
        self.run = run
        self.cost = cost
        # None while nothing waits: a connection that is not flooding holds no queue.
        self._items: deque[T] | None = None
        self._call: Any = None
        self._held = False

    def __len__(self) -> int:
        return len(self._items) if self._items is not None else 0

    @property
    def overflowing(self) -> bool:
        """More items wait than the connection may keep waiting: a flood."""
        return self._items is not None and len(self._items) > self.max_queue

    def push(self, item: T) -> None:
        items = self._items
        if items is None:
            items = self._items = deque()
        items.append(item)

    def waiting(self) -> list[T]:
        """The items waiting their turn, oldest first (the queue keeps them)."""
        return list(self._items) if self._items is not None else []

    def charge(self, cost: float) -> None:
        """Take ``cost`` more tokens for what is running now (nothing without flood control)."""
        if self.budget is not None:
            self.budget.charge(cost)

    def drain(self) -> None:
        """Run waiting items while the budget allows and nothing holds the queue."""
        items = self._items
        budget = self.budget
        cost = self.cost
        while items and not self._held and self._items is items:
            if budget is not None:
                if budget.level() < 1.0:
                    # Out of budget: wait until one token is back (the excess is delayed).
                    if self._call is None:
                        self._call = self.clock.callLater(budget.wait_time(1.0), self._wake)
                    return
                item = items.popleft()
                budget.charge(cost(item) if cost is not None else 1.0)
            else:
                item = items.popleft()
            self.run(item)
        if not items and self._items is items:
            self._items = None

    def _wake(self) -> None:
        self._call = None
        self.drain()

    def hold(self) -> None:
        self._held = True

    def release(self) -> None:
        self._held = False

    def forget(self) -> None:
        """Drop what waits and the handler (the connection is gone): no cycle through the
        handler's connection is left for the garbage collector."""
        self.clear()
        self.run = _ignore

    def clear(self) -> None:
        """Drop what waits and the wake-up timer (the connection is closing)."""
        call, self._call = self._call, None
        if call is not None and call.active():
            call.cancel()
        self._items = None


def _ignore(item: Any) -> None:
    """The handler of a forgotten queue."""
