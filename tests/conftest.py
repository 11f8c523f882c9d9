from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.server import ServerProcess


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator:
    """Factory: ``make_server(protocols=("line", "irc"), overrides={...})`` -> a started server."""
    servers: list[ServerProcess] = []

    def make(**kwargs: object) -> ServerProcess:
        server = ServerProcess(tmp_path / f"s{len(servers)}", **kwargs)  # type: ignore[arg-type]
        servers.append(server)
        return server.start()

    yield make
    for server in servers:
        server.kill()
