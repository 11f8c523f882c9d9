from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.redis import BINARY, MISSING_REASON, RedisServer
from tests.support.server import ServerProcess

# Set by `make test-cluster-long`: the chaos tests' long forms run (minutes each).
LONG = os.environ.get("CHATSERVER_CLUSTER_LONG") == "1"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    skip = pytest.mark.skip(reason="a long chaos test: run it with make test-cluster-long")
    for item in items:
        if not LONG and item.get_closest_marker("cluster_long") is not None:
            item.add_marker(skip)


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
