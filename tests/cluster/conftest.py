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
    (``overrides`` adds config keys by section, e.g. a shared PostgreSQL)."""

    def make(
        name: str,
        *,
        lease: float = 3.0,
        protocols: tuple[str, ...] = ("line", "irc"),
        overrides: dict[str, dict[str, Any]] | None = None,
    ) -> ServerProcess:
        sections: dict[str, dict[str, Any]] = {
            "cluster": {"redis": redis.url, "node": name, "lease": lease}
        }
        for section, values in (overrides or {}).items():
            sections.setdefault(section, {}).update(values)
        return make_server(protocols=protocols, overrides=sections)

    return make
