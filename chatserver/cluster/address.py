"""Where a node finds Redis: the ``[cluster] redis`` URL, read without importing the Redis
client (the configuration checks it at load)."""

from __future__ import annotations

from typing import NamedTuple
from urllib.parse import parse_qs, urlsplit


class RedisAddress(NamedTuple):
    """Where Redis is: a host and port, or the path of its Unix socket (``host`` and
    ``port`` then unused), and the database."""

    host: str
    port: int
    database: int
    path: str = ""


def parse_url(url: str) -> RedisAddress:
    """The address in ``redis://host:port/db``, or in ``unix:///path/to/redis.sock?db=N``
    (Redis on this machine: no TCP stack between a node and it)."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        if parts.netloc or not parts.path.startswith("/"):
            raise ValueError(f"expected unix:///path/to/socket?db=N, got {url!r}")
        query = parse_qs(parts.query, keep_blank_values=True)
        unknown = set(query) - {"db"}
        if unknown:
            raise ValueError(f"unknown parameter {sorted(unknown)[0]!r} in {url!r}")
        db = query.get("db", ["0"])[-1]
        if not db.isascii() or not db.isdigit():
            raise ValueError(f"expected a database number, got db={db!r} in {url!r}")
        return RedisAddress("", 0, int(db), parts.path)
    if parts.scheme != "redis" or not parts.hostname:
        raise ValueError(f"expected redis://host:port/db, got {url!r}")
    path = parts.path.strip("/")
    return RedisAddress(parts.hostname, parts.port or 6379, int(path) if path else 0)
