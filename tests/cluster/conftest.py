from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.redis import BINARY, MISSING_REASON, RedisServer
from tests.support.server import ServerProcess


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    """A private Redis for one test."""
    if BINARY is None:
        pytest.skip(MISSING_REASON)
    server = RedisServer().start()
    yield server
    server.destroy()


@pytest.fixture
def make_node(
    redis: RedisServer, make_server: Callable[..., ServerProcess]
) -> Callable[..., ServerProcess]:
    """Factory: ``make_node("a")`` -> a started server in the cluster on the test's Redis
    (``overrides``: more config sections, such as a shared ``storage``)."""

    def make(
        name: str,
        *,
        lease: float = 3.0,
        protocols: tuple[str, ...] = ("line", "irc"),
        overrides: dict[str, Any] | None = None,
    ) -> ServerProcess:
        cluster = {"cluster": {"redis": redis.url, "node": name, "lease": lease}}
        return make_server(protocols=protocols, overrides={**(overrides or {}), **cluster})

    return make
