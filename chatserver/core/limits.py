"""Token buckets for flood control and login throttling, and per-address connection counts."""

from __future__ import annotations

import ipaddress
from collections.abc import Hashable, Iterable


class TokenBucket:
    """A bucket of ``capacity`` tokens refilled at ``rate`` tokens per second.

    Time is passed in by the caller so that the bucket works with any clock.
    """

    __slots__ = ("capacity", "rate", "stamp", "tokens")

    def __init__(self, capacity: float, rate: float, now: float) -> None:
        self.capacity = float(capacity)
        self.rate = float(rate)
        self.tokens = float(capacity)
        self.stamp = now

    def _refill(self, now: float) -> None:
        # Tokens above the capacity (a credit given on purpose) are kept until spent.
        if now > self.stamp and self.tokens < self.capacity:
            self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def take(self, now: float, cost: float = 1.0) -> bool:
        """Take ``cost`` tokens if there are that many; return whether it was allowed."""
        self._refill(now)
        if self.tokens >= cost:
            self.tokens -= cost
            return True
        return False

    def force(self, now: float, cost: float = 1.0) -> None:
        """Take ``cost`` tokens even into debt (an IRC-style penalty)."""
        self._refill(now)
        self.tokens -= cost

    def level(self, now: float) -> float:
        self._refill(now)
        return self.tokens

    def wait_time(self, now: float, cost: float = 1.0) -> float:
        """Seconds until ``cost`` tokens are available (0 if they are now)."""
        self._refill(now)
        if self.tokens >= cost or self.rate <= 0:
            return 0.0 if self.tokens >= cost else float("inf")
        return (cost - self.tokens) / self.rate

    def full(self, now: float) -> bool:
        self._refill(now)
        return self.tokens >= self.capacity


class KeyedBuckets:
    """One lazily created :class:`TokenBucket` per key; full buckets are forgotten."""

    def __init__(self, capacity: float, rate: float, *, max_keys: int = 100_000) -> None:
        self.capacity = capacity
        self.rate = rate
        self.max_keys = max_keys
        self._buckets: dict[Hashable, TokenBucket] = {}

    def allowed(self, key: Hashable, now: float, cost: float = 1.0) -> bool:
        """Whether ``cost`` tokens are available, without taking them."""
        bucket = self._buckets.get(key)
        return bucket is None or bucket.level(now) >= cost

    def take(self, key: Hashable, now: float, cost: float = 1.0) -> bool:
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self.prune(now)
            bucket = self._buckets[key] = TokenBucket(self.capacity, self.rate, now)
        return bucket.take(now, cost)

    def give(self, key: Hashable, now: float, cost: float = 1.0) -> None:
        """Put back ``cost`` tokens taken from ``key`` (never above the capacity)."""
        bucket = self._buckets.get(key)
        if bucket is not None:
            bucket.force(now, -cost)
            if bucket.tokens > bucket.capacity:
                bucket.tokens = bucket.capacity

    def prune(self, now: float) -> None:
        for key in [k for k, b in self._buckets.items() if b.full(now)]:
            del self._buckets[key]

    def __len__(self) -> int:
        return len(self._buckets)


class AddressCounter:
    """Counts open connections per client address against a maximum."""

    def __init__(self, maximum: int) -> None:
        self.maximum = maximum
        self._counts: dict[str, int] = {}

    def acquire(self, address: str) -> bool:
        count = self._counts.get(address, 0)
        if self.maximum > 0 and count >= self.maximum:
            return False
        self._counts[address] = count + 1
        return True

    def release(self, address: str) -> None:
        count = self._counts.get(address, 0) - 1
        if count > 0:
            self._counts[address] = count
        else:
            self._counts.pop(address, None)

    def count(self, address: str) -> int:
        return self._counts.get(address, 0)


def canonical_address(address: str) -> str:
    """One spelling per client address, whatever listener took the connection: an
    IPv4-mapped IPv6 address (a dual-stack listener's view of an IPv4 client) is its IPv4
    address, and IPv6 is written in its compressed form.  Anything else is kept as it is."""
    if ":" not in address:
        # An IPv4 address parses only in its one dotted-decimal spelling (no leading zeros),
        # so it is already canonical, and anything else without a colon is kept: no parse
        # for the common case, once per connection.
        return address
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


class AddressSet:
    """IP addresses and networks, given as strings such as "10.0.0.0/8" or "::1".

    An IPv4-mapped IPv6 address (``::ffff:127.0.0.1``) is looked up as its IPv4 address.
    """

    def __init__(self, entries: Iterable[str]) -> None:
        self._networks = tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)

    def __contains__(self, address: object) -> bool:
        if not self._networks or not isinstance(address, str):
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip.version == net.version and ip in net for net in self._networks)
