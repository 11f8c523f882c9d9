from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.postgres import BIN_DIR, MISSING_REASON, PostgresServer
from tests.support.server import ServerProcess


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator:
    """Factory: ``make_server(protocols=("line", "irc"), overrides={...})`` -> a started server."""
    servers: list[ServerProcess] = []
    # Numbered by a counter, not by the list: servers may be started from several threads.
    numbers = itertools.count()

    def make(**kwargs: object) -> ServerProcess:
        server = ServerProcess(tmp_path / f"s{next(numbers)}", **kwargs)  # type: ignore[arg-type]
        servers.append(server)
        return server.start()

    yield make
    for server in servers:
        server.kill()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A private PostgreSQL for the whole run (tests take a database each: ``new_database``)."""
    if BIN_DIR is None:
        pytest.skip(MISSING_REASON)
    server = PostgresServer().start()
    yield server
    server.destroy()
